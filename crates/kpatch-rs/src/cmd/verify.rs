//! `kpatch-rs verify MODULE.ko...`: proves livepatch modules that are already built, all in one
//! boot of their target kernel under QEMU (TCG). For each module in turn: the modules it patches
//! and the modules it depends on are loaded (with their own dependencies), then the module is
//! loaded, its transition watched to the end, every function it lists checked in sysfs, the
//! patch disabled, the reverse transition watched, the module removed, and the kernel log
//! checked for warnings. One row per module says how it went.
//!
//! The proof is `build --verify`'s (crate::verify), repeated per module with the kernel log
//! cleared in between, so that dozens of modules cost one boot instead of one each.

use crate::progress::Progress;
use crate::verify::{ensure_loaded, script, Verification};
use anyhow::{bail, Context};
use kpatch_common::canonical_module_name;
use kpatch_guest::{Guest, GuestRun, TestScript};
use kpatch_kernel::modinfo::ModuleFile;
use kpatch_target::DebianKernel;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 every module passed, 1 error (a file that is no livepatch \
module, modules built for different kernels, a kernel that cannot be fetched, QEMU failing), 4 at \
least one module failed in the guest, a module it patches could not be loaded there, or the \
kernel reported a problem (the rows say which).\n\n\
The target kernel is the one the modules were built for (their kpatch_rs_kernel or vermagic); \
--kernel names it instead. It must be a Debian kernel apt offers (see `kpatch-rs targets`)."
)]
pub struct Args {
    /// Livepatch modules built by `kpatch-rs build` (or kpatch-build) for one kernel.
    #[arg(required = true)]
    pub modules: Vec<PathBuf>,
    /// The Debian kernel ABI to boot, e.g. 6.1.0-53-amd64 (default: the modules' own).
    #[arg(long)]
    pub kernel: Option<String>,
    /// Seconds to wait for each transition (patching and unpatching).
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub transition_timeout: u32,
    /// Write the guest's whole console log to FILE.
    #[arg(long, value_name = "FILE")]
    pub console_log: Option<PathBuf>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One module to prove, as read from its file.
struct Candidate {
    file: PathBuf,
    name: String,
    kernel: Option<String>,
    functions: Vec<(String, String, u64)>,
    /// Loadable modules it patches.
    targets: Vec<String>,
    /// Modules it needs loaded first (`depends=`: the exporters it calls).
    depends: Vec<String>,
}

/// The outcome of one module.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Loaded, fully transitioned, every function patched, disabled, unloaded, log clean.
    Passed,
    /// A module it patches or depends on did not load in the guest (a driver that needs its
    /// hardware, say): the patch itself was not proven.
    TargetUnavailable,
    /// A check of the patch failed.
    Failed,
    /// The guest stopped before the module's checks ran.
    NotRun,
}

#[derive(Serialize)]
pub struct Row {
    pub module: PathBuf,
    pub name: String,
    pub objects: Vec<String>,
    pub functions: usize,
    pub outcome: Outcome,
    /// The first failing check and what it printed, for anything but `passed`.
    pub detail: String,
}

#[derive(Serialize)]
pub struct Summary {
    pub kernel: String,
    pub rows: Vec<Row>,
    pub booted_after_s: Option<f64>,
    pub guest_s: f64,
    pub script_done: bool,
    /// Kernel problems (Oops, WARNING, BUG) seen anywhere on the console.
    pub problems: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let p = Progress::new(args.json);
    let candidates = read_modules(&args.modules)?;
    let abi = target_abi(&args, &candidates)?;
    p.stage(format!(
        "proving {} module(s) in one boot of {abi} (QEMU, TCG)",
        candidates.len()
    ));
    let kernel = DebianKernel::named(&abi)?;
    let mut guest = Guest::for_kernel(&kernel)?;
    let modules_dir = kernel.modules_dir().ok();
    let mut t = TestScript::new();
    let mut plans = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        plans.push(add_module(
            &mut guest,
            &mut t,
            modules_dir.as_deref(),
            c,
            i,
            args.transition_timeout,
        )?);
    }
    let per_module = 30 + 2 * u64::from(args.transition_timeout);
    guest.config.timeout = Duration::from_secs(300 + per_module * candidates.len() as u64);
    guest.config.log_file = args.console_log.clone();
    // The initramfs holds every target module and its dependencies (a DRM driver is several
    // MB), unpacked into the guest's memory.
    guest.config.memory_mb = guest.config.memory_mb.max(1024);
    let run = guest.run(&t)?;
    let rows: Vec<Row> = candidates
        .iter()
        .zip(&plans)
        .map(|(c, plan)| judge(&run, c, plan))
        .collect();
    let summary = Summary {
        kernel: abi,
        booted_after_s: run.booted_after.map(|d| d.as_secs_f64()),
        guest_s: run.elapsed.as_secs_f64(),
        script_done: run.done,
        problems: run
            .problems
            .iter()
            .map(|x| format!("{:?}: {}", x.kind, x.line))
            .collect(),
        rows,
    };
    let ok = summary.script_done
        && summary.problems.is_empty()
        && summary.rows.iter().all(|r| r.outcome == Outcome::Passed);
    if !run.done {
        p.warn(format!(
            "guest: the script did not finish; last console lines:\n{}",
            run.tail(30)
        ));
    }
    crate::cmd::emit(&mut std::io::stdout(), args.json, &summary, render)?;
    Ok(ExitCode::from(if ok { 0 } else { 4 }))
}

fn read_modules(paths: &[PathBuf]) -> anyhow::Result<Vec<Candidate>> {
    let mut out: Vec<Candidate> = Vec::new();
    for path in paths {
        let m = ModuleFile::read(path)?;
        if !m.info.is_livepatch() {
            bail!(
                "{}: not a livepatch module (no livepatch=Y)",
                path.display()
            );
        }
        let name = m.name();
        if let Some(other) = out.iter().find(|c| c.name == name) {
            bail!(
                "{} and {} are both module {name}: one boot can prove only one of them",
                other.file.display(),
                path.display()
            );
        }
        let functions: Vec<(String, String, u64)> = m
            .info
            .functions()
            .into_iter()
            .map(|f| (f.object, f.function, u64::from(f.sympos)))
            .collect();
        let mut targets: Vec<String> = functions
            .iter()
            .map(|(o, _, _)| canonical_module_name(o))
            .filter(|o| o != kpatch_common::VMLINUX)
            .collect();
        targets.sort();
        targets.dedup();
        out.push(Candidate {
            file: path.clone(),
            kernel: m.info.target_kernel().map(String::from),
            depends: m.info.depends(),
            functions,
            targets,
            name,
        });
    }
    Ok(out)
}

/// `--kernel`, else the one kernel every module was built for.
fn target_abi(args: &Args, candidates: &[Candidate]) -> anyhow::Result<String> {
    if let Some(k) = &args.kernel {
        return Ok(k.clone());
    }
    let mut kernels: Vec<&str> = candidates
        .iter()
        .map(|c| {
            c.kernel.as_deref().with_context(|| {
                format!(
                    "{}: no kpatch_rs_kernel or vermagic; name the kernel with --kernel",
                    c.file.display()
                )
            })
        })
        .collect::<anyhow::Result<_>>()?;
    kernels.sort();
    kernels.dedup();
    match kernels.as_slice() {
        [one] => Ok(one.to_string()),
        many => bail!(
            "the modules are built for different kernels ({}): verify them one kernel at a time",
            many.join(", ")
        ),
    }
}

/// The check names of one module's proof.
struct Plan {
    prefix: String,
    /// The checks that load what the module needs (patched and depended-on modules).
    setup: Vec<String>,
}

fn add_module(
    guest: &mut Guest,
    t: &mut TestScript,
    modules_dir: Option<&Path>,
    c: &Candidate,
    i: usize,
    transition_timeout: u32,
) -> anyhow::Result<Plan> {
    let prefix = format!("{i}-{}:", c.name);
    let mut setup = Vec::new();
    t.shell("dmesg -c >/dev/null");
    let needed = c.depends.iter().chain(&c.targets);
    for m in needed {
        let dir = modules_dir.with_context(|| {
            format!(
                "{} needs module {m}, but the kernel's modules are unknown",
                c.name
            )
        })?;
        let paths = guest.initramfs.add_kernel_module(dir, m)?;
        let label = format!("{prefix}target-{m}");
        ensure_loaded(t, &label, m, &paths);
        setup.push(kpatch_guest::sanitize_name(&label));
    }
    let path = guest.initramfs.add_module(&c.file)?;
    let v = Verification {
        module: &c.file,
        module_name: &c.name,
        functions: &c.functions,
        target_modules: &c.targets,
        commands: &[],
    };
    script(t, &v, &path, &prefix, transition_timeout);
    Ok(Plan { prefix, setup })
}

fn judge(run: &GuestRun, c: &Candidate, plan: &Plan) -> Row {
    let prefix = kpatch_guest::sanitize_name(&plan.prefix);
    let mine: Vec<_> = run
        .results
        .iter()
        .filter(|r| r.name.starts_with(&prefix))
        .collect();
    let first_failed = mine.iter().find(|r| !r.ok);
    let (outcome, detail) = match first_failed {
        Some(r) if plan.setup.contains(&r.name) => (
            Outcome::TargetUnavailable,
            format!("{}: {}", &r.name[prefix.len()..], r.detail),
        ),
        Some(r) => (
            Outcome::Failed,
            format!("{}: {}", &r.name[prefix.len()..], r.detail),
        ),
        None if mine.iter().any(|r| r.name.ends_with(":dmesg-clean")) => {
            (Outcome::Passed, String::new())
        }
        None => (
            Outcome::NotRun,
            match mine.last() {
                Some(r) => format!("the guest stopped after {}", &r.name[prefix.len()..]),
                None => "the guest stopped before it".to_string(),
            },
        ),
    };
    let mut objects: Vec<String> = c.functions.iter().map(|f| f.0.clone()).collect();
    objects.sort();
    objects.dedup();
    Row {
        module: c.file.clone(),
        name: c.name.clone(),
        objects,
        functions: c.functions.len(),
        outcome,
        detail,
    }
}

fn render(s: &Summary) -> String {
    let mut out = format!("kernel {}\n", s.kernel);
    for r in &s.rows {
        let outcome = match r.outcome {
            Outcome::Passed => "passed",
            Outcome::TargetUnavailable => "target-unavailable",
            Outcome::Failed => "FAILED",
            Outcome::NotRun => "not-run",
        };
        out.push_str(&format!(
            "{:<40} {:<20} {:>3} fn  {:<18} {}\n",
            r.name,
            r.objects.join(","),
            r.functions,
            outcome,
            r.detail
        ));
    }
    let passed = s
        .rows
        .iter()
        .filter(|r| r.outcome == Outcome::Passed)
        .count();
    out.push_str(&format!(
        "{passed} of {} passed; guest booted after {:.1} s, ran {:.1} s{}\n",
        s.rows.len(),
        s.booted_after_s.unwrap_or_default(),
        s.guest_s,
        if s.script_done {
            ""
        } else {
            "; the script did not finish"
        }
    ));
    for p in &s.problems {
        out.push_str(&format!("kernel problem: {p}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpatch_guest::CheckResult;

    fn cand() -> Candidate {
        Candidate {
            file: "livepatch-fix.ko".into(),
            name: "livepatch_fix".into(),
            kernel: Some("6.1.0-53-amd64".into()),
            functions: vec![("ext4".into(), "ext4_fill_super".into(), 0)],
            targets: vec!["ext4".into()],
            depends: vec![],
        }
    }

    fn result(name: &str, ok: bool, detail: &str) -> CheckResult {
        CheckResult {
            name: name.into(),
            ok,
            detail: detail.into(),
        }
    }

    fn plan() -> Plan {
        Plan {
            prefix: "0-livepatch_fix:".into(),
            setup: vec!["0-livepatch_fix:target-ext4".into()],
        }
    }

    #[test]
    fn a_module_whose_checks_all_pass_through_dmesg_clean_passed() {
        let run = GuestRun {
            results: vec![
                result("0-livepatch_fix:target-ext4", true, ""),
                result("0-livepatch_fix:load", true, ""),
                result("0-livepatch_fix:dmesg-clean", true, ""),
                result("1-other:load", false, "rc=1"),
            ],
            done: true,
            ..Default::default()
        };
        let row = judge(&run, &cand(), &plan());
        assert_eq!(row.outcome, Outcome::Passed, "{}", row.detail);
        assert_eq!(row.objects, ["ext4"]);
    }

    #[test]
    fn a_target_that_does_not_load_is_not_a_failed_patch() {
        let run = GuestRun {
            results: vec![
                result("0-livepatch_fix:target-ext4", false, "rc=1 No such device"),
                result("0-livepatch_fix:load", true, ""),
                result(
                    "0-livepatch_fix:patched-ext4-ext4_fill_super",
                    false,
                    "rc=1",
                ),
                result("0-livepatch_fix:dmesg-clean", true, ""),
            ],
            done: true,
            ..Default::default()
        };
        let row = judge(&run, &cand(), &plan());
        assert_eq!(row.outcome, Outcome::TargetUnavailable);
        assert_eq!(row.detail, "target-ext4: rc=1 No such device");
    }

    #[test]
    fn a_failed_check_and_a_guest_that_stopped_early_are_told_apart() {
        let failed = GuestRun {
            results: vec![
                result("0-livepatch_fix:target-ext4", true, ""),
                result("0-livepatch_fix:transition-complete", false, "still false"),
            ],
            ..Default::default()
        };
        let row = judge(&failed, &cand(), &plan());
        assert_eq!(row.outcome, Outcome::Failed);
        assert!(
            row.detail.starts_with("transition-complete: "),
            "{}",
            row.detail
        );
        let stopped = GuestRun {
            results: vec![result("0-livepatch_fix:load", true, "")],
            ..Default::default()
        };
        let row = judge(&stopped, &cand(), &plan());
        assert_eq!(row.outcome, Outcome::NotRun);
        assert_eq!(row.detail, "the guest stopped after load");
    }
}
