//! Load, unload, watch and signal against the simulated kernel.

use kpatch_kernel::fake::{FakeKernel, FakeTask, Stuck};
use kpatch_kernel::modinfo::{build_test_module, ModuleFile};
use kpatch_kernel::ops::{self, Options, Outcome};
use kpatch_kernel::patches::{loaded_patches, read_patch};
use kpatch_kernel::watch::{Event, Recorder};
use kpatch_kernel::{Kernel, KernelError, MODINFO_FUNCTIONS};
use nix::errno::Errno;
use std::path::Path;
use std::time::Duration;

const REL: &str = "6.1.0-50-amd64";

fn module(dir: &Path, name: &str, release: &str) -> ModuleFile {
    let path = dir.join(format!("{name}.ko"));
    let vermagic = format!("{release} SMP preempt mod_unload modversions ");
    let ko = build_test_module(&[
        ("livepatch", "Y"),
        ("name", name),
        ("vermagic", &vermagic),
        (
            MODINFO_FUNCTIONS,
            "vmlinux:cmdline_proc_show,0,vmlinux:meminfo_proc_show,1",
        ),
    ]);
    std::fs::write(&path, ko).unwrap();
    ModuleFile::read(&path).unwrap()
}

/// The module with a signature trailer appended (the kernel, not kpatch-rs, checks the rest).
fn signed(m: &ModuleFile) -> ModuleFile {
    let mut raw = std::fs::read(&m.path).unwrap();
    raw.extend_from_slice(kpatch_common::modinfo::MODULE_SIG_MAGIC);
    std::fs::write(&m.path, raw).unwrap();
    ModuleFile::read(&m.path).unwrap()
}

#[test]
fn unsigned_modules_are_refused_where_signatures_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let m = module(dir.path(), "fix_a", REL);
    k.put_file("/sys/module/module/parameters/sig_enforce", "Y\n")
        .unwrap();
    let e = ops::load(&k, &m, &opts(), &mut Recorder::default()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, KernelError::Unsigned { .. }), "{msg}");
    assert!(
        msg.contains(&m.path.display().to_string())
            && msg.contains("/sys/module/module/parameters/sig_enforce is Y"),
        "{msg}"
    );
    assert!(
        k.calls().is_empty(),
        "refused before finit_module: {:?}",
        k.calls()
    );
    let m = signed(&m);
    assert!(matches!(
        ops::load(&k, &m, &opts(), &mut Recorder::default()).unwrap(),
        Outcome::Done { .. }
    ));
    // Not enforced (N, and lockdown none): an unsigned module goes to the kernel as before.
    let k = kernel();
    k.put_file("/sys/module/module/parameters/sig_enforce", "N\n")
        .unwrap();
    k.put_file(
        "/sys/kernel/security/lockdown",
        "[none] integrity confidentiality\n",
    )
    .unwrap();
    let m = module(dir.path(), "fix_b", REL);
    assert!(matches!(
        ops::load(&k, &m, &opts(), &mut Recorder::default()).unwrap(),
        Outcome::Done { .. }
    ));
}

fn opts() -> Options {
    let mut o = Options::default();
    o.watch.wait = Duration::from_secs(2);
    o.watch.signal_wait = Duration::from_secs(2);
    o.revert.wait = Duration::from_secs(2);
    o.revert.signal_wait = Duration::from_secs(2);
    o.remove_wait = Duration::from_secs(2);
    o
}

fn kernel() -> FakeKernel {
    let k = FakeKernel::new(REL).unwrap();
    k.add_task(FakeTask::user(1, "init")).unwrap();
    k.add_task(FakeTask::user(300, "bash")).unwrap();
    k.add_task(FakeTask::kthread(2, "kthreadd")).unwrap();
    k
}

#[test]
fn load_completes_and_patch_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    k.add_task(FakeTask::user(400, "slow").stuck(Stuck::Ticks(5), 1))
        .unwrap();
    let m = module(dir.path(), "fix_a", REL);
    let mut rec = Recorder::default();
    let out = ops::load(&k, &m, &opts(), &mut rec).unwrap();
    assert!(
        matches!(&out, Outcome::Done { patch, .. } if patch == "fix_a"),
        "{out:?}"
    );
    // The slow task held the transition for 5 polls of 100 ms.
    assert_eq!(k.clock(), Duration::from_millis(500));
    let progress: Vec<_> = rec
        .0
        .iter()
        .filter_map(|e| match e {
            Event::Progress { blockers, .. } => Some(blockers.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(progress[0].len(), 1);
    assert_eq!(progress[0][0].comm, "slow");
    assert_eq!(progress[0][0].pid, 400);
    assert!(matches!(
        rec.0.last(),
        Some(Event::TransitionDone { target: 1, .. })
    ));
    let p = read_patch(&k, "fix_a").unwrap();
    assert!(p.enabled && !p.transition);
    assert_eq!(p.objects.len(), 1);
    assert!(p.objects[0].patched);
    assert_eq!(
        p.objects[0].functions,
        vec![
            ("cmdline_proc_show".into(), 1),
            ("meminfo_proc_show".into(), 1)
        ]
    );
    // Every task is back to "no transition".
    assert_eq!(
        k.read(Path::new("/proc/400/patch_state")).unwrap().trim(),
        "-1"
    );
}

#[test]
fn second_load_of_same_patch_and_load_during_transition_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let a = module(dir.path(), "fix_a", REL);
    ops::load(&k, &a, &opts(), &mut Recorder::default()).unwrap();
    let e = ops::load(&k, &a, &opts(), &mut Recorder::default()).unwrap_err();
    assert!(
        matches!(e, KernelError::AlreadyLoaded { enabled: true, .. }),
        "{e}"
    );

    // Start an unload that cannot finish, and check a load is refused while it runs.
    k.add_task(FakeTask::kthread(50, "stuck").stuck(Stuck::Forever, 0))
        .unwrap();
    k.write(Path::new("/sys/kernel/livepatch/fix_a/enabled"), "0")
        .unwrap();
    let b = module(dir.path(), "fix_b", REL);
    let e = ops::load(&k, &b, &opts(), &mut Recorder::default()).unwrap_err();
    assert!(
        matches!(&e, KernelError::Busy { busy, .. } if busy == "fix_a"),
        "{e}"
    );
    assert!(e.to_string().contains("fix_a is in transition"));
    assert!(!k
        .calls()
        .iter()
        .any(|c| c.starts_with("finit_module") && c != "finit_module ok"));
}

#[test]
fn stalled_load_is_signalled_and_reverted_leaving_kernel_clean() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    k.add_task(
        FakeTask::kthread(77, "klp_test_sleeper")
            .stuck(Stuck::Forever, 1)
            .with_stack(Some(
                "[<0>] klp_test_sleep+0x20/0x40 [klp_test]\n[<0>] kthread+0xe6/0x110\n",
            )),
    )
    .unwrap();
    let m = module(dir.path(), "fix_a", REL);
    let mut rec = Recorder::default();
    let out = ops::load(&k, &m, &opts(), &mut rec).unwrap();
    let Outcome::Reverted {
        patch,
        blockers,
        interrupted: false,
    } = out
    else {
        panic!("expected a revert, got {out:?}");
    };
    assert_eq!(patch, "fix_a");
    assert_eq!(blockers.len(), 1);
    assert_eq!(blockers[0].tid, 77);
    assert!(blockers[0].kthread);
    assert_eq!(blockers[0].comm, "klp_test_sleeper");
    assert!(blockers[0].stack.as_ref().unwrap()[0].contains("klp_test_sleep"));
    // Signalled after the 2 s wait, reverted after 2 s more.
    let signalled: Vec<_> = rec
        .0
        .iter()
        .filter_map(|e| match e {
            Event::Signalled { report, .. } => Some(report.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(signalled.len(), 1);
    assert_eq!(signalled[0].kthreads, vec![77]);
    let calls = k.calls();
    let revert_at = calls
        .iter()
        .position(|c| c == "write /sys/kernel/livepatch/fix_a/enabled 0")
        .expect("revert write");
    assert!(calls[revert_at..]
        .iter()
        .any(|c| c == "delete_module fix_a"));
    // Known state: no patch, no module, no task in a transition.
    assert!(!k.exists(Path::new("/sys/kernel/livepatch/fix_a")));
    assert!(!k.has_module("fix_a"));
    assert_eq!(
        k.read(Path::new("/proc/77/patch_state")).unwrap().trim(),
        "-1"
    );
    assert!(loaded_patches(&k).unwrap().is_empty());
}

#[test]
fn sysfs_signal_unblocks_user_task_on_older_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    k.set_signal_attr(true);
    k.add_task(FakeTask::user(500, "sleepy").stuck(Stuck::UntilSignal, 1))
        .unwrap();
    let m = module(dir.path(), "fix_a", REL);
    let mut rec = Recorder::default();
    let out = ops::load(&k, &m, &opts(), &mut rec).unwrap();
    assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
    assert!(k
        .calls()
        .contains(&"write /sys/kernel/livepatch/fix_a/signal 1".to_string()));
}

#[test]
fn stop_cont_unblocks_user_task_and_never_leaves_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    k.add_task(FakeTask::user(600, "reader").stuck(Stuck::UntilStopCont, 1))
        .unwrap();
    let m = module(dir.path(), "fix_a", REL);
    // Without --stop-cont the task holds the transition: reverted.
    let out = ops::load(&k, &m, &opts(), &mut Recorder::default()).unwrap();
    assert!(matches!(out, Outcome::Reverted { .. }), "{out:?}");
    assert!(!k.calls().iter().any(|c| c.starts_with("kill")));
    let mut o = opts();
    o.watch.stop_cont = true;
    let out = ops::load(&k, &m, &o, &mut Recorder::default()).unwrap();
    assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
    let calls = k.calls();
    let stop = calls.iter().position(|c| c == "kill 600 STOP").unwrap();
    assert_eq!(calls[stop + 1], "kill 600 CONT");
    assert!(!k.is_stopped(600));
}

#[test]
fn unload_disables_waits_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let m = module(dir.path(), "fix_a", REL);
    ops::load(&k, &m, &opts(), &mut Recorder::default()).unwrap();
    k.add_task(FakeTask::user(700, "busy").stuck(Stuck::Ticks(3), 0))
        .unwrap();
    let mut rec = Recorder::default();
    let out = ops::unload(&k, "fix_a", &opts(), &mut rec).unwrap();
    assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
    assert!(!k.has_module("fix_a"));
    assert!(rec.0.iter().any(|e| matches!(e, Event::Removed { .. })));
    let e = ops::unload(&k, "fix_a", &opts(), &mut rec).unwrap_err();
    assert!(matches!(e, KernelError::NotLoaded { .. }), "{e}");
}

#[test]
fn stalled_unload_is_reverted_to_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let m = module(dir.path(), "fix_a", REL);
    ops::load(&k, &m, &opts(), &mut Recorder::default()).unwrap();
    k.add_task(FakeTask::kthread(88, "in_new_fn").stuck(Stuck::Forever, 0))
        .unwrap();
    let out = ops::unload(&k, "fix_a", &opts(), &mut Recorder::default()).unwrap();
    let Outcome::Reverted { blockers, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(blockers[0].tid, 88);
    let p = read_patch(&k, "fix_a").unwrap();
    assert!(p.enabled && !p.transition);
    assert!(k.has_module("fix_a"));
}

#[test]
fn revert_that_stalls_reports_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    // One task blocks patching, another blocks unpatching once it got patched... it never
    // switches back because it sleeps in the new function.
    k.add_task(FakeTask::kthread(90, "old_sleeper").stuck(Stuck::Forever, 1))
        .unwrap();
    k.add_task(FakeTask::kthread(91, "new_sleeper").stuck(Stuck::Forever, 0))
        .unwrap();
    let m = module(dir.path(), "fix_a", REL);
    let out = ops::load(&k, &m, &opts(), &mut Recorder::default()).unwrap();
    let Outcome::Stuck {
        blockers,
        reverse_blockers,
        ..
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(blockers[0].tid, 90);
    assert_eq!(reverse_blockers[0].tid, 91);
}

#[test]
fn clear_errors_for_wrong_kernel_no_livepatch_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let other = module(dir.path(), "fix_other", "6.1.0-49-amd64");
    let e = ops::load(&k, &other, &opts(), &mut Recorder::default()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, KernelError::WrongKernel { .. }), "{msg}");
    assert!(msg.contains("6.1.0-49-amd64") && msg.contains(REL), "{msg}");
    assert!(k.calls().is_empty(), "nothing handed to the kernel");

    let m = module(dir.path(), "fix_a", REL);
    k.put_file(
        "/sys/kernel/security/lockdown",
        "none [integrity] confidentiality\n",
    )
    .unwrap();
    // Under lockdown an unsigned module is refused before the kernel sees it.
    let e = ops::load(&k, &m, &opts(), &mut Recorder::default()).unwrap_err();
    assert!(matches!(e, KernelError::Unsigned { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("{}: module fix_a is not signed", m.path.display()))
            && msg.contains("lockdown: none [integrity] confidentiality")
            && msg.contains("before finit_module"),
        "{msg}"
    );
    assert!(k.calls().is_empty(), "nothing handed to the kernel");
    // Signed (as far as kpatch-rs can tell): the kernel's own refusal is explained.
    let m = signed(&m);
    k.fail_next_finit(Errno::EPERM);
    let e = ops::load(&k, &m, &opts(), &mut Recorder::default()).unwrap_err();
    assert!(e.to_string().contains("lockdown: none [integrity]"), "{e}");
    k.fail_next_finit(Errno::EKEYREJECTED);
    let e = ops::load(&k, &m, &opts(), &mut Recorder::default()).unwrap_err();
    assert!(e.to_string().contains("signature rejected"), "{e}");
    // Lockdown off again: the rest is about the kernel's own refusals of unsigned modules.
    k.put_file(
        "/sys/kernel/security/lockdown",
        "[none] integrity confidentiality\n",
    )
    .unwrap();
    k.log("fix_a: disagrees about version of symbol module_layout (an old message)");
    k.fail_next_finit(Errno::ENOEXEC);
    let e = ops::load(&k, &m, &opts(), &mut Recorder::default()).unwrap_err();
    assert!(
        !e.to_string().contains("kernel log"),
        "only messages from this load: {e}"
    );
    // The kernel's own words are quoted.
    std::fs::write(
        &m.path,
        build_test_module(&[
            ("livepatch", "Y"),
            ("name", "fix_a"),
            ("vermagic", "6.1.0-50-amd64-but-not SMP "),
        ]),
    )
    .unwrap();
    let bad = ModuleFile::read(&m.path).unwrap();
    let mut bad_info = bad.clone();
    // Passes our vermagic pre-check (first word), fails the (simulated) kernel's.
    bad_info.info.fields.retain(|(k, _)| k != "vermagic");
    bad_info
        .info
        .fields
        .push(("vermagic".into(), format!("{REL} SMP ")));
    let e = ops::load(&k, &bad_info, &opts(), &mut Recorder::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("kernel log: fix_a: version magic '6.1.0-50-amd64-but-not SMP ' should be"),
        "{e}"
    );
    k.fail_next_finit(Errno::EEXIST);
    let e = ops::load(&k, &m, &opts(), &mut Recorder::default()).unwrap_err();
    assert!(matches!(e, KernelError::ModuleExists { .. }), "{e}");

    let nolp = FakeKernel::without_livepatch(REL).unwrap();
    let e = ops::load(&nolp, &m, &opts(), &mut Recorder::default()).unwrap_err();
    assert!(matches!(e, KernelError::NoLivepatch { .. }), "{e}");

    let plain = dir.path().join("plain.ko");
    std::fs::write(
        &plain,
        build_test_module(&[("name", "plain"), ("vermagic", REL)]),
    )
    .unwrap();
    let plain = ModuleFile::read(&plain).unwrap();
    let e = ops::load(&k, &plain, &opts(), &mut Recorder::default()).unwrap_err();
    assert!(matches!(e, KernelError::NotLivepatch { .. }), "{e}");
}

#[test]
fn compressed_module_is_loaded_from_its_image() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let m = module(dir.path(), "fix_z", REL);
    let mut enc = xz2::write::XzEncoder::new(Vec::new(), 1);
    enc.write_all(&m.image).unwrap();
    let xz = dir.path().join("fix_z.ko.xz");
    std::fs::write(&xz, enc.finish().unwrap()).unwrap();
    let mx = ModuleFile::read(&xz).unwrap();
    assert!(mx.compressed);
    let out = ops::load(&k, &mx, &opts(), &mut Recorder::default()).unwrap();
    assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
    assert!(k.has_module("fix_z"));
}

#[test]
fn stack_order_follows_load_order() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    for n in ["zz_first", "aa_second", "mm_third"] {
        let m = module(dir.path(), n, REL);
        ops::load(&k, &m, &opts(), &mut Recorder::default()).unwrap();
    }
    let names: Vec<_> = loaded_patches(&k)
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.stack_order))
        .collect();
    assert_eq!(
        names,
        vec![
            ("zz_first".to_string(), Some(1)),
            ("aa_second".to_string(), Some(2)),
            ("mm_third".to_string(), Some(3))
        ]
    );
}

#[test]
fn interrupt_reverts_at_once() {
    static CANCEL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    k.add_task(FakeTask::user(800, "slow").stuck(Stuck::Ticks(100), 1))
        .unwrap();
    let m = module(dir.path(), "fix_a", REL);
    let mut o = opts();
    o.watch.cancel = Some(&CANCEL);
    o.revert.cancel = Some(&CANCEL); // ignored: the reversal always runs to the end
    CANCEL.store(true, std::sync::atomic::Ordering::SeqCst);
    let out = ops::load(&k, &m, &o, &mut Recorder::default()).unwrap();
    let Outcome::Reverted {
        interrupted: true,
        blockers,
        ..
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(blockers[0].pid, 800);
    assert!(k.clock() < Duration::from_secs(1), "{:?}", k.clock());
    assert!(!k.has_module("fix_a"));
}

#[test]
fn never_removes_a_module_that_is_not_a_livepatch() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    k.add_plain_module("ext4").unwrap();
    let e = ops::unload(&k, "ext4", &opts(), &mut Recorder::default()).unwrap_err();
    assert!(matches!(e, KernelError::NotLoaded { .. }), "{e}");
    let m = module(dir.path(), "ext4", REL);
    let e = ops::load(&k, &m, &opts(), &mut Recorder::default()).unwrap_err();
    assert!(matches!(e, KernelError::ModuleExists { .. }), "{e}");
    assert!(k.has_module("ext4"));
    assert!(!k.calls().iter().any(|c| c.starts_with("delete_module")));
}

#[test]
fn leftover_disabled_livepatch_module_is_removed_by_unload_and_before_load() {
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let m = module(dir.path(), "fix_a", REL);
    ops::load(&k, &m, &opts(), &mut Recorder::default()).unwrap();
    // Disabled by hand (echo 0 > enabled): the patch goes, the module stays.
    k.write(Path::new("/sys/kernel/livepatch/fix_a/enabled"), "0")
        .unwrap();
    assert!(!k.exists(Path::new("/sys/kernel/livepatch/fix_a")) && k.has_module("fix_a"));
    let out = ops::load(&k, &m, &opts(), &mut Recorder::default()).unwrap();
    assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
    let calls = k.calls();
    let del = calls
        .iter()
        .position(|c| c == "delete_module fix_a")
        .unwrap();
    assert!(
        calls[del..]
            .iter()
            .filter(|c| *c == "finit_module ok")
            .count()
            == 1
    );
    k.write(Path::new("/sys/kernel/livepatch/fix_a/enabled"), "0")
        .unwrap();
    let out = ops::unload(&k, "fix_a", &opts(), &mut Recorder::default()).unwrap();
    assert!(matches!(out, Outcome::Done { .. }), "{out:?}");
    assert!(!k.has_module("fix_a"));
}

#[test]
fn regression_a_failing_pre_patch_callback_is_not_blamed_on_permissions() {
    // The kernel returns the callback's own error (here -EPERM) from finit_module; the
    // message used to say "not root, module loading disabled, or lockdown".
    let dir = tempfile::tempdir().unwrap();
    let k = kernel();
    let m = module(dir.path(), "fix_cb", REL);
    k.log("livepatch: pre-patch callback failed for object 'zram' (an older load)");
    k.fail_next_finit_logging(
        Errno::EPERM,
        &[
            "livepatch: enabling patch 'fix_cb'",
            "livepatch: pre-patch callback failed for object 'vmlinux'",
            "livepatch: failed to enable patch 'fix_cb'",
        ],
    );
    let e = ops::load(&k, &m, &opts(), &mut Recorder::default()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, KernelError::Refused { .. }), "{msg}");
    assert!(
        msg.contains("pre-patch callback for vmlinux failed")
            && !msg.contains("zram")
            && !msg.contains("not root"),
        "{msg}"
    );
    assert!(loaded_patches(&k).unwrap().is_empty());
}
