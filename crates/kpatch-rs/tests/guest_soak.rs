//! Soak: a cumulative (atomic replace) patch built by `kpatch-rs build` from
//! examples/cmdline-string.patch and meminfo-string.patch, loaded and unloaded by the real binary
//! 100 times on Debian's 6.1 kernel under QEMU TCG (2 vCPUs) while a workload runs at nice 19 (busybox has renice, not nice): a
//! busy loop, fork and exit, file I/O, and HTTP over loopback (busybox httpd and wget). Each cycle checks that the
//! patch is live after the load and gone after the unload. At the end: no oops, WARN or BUG,
//! no patch and no module left, the workload still alive, and the unreclaimable slab (after
//! dropping caches, workload stopped) no more than 1 MiB above what it was after three warm-up
//! cycles. Prints the time per cycle. One build, one boot. Gated by KPATCH_RS_GUEST_TESTS=1.

mod guest_support;

use guest_support::{add_kpatch_rs, enabled};
use kpatch_guest::{boot, GuestConfig, Initramfs, TestScript};
use kpatch_target::DebianKernel;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const CYCLES: u32 = 100;
/// The most the unreclaimable slab may grow over the cycles, in KiB.
const SLAB_GROWTH_KIB: u64 = 1024;
const MODULE: &str = "/lib/modules/livepatch-soak.ko";

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn script() -> TestScript {
    let mut t = TestScript::new();
    t.shell(
        "ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up\n\
         mkdir -p /tmp/www && dd if=/dev/zero of=/tmp/www/blob bs=64k count=4 2>/dev/null\n\
         httpd -p 127.0.0.1:8080 -h /tmp/www >/dev/null 2>&1 </dev/null\n\
         wl_add() { echo $1 >> /tmp/wl.pids; renice -n 19 -p $1 >/dev/null; }\n\
         wl_start() {\n\
           : > /tmp/wl.pids\n\
           (while :; do :; done) >/dev/null 2>&1 </dev/null & wl_add $!\n\
           (while :; do /bin/true; done) >/dev/null 2>&1 </dev/null & wl_add $!\n\
           (while :; do dd if=/dev/zero of=/tmp/io bs=64k count=16; cat /tmp/io; rm -f /tmp/io; done) >/dev/null 2>&1 </dev/null & wl_add $!\n\
           (while :; do wget -q -O /dev/null http://127.0.0.1:8080/blob; done) >/dev/null 2>&1 </dev/null & wl_add $!\n\
         }\n\
         wl_alive() { for p in $(cat /tmp/wl.pids); do [ -d /proc/$p ] || return 1; done; }\n\
         wl_stop() { for p in $(cat /tmp/wl.pids); do kill $p; done; sleep 1; }\n\
         slab() { sync; echo 3 > /proc/sys/vm/drop_caches; awk '/^SUnreclaim:/ {print $2}' /proc/meminfo; }\n\
         cycle() {\n\
           kpatch-rs load MODULE >/tmp/l.out 2>&1 || { echo \"load failed:\"; cat /tmp/l.out; return 1; }\n\
           grep -q 'kpatch-rs=live' /proc/cmdline || { echo 'not live after load'; return 1; }\n\
           kpatch-rs unload livepatch_soak >/tmp/u.out 2>&1 || { echo \"unload failed:\"; cat /tmp/u.out; return 1; }\n\
           ! grep -q 'kpatch-rs=live' /proc/cmdline || { echo 'still live after unload'; return 1; }\n\
         }"
        .replace("MODULE", MODULE)
        .as_str(),
    );
    t.check("workload-serves", "wl_start; sleep 2; wl_alive && wget -q -O - http://127.0.0.1:8080/blob | wc -c | grep -qx 262144");
    t.check(
        "warm-up",
        "t0=$(cut -d' ' -f1 /proc/uptime); for i in 1 2 3; do cycle || return 1; done; \
         echo \"soak warm-up: 3 cycles from $t0 to $(cut -d' ' -f1 /proc/uptime)\" >/dev/console",
    );
    t.check(
        "slab-before",
        "wl_stop; slab > /tmp/slab.before; echo \"slab before: $(cat /tmp/slab.before) kB\" >/dev/console; wl_start",
    );
    t.check(
        "cycles",
        &format!(
            "i=0; while [ $i -lt {CYCLES} ]; do \
               t0=$(cut -d' ' -f1 /proc/uptime); cycle || {{ echo \"cycle $i\"; return 1; }}; \
               t1=$(cut -d' ' -f1 /proc/uptime); echo \"$t0 $t1\" >> /tmp/cycles; i=$((i+1)); \
               echo \"soak cycle $i: $t0 -> $t1\" >/dev/console; \
             done; wl_alive || {{ echo 'the workload died'; return 1; }}; \
             awk '{{d=$2-$1; s+=d; if(min==\"\"||d<min)min=d; if(d>max)max=d}} END {{printf \"soak: %d cycles, seconds per cycle: min %.2f avg %.2f max %.2f\\n\", NR, min, s/NR, max}}' /tmp/cycles >/dev/console; \
             [ $(wc -l < /tmp/cycles) = {CYCLES} ]"
        ),
    );
    t.check(
        "slab-after",
        &format!(
            "wl_stop; slab > /tmp/slab.after; b=$(cat /tmp/slab.before); a=$(cat /tmp/slab.after); \
             echo \"slab after: $a kB (before $b kB, growth $((a-b)) kB)\" >/dev/console; [ $((a-b)) -le {SLAB_GROWTH_KIB} ]"
        ),
    );
    t.check(
        "nothing-left",
        "[ -z \"$(ls /sys/kernel/livepatch)\" ] && ! grep -q '^livepatch_soak ' /proc/modules \
         && [ -z \"$(ls /run/kpatch-rs 2>/dev/null)\" ]",
    );
    t.check(
        "dmesg-clean",
        "! dmesg | grep -E 'WARNING:|Call Trace|BUG:|Oops|general protection'",
    );
    t
}

#[test]
fn soak_100_cycles_of_a_cumulative_patch_under_load() {
    if !enabled() {
        return;
    }
    let kernel = DebianKernel::default_target().expect("default target");
    eprintln!("target {} ({})", kernel.abi, kernel.version);
    let vmlinux = kernel.vmlinux().expect("vmlinux");
    let out = tempfile::tempdir().unwrap();
    let r = Command::new(env!("CARGO_BIN_EXE_kpatch-rs"))
        .arg("build")
        .arg(examples().join("cmdline-string.patch"))
        .arg(examples().join("meminfo-string.patch"))
        .args(["--name", "soak", "--kernel", &kernel.abi, "-o"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        r.status.success(),
        "build failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let ko = out.path().join("livepatch-soak.ko");
    assert!(ko.is_file(), "{}", String::from_utf8_lossy(&r.stderr));

    let t = script();
    let mut img = Initramfs::new();
    img.add_busybox().expect("busybox");
    img.host_file(MODULE, 0o644, &ko).unwrap();
    add_kpatch_rs(&mut img);
    img.add_init(&t.render());
    let cpio = out.path().join("initramfs.cpio");
    img.write_to(&cpio).unwrap();

    let mut cfg = GuestConfig::new(&vmlinux, &cpio);
    cfg.cpus = 2;
    cfg.memory_mb = 1024;
    cfg.timeout = Duration::from_secs(840);
    let log = std::env::temp_dir().join("kpatch-rs-guest-soak.log");
    cfg.log_file = Some(log.clone());
    let run = boot(&cfg).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "boot: script started after {:?}, QEMU exited after {:?} (log: {})",
        run.booted_after.unwrap_or_default(),
        run.elapsed,
        log.display()
    );
    for l in run
        .lines
        .iter()
        .filter(|l| l.starts_with("soak:") || l.starts_with("slab "))
    {
        eprintln!("{l}");
    }
    run.verdict(&t).unwrap_or_else(|e| panic!("{e}"));
}
