//! The management commands (load, list, info, unload, install, uninstall, signal) run by the
//! real kpatch-rs binary on a Debian 6.1 kernel booted under QEMU TCG, in one boot:
//! load/list/unload cycles, a refused second load, a transition held open by a kernel thread
//! asleep in the patched function (reported, signalled, reverted, kernel left clean), a load
//! refused while that transition lasts, a load killed (SIGKILL) during a real transition and
//! undone by the next, boot loading refusing an unprotected or changed module, and an unsigned
//! module refused before finit_module once signatures are enforced. Gated by
//! KPATCH_RS_GUEST_TESTS=1.
//!
//! The test modules are in crates/kpatch-kernel/tests/fixtures/klp-test.

mod guest_support;

use guest_support::{add_kpatch_rs, enabled, klp_test_modules, kp};
use kpatch_guest::{boot, GuestConfig, Initramfs, TestScript};
use kpatch_target::DebianKernel;
use std::time::Duration;

const MARKER: &str = "kpatch-rs klp_test_cmdline active";

fn script(other_kernel: &str) -> TestScript {
    let m = "/lib/modules";
    let lp = "/sys/kernel/livepatch";
    let mut t = TestScript::new();
    t.check(
        "insmod-sleeper",
        &format!("insmod {m}/klp_test_sleeper.ko && sleep 1 && pidof klp_sleeper"),
    );

    // Load, look, unload.
    t.check(
        "load",
        &format!(
            "{} && grep -q 'klp_test_cmdline: loaded and patched' /tmp/o",
            kp(&format!("load {m}/klp_test_cmdline.ko"), 0)
        ),
    );
    t.check(
        "cmdline-patched",
        &format!("grep -qx '{MARKER}' /proc/cmdline"),
    );
    t.check("list", &format!(
        "{} && grep -q '^klp_test_cmdline \\[enabled\\] stack 1' /tmp/o && grep -q 'vmlinux \\[patched\\]: cmdline_proc_show,1' /tmp/o",
        kp("list", 0)
    ));
    t.check(
        "list-json",
        &format!(
            "{} && grep -q '\"enabled\": true' /tmp/o && grep -q '\"transition\": null' /tmp/o",
            kp("list --json", 0)
        ),
    );
    t.check("info-name", &format!(
        "{} && grep -q 'state: *enabled' /tmp/o && grep -q \"target kernel: $(uname -r)\" /tmp/o && grep -q 'vmlinux:cmdline_proc_show,1' /tmp/o",
        kp("info klp_test_cmdline", 0)
    ));
    t.check("info-file-json", &format!(
        "{} && grep -q '\"patch_sha256\": \"0000000000000000000000000000000000000000000000000000000000000001\"' /tmp/o",
        kp(&format!("info --json {m}/klp_test_cmdline.ko"), 0)
    ));
    t.check(
        "load-twice-refused",
        &format!(
            "{} && grep -q 'already loaded' /tmp/o",
            kp(&format!("load {m}/klp_test_cmdline.ko"), 1)
        ),
    );
    t.check("unload", &format!(
        "{} && ! grep -q '^klp_test_cmdline ' /proc/modules && [ ! -e {lp}/klp_test_cmdline ] && ! grep -q '{MARKER}' /proc/cmdline",
        kp("unload klp_test_cmdline", 0)
    ));
    t.check("cycles", &format!(
        "for i in 1 2 3; do {} || return 1; grep -qx '{MARKER}' /proc/cmdline || return 1; {} || return 1; done; ! grep -q '{MARKER}' /proc/cmdline",
        kp("load /root/klp_test_cmdline.ko.xz", 0),
        kp("unload klp_test_cmdline.ko", 0)
    ));
    // A patch disabled by hand leaves its module behind; unload removes it (taint K), and
    // never touches a module that is not a livepatch.
    t.check("disabled-by-hand", &format!(
        "{} && echo 0 > {lp}/klp_test_cmdline/enabled && krs_i=0; while [ -e {lp}/klp_test_cmdline ] && [ $krs_i -lt 100 ]; do sleep 0.1; krs_i=$((krs_i+1)); done; \
         grep -q K /sys/module/klp_test_cmdline/taint && grep -q '^klp_test_cmdline ' /proc/modules",
        kp(&format!("load {m}/klp_test_cmdline.ko"), 0)
    ));
    t.check(
        "unload-leftover",
        &format!(
            "{} && ! grep -q '^klp_test_cmdline ' /proc/modules",
            kp("unload klp_test_cmdline", 0)
        ),
    );
    t.check("unload-non-livepatch-refused", &format!(
        "{} && grep -q 'patch klp_test_sleeper is not loaded' /tmp/o && grep -q '^klp_test_sleeper ' /proc/modules",
        kp("unload klp_test_sleeper", 1)
    ));
    t.check("wrong-kernel-refused", &format!(
        "{} && grep -q 'built for kernel {other_kernel}' /tmp/o && ! grep -q '^klp_test_cmdline ' /proc/modules",
        kp(&format!("load {m}/klp_test_other.ko"), 1)
    ));

    t.check("bad-crc-refused", &format!(
        "{} && grep -q 'disagrees about version of symbol module_layout' /tmp/o && ! grep -q '^klp_test_cmdline ' /proc/modules",
        kp(&format!("load {m}/klp_test_crc.ko"), 1)
    ));

    // Install, load --all, unload --all, uninstall.
    let dirs = "--state-dir /tmp/state";
    t.check("install", &format!(
        "{} && [ -f /tmp/state/$(uname -r)/klp_test_cmdline.ko ] && grep -q 'load --all' /tmp/units/kpatch-rs.service \
         && [ -L /tmp/units/multi-user.target.wants/kpatch-rs.service ] && ! ls -a /tmp/state/$(uname -r) | grep -q '^\\.kpatch'",
        kp(&format!("install {m}/klp_test_cmdline.ko {dirs} --unit-dir /tmp/units"), 0)
    ));
    t.check(
        "load-all",
        &format!(
            "{} && grep -qx '{MARKER}' /proc/cmdline",
            kp(&format!("load --all {dirs}"), 0)
        ),
    );
    t.check(
        "list-installed",
        &format!(
            "{} && grep -q \"^klp_test_cmdline ($(uname -r))\" /tmp/o",
            kp(&format!("list {dirs}"), 0)
        ),
    );
    t.check(
        "unload-all",
        &format!("{} && [ -z \"$(ls {lp})\" ]", kp("unload --all", 0)),
    );
    t.check("unload-all-nothing", &kp("unload --all", 3));
    // What boot loading trusts: a module others may change, or one changed since install, is
    // refused naming it, and nothing is loaded.
    t.check("boot-refuses-writable", &format!(
        "chmod 664 /tmp/state/$(uname -r)/klp_test_cmdline.ko && {} && grep -q \"/tmp/state/$(uname -r)/klp_test_cmdline.ko: not trusted: writable by its group (mode 0664)\" /tmp/o \
         && ! grep -q '^klp_test_cmdline ' /proc/modules && chmod 644 /tmp/state/$(uname -r)/klp_test_cmdline.ko",
        kp(&format!("load --all {dirs}"), 1)
    ));
    t.check("boot-refuses-changed", &format!(
        "echo >> /tmp/state/$(uname -r)/klp_test_cmdline.ko && {} && grep -q 'differs from .*, recorded at install' /tmp/o \
         && ! grep -q '^klp_test_cmdline ' /proc/modules",
        kp(&format!("load --all {dirs}"), 1)
    ));
    t.check(
        "uninstall",
        &format!(
            "{} && [ ! -e /tmp/units/kpatch-rs.service ] && [ ! -e /tmp/state/$(uname -r) ]",
            kp(
                &format!("uninstall klp_test_cmdline {dirs} --unit-dir /tmp/units"),
                0
            )
        ),
    );

    // A user process asleep in klp_sleeper_read_wait(): --stop-cont moves it on long before
    // the kernel's own signal (15 s into the transition) would; the restarted read then runs
    // the new function.
    t.shell("dd if=/proc/klp_test_read of=/tmp/read.out bs=64 count=1 2>/dev/null & echo $! >/tmp/dd.pid");
    t.check_eventually(
        "reader-asleep",
        "grep -q klp_sleeper_read_wait /proc/$(cat /tmp/dd.pid)/stack",
        20,
    );
    t.check(
        "load-stop-cont",
        &format!(
            "{} && grep -qE \"sent SIGSTOP\\+SIGCONT to $(cat /tmp/dd.pid)(;|$)\" /tmp/o \
         && grep -q 'klp_test_readwait: loaded and patched' /tmp/o",
            kp(
                &format!("load {m}/klp_test_readwait.ko --wait 2 --signal-wait 8 --stop-cont"),
                0
            )
        ),
    );
    t.check_eventually(
        "reader-done",
        "[ \"$(cat /tmp/read.out)\" = patched ] && ! pidof dd",
        20,
    );
    // Two patches stacked: list shows the load order, unload --all takes the top one first.
    t.check("stack-two", &format!(
        "{} && {} && grep -q '^klp_test_readwait \\[enabled\\] stack 1' /tmp/o && grep -q '^klp_test_cmdline \\[enabled\\] stack 2' /tmp/o",
        kp(&format!("load {m}/klp_test_cmdline.ko"), 0),
        kp("list", 0)
    ));
    t.check("unload-all-two", &format!(
        "{} && [ \"$(grep -o '^klp_test_[a-z]*' /tmp/o | tr '\\n' ' ')\" = 'klp_test_cmdline klp_test_readwait ' ] && [ -z \"$(ls {lp})\" ]",
        kp("unload --all", 0)
    ));

    // A transition held open by klp_sleeper, asleep in klp_sleeper_wait().
    t.check("signal-nothing", &kp("signal", 3));
    t.shell(&format!(
        "(kpatch-rs load {m}/klp_test_stall.ko --wait 15 --signal-wait 5 --revert-wait 20 >/tmp/stall.out 2>&1; echo $? >/tmp/stall.rc) &"
    ));
    t.check_eventually(
        "stall-in-transition",
        &format!("[ \"$(cat {lp}/klp_test_stall/transition 2>/dev/null)\" = 1 ]"),
        20,
    );
    t.check("busy-refused", &format!(
        "{} && grep -q 'klp_test_stall is in transition' /tmp/o && ! grep -q '^klp_test_cmdline ' /proc/modules",
        kp(&format!("load {m}/klp_test_cmdline.ko"), 1)
    ));
    t.check("list-names-blocker", &format!(
        "{} && grep -q 'Transition in progress: klp_test_stall (patching)' /tmp/o && grep -q 'klp_sleeper \\[kernel thread\\], still unpatched' /tmp/o \
         && grep -q 'klp_sleeper_wait' /tmp/o",
        kp("list", 0)
    ));
    t.check(
        "signal",
        &format!(
            "{} && grep -q 'klp_sleeper' /tmp/o && grep -q 'cannot be signalled' /tmp/o",
            kp("signal", 0)
        ),
    );
    t.check_eventually("stall-finished", "[ -s /tmp/stall.rc ]", 120);
    t.check("stall-reverted", "echo '--- stalled load:' >/dev/console; cat /tmp/stall.out >/dev/console; \
         [ \"$(cat /tmp/stall.rc)\" = 2 ] && grep -q 'signalling the blocking tasks' /tmp/stall.out \
         && grep -q 'klp_sleeper \\[kernel thread\\]' /tmp/stall.out && grep -q 'klp_sleeper_wait' /tmp/stall.out \
         && grep -q 'reversed; the kernel is as before' /tmp/stall.out");
    t.check("clean-after-revert", &format!(
        "[ ! -e {lp}/klp_test_stall ] && ! grep -q '^klp_test_stall ' /proc/modules && [ -z \"$(ls {lp})\" ] \
         && [ -z \"$(cat /proc/[0-9]*/task/[0-9]*/patch_state | grep -v -- '^-1$')\" ]"
    ));
    // An operator's Ctrl-C while the transition is stalled: reverted at once, kernel clean.
    t.shell(&format!(
        "(kpatch-rs load {m}/klp_test_stall.ko --wait 60 >/tmp/int.out 2>&1; echo $? >/tmp/int.rc) & sleep 0.2"
    ));
    t.check_eventually(
        "int-in-transition",
        &format!("[ \"$(cat {lp}/klp_test_stall/transition 2>/dev/null)\" = 1 ]"),
        20,
    );
    t.check("interrupt", "kill -INT $(pidof kpatch-rs)");
    t.check_eventually("int-finished", "[ -s /tmp/int.rc ]", 30);
    t.check("int-reverted", &format!(
        "cat /tmp/int.out >/dev/console; [ \"$(cat /tmp/int.rc)\" = 2 ] && grep -q 'was interrupted and was reversed' /tmp/int.out \
         && [ -z \"$(ls {lp})\" ] && ! grep -q '^klp_test_stall ' /proc/modules"
    ));
    // SIGKILL right after finit_module, while klp_sleeper holds the transition: list tells it,
    // and the next load undoes it before its own work.
    t.check(
        "kill-in-transition",
        &format!(
            "KPATCH_RS_TEST_KILL_AT=load:transition kpatch-rs load {m}/klp_test_stall.ko >/tmp/o 2>&1; [ $? = 137 ] \
             && [ \"$(cat {lp}/klp_test_stall/transition)\" = 1 ]"
        ),
    );
    t.check("kill-listed", &format!(
        "{} && grep -q 'klp_test_stall \\[enabling\\]' /tmp/o && grep -q 'was killed during the load of klp_test_stall' /tmp/o",
        kp("list", 0)
    ));
    t.check("kill-undone-by-next-load", &format!(
        "{} && grep -q 'klp_test_stall: removed the module' /tmp/o && grep -q 'klp_test_cmdline: loaded and patched' /tmp/o \
         && ! grep -q '^klp_test_stall ' /proc/modules && ! ls /run/kpatch-rs | grep -q journal",
        kp(&format!("load {m}/klp_test_cmdline.ko"), 0)
    ));
    t.check("kill-cleanup", &kp("unload klp_test_cmdline", 0));
    t.check(
        "rmmod-sleeper",
        "rmmod klp_test_sleeper && ! pidof klp_sleeper",
    );
    // Signatures enforced from now on (it cannot be turned off again): an unsigned module is
    // refused by kpatch-rs before finit_module, so the kernel never logs its own rejection.
    t.check("unsigned-refused", &format!(
        "echo 1 > /sys/module/module/parameters/sig_enforce && {} \
         && grep -q 'klp_test_cmdline.ko: module klp_test_cmdline is not signed, and the kernel enforces module signatures (/sys/module/module/parameters/sig_enforce is Y); refused before finit_module' /tmp/o \
         && ! grep -q '^klp_test_cmdline ' /proc/modules && ! dmesg | grep -q 'Loading of unsigned module is rejected'",
        kp(&format!("load {m}/klp_test_cmdline.ko"), 1)
    ));
    t.check("dmesg-livepatch", "dmesg | grep -E 'livepatch|klp_' >/dev/console; \
         dmesg | grep -q \"enabling patch 'klp_test_stall'\" && dmesg | grep -q 'livepatch: signaling remaining tasks' \
         && dmesg | grep -q \"'klp_test_stall': unpatching complete\"");
    t.check(
        "dmesg-clean",
        "! dmesg | grep -E 'WARNING:|Call Trace|BUG:|Oops|general protection'",
    );
    t
}

/// The module's bytes with the kernel release in its vermagic replaced (same length).
fn for_other_kernel(ko: &[u8], abi: &str) -> (Vec<u8>, String) {
    // 6.1.0-56-amd64 -> 6.1.0-99-amd64 (or -88- if it was -99-).
    let parts: Vec<&str> = abi.splitn(3, '-').collect();
    assert_eq!(parts.len(), 3, "unexpected ABI {abi}");
    let num: String = parts[1]
        .chars()
        .map(|c| if c == '9' { '8' } else { '9' })
        .collect();
    let other = format!("{}-{num}-{}", parts[0], parts[2]);
    let needle = format!("vermagic={abi} ");
    let pos = ko
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .expect("vermagic in .modinfo");
    let mut out = ko.to_vec();
    out[pos..pos + needle.len()].copy_from_slice(format!("vermagic={other} ").as_bytes());
    (out, other)
}

/// The module's bytes with the CRC of `module_layout` in `__versions` changed, so that the
/// kernel (not kpatch-rs, whose vermagic check passes) refuses it. A `__versions` entry is
/// an 8-byte CRC followed by the 56-byte NUL-padded name.
fn with_bad_crc(ko: &[u8]) -> Vec<u8> {
    let name = b"module_layout\0";
    let pos = ko
        .windows(name.len())
        .position(|w| w == name)
        .expect("module_layout in __versions");
    let mut out = ko.to_vec();
    for b in &mut out[pos - 8..pos - 4] {
        *b ^= 0xff;
    }
    out
}

#[test]
fn manage_patches_on_a_debian_guest() {
    if !enabled() {
        return;
    }
    let kernel = DebianKernel::default_target().expect("default target");
    eprintln!("target {} ({})", kernel.abi, kernel.version);
    let vmlinux = kernel.vmlinux().expect("vmlinux");
    let kbuild = kernel.kbuild_dir().expect("headers");

    let work = std::env::temp_dir().join(format!("kpatch-rs-guest-manage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let kos = klp_test_modules(&kbuild, &work);

    let cmdline_ko = std::fs::read(work.join("klp_test_cmdline.ko")).unwrap();
    let (other_ko, other_kernel) = for_other_kernel(&cmdline_ko, &kernel.abi);
    let other = work.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("klp_test_other.ko"), other_ko).unwrap();
    std::fs::write(other.join("klp_test_crc.ko"), with_bad_crc(&cmdline_ko)).unwrap();
    let xz = {
        use std::io::Write;
        let mut enc = xz2::write::XzEncoder::new(Vec::new(), 6);
        enc.write_all(&cmdline_ko).unwrap();
        enc.finish().unwrap()
    };

    let t = script(&other_kernel);
    let mut img = Initramfs::new();
    img.add_busybox().expect("busybox");
    for ko in &kos {
        img.add_module(ko).unwrap();
    }
    img.add_module(&other.join("klp_test_other.ko")).unwrap();
    img.add_module(&other.join("klp_test_crc.ko")).unwrap();
    img.file("/root/klp_test_cmdline.ko.xz", 0o644, xz);
    add_kpatch_rs(&mut img);
    img.add_init(&t.render());
    let cpio = work.join("initramfs.cpio");
    img.write_to(&cpio).unwrap();

    let mut cfg = GuestConfig::new(&vmlinux, &cpio);
    cfg.timeout = Duration::from_secs(420);
    let log = std::env::temp_dir().join("kpatch-rs-guest-manage.log");
    cfg.log_file = Some(log.clone());
    let run = boot(&cfg).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "boot: script started after {:?}, QEMU exited after {:?} (log: {})",
        run.booted_after.unwrap_or_default(),
        run.elapsed,
        log.display()
    );
    let _ = std::fs::remove_dir_all(&work);

    run.verdict(&t).unwrap_or_else(|e| panic!("{e}"));
}
