//! The self-built half of the two-kernel end to end test: a small x86_64 kernel (tinyconfig plus
//! the livepatch options, built once from Debian's linux-source tarball by
//! `scripts/tiny-kernel.sh` and cached under `<cache>/tiny/<version>`) is the target given by
//! `--sourcedir --config --vmlinux`. The same patch as build_e2e.rs (examples/cmdline-string.patch)
//! is built against it and proven in a guest booting that kernel. Gated by
//! KPATCH_RS_GUEST_TESTS=1 (downloads Debian's source, builds a kernel, boots QEMU).

mod support;

use kpatch_guest::{Guest, TestScript};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

fn gated() -> bool {
    if std::env::var("KPATCH_RS_GUEST_TESTS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("skipped: set KPATCH_RS_GUEST_TESTS=1 to build a tiny kernel from Debian's source and boot QEMU guests");
    false
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn tiny_kernel_boots_our_initramfs_with_livepatch_and_modules() {
    if !gated() {
        return;
    }
    let k = support::tiny_kernel();
    let release = std::fs::read_to_string(k.tree.join("include/config/kernel.release")).unwrap();
    let mut script = TestScript::new();
    script.check("release", "uname -r");
    script.check("livepatch-sysfs", "[ -d /sys/kernel/livepatch ]");
    script.check("modules", "[ -e /proc/modules ]");
    script.check(
        "ftrace-regs",
        "grep -q ' ftrace_regs_caller$' /proc/kallsyms",
    );
    script.check("cmdline", "cat /proc/cmdline");
    let guest = Guest::new(k.vmlinux()).unwrap();
    let run = guest
        .run(&script)
        .unwrap_or_else(|e| panic!("booting {}: {e}", k.vmlinux().display()));
    eprintln!(
        "booted after {:?}, done after {:?}",
        run.booted_after, run.elapsed
    );
    assert!(
        run.done && run.failed().is_empty() && run.problems.is_empty(),
        "{:?}\n{}",
        run.failed(),
        run.tail(60)
    );
    assert_eq!(
        run.result("release").unwrap().detail,
        release.trim(),
        "{}",
        run.tail(60)
    );
    assert!(
        run.result("cmdline")
            .unwrap()
            .detail
            .contains("console=ttyS0"),
        "{}",
        run.tail(60)
    );
}

#[test]
fn cmdline_patch_builds_against_the_tiny_tree_and_is_proven_in_its_guest() {
    if !gated() {
        return;
    }
    let k = support::tiny_kernel();
    let out = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let r = Command::new(env!("CARGO_BIN_EXE_kpatch-rs"))
        .arg("build")
        .arg(examples().join("cmdline-string.patch"))
        .arg("--sourcedir")
        .arg(&k.tree)
        .arg("--config")
        .arg(k.config())
        .arg("--vmlinux")
        .arg(k.vmlinux())
        .arg("-o")
        .arg(out.path())
        .args(["--verify", "--verify-cmd", "cat /proc/cmdline", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    eprintln!(
        "kpatch-rs build against the tiny tree: {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(
        r.status.success(),
        "build failed ({:?}):\n{stderr}",
        r.status
    );
    let v: serde_json::Value = serde_json::from_slice(&r.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&r.stdout)));
    assert_eq!(v["verified"], true, "{stderr}");
    assert_eq!(v["module_name"], "livepatch_cmdline_string");
    let release = std::fs::read_to_string(k.tree.join("include/config/kernel.release")).unwrap();
    assert_eq!(v["kernel"], release.trim());
    let functions: Vec<String> = v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f[1].as_str().unwrap().to_string())
        .collect();
    assert_eq!(functions, ["cmdline_proc_show"], "{stderr}");
    assert!(out.path().join("livepatch-cmdline-string.ko").is_file());
    let outputs = v["verification"]["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1, "{v}");
    let grab = |key: &str| outputs[0][key].as_str().unwrap().trim().to_string();
    let (before, patched, after) = (grab("unpatched"), grab("patched"), grab("after_unload"));
    assert!(
        before.contains("console=ttyS0") && !before.contains("kpatch-rs=live"),
        "{before:?}\n{stderr}"
    );
    assert_eq!(patched, format!("{before} kpatch-rs=live"), "{stderr}");
    assert_eq!(after, before, "{stderr}");
}
