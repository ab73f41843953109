//! `kpatch-rs`: build, apply, manage and verify livepatch modules.

mod cmd;
mod freezing;
mod progress;
mod verify;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "kpatch-rs", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compare two objects and write the changed and new functions to OUT.o.
    Diff(cmd::diff::Args),
    /// kpatch-compatible differ: same arguments, output lines and exit codes.
    CreateDiffObject(cmd::create_diff_object::Args),
    /// Build a livepatch module from a source patch for one target kernel.
    Build(Box<cmd::build::Args>),
    /// Load a livepatch module and watch its transition.
    Load(cmd::load::Args),
    /// Disable and remove a loaded livepatch module.
    Unload(cmd::unload::Args),
    /// List loaded and installed patches.
    List(cmd::list::Args),
    /// Show a patch module's target kernel, functions and source checksum.
    Info(cmd::info::Args),
    /// Install a patch module to load at boot.
    Install(cmd::install::Args),
    /// Remove an installed patch module.
    Uninstall(cmd::uninstall::Args),
    /// Signal the tasks that block a livepatch transition.
    Signal(cmd::signal::Args),
    /// Prove built livepatch modules in one guest boot of their kernel: load, watch, unload.
    Verify(cmd::verify::Args),
    /// List the Debian kernels that can be targeted from this machine.
    Targets(cmd::targets::Args),
    /// The running kernel's patches: loaded, installed for boot, patch level (exit status for
    /// monitoring).
    Status(cmd::status::Args),
    /// Write a Debian package per patch module (or, with --tool, kpatch-rs's own).
    Package(cmd::package::Args),
    /// Add packages to a flat apt repository and rewrite (and sign) its indexes.
    Repo(cmd::repo::Args),
    /// What a patch package's maintainer scripts do (run by them, with dpkg's arguments).
    Maintscript(cmd::maintscript::Args),
    /// The watchdog of a freeze (started by load/unload --freeze; not for direct use).
    #[command(hide = true)]
    FreezeWatchdog,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Diff(a) => cmd::diff::run(a),
        Command::CreateDiffObject(a) => cmd::create_diff_object::run(a),
        Command::Build(a) => cmd::build::run(*a),
        Command::Load(a) => cmd::load::run(a),
        Command::Unload(a) => cmd::unload::run(a),
        Command::List(a) => cmd::list::run(a),
        Command::Info(a) => cmd::info::run(a),
        Command::Install(a) => cmd::install::run(a),
        Command::Uninstall(a) => cmd::uninstall::run(a),
        Command::Signal(a) => cmd::signal::run(a),
        Command::Targets(a) => cmd::targets::run(a),
        Command::Status(a) => cmd::status::run(a),
        Command::Package(a) => cmd::package::run(a),
        Command::Repo(a) => cmd::repo::run(a),
        Command::Maintscript(a) => cmd::maintscript::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::FreezeWatchdog => freezing::run_watchdog(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kpatch-rs: error: {}", render_error(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes joined by `: ` (as `{:#}` does), without repeating a cause that
/// the message before it already ends with (many errors quote their source).
fn render_error(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.ends_with(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_quoted_source_is_printed_once() {
        let io = std::io::Error::from_raw_os_error(28);
        let e = anyhow::Error::new(kpatch_kernel::KernelError::Io {
            path: "/x/fix.ko".into(),
            source: io,
        })
        .context("installing");
        assert_eq!(
            super::render_error(&e),
            "installing: /x/fix.ko: No space left on device (os error 28)"
        );
    }
}
