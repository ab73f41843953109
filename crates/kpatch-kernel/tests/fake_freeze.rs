//! The freeze consistency models (`load --freeze`, `--freeze=blockers`) against the simulated
//! kernel: signals without cgroups, the cgroup v2 freezer, an unfreezable task, and the lazy
//! model held back by the same sleeper that `--freeze` moves on at once.

use kpatch_kernel::fake::{FakeKernel, FakeTask, Stuck};
use kpatch_kernel::freeze::{FreezeAction, FreezeMode};
use kpatch_kernel::modinfo::{build_test_module, ModuleFile};
use kpatch_kernel::ops::{self, Options, Outcome};
use kpatch_kernel::watch::{Event, Observer};
use kpatch_kernel::{Kernel, MODINFO_FUNCTIONS};
use std::path::Path;
use std::time::Duration;

const REL: &str = "6.1.0-50-amd64";
/// kpatch-rs itself in these tests: never frozen.
const SELF: i32 = 900;

fn module(dir: &Path, name: &str) -> ModuleFile {
    let path = dir.join(format!("{name}.ko"));
    let vermagic = format!("{REL} SMP preempt mod_unload modversions ");
    let ko = build_test_module(&[
        ("livepatch", "Y"),
        ("name", name),
        ("vermagic", &vermagic),
        (MODINFO_FUNCTIONS, "vmlinux:cmdline_proc_show,0"),
    ]);
    std::fs::write(&path, ko).unwrap();
    ModuleFile::read(&path).unwrap()
}

fn opts(freeze: FreezeMode) -> Options {
    let mut o = Options::default();
    o.watch.wait = Duration::from_secs(2);
    o.watch.signal_wait = Duration::from_secs(2);
    o.revert.wait = Duration::from_secs(2);
    o.revert.signal_wait = Duration::from_secs(2);
    o.remove_wait = Duration::from_secs(2);
    o.freeze = freeze;
    o.freeze_opts.exempt = vec![SELF];
    o.freeze_opts.timeout = Duration::from_millis(500);
    o
}

/// Events and freeze actions, in order.
#[derive(Default)]
struct Log {
    events: Vec<Event>,
    actions: Vec<FreezeAction>,
}

impl Observer for Log {
    fn event(&mut self, ev: &Event) {
        self.events.push(ev.clone());
    }
    fn freeze_action(&mut self, a: &FreezeAction) {
        self.actions.push(a.clone());
    }
}

impl Log {
    fn thawed(&self) -> Option<(u64, bool)> {
        self.events.iter().find_map(|e| match e {
            Event::Thawed {
                paused_ms,
                switched,
                ..
            } => Some((*paused_ms, *switched)),
            _ => None,
        })
    }
}

/// init, a shell, kpatch-rs, a kernel thread, and a reader asleep (interruptibly) in the
/// function the patch replaces: it lets go only when signalled.
fn kernel() -> FakeKernel {
    let k = FakeKernel::new(REL).unwrap();
    k.add_task(FakeTask::user(1, "init").in_cgroup("/init.scope"))
        .unwrap();
    k.add_task(FakeTask::user(300, "bash").in_cgroup("/user.slice/session-1.scope"))
        .unwrap();
    k.add_task(FakeTask::user(SELF, "kpatch-rs").in_cgroup("/user.slice/session-1.scope"))
        .unwrap();
    k.add_task(FakeTask::kthread(2, "kthreadd")).unwrap();
    k.add_task(
        FakeTask::user(400, "reader")
            .in_cgroup("/system.slice/reader.service")
            .stuck(Stuck::UntilSignal, 1),
    )
    .unwrap();
    k
}

fn index(calls: &[String], what: &str) -> usize {
    calls
        .iter()
        .position(|c| c == what)
        .unwrap_or_else(|| panic!("no `{what}` in {calls:#?}"))
}

#[test]
fn lazy_load_is_held_back_by_a_sleeper_in_the_patched_function() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let mut log = Log::default();
    let out = ops::load(
        &k,
        &module(dir.path(), "fix"),
        &opts(FreezeMode::Lazy),
        &mut log,
    )
    .unwrap();
    assert!(
        matches!(&out, Outcome::Reverted { blockers, .. } if blockers.iter().any(|b| b.pid == 400)),
        "{out:?}"
    );
    assert!(log.thawed().is_none() && log.actions.is_empty());
}

#[test]
fn freeze_by_signal_switches_every_user_task_at_once_and_thaws() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel(); // no cgroup2 mounted: signals
    let mut log = Log::default();
    let start = k.clock();
    let out = ops::load(
        &k,
        &module(dir.path(), "fix"),
        &opts(FreezeMode::All),
        &mut log,
    )
    .unwrap();
    assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
    let calls = k.calls();
    // Stopped before the load, continued after it; never PID 1, kpatch-rs or a kthread.
    let finit = index(&calls, "finit_module ok");
    for pid in [300, 400] {
        assert!(
            index(&calls, &format!("kill {pid} STOP")) < finit
                && index(&calls, &format!("kill {pid} CONT")) > finit,
            "{calls:#?}"
        );
    }
    for pid in [1, SELF, 2] {
        assert!(
            !calls.iter().any(|c| c.starts_with(&format!("kill {pid} "))),
            "{pid} was signalled: {calls:#?}"
        );
    }
    assert!(!k.is_stopped(300) && !k.is_stopped(400));
    let (paused, switched) = log.thawed().unwrap();
    assert!(switched, "{:?}", log.events);
    assert!(paused < 500 && Duration::from_millis(paused) <= k.clock() - start);
    assert_eq!(
        log.actions,
        [FreezeAction::Stopped(300), FreezeAction::Stopped(400)]
    );
    assert!(matches!(
        log.events
            .iter()
            .find(|e| matches!(e, Event::Frozen { .. })),
        Some(Event::Frozen {
            tasks: 2,
            stopped: 2,
            cgroups: 0,
            ..
        })
    ));
}

#[test]
fn freeze_by_cgroup_spares_init_and_kpatch_rs_and_moves_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    k.mount_cgroup2().unwrap();
    // A kernel thread someone moved into a service's cgroup: that cgroup never reports frozen,
    // so its parent is not frozen whole.
    k.add_task(FakeTask::kthread(50, "kauditd").in_cgroup("/system.slice/auditd.service"))
        .unwrap();
    k.add_task(FakeTask::user(51, "auditd").in_cgroup("/system.slice/auditd.service"))
        .unwrap();
    let mut log = Log::default();
    let out = ops::load(
        &k,
        &module(dir.path(), "fix"),
        &opts(FreezeMode::All),
        &mut log,
    )
    .unwrap();
    assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
    let calls = k.calls();
    let froze: Vec<&String> = calls
        .iter()
        .filter(|c| c.ends_with("cgroup.freeze 1"))
        .collect();
    assert_eq!(
        froze,
        [
            "write /sys/fs/cgroup/user.slice/cgroup.freeze 1",
            "write /sys/fs/cgroup/system.slice/reader.service/cgroup.freeze 1"
        ],
        "{calls:#?}"
    );
    // auditd shares its cgroup with the kthread: stopped by signal instead.
    assert!(
        calls.contains(&"kill 51 STOP".to_string()) && calls.contains(&"kill 51 CONT".to_string()),
        "{calls:#?}"
    );
    // kpatch-rs waited in the exempt cgroup, and went back; the exempt cgroup is gone.
    let finit = index(&calls, "finit_module ok");
    assert!(
        index(
            &calls,
            "write /sys/fs/cgroup/kpatch-rs.exempt/cgroup.procs 900"
        ) < finit
    );
    assert!(
        index(
            &calls,
            "write /sys/fs/cgroup/user.slice/session-1.scope/cgroup.procs 900"
        ) > finit
    );
    assert!(calls.contains(&"rmdir /sys/fs/cgroup/kpatch-rs.exempt".to_string()));
    assert!(!k.exists(Path::new("/sys/fs/cgroup/kpatch-rs.exempt")));
    assert!(!k.is_frozen(300) && !k.is_frozen(400) && !k.is_stopped(51));
    assert!(!calls.iter().any(|c| c.contains("init.scope/cgroup.freeze")));
    assert_eq!(log.thawed().map(|t| t.1), Some(true));
}

#[test]
fn a_task_that_cannot_freeze_times_out_thaws_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    k.add_task(
        FakeTask::user(77, "dd")
            .uninterruptible()
            .with_stack(Some("[<0>] klp_dwait+0x1a/0x40\n")),
    )
    .unwrap();
    let mut log = Log::default();
    let out = ops::load(
        &k,
        &module(dir.path(), "fix"),
        &opts(FreezeMode::All),
        &mut log,
    )
    .unwrap();
    let Outcome::NotFrozen {
        unfrozen, reason, ..
    } = &out
    else {
        panic!("{out:?}")
    };
    assert_eq!(unfrozen.len(), 1, "{unfrozen:?}");
    assert_eq!(
        (
            unfrozen[0].pid,
            unfrozen[0].comm.as_str(),
            unfrozen[0].state
        ),
        (77, "dd", 'D')
    );
    assert!(unfrozen[0].stack.as_ref().unwrap()[0].contains("klp_dwait"));
    assert!(reason.contains("77 (dd, state D)"), "{reason}");
    let calls = k.calls();
    assert!(
        !calls.iter().any(|c| c.starts_with("finit_module")),
        "loaded although not frozen: {calls:#?}"
    );
    assert!(
        calls.contains(&"kill 300 CONT".to_string()) && !k.is_stopped(300) && !k.is_stopped(400)
    );
    assert!(!k.exists(Path::new("/sys/kernel/livepatch/fix")));
}

#[test]
fn freeze_blockers_stops_only_the_tasks_that_block_after_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let mut log = Log::default();
    let out = ops::load(
        &k,
        &module(dir.path(), "fix"),
        &opts(FreezeMode::Blockers),
        &mut log,
    )
    .unwrap();
    assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
    let calls = k.calls();
    let stops: Vec<&String> = calls.iter().filter(|c| c.ends_with(" STOP")).collect();
    assert_eq!(stops, ["kill 400 STOP"], "{calls:#?}");
    assert!(!k.is_stopped(400));
    // The lazy phase ran its full wait first.
    let frozen_at = log
        .events
        .iter()
        .position(|e| matches!(e, Event::Frozen { .. }))
        .unwrap();
    assert!(
        log.events[..frozen_at]
            .iter()
            .any(|e| matches!(e, Event::Progress { elapsed_ms, .. } if *elapsed_ms >= 1900)),
        "{:?}",
        log.events
    );
    assert_eq!(log.thawed().map(|t| t.1), Some(true));
}

#[test]
fn unload_with_freeze_unpatches_every_user_task_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let k = FakeKernel::new(REL).unwrap();
    k.add_task(FakeTask::user(1, "init")).unwrap();
    k.add_task(FakeTask::user(SELF, "kpatch-rs")).unwrap();
    k.add_task(FakeTask::user(300, "bash")).unwrap();
    let m = module(dir.path(), "fix");
    assert!(matches!(
        ops::load(&k, &m, &opts(FreezeMode::Lazy), &mut Log::default()).unwrap(),
        Outcome::Done { .. }
    ));
    // Now a reader sleeps in the patched (new) function: it blocks the unpatch.
    k.add_task(FakeTask::user(400, "reader").stuck(Stuck::UntilSignal, 0))
        .unwrap();
    let mut log = Log::default();
    let out = ops::unload(&k, "fix", &opts(FreezeMode::All), &mut log).unwrap();
    assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
    let calls = k.calls();
    let disable = index(&calls, "write /sys/kernel/livepatch/fix/enabled 0");
    assert!(index(&calls, "kill 400 STOP") < disable && index(&calls, "kill 400 CONT") > disable);
    assert!(calls.iter().any(|c| c == "delete_module fix"));
    assert_eq!(log.thawed().map(|t| t.1), Some(true));
}

/// A freeze log that keeps watchdog records, as kpatch-rs sends them.
#[derive(Default)]
struct Journal(Vec<kpatch_kernel::watchdog::Record>);
impl kpatch_kernel::freeze::FreezeLog for Journal {
    fn record(&mut self, a: &FreezeAction) {
        self.0
            .push(kpatch_kernel::watchdog::Record::Action(a.clone()));
    }
}

#[test]
fn regression_kpatch_rs_killed_mid_freeze_leaves_nothing_frozen_or_half_enabled() {
    use kpatch_kernel::watchdog::{recover, Record};
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    k.mount_cgroup2().unwrap();
    let m = module(dir.path(), "fix");
    // What kpatch-rs did before it was killed: froze, and handed the module to the kernel
    // while a kernel thread holds the transition open.
    k.add_task(FakeTask::kthread(60, "sleeper").stuck(Stuck::Forever, 1))
        .unwrap();
    let mut journal = Journal::default();
    let o = opts(FreezeMode::All);
    kpatch_kernel::freeze::freeze(&k, &o.freeze_opts, &mut journal).unwrap();
    assert!(k.is_frozen(300) && k.is_frozen(400));
    journal.0.push(Record::Loading("fix".into()));
    let image = std::fs::File::open(&m.path).unwrap();
    k.finit_module(&image, "").unwrap();
    assert!(k.exists(Path::new("/sys/kernel/livepatch/fix")));
    // The watchdog's input ends: it thaws and reverts.
    let said = recover(&k, &journal.0, Duration::from_secs(5));
    assert!(!k.is_frozen(300) && !k.is_frozen(400), "{said:?}");
    assert!(!k.exists(Path::new("/sys/fs/cgroup/kpatch-rs.exempt")));
    assert!(k
        .read(Path::new("/proc/900/cgroup"))
        .unwrap()
        .contains("/user.slice/session-1.scope"));
    assert!(
        !k.exists(Path::new("/sys/kernel/livepatch/fix")) && !k.has_module("fix"),
        "{said:?}"
    );
    assert!(
        said.iter().any(|l| l.contains("disabling the patch"))
            && said.iter().any(|l| l.contains("removed the module")),
        "{said:?}"
    );
    // A parent that finished says so: nothing is touched.
    assert!(recover(
        &k,
        &[Record::Action(FreezeAction::Stopped(300)), Record::Done],
        Duration::ZERO
    )
    .is_empty());
}

#[test]
fn the_watchdog_leaves_a_completed_load_alone() {
    use kpatch_kernel::watchdog::{recover, Record};
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let m = module(dir.path(), "fix");
    // Loaded lazily (the sleeper is switched by ticks here), then kpatch-rs died before `done`.
    k.add_task(FakeTask::user(401, "other")).unwrap();
    let image = std::fs::File::open(&m.path).unwrap();
    k.finit_module(&image, "").unwrap();
    let said = recover(
        &k,
        &[
            Record::Loading("fix".into()),
            Record::Completed("fix".into()),
        ],
        Duration::from_secs(1),
    );
    assert!(said.is_empty(), "{said:?}");
    assert!(k.exists(Path::new("/sys/kernel/livepatch/fix")));
}
