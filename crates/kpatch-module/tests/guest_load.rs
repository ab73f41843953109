//! End to end in a guest: a module built by kpatch-module (a livepatch relocation to the
//! unexported `saved_command_line`, pre- and post-patch callbacks) loads into the Debian target
//! under QEMU/TCG, patches `/proc/cmdline`, runs its callbacks, and unloads cleanly.
//! Gated by KPATCH_RS_GUEST_TESTS=1.

mod common;
use common::*;
use kpatch_guest::{boot, GuestConfig, Initramfs, TestScript};
use kpatch_module::build_module;
use std::time::Duration;

const SYSFS: &str = "/sys/kernel/livepatch/livepatch_cmdline";

fn script() -> TestScript {
    let mut t = TestScript::new();
    t.check(
        "cmdline-original",
        "cat /proc/cmdline; ! grep -q kpatch-rs=1 /proc/cmdline",
    );
    t.check("insmod", "insmod /lib/modules/livepatch-cmdline.ko");
    t.check_eventually(
        "transition-done",
        &format!("[ \"$(cat {SYSFS}/transition)\" = 0 ]"),
        60,
    );
    t.check("enabled", &format!("[ \"$(cat {SYSFS}/enabled)\" = 1 ]"));
    t.check(
        "cmdline-patched",
        "cat /proc/cmdline; grep -q 'console=ttyS0.* kpatch-rs=1$' /proc/cmdline",
    );
    t.check("callbacks", "dmesg | grep 'kpatch-rs-test: pre-patch vmlinux' && dmesg | grep 'kpatch-rs-test: post-patch vmlinux'");
    t.check(
        "sysfs-function",
        &format!("ls {SYSFS}/vmlinux/; [ -d {SYSFS}/vmlinux/cmdline_proc_show,1 ]"),
    );
    t.check("disable", &format!("echo 0 > {SYSFS}/enabled"));
    t.check_eventually("unpatched", &format!("[ ! -e {SYSFS} ]"), 60);
    t.check("rmmod", "rmmod livepatch_cmdline");
    t.check(
        "cmdline-restored",
        "cat /proc/cmdline; ! grep -q kpatch-rs=1 /proc/cmdline",
    );
    t.check("dmesg-clean", "! dmesg | grep -E 'WARNING:|Call Trace|BUG:|Oops|general protection|livepatch: .*(failed|invalid)'");
    t
}

#[test]
fn generated_module_patches_cmdline_in_a_guest() {
    if !enabled() {
        return;
    }
    let t = target();
    let work = tempfile::tempdir().unwrap();
    let diff = compile(&t, &work.path().join("src"), "cmdline", CMDLINE_PATCHED);
    let ko = work.path().join("livepatch-cmdline.ko");
    build_module(
        &options(&t, "cmdline", &ko),
        vec![cmdline_tu(diff)],
        &t.resolver,
        &kpatch_module::SystemRunner,
    )
    .expect("build module");

    let s = script();
    let mut img = Initramfs::new();
    img.add_busybox().expect("busybox");
    assert_eq!(
        img.add_module(&ko).unwrap(),
        "/lib/modules/livepatch-cmdline.ko"
    );
    img.add_init(&s.render());
    let cpio = work.path().join("initramfs.cpio");
    img.write_to(&cpio).unwrap();
    let mut cfg = GuestConfig::new(t.kernel.vmlinux().unwrap(), &cpio);
    cfg.timeout = Duration::from_secs(300);
    let run = boot(&cfg).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "guest: script after {:?}, total {:?}",
        run.booted_after.unwrap_or_default(),
        run.elapsed
    );
    run.verdict(&s).unwrap_or_else(|e| panic!("{e}"));
}
