//! `kpatch-rs build PATCH...`: from a source patch to a livepatch module for one exact kernel.
//!
//! The build itself is `kpatch_build::livepatch::build_livepatch` (pick the target, prepare its
//! source once, compile the touched units before and after the patch, diff each object pair,
//! turn the differences into a livepatch module); this command turns the arguments into its
//! options, prints its progress, proves the module in a guest with `--verify`, and maps the
//! outcome to the exit status.

use crate::progress::Progress;
use crate::verify::{verify, Verification};
use anyhow::{bail, Context};
use kpatch_build::distributed::Tool;
use kpatch_build::livepatch::{
    build_livepatch, patch_name, Livepatch, LivepatchOptions, Outcome, TargetSpec, UnitReport,
};
use kpatch_build::SystemRunner;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 module built (and verified with --verify), 1 error, 2 the change cannot be \
live-patched, 3 the patch changes no function, 4 the module failed verification in the guest.\n\n\
Targets: by default the running kernel when it is a Debian kernel, else the newest Debian 6.1 kernel apt offers; \
--kernel names a Debian kernel (6.1.0-NN-amd64); --sourcedir/--config/--vmlinux name any prepared kernel tree.\n\n\
Output: the module's path on stdout; on stderr, each function the module holds and why (`UNIT (OBJECT): changed \
function: F (at F+0x1a: ...)`, the first instruction that differs); with --json, units[].report.functions."
)]
pub struct Args {
    /// Source patches (unified diffs against the kernel tree, `-p1`), applied in order.
    #[arg(required = true)]
    pub patches: Vec<PathBuf>,
    /// A Debian kernel ABI to target, e.g. 6.1.0-56-amd64.
    #[arg(long, conflicts_with = "sourcedir")]
    pub kernel: Option<String>,
    /// A kernel source tree to build against instead of a Debian kernel.
    #[arg(short = 's', long)]
    pub sourcedir: Option<PathBuf>,
    /// The target kernel's .config (with --sourcedir).
    #[arg(short = 'c', long)]
    pub config: Option<PathBuf>,
    /// The target kernel's vmlinux, for symbol positions and the compiler check (with --sourcedir).
    #[arg(short = 'v', long)]
    pub vmlinux: Option<PathBuf>,
    /// Parallel jobs for make.
    #[arg(short = 'j', long)]
    pub jobs: Option<usize>,
    /// Accepted for kpatch-build compatibility (kpatch-rs compiles only the objects it needs).
    #[arg(short = 't', long = "target")]
    pub targets: Vec<String>,
    /// The patch name (default: the first patch file's name); the module is livepatch-NAME.ko.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// Directory for the module (default: the current directory).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Keep the work directory and print what the differ saw.
    #[arg(short = 'd', long)]
    pub debug: bool,
    /// Build a patch that stacks on the loaded ones instead of replacing them.
    #[arg(short = 'R', long = "non-replace")]
    pub non_replace: bool,
    /// Patch an out-of-tree module (not supported yet: refused).
    #[arg(long)]
    pub oot_module: Option<PathBuf>,
    /// Skip the check that the compiler is the one the target kernel was built with.
    #[arg(long)]
    pub skip_compiler_check: bool,
    /// Boot the target kernel in a QEMU guest, load, check and unload the module.
    #[arg(long)]
    pub verify: bool,
    /// A shell command to run in the guest unpatched, patched and unpatched again (repeatable).
    #[arg(long = "verify-cmd", value_name = "CMD")]
    pub verify_cmds: Vec<String>,
    /// Sign the module with the kernel's sign-file (for kernels that enforce signatures).
    #[arg(long, requires = "sign_cert")]
    pub sign_key: Option<PathBuf>,
    #[arg(long, requires = "sign_key")]
    pub sign_cert: Option<PathBuf>,
    /// Hand the compiles to distcc with these hosts (DISTCC_HOSTS syntax, e.g.
    /// "127.0.0.1/4 build1/8"); each host is checked to run the target's compiler.
    #[arg(long, value_name = "HOSTS", conflicts_with = "icecc")]
    pub distcc: Option<String>,
    /// Hand the compiles to distcc configured by its own DISTCC_HOSTS or hosts file.
    #[arg(long, conflicts_with_all = ["distcc", "icecc"])]
    pub distcc_env: bool,
    /// Hand the compiles to icecream (its scheduler and ICECC_* variables).
    #[arg(long)]
    pub icecc: bool,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// What the patch does, one line, for the module's `description` (default: the patches'
    /// `Subject:` lines).
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// A CVE number the patch fixes (repeatable), besides those the patches' headers name.
    #[arg(long = "cve", value_name = "CVE-YYYY-NNNN", value_parser = parse_cve)]
    pub cves: Vec<String>,
    /// The patch's version N: the module becomes livepatch-NAME-vN.ko, so that a newer
    /// cumulative version can take over from a loaded older one, and its package has version N.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub patch_version: Option<u32>,
}

fn parse_cve(s: &str) -> Result<String, String> {
    let upper = s.to_ascii_uppercase();
    if kpatch_common::cve::is_cve(&upper) {
        Ok(upper)
    } else {
        Err(format!("{s}: not a CVE number (CVE-YYYY-NNNN)"))
    }
}

impl kpatch_build::livepatch::Observer for Progress {
    fn stage(&self, what: &str) {
        Progress::stage(self, what);
    }
    fn warn(&self, what: &str) {
        Progress::warn(self, what);
    }
    fn count(&self, what: &str, done: usize, total: usize) {
        Progress::count(self, what, done, total);
    }
}

/// The library's options from the command line.
fn options(args: &Args) -> anyhow::Result<LivepatchOptions> {
    let target = match &args.sourcedir {
        Some(dir) => TargetSpec::Tree {
            dir: dir.clone(),
            config: args.config.clone(),
            vmlinux: args.vmlinux.clone(),
        },
        None if args.config.is_some() || args.vmlinux.is_some() => {
            bail!("--config and --vmlinux go with --sourcedir")
        }
        None => TargetSpec::Debian(args.kernel.clone()),
    };
    let sign = match (&args.sign_key, &args.sign_cert) {
        (Some(key), Some(cert)) => Some((key.clone(), cert.clone())),
        _ => None,
    };
    Ok(LivepatchOptions {
        patches: args.patches.clone(),
        target,
        name: patch_name(args.name.as_deref(), &args.patches[0]),
        jobs: args.jobs,
        output_dir: args.output.clone().unwrap_or_else(|| PathBuf::from(".")),
        debug: args.debug,
        replace: !args.non_replace,
        skip_compiler_check: args.skip_compiler_check,
        sign,
        description: args.description.clone(),
        cves: args.cves.clone(),
        patch_version: args.patch_version,
        distributed: match (&args.distcc, args.distcc_env, args.icecc) {
            (Some(hosts), _, _) => Some(Tool::Distcc(Some(hosts.clone()))),
            (None, true, _) => Some(Tool::Distcc(None)),
            (None, false, true) => Some(Tool::Icecc),
            (None, false, false) => None,
        },
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let p = Progress::new(args.json);
    if args.oot_module.is_some() {
        bail!("--oot-module: out-of-tree modules are not supported yet");
    }
    let opts = options(&args)?;
    kpatch_build::interrupt::install().context("installing the signal handlers")?;
    let mut built = match build_livepatch(&opts, &SystemRunner, &p)? {
        Outcome::Built(b) => b,
        Outcome::Refused(reasons) => {
            eprintln!(
                "kpatch-rs: the patch cannot be live-patched:\n{}",
                reasons.join("\n")
            );
            return Ok(ExitCode::from(2));
        }
        Outcome::NoChange => {
            eprintln!("kpatch-rs: the patch changes no function");
            return Ok(ExitCode::from(3));
        }
    };
    let verified = if args.verify {
        Some(verify_in_guest(&args, &mut built, &p)?)
    } else {
        None
    };
    if let Some(kept) = &built.work_dir {
        eprintln!("kpatch-rs: work directory kept at {}", kept.display());
    }
    let ok = verified
        .as_ref()
        .is_none_or(|v| v.run.done && v.run.failed().is_empty() && v.run.problems.is_empty());
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary(&args, &built, verified.as_ref(), ok, &p))?
        );
    } else {
        print_functions(&built);
        println!("{}", built.module.path.display());
    }
    Ok(ExitCode::from(if ok { 0 } else { 4 }))
}

/// `--verify`: boots the target kernel in a guest and proves the module there.
fn verify_in_guest(
    args: &Args,
    built: &mut Livepatch,
    p: &Progress,
) -> anyhow::Result<crate::verify::Verified> {
    let t = std::time::Instant::now();
    p.stage("verifying in a guest running the target kernel (QEMU, TCG)");
    let target = &built.target;
    let guest = match (&target.debian, &target.vmlinux) {
        (Some(k), _) => kpatch_guest::Guest::for_kernel(k)?,
        (None, Some(v)) => kpatch_guest::Guest::new(v.clone())?,
        (None, None) => bail!("--verify needs the target's kernel image"),
    };
    let functions = built.functions();
    let target_modules = built.target_modules();
    let v = Verification {
        module: &built.module.path,
        module_name: &built.module.module_name,
        functions: &functions,
        target_modules: &target_modules,
        commands: &args.verify_cmds,
    };
    let result = verify(guest, target.modules_dir.as_deref(), &v)?;
    print_verification(args, &result, p);
    built
        .timings
        .push(("verify".into(), t.elapsed().as_secs_f64()));
    Ok(result)
}

/// What the module patches and why, one line per function on stderr (stdout keeps the module's
/// path alone).
fn print_functions(built: &Livepatch) {
    for line in function_lines(&built.units) {
        eprintln!("{line}");
    }
}

/// `fs/proc/cmdline.c (vmlinux): changed function: cmdline_proc_show (at
/// cmdline_proc_show+0x1f: reference "%s\n" -> "%s kpatch-rs=live\n")`, for each function of
/// each unit's diff.
fn function_lines(units: &[UnitReport]) -> Vec<String> {
    units
        .iter()
        .flat_map(|u| {
            u.report
                .functions
                .iter()
                .map(move |f| format!("{} ({}): {f}", u.unit.display(), u.object))
        })
        .collect()
}

/// The `--json` summary.
fn summary(
    args: &Args,
    built: &Livepatch,
    verified: Option<&crate::verify::Verified>,
    ok: bool,
    p: &Progress,
) -> serde_json::Value {
    let units: Vec<_> = built
        .units
        .iter()
        .map(|u| serde_json::json!({"unit": u.unit, "object": u.object, "report": u.report}))
        .collect();
    serde_json::json!({
        "module": built.module.path,
        "module_name": built.module.module_name,
        "kernel": built.target.release,
        "patch_sha256": built.patch_sha256,
        "units": units,
        "functions": built.functions(),
        "timings": built.timings,
        "header_filter": built.filter,
        "original_objects": {"cached": built.orig_cached, "compiled": built.orig_compiled},
        "elapsed": p.elapsed(),
        "verified": verified.map(|_| ok),
        "verification": verified.map(|v| serde_json::json!({
            "checks": v.run.results.iter().map(|r| serde_json::json!({"name": r.name, "ok": r.ok, "detail": r.detail})).collect::<Vec<_>>(),
            "problems": v.run.problems.iter().map(|p| format!("{:?}: {}", p.kind, p.line)).collect::<Vec<_>>(),
            "outputs": args.verify_cmds.iter().zip(&v.outputs).map(|(c, [b, p, a])| serde_json::json!({
                "command": c, "unpatched": b, "patched": p, "after_unload": a,
            })).collect::<Vec<_>>(),
        })),
    })
}

fn print_verification(args: &Args, v: &crate::verify::Verified, p: &Progress) {
    let run = &v.run;
    for r in &run.results {
        p.stage(format!(
            "guest: {} {}",
            if r.ok { "ok  " } else { "FAIL" },
            r.name
        ));
    }
    for problem in &run.problems {
        p.warn(format!("guest: kernel problem: {problem:?}"));
    }
    if !run.done {
        p.warn(format!(
            "guest: the script did not finish; last console lines:\n{}",
            run.tail(30)
        ));
    }
    for r in run.failed() {
        p.warn(format!("guest: check {} failed: {}", r.name, r.detail));
    }
    if args.json {
        return;
    }
    for (cmd, [before, patched, after]) in args.verify_cmds.iter().zip(&v.outputs) {
        eprintln!("$ {cmd}");
        eprintln!(
            "  unpatched:     {}",
            before.replace('\n', "\n                 ")
        );
        eprintln!(
            "  patched:       {}",
            patched.replace('\n', "\n                 ")
        );
        eprintln!(
            "  after unload:  {}",
            after.replace('\n', "\n                 ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpatch_diff::{Change, CodeDifference, Differs, FunctionReason, Report, Why};

    #[test]
    fn the_text_summary_names_each_function_its_unit_and_why() {
        let changed = FunctionReason {
            name: "cmdline_proc_show".into(),
            why: Why::Changed {
                change: Change::Code(CodeDifference {
                    at: "cmdline_proc_show+0x1f".into(),
                    offset: 0x1f,
                    differs: Differs::Relocation,
                    was: "\"%s\\n\"".into(),
                    now: "\"%s x\\n\"".into(),
                }),
            },
            forced: false,
        };
        let cold = FunctionReason {
            name: "cmdline_proc_show.cold".into(),
            why: Why::Child {
                parent: "cmdline_proc_show".into(),
            },
            forced: false,
        };
        let units = [UnitReport {
            unit: "fs/proc/cmdline.c".into(),
            object: "vmlinux".into(),
            report: Report {
                functions: vec![changed, cold],
                ..Default::default()
            },
        }];
        assert_eq!(
            function_lines(&units),
            [
                r#"fs/proc/cmdline.c (vmlinux): changed function: cmdline_proc_show (at cmdline_proc_show+0x1f: reference "%s\n" -> "%s x\n")"#,
                "fs/proc/cmdline.c (vmlinux): carried function: cmdline_proc_show.cold (a piece of cmdline_proc_show)",
            ]
        );
    }
}
