use kpatch_kernel::patches::{is_enabled, transition_patch};
use kpatch_kernel::report::{
    format_blockers, format_signal, EXIT_CODES_HELP, EXIT_NOTHING, EXIT_OK,
};
use kpatch_kernel::tasks::find_blockers;
use kpatch_kernel::watch::signal_blockers;
use kpatch_kernel::Kernel;
use std::process::ExitCode;

const ABOUT: &str = "\
On kernels with /sys/kernel/livepatch/<patch>/signal (4.18 to 5.x) this writes 1 to it: the
kernel sends a fake signal to each blocking user task and wakes each blocking kernel thread.
Newer kernels (6.1 included) do that by themselves every 15 seconds of a transition; there
this command names the blockers, and with --stop-cont also sends SIGSTOP then SIGCONT to the
blocking user processes, which makes them leave the kernel at once. Kernel threads cannot be
signalled from user space.";

#[derive(clap::Args)]
#[command(before_long_help = ABOUT, after_help = EXIT_CODES_HELP)]
pub struct Args {
    /// Also send SIGSTOP then SIGCONT to blocking user processes (an interrupted system call
    /// may return EINTR to the process).
    #[arg(long)]
    pub stop_cont: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let k = super::this_kernel()?;
    let code = run_with(&*k, &args, &mut std::io::stdout())?;
    Ok(ExitCode::from(code))
}

pub fn run_with(k: &dyn Kernel, args: &Args, out: &mut dyn std::io::Write) -> anyhow::Result<u8> {
    let Some(patch) = transition_patch(k)? else {
        if args.json {
            writeln!(out, "{}", serde_json::json!({ "transition": null }))?;
        } else {
            writeln!(out, "no livepatch transition in progress")?;
        }
        return Ok(EXIT_NOTHING);
    };
    let target = i32::from(is_enabled(k, &patch).unwrap_or(true));
    let blockers = find_blockers(k, target, true);
    let report = signal_blockers(k, &patch, &blockers, args.stop_cont);
    if args.json {
        let v = serde_json::json!({
            "transition": { "patch": patch, "target": target },
            "blockers": blockers,
            "signal": report,
        });
        serde_json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{patch}: {} task(s) block the transition:",
            blockers.len()
        )?;
        write!(out, "{}", format_blockers(&blockers))?;
        writeln!(out, "{}", format_signal(&patch, &report))?;
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpatch_kernel::fake::{FakeKernel, FakeTask, Stuck};
    use kpatch_kernel::modinfo::{build_test_module, ModuleFile};
    use kpatch_kernel::ops::{self, Options};
    use kpatch_kernel::watch::Recorder;

    #[test]
    fn signal_names_blockers_and_stops_continues_user_tasks() {
        let rel = "6.1.0-50-amd64";
        let k = FakeKernel::new(rel).unwrap();
        let args = Args {
            stop_cont: true,
            json: true,
        };
        assert_eq!(run_with(&k, &args, &mut Vec::new()).unwrap(), EXIT_NOTHING);

        k.add_task(FakeTask::user(10, "reader").stuck(Stuck::UntilStopCont, 0))
            .unwrap();
        k.add_task(FakeTask::kthread(11, "kt").stuck(Stuck::Forever, 0))
            .unwrap();
        let f = k.path("/tmp/p.ko");
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(
            &f,
            build_test_module(&[("name", "p"), ("livepatch", "Y"), ("vermagic", rel)]),
        )
        .unwrap();
        ops::load(
            &k,
            &ModuleFile::read(&f).unwrap(),
            &Options::default(),
            &mut Recorder::default(),
        )
        .unwrap();
        k.write(std::path::Path::new("/sys/kernel/livepatch/p/enabled"), "0")
            .unwrap();

        let mut out = Vec::new();
        assert_eq!(run_with(&k, &args, &mut out).unwrap(), EXIT_OK);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["transition"]["patch"], "p");
        assert_eq!(v["transition"]["target"], 0);
        assert_eq!(v["blockers"].as_array().unwrap().len(), 2);
        assert_eq!(v["signal"]["stop_continued"], serde_json::json!([10]));
        assert_eq!(v["signal"]["kthreads"], serde_json::json!([11]));
        assert!(k.calls().contains(&"kill 10 CONT".to_string()));
        assert!(!k.is_stopped(10));
    }
}
