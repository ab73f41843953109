//! SIGKILL of `load`, `unload`, `install` and `uninstall` at each of their steps, a full disk
//! and a read-only install directory.
//!
//! The real binary runs on a persistent fake kernel (`KPATCH_RS_TEST_FAKE_KERNEL`, a
//! [`FakeKernel`] kept in a directory) and kills itself at a named step
//! (`KPATCH_RS_TEST_KILL_AT`, see `kpatch_common::fault::STEPS`), so every kill point is hit
//! exactly, without a race. After each kill: `list` tells the state as it is, `load --all` (as at
//! boot) never loads a half-installed patch, and the next command finishes or undoes the work.

use kpatch_kernel::fake::{FakeKernel, FakeTask, Stuck};
use kpatch_kernel::modinfo::build_test_module;
use kpatch_kernel::patches::{is_enabled, patch_dir};
use kpatch_kernel::{Kernel, MODINFO_FUNCTIONS};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Output};

const REL: &str = "6.1.0-50-amd64";

/// A fake kernel, an install directory, a unit directory and module files, in one temporary
/// directory.
struct World {
    tmp: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let w = World {
            tmp: tempfile::tempdir().unwrap(),
        };
        let k = FakeKernel::create_at(&w.kernel_dir(), REL).unwrap();
        k.add_task(FakeTask::user(1, "init")).unwrap();
        k.add_task(FakeTask::kthread(2, "kthreadd")).unwrap();
        std::fs::create_dir_all(w.src()).unwrap();
        for name in ["fix_a", "fix_b"] {
            std::fs::write(w.module(name), module_bytes(name, 0)).unwrap();
        }
        w
    }

    fn kernel_dir(&self) -> PathBuf {
        self.tmp.path().join("kernel")
    }
    fn kernel(&self) -> FakeKernel {
        FakeKernel::open(&self.kernel_dir()).unwrap()
    }
    fn src(&self) -> PathBuf {
        self.tmp.path().join("src")
    }
    fn module(&self, name: &str) -> PathBuf {
        self.src().join(format!("{name}.ko"))
    }
    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }
    fn units(&self) -> PathBuf {
        self.tmp.path().join("units")
    }

    /// Runs kpatch-rs with `args` on the fake kernel, killed at `kill_at` if given.
    fn run(&self, args: &[&str], kill_at: Option<&str>) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kpatch-rs"));
        c.args(args)
            .env("KPATCH_RS_TEST_FAKE_KERNEL", self.kernel_dir())
            .env_remove("KPATCH_RS_TEST_KILL_AT");
        if let Some(step) = kill_at {
            c.env("KPATCH_RS_TEST_KILL_AT", step);
        }
        c.output().unwrap()
    }

    /// Runs a command that must be killed at `step`.
    fn killed(&self, args: &[&str], step: &str) {
        let out = self.run(args, Some(step));
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{step}: {args:?} was not killed: {}",
            text(&out)
        );
    }

    /// Runs a command that must exit with `code`; returns its stdout and stderr.
    fn ok(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args, None);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
        text(&out)
    }

    fn dirs(&self) -> [String; 4] {
        [
            "--state-dir".into(),
            self.state().to_str().unwrap().into(),
            "--unit-dir".into(),
            self.units().to_str().unwrap().into(),
        ]
    }

    fn install(&self, name: &str, kill_at: Option<&str>) -> Output {
        let m = self.module(name);
        let mut args = vec!["install", m.to_str().unwrap()];
        let dirs = self.dirs();
        args.extend(dirs.iter().map(String::as_str));
        self.run(&args, kill_at)
    }

    fn uninstall(&self, name: &str, kill_at: Option<&str>) -> Output {
        let mut args = vec!["uninstall", name];
        let dirs = self.dirs();
        args.extend(dirs.iter().map(String::as_str));
        self.run(&args, kill_at)
    }

    /// `load --all` as the boot unit runs it; returns its exit code and output.
    fn boot_load(&self) -> (i32, String) {
        let state = self.state();
        let out = self.run(
            &["load", "--all", "--state-dir", state.to_str().unwrap()],
            None,
        );
        (out.status.code().unwrap_or(-1), text(&out))
    }

    fn list(&self) -> String {
        let state = self.state();
        self.ok(&["list", "--state-dir", state.to_str().unwrap()], 0)
    }

    /// The entries of the install directory for [`REL`].
    fn installed_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.state().join(REL))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn unit_exists(&self) -> bool {
        self.units().join("kpatch-rs.service").exists()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A livepatch module `name` for [`REL`]; `pad` bytes of padding make it larger.
fn module_bytes(name: &str, pad: usize) -> Vec<u8> {
    let vermagic = format!("{REL} SMP preempt mod_unload modversions ");
    let padding = "x".repeat(pad);
    build_test_module(&[
        ("livepatch", "Y"),
        ("name", name),
        ("vermagic", &vermagic),
        (MODINFO_FUNCTIONS, "vmlinux:cmdline_proc_show,0"),
        ("padding", &padding),
    ])
}

fn loaded(k: &FakeKernel, name: &str) -> bool {
    k.has_module(name)
}

fn enabled(k: &FakeKernel, name: &str) -> bool {
    k.exists(&patch_dir(name)) && is_enabled(k, name).unwrap()
}

fn in_transition(k: &FakeKernel, name: &str) -> bool {
    kpatch_kernel::patches::in_transition(k, name).unwrap_or(false)
}

#[test]
fn kill_load_before_finit_then_load_finishes() {
    let w = World::new();
    let m = w.module("fix_a");
    w.killed(&["load", m.to_str().unwrap()], "load:before-finit");
    assert!(!loaded(&w.kernel(), "fix_a"));
    let list = w.list();
    assert!(
        list.contains("was killed during the load of fix_a")
            && list.contains("Loaded patch modules:\n(none)"),
        "{list}"
    );
    let out = w.ok(&["load", m.to_str().unwrap()], 0);
    assert!(out.contains("fix_a: loaded and patched"), "{out}");
    assert!(enabled(&w.kernel(), "fix_a"));
    assert!(!w.list().contains("killed"), "the journal is gone");
}

#[test]
fn kill_load_during_the_transition_then_the_next_load_undoes_it() {
    let w = World::new();
    // A task that keeps the transition open for 50 polls.
    w.kernel()
        .add_task(FakeTask::user(400, "slow").stuck(Stuck::Ticks(50), 1))
        .unwrap();
    let m = w.module("fix_a");
    w.killed(&["load", m.to_str().unwrap()], "load:transition");
    let k = w.kernel();
    assert!(enabled(&k, "fix_a") && in_transition(&k, "fix_a"));
    let list = w.list();
    assert!(
        list.contains("fix_a [enabling]")
            && list.contains("Transition in progress: fix_a (patching)")
            && list.contains("400 slow")
            && list.contains("was killed during the load of fix_a"),
        "{list}"
    );
    let b = w.module("fix_b");
    let out = w.ok(&["load", b.to_str().unwrap()], 0);
    assert!(
        out.contains("fix_a: kpatch-rs died during the load; disabling the patch")
            && out.contains("fix_a: removed the module")
            && out.contains("fix_b: loaded and patched"),
        "{out}"
    );
    let k = w.kernel();
    assert!(!loaded(&k, "fix_a") && enabled(&k, "fix_b"));
}

#[test]
fn kill_load_during_its_revert_then_the_next_load_finishes_the_revert() {
    let w = World::new();
    let k = w.kernel();
    // A kernel thread holds the load forever; the reversal takes 5 polls.
    k.add_task(FakeTask::kthread(9, "sleeper").stuck(Stuck::Forever, 1))
        .unwrap();
    k.add_task(FakeTask::user(500, "back").stuck(Stuck::Ticks(5), 0))
        .unwrap();
    let m = w.module("fix_a");
    let quick = ["--wait", "0.5", "--signal-wait", "0.5"];
    let mut args = vec!["load", m.to_str().unwrap()];
    args.extend(quick);
    w.killed(&args, "load:revert");
    let k = w.kernel();
    assert!(k.exists(&patch_dir("fix_a")) && !enabled(&k, "fix_a") && in_transition(&k, "fix_a"));
    let list = w.list();
    assert!(
        list.contains("fix_a [disabling]") && list.contains("killed during the load of fix_a"),
        "{list}"
    );
    // The sleeper wakes; the next load finishes the revert, then does its own work.
    k.remove_task(9).unwrap();
    let out = w.ok(&["load", m.to_str().unwrap()], 0);
    assert!(
        out.contains("fix_a: removed the module") && out.contains("fix_a: loaded and patched"),
        "{out}"
    );
    assert!(enabled(&w.kernel(), "fix_a"));
}

/// fix_a loaded by the binary, as the unload cases start.
fn world_with_fix_a() -> World {
    let w = World::new();
    let m = w.module("fix_a");
    w.ok(&["load", m.to_str().unwrap()], 0);
    w
}

#[test]
fn kill_unload_before_disabling_then_unload_finishes() {
    let w = world_with_fix_a();
    w.killed(&["unload", "fix_a"], "unload:before-disable");
    assert!(enabled(&w.kernel(), "fix_a"));
    let list = w.list();
    assert!(
        list.contains("fix_a [enabled]") && list.contains("killed during the unload of fix_a"),
        "{list}"
    );
    let out = w.ok(&["unload", "fix_a"], 0);
    assert!(out.contains("fix_a: unpatched and removed"), "{out}");
    assert!(!loaded(&w.kernel(), "fix_a"));
}

#[test]
fn kill_unload_during_the_transition_then_the_next_unload_undoes_and_redoes_it() {
    let w = world_with_fix_a();
    w.kernel()
        .add_task(FakeTask::user(600, "slow").stuck(Stuck::Ticks(20), 0))
        .unwrap();
    w.killed(&["unload", "fix_a"], "unload:transition");
    let k = w.kernel();
    assert!(!enabled(&k, "fix_a") && in_transition(&k, "fix_a"));
    let list = w.list();
    assert!(
        list.contains("fix_a [disabling]")
            && list.contains("Transition in progress: fix_a (unpatching)")
            && list.contains("killed during the unload of fix_a"),
        "{list}"
    );
    let out = w.ok(&["unload", "fix_a"], 0);
    assert!(
        out.contains("fix_a: kpatch-rs died during the unload; enabling the patch again")
            && out.contains("fix_a: unpatched and removed"),
        "{out}"
    );
    assert!(!loaded(&w.kernel(), "fix_a"));
}

#[test]
fn kill_unload_during_its_revert_then_the_next_load_waits_for_the_revert() {
    let w = world_with_fix_a();
    let k = w.kernel();
    k.add_task(FakeTask::kthread(9, "holder").stuck(Stuck::Forever, 0))
        .unwrap();
    k.add_task(FakeTask::user(700, "again").stuck(Stuck::Ticks(5), 1))
        .unwrap();
    w.killed(
        &["unload", "fix_a", "--wait", "0.5", "--signal-wait", "0.5"],
        "unload:revert",
    );
    let k = w.kernel();
    assert!(enabled(&k, "fix_a") && in_transition(&k, "fix_a"));
    let list = w.list();
    assert!(
        list.contains("fix_a [enabling]") && list.contains("killed during the unload of fix_a"),
        "{list}"
    );
    let b = w.module("fix_b");
    let out = w.ok(&["load", b.to_str().unwrap()], 0);
    assert!(
        out.contains("fix_a: kpatch-rs died while enabling the patch again")
            && out.contains("fix_b: loaded and patched"),
        "{out}"
    );
    let k = w.kernel();
    assert!(enabled(&k, "fix_a") && !in_transition(&k, "fix_a") && enabled(&k, "fix_b"));
}

#[test]
fn kill_unload_before_removing_the_module_then_the_next_load_removes_it() {
    let w = world_with_fix_a();
    w.killed(&["unload", "fix_a"], "unload:before-remove");
    let k = w.kernel();
    assert!(!k.exists(&patch_dir("fix_a")) && loaded(&k, "fix_a"));
    let list = w.list();
    assert!(
        list.contains("Loaded patch modules:\n(none)")
            && list.contains("killed during the unload of fix_a"),
        "{list}"
    );
    let b = w.module("fix_b");
    let out = w.ok(&["load", b.to_str().unwrap()], 0);
    assert!(
        out.contains("fix_a: the unpatch had finished; removed the module"),
        "{out}"
    );
    let k = w.kernel();
    assert!(!loaded(&k, "fix_a") && enabled(&k, "fix_b"));
}

#[test]
fn kill_install_at_each_step_never_half_installs_and_the_next_install_completes() {
    for step in [
        "install:unit",
        "install:sha256",
        "install:module-partial",
        "install:module",
    ] {
        let w = World::new();
        let out = w.install("fix_a", Some(step));
        assert_eq!(out.status.signal(), Some(9), "{step}: {}", text(&out));
        let complete = step == "install:module";
        let files = w.installed_files();
        // Boot: the module loads only if its install had completed, and then verified.
        let (code, boot) = w.boot_load();
        if complete {
            assert_eq!(files, ["fix_a.ko", "fix_a.ko.sha256"], "{step}");
            assert_eq!(code, 0, "{step}: {boot}");
            assert!(enabled(&w.kernel(), "fix_a"), "{step}");
            w.ok(&["unload", "fix_a"], 0);
        } else {
            assert!(
                !files.contains(&"fix_a.ko".to_string()),
                "{step}: {files:?}"
            );
            assert_eq!(code, 3, "{step}: nothing installed: {boot}");
            assert!(!loaded(&w.kernel(), "fix_a"), "{step}");
        }
        let list = w.list();
        assert_eq!(
            list.contains("fix_a (6.1.0-50-amd64)"),
            complete,
            "{step}: {list}"
        );
        let leftover = match step {
            "install:sha256" => Some("fix_a.ko.sha256"),
            "install:module-partial" => Some(".fix_a.ko.tmp."),
            _ => None,
        };
        if let Some(l) = leftover {
            assert!(
                list.contains("Left by an interrupted install or uninstall") && list.contains(l),
                "{step}: {list}"
            );
        }
        // The unit was written first, so boot loading is on whatever step the kill hit.
        assert!(w.unit_exists(), "{step}");
        let out = w.install("fix_a", None);
        assert_eq!(out.status.code(), Some(0), "{step}: {}", text(&out));
        assert_eq!(
            w.installed_files(),
            ["fix_a.ko", "fix_a.ko.sha256"],
            "{step}: the next install completes and cleans"
        );
        assert!(!w.list().contains("Left by"), "{step}");
        let (code, boot) = w.boot_load();
        assert_eq!(code, 0, "{step}: {boot}");
        assert!(enabled(&w.kernel(), "fix_a"), "{step}");
    }
}

#[test]
fn kill_uninstall_at_each_step_then_the_next_uninstall_finishes() {
    for step in ["uninstall:module", "uninstall:before-unit"] {
        let w = World::new();
        assert_eq!(w.install("fix_a", None).status.code(), Some(0));
        let out = w.uninstall("fix_a", Some(step));
        assert_eq!(out.status.signal(), Some(9), "{step}: {}", text(&out));
        assert!(!w.installed_files().contains(&"fix_a.ko".to_string()));
        let (code, boot) = w.boot_load();
        assert_eq!(code, 3, "{step}: nothing to load at boot: {boot}");
        let list = w.list();
        assert!(!list.contains("fix_a (6.1.0-50-amd64)"), "{step}: {list}");
        assert!(w.unit_exists(), "{step}: the unit goes last");
        let out = w.uninstall("fix_a", None);
        if step == "uninstall:module" {
            assert!(list.contains("fix_a.ko.sha256"), "{step}: {list}");
            assert_eq!(out.status.code(), Some(0), "{step}: {}", text(&out));
            assert!(text(&out).contains("uninstalled fix_a"), "{}", text(&out));
        } else {
            // Nothing of the patch was left, so there is nothing to uninstall; the unit that
            // was left goes all the same.
            assert_eq!(out.status.code(), Some(1), "{step}: {}", text(&out));
            assert!(text(&out).contains("no installed patch named fix_a"));
        }
        assert!(!w.state().join(REL).exists(), "{step}");
        assert!(!w.unit_exists(), "{step}");
    }
}

/// Runs `script` as root in a mount namespace of its own (its mounts vanish with it); `None`
/// where that is not possible (not root, no unshare), after saying so.
fn in_mount_namespace(script: &str) -> Option<Output> {
    let probe = Command::new("unshare").args(["--mount", "true"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIP: cannot make a mount namespace (needs root and unshare)");
        return None;
    }
    Some(
        Command::new("unshare")
            .args(["--mount", "sh", "-euc", script])
            .output()
            .unwrap(),
    )
}

#[test]
fn a_full_disk_during_install_is_a_clear_error_and_leaves_nothing() {
    let w = World::new();
    // The record fits in a 16 KiB tmpfs, a 64 KiB module does not.
    std::fs::write(w.module("fix_a"), module_bytes("fix_a", 64 << 10)).unwrap();
    let exe = env!("CARGO_BIN_EXE_kpatch-rs");
    let script = format!(
        "mkdir -p {state}; mount -t tmpfs -o size=16k,mode=0755 tmpfs {state}; \
         rc=0; {exe} install {m} --state-dir {state} --unit-dir {units} || rc=$?; \
         echo \"rc=$rc\"; echo 'files:'; ls -A {state} {state}/* 2>&1 || true",
        state = w.state().display(),
        units = w.units().display(),
        m = w.module("fix_a").display(),
    );
    let Some(out) = in_mount_namespace(&script) else {
        return;
    };
    let t = text(&out);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let dest = w.state().join(REL).join("fix_a.ko");
    assert!(
        t.contains("rc=1")
            && t.contains(&format!(
                "error: {}: No space left on device (os error 28)\n",
                dest.display()
            )),
        "{t}"
    );
    let files = listing.split("files:").nth(1).unwrap_or_default();
    assert!(
        !files.contains("fix_a") && !files.contains(".tmp."),
        "nothing half-written: {t}"
    );
    assert!(!w.unit_exists(), "the unit it wrote went again: {t}");
}

#[test]
fn a_read_only_install_directory_is_a_clear_error() {
    let w = World::new();
    let exe = env!("CARGO_BIN_EXE_kpatch-rs");
    let script = format!(
        "mkdir -p {state}; mount -t tmpfs -o size=1m,mode=0755 tmpfs {state}; \
         mount -o remount,ro {state}; \
         rc=0; {exe} install {m} --state-dir {state} --unit-dir {units} || rc=$?; \
         echo \"rc=$rc\"",
        state = w.state().display(),
        units = w.units().display(),
        m = w.module("fix_a").display(),
    );
    let Some(out) = in_mount_namespace(&script) else {
        return;
    };
    let t = text(&out);
    assert!(
        t.contains("rc=1")
            && t.contains("Read-only file system")
            && t.contains(&w.state().display().to_string()),
        "{t}"
    );
    assert!(!w.unit_exists(), "{t}");
}

#[test]
fn every_kill_point_is_tested() {
    let me = include_str!("faults.rs");
    for step in kpatch_common::fault::STEPS {
        assert!(
            me.contains(&format!("\"{step}\"")),
            "kill point {step} has no test here"
        );
    }
}
