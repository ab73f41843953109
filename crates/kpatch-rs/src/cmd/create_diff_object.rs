//! `kpatch-rs create-diff-object`: kpatch's differ interface, so kpatch's scripts and test
//! corpus can call kpatch-rs in its place: the same arguments, the same `<obj>: changed
//! function: <f>` lines, the same exit codes and `*_STRUCT_SIZE` variables.

use super::diff::{run_diff, Diffed};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// kpatch's environment variables for special-section entry sizes, each with the section it
/// sizes: those of the arch's special-section table (kpatch builds x86_64).
fn struct_size_variables() -> Vec<(&'static str, &'static str)> {
    kpatch_arch::special::size_variables(kpatch_arch::x86_64::SPECIAL_SECTIONS)
}

/// The `after_help` text; it names every variable of [`struct_size_variables`] (a test checks).
const AFTER_HELP: &str = "Exit status: 0 success, 1 error, 2 the change cannot be live-patched, 3 no function changed.\n\
Entry sizes come from BUG_STRUCT_SIZE, EX_STRUCT_SIZE, JUMP_STRUCT_SIZE, PRINTK_INDEX_STRUCT_SIZE, PARA_STRUCT_SIZE, \
ALT_STRUCT_SIZE, STATIC_CALL_STRUCT_SIZE and ORC_STRUCT_SIZE when set, else from the relocations.";

#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    pub orig: PathBuf,
    pub patched: PathBuf,
    /// The object being patched: `vmlinux` or a module name.
    pub parent_name: String,
    /// `readelf -s --wide` output of the parent object.
    pub parent_symtab: PathBuf,
    pub module_symvers: PathBuf,
    pub patch_name: String,
    pub output: PathBuf,
    /// Debug output (accepted for compatibility).
    #[arg(short, long)]
    pub debug: bool,
    /// The kernel supports .klp.arch sections (accepted for compatibility; not needed since 5.8).
    #[arg(short = 'a', long = "klp-arch")]
    pub klp_arch: bool,
}

fn readable(p: &Path, what: &str) -> anyhow::Result<()> {
    std::fs::metadata(p)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{what} {}: {e}", p.display()))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    readable(&args.parent_symtab, "parent symbol table")?;
    readable(&args.module_symvers, "Module.symvers")?;
    let mut entry_sizes = Vec::new();
    for (var, section) in struct_size_variables() {
        if let Ok(v) = std::env::var(var) {
            let size: u64 = v
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{var}={v} is not a number"))?;
            entry_sizes.push((section.to_string(), size));
        }
    }
    let options = kpatch_diff::Options {
        entry_sizes,
        debug: args.debug,
        kpatch_compat: true,
    };
    let obj = args
        .orig
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match run_diff(&args.orig, &args.patched, Some(&args.output), &options)? {
        Diffed::Written(r) => {
            for f in &r.changed_functions {
                println!("{obj}: changed function: {f}");
            }
            for f in &r.new_functions {
                println!("{obj}: new function: {f}");
            }
            Ok(ExitCode::from(0))
        }
        Diffed::NoChange(_) => Ok(ExitCode::from(3)),
        Diffed::Refused(e) => {
            eprintln!("ERROR: {obj}: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_names_every_struct_size_variable() {
        let vars = struct_size_variables();
        assert!(!vars.is_empty());
        for (var, _) in vars {
            assert!(AFTER_HELP.contains(var), "--help does not name {var}");
        }
    }
}
