//! `kpatch-rs maintscript postinst|prerm MODULE ARGS...`: what a patch package's maintainer
//! scripts (written by `kpatch-rs package`) do, given dpkg's arguments.
//!
//! - `postinst configure` (and `abort-*`): install the module for boot with its kernel; when
//!   that kernel runs, load it, then retire the older versions of its patch (the new version
//!   takes over from the old one before the old one is removed). A load that fails leaves the
//!   old version running and installed, and exits non-zero so that dpkg and apt report it.
//! - `prerm remove`: unload (when its kernel runs) and uninstall every version of the patch.
//! - `prerm upgrade` and the rest: nothing; the new version's postinst takes over.
//!
//! In a chroot (an image being built) the running kernel is the host's: the patch is only
//! installed for boot, or uninstalled, and the kernel is left alone.

use super::load::{report, WatchArgs};
use anyhow::Context;
use kpatch_kernel::modinfo::ModuleFile;
use kpatch_kernel::ops::Options;
use kpatch_kernel::report::{EXIT_CODES_HELP, EXIT_OK};
use kpatch_kernel::series::{activate, deactivate, Activation, Deactivation, Scope};
use kpatch_kernel::store::{Store, DEFAULT_STATE_DIR};
use kpatch_kernel::watch::Observer;
use kpatch_kernel::Kernel;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct Args {
    /// The maintainer script being run.
    #[arg(value_parser = ["postinst", "prerm"])]
    pub script: String,
    /// The module file the package installed.
    pub module: PathBuf,
    /// dpkg's arguments to the script (`configure OLD-VERSION`, `remove`, `upgrade NEW-VERSION`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub dpkg_args: Vec<String>,
    /// Directory of installed patches.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// What the script is asked to do.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Activate,
    Deactivate,
    Nothing(&'static str),
}

fn step(script: &str, action: &str) -> Step {
    match (script, action) {
        ("postinst", "configure" | "abort-upgrade" | "abort-remove" | "abort-deconfigure") => {
            Step::Activate
        }
        ("prerm", "remove") => Step::Deactivate,
        ("prerm", "upgrade") => {
            Step::Nothing("the running version stays loaded until the new version takes over")
        }
        _ => Step::Nothing("nothing to do"),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let scope = if in_chroot() {
        Scope::BootOnly
    } else {
        Scope::System
    };
    super::load::run_on_this_kernel(&args.watch, |k, opts, obs, out, _| {
        run_with(k, &args, scope, &opts, obs, out)
    })
}

pub fn run_with(
    k: &dyn Kernel,
    args: &Args,
    scope: Scope,
    opts: &Options,
    obs: &mut dyn Observer,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    let action = args.dpkg_args.first().map(String::as_str).unwrap_or("");
    let store = Store::new(&args.state_dir);
    match step(&args.script, action) {
        Step::Nothing(why) => {
            writeln!(out, "kpatch-rs: {} {action}: {why}", args.script)?;
            Ok(EXIT_OK)
        }
        Step::Activate => {
            let module = ModuleFile::read(&args.module)?;
            let done = activate(k, &store, &module, scope, opts, obs).with_context(|| {
                format!(
                    "{}: not installed or loaded; the patch that ran before still runs",
                    module.name()
                )
            })?;
            activated(&module.name(), done, out)
        }
        Step::Deactivate => {
            let module = ModuleFile::read(&args.module)?;
            match deactivate(k, &store, &module, scope, opts, obs)? {
                Deactivation::Done {
                    unloaded,
                    uninstalled,
                } => {
                    for n in unloaded {
                        writeln!(out, "kpatch-rs: {n}: unloaded")?;
                    }
                    for n in uninstalled {
                        writeln!(out, "kpatch-rs: {n}: uninstalled")?;
                    }
                    Ok(EXIT_OK)
                }
                Deactivation::NotUnloaded { outcome } => Ok(report(&outcome, "unloaded", out)),
            }
        }
    }
}

/// Whether this process runs in a chroot: its `/` is not init's (as debianutils' ischroot
/// decides). Unknown (no /proc, not root) counts as not.
fn in_chroot() -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata("/"), std::fs::metadata("/proc/1/root/.")) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) != (b.dev(), b.ino()),
        _ => false,
    }
}

fn activated(name: &str, done: Activation, out: &mut dyn Write) -> anyhow::Result<u8> {
    match done {
        Activation::ForBoot {
            installed,
            running,
            retired,
        } => {
            writeln!(
                out,
                "kpatch-rs: {name}: installed for boot with {}; not loaded, for the running kernel \
                 is {running}",
                installed.kernel
            )?;
            for r in retired {
                writeln!(out, "kpatch-rs: {r}: replaced by {name} for boot")?;
            }
            Ok(EXIT_OK)
        }
        Activation::Loaded {
            installed,
            already,
            retired,
            warnings,
        } => {
            let what = if already {
                "already loaded"
            } else {
                "loaded and patched"
            };
            writeln!(
                out,
                "kpatch-rs: {name}: {what}; installed for boot ({})",
                installed.path.display()
            )?;
            for r in retired {
                writeln!(
                    out,
                    "kpatch-rs: {r}: replaced by {name}, unloaded and uninstalled"
                )?;
            }
            for w in warnings {
                eprintln!("kpatch-rs: warning: {w}");
            }
            Ok(EXIT_OK)
        }
        Activation::NotLoaded { outcome } => {
            let code = report(&outcome, "loaded and patched", out);
            eprintln!("kpatch-rs: {name} was not installed; the patch that ran before still runs");
            Ok(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use kpatch_common::modinfo::{MODINFO_PATCH_NAME, MODINFO_REPLACE};
    use kpatch_kernel::fake::{FakeKernel, FakeTask};
    use kpatch_kernel::modinfo::build_test_module;
    use kpatch_kernel::watch::Recorder;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    const REL: &str = "6.1.0-57-amd64";

    fn module(k: &FakeKernel, name: &str) -> PathBuf {
        let vermagic = format!("{REL} SMP preempt mod_unload modversions ");
        let ko = build_test_module(&[
            ("name", name),
            ("livepatch", "Y"),
            ("vermagic", &vermagic),
            (MODINFO_PATCH_NAME, "fix"),
            (MODINFO_REPLACE, "1"),
        ]);
        let path = k.path(format!("/usr/lib/kpatch-rs/patches/{REL}/{name}.ko"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, ko).unwrap();
        path
    }

    fn script(k: &FakeKernel, args: &[&str]) -> (u8, String) {
        let state = k.path("/var/lib/kpatch-rs");
        let mut v = vec!["maintscript", "--state-dir", state.to_str().unwrap()];
        v.extend_from_slice(args);
        let args = Cli::try_parse_from(v).unwrap().args;
        let mut out = Vec::new();
        let opts = args.watch.options().unwrap();
        let code = run_with(
            k,
            &args,
            Scope::System,
            &opts,
            &mut Recorder::default(),
            &mut out,
        )
        .unwrap();
        (code, String::from_utf8(out).unwrap())
    }

    #[test]
    fn the_dpkg_protocol_install_upgrade_remove() {
        let k = FakeKernel::new(REL).unwrap();
        k.add_task(FakeTask::user(1, "init")).unwrap();
        let v1 = module(&k, "livepatch_fix_v1");
        let v2 = module(&k, "livepatch_fix_v2");
        let (v1, v2) = (v1.to_str().unwrap(), v2.to_str().unwrap());
        let (code, out) = script(&k, &["postinst", v1, "configure"]);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("livepatch_fix_v1: loaded and patched"),
            "{out}"
        );
        // dpkg's upgrade: old prerm upgrade, then the new postinst configure OLD.
        let (code, out) = script(&k, &["prerm", v1, "upgrade", "2"]);
        assert_eq!(code, 0);
        assert!(out.contains("stays loaded"), "{out}");
        assert!(k.has_module("livepatch_fix_v1"));
        let (code, out) = script(&k, &["postinst", v2, "configure", "1"]);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains(
                "livepatch_fix_v1: replaced by livepatch_fix_v2, unloaded and uninstalled"
            ),
            "{out}"
        );
        assert!(!k.has_module("livepatch_fix_v1") && k.has_module("livepatch_fix_v2"));
        let (code, out) = script(&k, &["prerm", v2, "remove"]);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("livepatch_fix_v2: unloaded")
                && out.contains("livepatch_fix_v2: uninstalled"),
            "{out}"
        );
        assert!(!k.has_module("livepatch_fix_v2"));
        assert!(!k.path(format!("/var/lib/kpatch-rs/{REL}")).exists());
    }

    #[test]
    fn a_refused_upgrade_fails_the_script_and_keeps_the_old_patch() {
        let k = FakeKernel::new(REL).unwrap();
        k.add_task(FakeTask::user(1, "init")).unwrap();
        let v1 = module(&k, "livepatch_fix_v1");
        let v2 = module(&k, "livepatch_fix_v2");
        script(&k, &["postinst", v1.to_str().unwrap(), "configure"]);
        // A module of that name that is not a livepatch: the load is refused.
        k.add_plain_module("livepatch_fix_v2").unwrap();
        let state = k.path("/var/lib/kpatch-rs");
        let args = Cli::try_parse_from([
            "maintscript",
            "--state-dir",
            state.to_str().unwrap(),
            "postinst",
            v2.to_str().unwrap(),
            "configure",
            "1",
        ])
        .unwrap()
        .args;
        let opts = args.watch.options().unwrap();
        let e = run_with(
            &k,
            &args,
            Scope::System,
            &opts,
            &mut Recorder::default(),
            &mut Vec::new(),
        )
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("the patch that ran before still runs"),
            "{msg}"
        );
        assert!(
            msg.contains("module livepatch_fix_v2 is already loaded"),
            "{msg}"
        );
        assert!(k.has_module("livepatch_fix_v1"));
        assert!(state.join(REL).join("livepatch_fix_v1.ko").is_file());
        assert!(!state.join(REL).join("livepatch_fix_v2.ko").exists());
    }

    #[test]
    fn steps_follow_dpkg_actions() {
        assert_eq!(step("postinst", "configure"), Step::Activate);
        assert_eq!(step("postinst", "abort-upgrade"), Step::Activate);
        assert_eq!(step("prerm", "remove"), Step::Deactivate);
        assert!(matches!(step("prerm", "upgrade"), Step::Nothing(_)));
        assert!(matches!(step("prerm", "deconfigure"), Step::Nothing(_)));
        assert!(matches!(step("postinst", "triggered"), Step::Nothing(_)));
    }
}
