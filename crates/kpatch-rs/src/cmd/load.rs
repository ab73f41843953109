use crate::freezing::{Journal, Journaled, Watchdog};
use anyhow::Context;
use kpatch_kernel::freeze::FreezeMode;
use kpatch_kernel::ops::{self, Options, Outcome};
use kpatch_kernel::report::{
    format_blockers, TextObserver, EXIT_CODES_HELP, EXIT_NOTHING, EXIT_OK, EXIT_REVERTED,
    EXIT_STUCK,
};
use kpatch_kernel::store::{Store, Trust, DEFAULT_STATE_DIR};
use kpatch_kernel::watch::{Observer, WatchPolicy};
use kpatch_kernel::{Kernel, KernelError};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// How long to wait for transitions (shared by load and unload).
#[derive(clap::Args, Debug, Clone)]
pub struct WatchArgs {
    /// Seconds to wait for the transition before signalling the blocking tasks.
    #[arg(long, value_name = "SECS", default_value_t = 15.0)]
    pub wait: f64,
    /// Seconds to wait after signalling before giving up and reversing the transition.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub signal_wait: f64,
    /// Seconds to wait for the reverse transition (then signal, and wait as long again).
    #[arg(long, value_name = "SECS", default_value_t = 15.0)]
    pub revert_wait: f64,
    /// Do not signal the blocking tasks; give up after --wait.
    #[arg(long)]
    pub no_signal: bool,
    /// When signalling, also send SIGSTOP then SIGCONT to blocking user processes, which makes
    /// them leave the kernel (an interrupted system call may return EINTR to the process).
    #[arg(long)]
    pub stop_cont: bool,
    /// The consistency model: `all` (plain --freeze) freezes user space around the switch,
    /// `blockers` freezes only the tasks still blocking after --wait, `lazy` freezes nothing
    /// (the default). See "Consistency models" below.
    #[arg(long, value_name = "MODE", num_args = 0..=1, default_missing_value = "all", default_value = "lazy", value_parser = ["lazy", "all", "blockers"])]
    pub freeze: String,
    /// Seconds a freeze may last (freezing plus switching) before it is undone.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub freeze_timeout: f64,
}

impl WatchArgs {
    pub fn options(&self) -> anyhow::Result<Options> {
        let d = |name: &str, s: f64| -> anyhow::Result<Duration> {
            Duration::try_from_secs_f64(s).with_context(|| format!("--{name} {s}: not a duration"))
        };
        let watch = WatchPolicy {
            wait: d("wait", self.wait)?,
            signal_wait: d("signal-wait", self.signal_wait)?,
            signal: !self.no_signal,
            stop_cont: self.stop_cont,
            cancel: Some(kpatch_common::interrupt::flag()),
            ..WatchPolicy::default()
        };
        let revert = WatchPolicy {
            wait: d("revert-wait", self.revert_wait)?,
            signal_wait: d("revert-wait", self.revert_wait)?,
            ..watch.clone()
        };
        let mut o = Options {
            watch,
            revert,
            ..Options::default()
        };
        o.freeze = self.mode();
        o.freeze_opts.timeout = d("freeze-timeout", self.freeze_timeout)?;
        o.freeze_opts.exempt = vec![std::process::id() as i32];
        Ok(o)
    }

    pub fn mode(&self) -> FreezeMode {
        match self.freeze.as_str() {
            "all" => FreezeMode::All,
            "blockers" => FreezeMode::Blockers,
            _ => FreezeMode::Lazy,
        }
    }

    /// The watchdog a freeze needs (none in lazy mode), exempt from the freeze.
    pub fn watchdog(&self, opts: &mut Options) -> anyhow::Result<Option<Watchdog>> {
        if opts.freeze == FreezeMode::Lazy {
            return Ok(None);
        }
        // The freeze itself is bounded by its timeout; the margin covers one thaw.
        let w = Watchdog::spawn(opts.freeze_opts.timeout.as_millis() as u64 + 2000)?;
        opts.freeze_opts.exempt.push(w.pid());
        Ok(Some(w))
    }
}

/// Runs one load or unload with its journal, and reports it as text or JSON.
pub fn journaled(
    op: impl FnOnce(&mut dyn Observer) -> Result<Outcome, KernelError>,
    mode: FreezeMode,
    obs: &mut dyn Observer,
    journal: &mut Journal,
    verb: &str,
    json: bool,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<(u8, Option<String>)> {
    let mut j = Journaled::new(obs, journal, mode);
    let outcome = op(&mut j)?;
    j.figures.outcome(&outcome);
    let patch = j.figures.patch.clone();
    j.journal
        .send(&kpatch_kernel::watchdog::Record::Completed(patch.clone()));
    let code = if json {
        let code = report(&outcome, verb, &mut std::io::sink());
        serde_json::to_writer(&mut *out, &j.figures)?;
        writeln!(out)?;
        code
    } else {
        report(&outcome, verb, out)
    };
    Ok((code, Some(patch)))
}

#[derive(clap::Args)]
#[command(after_help = EXIT_CODES_HELP, after_long_help = const_format_help())]
pub struct Args {
    /// Patch module file (.ko, .ko.xz, .ko.zst), or the name of a patch installed for the
    /// running kernel.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub module: Option<String>,
    /// Load every patch installed for the running kernel, in file name order; patches already
    /// loaded are skipped. An installed patch (here, or named) is loaded only if root alone can
    /// change it (every directory from / down, the module and its .sha256 record owned by root
    /// and writable by no group or other) and its SHA-256 is the one recorded at install;
    /// otherwise the load stops with an error naming the path.
    #[arg(long)]
    pub all: bool,
    /// Module parameter KEY=VALUE passed to finit_module (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Directory of installed patches.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Print one JSON object per patch on stdout: outcome, freeze_ms (0 in lazy mode),
    /// freeze_wait_ms, transition_ms, tasks_frozen, blockers, unfrozen.
    #[arg(long)]
    pub json: bool,
}

/// Makes SIGINT, SIGTERM and SIGHUP set the interrupt flag (the watch's cancel) instead of
/// ending the process, so that a watched transition is reverted rather than left behind. Best
/// effort: without the handlers a signal ends the process as it would anyway.
pub(crate) fn catch_interrupts() {
    let _ = kpatch_common::interrupt::install();
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    run_on_this_kernel(&args.watch, |k, opts, obs, out, journal| {
        run_with_options(k, &args, opts, obs, out, journal)
    })
}

/// Runs a load or unload on the running kernel: interrupts caught, progress on stderr, what
/// killed load or unload runs left undone first ([`kpatch_kernel::opjournal`]), and the
/// journal (with the freeze watchdog when a freeze is asked for) started first and closed when
/// it is over.
pub fn run_on_this_kernel(
    watch: &WatchArgs,
    op: impl FnOnce(
        &dyn Kernel,
        Options,
        &mut dyn Observer,
        &mut dyn std::io::Write,
        &mut Journal,
    ) -> anyhow::Result<u8>,
) -> anyhow::Result<ExitCode> {
    catch_interrupts();
    let k = super::this_kernel()?;
    let k = &*k;
    let tty = std::io::stderr().is_terminal();
    let mut obs = TextObserver::new(std::io::stderr(), tty);
    let mut opts = watch.options()?;
    let (file, left) = kpatch_kernel::opjournal::OpJournal::begin(k)?;
    for p in left {
        eprintln!("kpatch-rs: {}", p.describe());
        for line in kpatch_kernel::watchdog::recover(k, &p.records, opts.revert.wait) {
            eprintln!("kpatch-rs: {line}");
        }
    }
    let mut journal = Journal {
        watchdog: watch.watchdog(&mut opts)?,
        file: Some(file),
    };
    let code = op(k, opts, &mut obs, &mut std::io::stdout(), &mut journal);
    journal.finish();
    Ok(ExitCode::from(code?))
}

/// Print the outcome; return the exit code.
pub fn report(outcome: &Outcome, verb: &str, out: &mut dyn std::io::Write) -> u8 {
    match outcome {
        Outcome::Done { patch, elapsed } => {
            let _ = writeln!(out, "{patch}: {verb} ({:.1}s)", elapsed.as_secs_f64());
            EXIT_OK
        }
        Outcome::Reverted {
            patch,
            blockers,
            interrupted,
        } => {
            let why = if *interrupted {
                "was interrupted"
            } else {
                "stalled"
            };
            eprintln!(
                "kpatch-rs: {patch}: the transition {why} and was reversed; the kernel is as before.\n\
                 Tasks that blocked it:\n{}",
                format_blockers(blockers).trim_end()
            );
            EXIT_REVERTED
        }
        Outcome::NotFrozen {
            patch,
            reason,
            unfrozen,
        } => {
            let stacks: String = unfrozen
                .iter()
                .map(|u| {
                    let stack = u
                        .stack
                        .as_ref()
                        .map(|s| s.join("\n      "))
                        .unwrap_or_else(|| "(stack unreadable)".into());
                    format!(
                        "  {} ({}), state {}:\n      {stack}\n",
                        u.pid, u.comm, u.state
                    )
                })
                .collect();
            eprintln!(
                "kpatch-rs: {patch}: {reason}\nUser space was thawed; nothing was changed.\n{}",
                stacks.trim_end()
            );
            EXIT_REVERTED
        }
        Outcome::Stuck {
            patch,
            blockers,
            reverse_blockers,
        } => {
            eprintln!(
                "kpatch-rs: {patch}: the transition stalled, and so did its reversal: {patch} is \
                 still in transition.\nTasks that blocked the transition:\n{}\nTasks that block \
                 the reversal:\n{}\nRun `kpatch-rs signal`, or end these tasks, then check \
                 `kpatch-rs list`.",
                format_blockers(blockers).trim_end(),
                format_blockers(reverse_blockers).trim_end()
            );
            EXIT_STUCK
        }
    }
}

/// `--help` after the options: the exit codes, then the consistency models.
pub fn const_format_help() -> String {
    format!("{EXIT_CODES_HELP}\n\n{}", crate::freezing::FREEZE_HELP)
}

#[cfg(test)]
pub fn run_with(
    k: &dyn Kernel,
    args: &Args,
    obs: &mut dyn Observer,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<u8> {
    run_with_options(
        k,
        args,
        args.watch.options()?,
        obs,
        out,
        &mut Journal::default(),
    )
}

pub fn run_with_options(
    k: &dyn Kernel,
    args: &Args,
    mut opts: Options,
    obs: &mut dyn Observer,
    out: &mut dyn std::io::Write,
    journal: &mut Journal,
) -> anyhow::Result<u8> {
    opts.params = args.params.join(" ");
    let mode = opts.freeze;
    let verb = "loaded and patched";
    let release = k
        .release()
        .context("reading the running kernel's release")?;
    let store = Store::new(&args.state_dir);
    let trust = Trust::for_this_process();
    if !args.all {
        let arg = args.module.as_deref().unwrap_or_default();
        let module = store.resolve_trusted(arg, &release, &trust)?;
        let (code, _) = journaled(
            |o| ops::load(k, &module, &opts, o),
            mode,
            obs,
            journal,
            verb,
            args.json,
            out,
        )?;
        return Ok(code);
    }
    let installed = store.list_kernel(&release)?;
    if installed.is_empty() {
        let _ = writeln!(
            out,
            "no patches installed for {release} in {}",
            store.kernel_dir(&release).display()
        );
        return Ok(EXIT_NOTHING);
    }
    for i in installed {
        let module = store.open_trusted(&i, &trust)?;
        let r = journaled(
            |o| ops::load(k, &module, &opts, o),
            mode,
            obs,
            journal,
            verb,
            args.json,
            out,
        );
        let code = match r {
            Err(e)
                if matches!(
                    e.downcast_ref::<KernelError>(),
                    Some(KernelError::AlreadyLoaded { enabled: true, .. })
                ) =>
            {
                let _ = writeln!(out, "{}: already loaded", module.name());
                continue;
            }
            r => {
                r.with_context(|| format!("loading {}", i.path.display()))?
                    .0
            }
        };
        if code != EXIT_OK {
            // Patches may build on each other: stop at the first failure, as kpatch does.
            return Ok(code);
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clap::Parser;
    use kpatch_kernel::fake::{FakeKernel, FakeTask, Stuck};
    use kpatch_kernel::modinfo::build_test_module;
    use kpatch_kernel::watch::Recorder;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    pub(crate) fn parse(v: &[&str]) -> Args {
        let mut all = vec!["load"];
        all.extend_from_slice(v);
        Cli::try_parse_from(all).unwrap().args
    }

    /// Installs a test module `name` for kernel `rel` into the store at `state`, as
    /// `kpatch-rs install` does (with its SHA-256 record); returns the installed file.
    pub(crate) fn install(state: &std::path::Path, rel: &str, name: &str) -> std::path::PathBuf {
        let src = tempfile::tempdir().unwrap();
        let vermagic = format!("{rel} SMP preempt mod_unload modversions ");
        let ko = build_test_module(&[("name", name), ("livepatch", "Y"), ("vermagic", &vermagic)]);
        let file = src.path().join(format!("{name}.ko"));
        std::fs::write(&file, ko).unwrap();
        let m = kpatch_kernel::modinfo::ModuleFile::read(&file).unwrap();
        Store::new(state).install(&m, rel).unwrap().path
    }

    #[test]
    fn load_all_loads_installed_for_running_kernel_and_skips_loaded() {
        let rel = "6.1.0-50-amd64";
        let k = FakeKernel::new(rel).unwrap();
        let state = k.path("/var/lib/kpatch-rs");
        install(&state, rel, "p1");
        install(&state, rel, "p2");
        install(&state, "6.1.0-49-amd64", "old");
        k.add_task(FakeTask::user(1, "init")).unwrap();
        let sd = state.to_str().unwrap();
        let args = parse(&["--all", "--state-dir", sd]);
        let mut out = Vec::new();
        let code = run_with(&k, &args, &mut Recorder::default(), &mut out).unwrap();
        assert_eq!(code, EXIT_OK);
        assert!(k.has_module("p1") && k.has_module("p2") && !k.has_module("old"));
        let mut out = Vec::new();
        let code = run_with(&k, &args, &mut Recorder::default(), &mut out).unwrap();
        assert_eq!(code, EXIT_OK);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "p1: already loaded\np2: already loaded\n"
        );
    }

    #[test]
    fn load_by_name_and_stall_exit_code() {
        let rel = "6.1.0-50-amd64";
        let k = FakeKernel::new(rel).unwrap();
        let state = k.path("/var/lib/kpatch-rs");
        install(&state, rel, "p1");
        k.add_task(FakeTask::kthread(9, "sleeper").stuck(Stuck::Forever, 1))
            .unwrap();
        let sd = state.to_str().unwrap();
        let args = parse(&[
            "p1",
            "--state-dir",
            sd,
            "--wait",
            "0.5",
            "--signal-wait",
            "0.5",
        ]);
        let code = run_with(&k, &args, &mut Recorder::default(), &mut Vec::new()).unwrap();
        assert_eq!(code, EXIT_REVERTED);
        assert!(!k.has_module("p1"));
        // 0.5 s before signalling + 0.5 s after, then a quick reversal.
        assert!(k.clock() >= Duration::from_secs(1) && k.clock() < Duration::from_secs(2));
        let empty = k.path("/nothing");
        let args = parse(&["--all", "--state-dir", empty.to_str().unwrap()]);
        let code = run_with(&k, &args, &mut Recorder::default(), &mut Vec::new()).unwrap();
        assert_eq!(code, EXIT_NOTHING);
    }

    #[test]
    fn load_freeze_json_reports_the_pause_and_the_transition() {
        let rel = "6.1.0-50-amd64";
        let k = FakeKernel::new(rel).unwrap();
        let state = k.path("/var/lib/kpatch-rs");
        install(&state, rel, "p1");
        k.add_task(FakeTask::user(1, "init")).unwrap();
        k.add_task(FakeTask::user(300, "reader").stuck(Stuck::UntilSignal, 1))
            .unwrap();
        let sd = state.to_str().unwrap();
        let args = parse(&[
            "p1",
            "--state-dir",
            sd,
            "--freeze",
            "--json",
            "--wait",
            "0.5",
            "--signal-wait",
            "0.5",
        ]);
        assert_eq!(args.watch.mode(), FreezeMode::All);
        let mut out = Vec::new();
        let code = run_with(&k, &args, &mut Recorder::default(), &mut out).unwrap();
        assert_eq!(code, EXIT_OK);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (
                v["patch"].as_str(),
                v["outcome"].as_str(),
                v["mode"].as_str()
            ),
            (Some("p1"), Some("done"), Some("all"))
        );
        assert_eq!(v["tasks_frozen"], 1);
        assert!(
            v["freeze_ms"].as_u64().is_some() && v["transition_ms"].as_u64().is_some(),
            "{v}"
        );
        assert!(!k.is_stopped(300));
        // Lazy mode: the same reader holds the transition until it is given up.
        let k2 = FakeKernel::new(rel).unwrap();
        let state2 = k2.path("/var/lib/kpatch-rs");
        install(&state2, rel, "p1");
        k2.add_task(FakeTask::user(300, "reader").stuck(Stuck::UntilSignal, 1))
            .unwrap();
        let args = parse(&[
            "p1",
            "--state-dir",
            state2.to_str().unwrap(),
            "--json",
            "--wait",
            "0.5",
            "--signal-wait",
            "0.5",
        ]);
        let mut out = Vec::new();
        assert_eq!(
            run_with(&k2, &args, &mut Recorder::default(), &mut out).unwrap(),
            EXIT_REVERTED
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (
                v["outcome"].as_str(),
                v["freeze_ms"].as_u64(),
                v["blockers"][0]["pid"].as_i64()
            ),
            (Some("reverted"), Some(0), Some(300))
        );
    }
}
