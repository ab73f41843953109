//! End to end: build a livepatch module against the Debian headers, boot the Debian kernel
//! under TCG, load, check, disable and unload it, all in one boot.
//! Gated by KPATCH_RS_GUEST_TESTS=1 (downloads packages, runs make and QEMU).

use kpatch_guest::module_build::build_external_module;
use kpatch_guest::{boot, GuestConfig, Initramfs, TestScript};
use kpatch_target::DebianKernel;
use std::path::Path;
use std::time::Duration;

fn enabled() -> bool {
    if std::env::var("KPATCH_RS_GUEST_TESTS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!(
        "skipped: set KPATCH_RS_GUEST_TESTS=1 to download Debian packages and boot QEMU guests"
    );
    false
}

const MARKER: &str = "kpatch-rs livepatch-sample active";
const SYSFS: &str = "/sys/kernel/livepatch/livepatch_sample";

fn script() -> TestScript {
    let mut t = TestScript::new();
    t.check(
        "cmdline-original",
        "cat /proc/cmdline; grep -q console=ttyS0 /proc/cmdline",
    );
    t.check("insmod", "insmod /lib/modules/livepatch-sample.ko");
    t.check_eventually(
        "transition-done",
        &format!("[ \"$(cat {SYSFS}/transition)\" = 0 ]"),
        60,
    );
    t.check(
        "enabled",
        &format!("cat {SYSFS}/enabled; [ \"$(cat {SYSFS}/enabled)\" = 1 ]"),
    );
    t.check(
        "cmdline-patched",
        &format!("cat /proc/cmdline; grep -qx '{MARKER}' /proc/cmdline"),
    );
    t.check("disable", &format!("echo 0 > {SYSFS}/enabled"));
    // once the unpatch transition has finished the patch leaves sysfs
    t.check_eventually("unpatched", &format!("[ ! -e {SYSFS} ]"), 60);
    t.check("rmmod", "rmmod livepatch_sample");
    t.check(
        "module-gone",
        "! grep -q '^livepatch_sample ' /proc/modules",
    );
    t.check("cmdline-restored", &format!("cat /proc/cmdline; grep -q console=ttyS0 /proc/cmdline && ! grep -q '{MARKER}' /proc/cmdline"));
    // the kernel's own record (pr_notice, below the console log level) of the patch coming and going
    t.check("dmesg-livepatch", "dmesg | grep -q \"enabling patch 'livepatch_sample'\" && dmesg | grep \"'livepatch_sample': unpatching complete\"");
    // whatever the console log level, nothing went wrong in the kernel
    t.check(
        "dmesg-clean",
        "! dmesg | grep -E 'WARNING:|Call Trace|BUG:|Oops|general protection'",
    );
    t
}

#[test]
fn livepatch_sample_loads_patches_and_unloads_in_one_boot() {
    if !enabled() {
        return;
    }
    let kernel = DebianKernel::default_target().expect("default target");
    eprintln!("target {} ({})", kernel.abi, kernel.version);
    let vmlinux = kernel.vmlinux().expect("vmlinux");
    let kbuild = kernel.kbuild_dir().expect("headers");

    let work = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/livepatch-sample");
    for f in ["livepatch-sample.c", "Kbuild"] {
        std::fs::copy(src.join(f), work.path().join(f)).unwrap();
    }
    let kos = build_external_module(&kbuild, work.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(kos.len(), 1);

    let t = script();
    let mut initramfs = Initramfs::new();
    initramfs.add_busybox().expect("busybox");
    assert_eq!(
        initramfs.add_module(&kos[0]).unwrap(),
        "/lib/modules/livepatch-sample.ko"
    );
    initramfs.add_init(&t.render());
    let img = work.path().join("initramfs.cpio");
    initramfs.write_to(&img).unwrap();

    let mut cfg = GuestConfig::new(&vmlinux, &img);
    cfg.timeout = Duration::from_secs(300);
    let log = std::env::temp_dir().join("kpatch-rs-livepatch-sample.log");
    cfg.log_file = Some(log.clone());
    let run = boot(&cfg).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "boot: script started after {:?}, QEMU exited after {:?} (log: {})",
        run.booted_after.unwrap_or_default(),
        run.elapsed,
        log.display()
    );

    assert!(run.done, "script did not finish:\n{}", run.tail(40));
    for name in t.check_names() {
        let r = run
            .result(name)
            .unwrap_or_else(|| panic!("no result for {name}:\n{}", run.log()));
        assert!(r.ok, "check {name} failed: {}\n{}", r.detail, run.log());
    }
    assert!(run
        .result("cmdline-patched")
        .unwrap()
        .detail
        .contains(MARKER));
    assert!(
        run.problems.is_empty(),
        "kernel problems: {:#?}\n{}",
        run.problems,
        run.log()
    );
}
