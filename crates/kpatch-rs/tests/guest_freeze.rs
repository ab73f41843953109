//! The two consistency models on a Debian 6.1 guest (TCG, 2 vCPUs), in one boot, with the real
//! kpatch-rs binary and the klp-test fixture modules:
//! - each mode (lazy, `--freeze`, `--freeze=blockers`) loads and unloads a real patch;
//! - a user task asleep, interruptibly, in the patched function holds lazy mode back but not
//!   `--freeze`, and `--freeze=blockers` freezes just that task;
//! - a freeze that cannot complete (a task in uninterruptible sleep) times out, thaws and
//!   changes nothing, naming the task and its stack;
//! - SIGKILL of kpatch-rs during a freeze, and during the transition after it, leaves no task
//!   frozen and no patch half-enabled (the watchdog thaws and reverts);
//! - with cgroup v2 mounted, the cgroup freezer is used and everything is thawed after.
//!
//! With KPATCH_RS_FREEZE_BENCH=1 the same boot also runs the benchmark of issue 11: for each
//! mode, the time to a finished transition and the longest pause seen by a probe that wakes
//! every millisecond and by kpatch-rs itself, printed as a table (no timing is asserted).
//! Gated by KPATCH_RS_GUEST_TESTS=1.

mod guest_support;

use guest_support::{add_kpatch_rs, enabled, klp_test_modules, kp, static_test_program};
use kpatch_guest::{boot, GuestConfig, Initramfs, TestScript};
use kpatch_target::DebianKernel;
use std::time::Duration;

const M: &str = "/lib/modules";
const LP: &str = "/sys/kernel/livepatch";

/// No process of the guest is stopped (`T`) and no livepatch is loaded.
const CLEAN: &str = "! grep -l '^State:.*(stopped)' /proc/[0-9]*/status 2>/dev/null | grep -q . && [ -z \"$(ls /sys/kernel/livepatch)\" ]";

/// Starts a reader asleep in klp_sleeper_read_wait() (interruptibly), its pid in /tmp/dd.pid.
fn start_reader(t: &mut TestScript, name: &str) {
    t.shell("rm -f /tmp/read.out; dd if=/proc/klp_test_read of=/tmp/read.out bs=64 count=1 2>/dev/null & echo $! >/tmp/dd.pid");
    t.check_eventually(
        name,
        "grep -q klp_sleeper_read_wait /proc/$(cat /tmp/dd.pid)/stack",
        20,
    );
}

/// Starts a task in uninterruptible sleep (klp_sleeper_dwait, up to 15 s), its pid in /tmp/d.pid.
fn start_d_task(t: &mut TestScript, name: &str) {
    t.shell("cat /proc/klp_test_dwait >/dev/null & echo $! >/tmp/d.pid");
    t.check_eventually(
        name,
        "grep -q '^State:.*D' /proc/$(cat /tmp/d.pid)/status",
        20,
    );
}

fn release_d_task(t: &mut TestScript, name: &str) {
    t.shell("echo 1 > /proc/klp_test_dwait");
    // Gone, or a zombie the script's shell has not reaped.
    t.check_eventually(
        name,
        "! grep -qE '^State:.*(D|S|R|T)' /proc/$(cat /tmp/d.pid)/status 2>/dev/null",
        20,
    );
}

fn script(bench: bool) -> TestScript {
    let mut t = TestScript::new();
    t.check(
        "insmod-sleeper",
        &format!("insmod {M}/klp_test_sleeper.ko && sleep 1 && pidof klp_sleeper"),
    );
    // A workload: a busy loop, a sleeper, and the pause probe.
    t.shell("(while :; do :; done) & echo $! >/tmp/busy.pid; sleep 100000 & /bin/pause-probe /tmp/probe.us & echo $! >/tmp/probe.pid");

    // Each mode loads and unloads a real patch.
    for (mode, flag) in [
        ("lazy", ""),
        ("all", " --freeze"),
        ("blockers", " --freeze=blockers"),
    ] {
        t.check(
            &format!("{mode}-load"),
            &format!(
                "{} && grep -qx 'kpatch-rs klp_test_cmdline active' /proc/cmdline",
                kp(&format!("load {M}/klp_test_cmdline.ko{flag}"), 0)
            ),
        );
        t.check(
            &format!("{mode}-unload"),
            &format!(
                "{} && ! grep -q klp_test_cmdline /proc/cmdline && {CLEAN}",
                kp(&format!("unload klp_test_cmdline{flag}"), 0)
            ),
        );
    }

    // The sleeper in the patched function: lazy mode gives up (no signalling), --freeze does not.
    start_reader(&mut t, "reader-asleep");
    t.check(
        "lazy-held-back",
        &format!(
            "{} && grep -q 'dd' /tmp/o && grep -q 'klp_sleeper_read_wait' /tmp/o && {CLEAN}",
            kp(
                &format!("load {M}/klp_test_readwait.ko --wait 1 --no-signal"),
                2
            )
        ),
    );
    t.check(
        "freeze-moves-it",
        &format!(
            "{} && grep -q '\"outcome\":\"done\"' /tmp/o && grep -q '\"mode\":\"all\"' /tmp/o && grep -qE '\"tasks_frozen\":([3-9]|[1-9][0-9])' /tmp/o",
            kp(&format!("load {M}/klp_test_readwait.ko --freeze --json"), 0)
        ),
    );
    t.check_eventually(
        "reader-patched",
        "[ \"$(cat /tmp/read.out)\" = patched ]",
        20,
    );
    t.check(
        "freeze-unload",
        &format!("{} && {CLEAN}", kp("unload klp_test_readwait --freeze", 0)),
    );

    // --freeze=blockers: after the wait, only the reader is frozen.
    start_reader(&mut t, "reader-asleep-again");
    t.check(
        "blockers-freezes-one",
        &format!(
            "{} && grep -q '\"outcome\":\"done\"' /tmp/o && grep -q '\"tasks_frozen\":1,' /tmp/o",
            kp(
                &format!("load {M}/klp_test_readwait.ko --freeze=blockers --json --wait 3"),
                0
            )
        ),
    );
    t.check_eventually(
        "reader-patched-again",
        "[ \"$(cat /tmp/read.out)\" = patched ]",
        20,
    );
    t.check(
        "blockers-unload",
        &format!("{} && {CLEAN}", kp("unload klp_test_readwait", 0)),
    );

    // A task that cannot freeze: timeout, thaw, nothing loaded, the task named with its stack.
    start_d_task(&mut t, "d-task");
    t.check(
        "d-state-times-out",
        &format!(
            "{} && grep -q \"$(cat /tmp/d.pid) (cat), state D\" /tmp/o && grep -q klp_sleeper_dwait /tmp/o && grep -q 'nothing was changed' /tmp/o && {CLEAN}",
            kp(&format!("load {M}/klp_test_cmdline.ko --freeze --freeze-timeout 1"), 2)
        ),
    );
    release_d_task(&mut t, "d-task-gone");

    // SIGKILL while waiting for the freeze: the watchdog thaws. Watched from PID 1 with shell
    // builtins only: a process forked meanwhile (a check runs in a subshell) would be frozen.
    start_d_task(&mut t, "d-task-2");
    t.shell(&format!(
        "read krs_busy < /tmp/busy.pid; kpatch-rs load {M}/klp_test_cmdline.ko --freeze --freeze-timeout 20 >/tmp/k.out 2>&1 & krs_kp=$!; \
         krs_s=; krs_i=0; while [ \"$krs_s\" != T ] && [ $krs_i -lt 200000 ]; do krs_s=; \
         while read -r krs_a krs_b krs_c; do if [ \"$krs_a\" = State: ]; then krs_s=$krs_b; break; fi; done < /proc/$krs_busy/status; \
         krs_i=$((krs_i+1)); done; echo \"$krs_s\" > /tmp/seen.state; kill -9 $krs_kp"
    ));
    t.check(
        "frozen-then-killed",
        "[ \"$(cat /tmp/seen.state)\" = T ] || { cat /tmp/k.out; false; }",
    );
    t.check_eventually("watchdog-thawed", CLEAN, 10);
    release_d_task(&mut t, "d-task-2-gone");

    // SIGKILL during the transition after the thaw (klp_sleeper holds it open): reverted.
    t.shell(&format!("kpatch-rs load {M}/klp_test_stall.ko --freeze --wait 60 >/tmp/k.out 2>&1 & echo $! >/tmp/k.pid"));
    t.check_eventually(
        "stall-in-transition",
        &format!("[ \"$(cat {LP}/klp_test_stall/transition 2>/dev/null)\" = 1 ]"),
        20,
    );
    t.check("sigkill-during-transition", "kill -9 $(cat /tmp/k.pid)");
    t.check_eventually(
        "watchdog-reverted",
        &format!("{CLEAN} && ! grep -q '^klp_test_stall ' /proc/modules"),
        40,
    );

    // cgroup v2: the cgroup freezer for the tasks in a cgroup, signals for the rest.
    t.check(
        "cgroup2",
        "mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && mkdir /sys/fs/cgroup/work && echo $(cat /tmp/busy.pid) > /sys/fs/cgroup/work/cgroup.procs",
    );
    t.check(
        "cgroup-freeze",
        &format!(
            "{} && grep -q '\"outcome\":\"done\"' /tmp/o && [ \"$(cat /sys/fs/cgroup/work/cgroup.freeze)\" = 0 ] && [ ! -e /sys/fs/cgroup/kpatch-rs.exempt ] && grep -q 'frozen 0' /sys/fs/cgroup/work/cgroup.events",
            kp(&format!("load {M}/klp_test_cmdline.ko --freeze --json"), 0)
        ),
    );
    t.check(
        "cgroup-unload",
        &format!("{} && {CLEAN}", kp("unload klp_test_cmdline --freeze", 0)),
    );

    if bench {
        bench_rounds(&mut t);
    }
    t.check(
        "dmesg-clean",
        "! dmesg | grep -E 'WARNING:|Call Trace|BUG:|Oops|general protection'",
    );
    t
}

/// The benchmark: per mode, a reader asleep in the patched function, and the figures.
fn bench_rounds(t: &mut TestScript) {
    t.shell("kill -USR1 $(cat /tmp/probe.pid); sleep 3; kill -USR1 $(cat /tmp/probe.pid); sleep 0.2; echo \"BENCH baseline probe_us=$(cat /tmp/probe.us)\" >/dev/console");
    for round in 1..=3 {
        for (mode, flag) in [
            ("lazy", "--wait 2 --signal-wait 30"),
            ("all", "--freeze"),
            ("blockers", "--freeze=blockers --wait 2"),
        ] {
            start_reader(t, &format!("bench-{mode}-{round}-reader"));
            t.shell(&format!(
                "kill -USR1 $(cat /tmp/probe.pid); sleep 0.2; kpatch-rs load {M}/klp_test_readwait.ko {flag} --json >/tmp/j 2>/dev/null; \
                 kill -USR1 $(cat /tmp/probe.pid); sleep 0.2; echo \"BENCH {mode} probe_us=$(cat /tmp/probe.us) $(cat /tmp/j)\" >/dev/console; \
                 kpatch-rs unload klp_test_readwait >/dev/null 2>&1"
            ));
            t.check_eventually(
                &format!("bench-{mode}-{round}-done"),
                "[ \"$(cat /tmp/read.out)\" = patched ] && [ -z \"$(ls /sys/kernel/livepatch)\" ]",
                30,
            );
        }
    }
}

/// The benchmark table from the console's BENCH lines.
fn table(log: &str) -> String {
    let mut s = format!(
        "{:<10} {:>14} {:>12} {:>12} {:>10}\n",
        "mode", "transition_ms", "probe_max_ms", "tool_ms", "frozen"
    );
    for line in log
        .lines()
        .filter_map(|l| l.split_once("BENCH ").map(|(_, r)| r))
    {
        let mode = line.split_whitespace().next().unwrap_or("?");
        let probe: f64 = line
            .split("probe_us=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
            / 1000.0;
        let json = line
            .find('{')
            .and_then(|i| serde_json::from_str::<serde_json::Value>(&line[i..]).ok());
        let get = |k: &str| {
            json.as_ref()
                .and_then(|j| j[k].as_u64())
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into())
        };
        s.push_str(&format!(
            "{mode:<10} {:>14} {probe:>12.1} {:>12} {:>10}\n",
            get("transition_ms"),
            get("freeze_ms"),
            get("tasks_frozen")
        ));
    }
    s
}

#[test]
fn freeze_modes_on_a_debian_guest() {
    if !enabled() {
        return;
    }
    let bench = std::env::var("KPATCH_RS_FREEZE_BENCH").as_deref() == Ok("1");
    let kernel = DebianKernel::default_target().expect("default target");
    let vmlinux = kernel.vmlinux().expect("vmlinux");
    let kbuild = kernel.kbuild_dir().expect("headers");
    let work = tempfile::tempdir().unwrap();
    let kos = klp_test_modules(&kbuild, work.path());
    let t = script(bench);
    let mut img = Initramfs::new();
    img.add_busybox().expect("busybox");
    for ko in &kos {
        img.add_module(ko).unwrap();
    }
    img.host_file(
        "/bin/pause-probe",
        0o755,
        &static_test_program(work.path(), "pause-probe"),
    )
    .unwrap();
    add_kpatch_rs(&mut img);
    img.add_init(&t.render());
    let cpio = work.path().join("initramfs.cpio");
    img.write_to(&cpio).unwrap();
    let mut cfg = GuestConfig::new(&vmlinux, &cpio);
    cfg.cpus = 2;
    cfg.timeout = Duration::from_secs(if bench { 1200 } else { 600 });
    let log = std::env::temp_dir().join("kpatch-rs-guest-freeze.log");
    cfg.log_file = Some(log.clone());
    let run = boot(&cfg).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "boot: script after {:?}, QEMU exited after {:?} (log: {})",
        run.booted_after.unwrap_or_default(),
        run.elapsed,
        log.display()
    );
    if bench {
        println!(
            "freeze benchmark (TCG, 2 vCPUs; a reader asleep in the patched function):\n{}",
            table(&run.log())
        );
    }
    run.verdict(&t).unwrap_or_else(|e| panic!("{e}"));
}
