//! The kernel's livepatch selftest scenarios (tools/testing/selftests/livepatch), on modules
//! built by `kpatch-rs build` from source patches and loaded by the real binary, on Debian's
//! 6.1 kernel under QEMU TCG, in one boot:
//!
//! - a basic patch, and the sysfs attributes of a patch and their permissions;
//! - ftrace: the patched function traced while patched, and traced while two more patches are
//!   loaded and unloaded over it;
//! - kprobes on the patched function and on its replacement in the livepatch module;
//! - stacked patches (`-R`): the top one wins, unloading the top restores the one below,
//!   unloading the one below keeps the top, the last loaded is the top; then atomic replace over
//!   the stack;
//! - a pre-patch callback that fails, for vmlinux (the load is refused, nothing is left) and
//!   for a module that comes later (the module's load is refused, the patch stays);
//! - a busy target: a reader asleep in the patched pipe_read stalls the transition, which is
//!   reversed (--no-signal), then completes once the reader is signalled, and unloads the same way;
//! - a system call (newuname) patched and unpatched while 128 processes call it in a loop on
//!   two vCPUs: every result is the old or the new one, every process saw both, and none
//!   switches more than twice. (The guest runs with single-threaded TCG: multi-threaded TCG
//!   hung this scenario, for the kernel's own function tracer too; see `kpatch_guest::TcgThread`.)
//!
//! The other scenarios run on kpatch-rs-built modules in the integration corpus
//! (tests/integration): a module target loaded before the patch, after it, and removed while
//! patched (module-zram); all four callbacks, for vmlinux (callbacks-shadow) and for a module
//! that comes later (module-zram); shadow variables allocated and freed (callbacks-shadow).
//! Gated by KPATCH_RS_GUEST_TESTS=1.

mod guest_support;

use guest_support::{add_kpatch_rs, enabled, kp, static_test_program};
use kpatch_guest::{boot, GuestConfig, Initramfs, TcgThread, TestScript};
use kpatch_target::DebianKernel;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const LP: &str = "/sys/kernel/livepatch";
const T: &str = "/sys/kernel/tracing";
/// Processes calling uname(2) in the system-call scenario.
const HAMMERS: u32 = 128;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `kpatch-rs build PATCHES --name NAME [EXTRA]` for the target; the module's path.
fn build(abi: &str, out: &Path, name: &str, patches: &[PathBuf], extra: &[&str]) -> PathBuf {
    let r = Command::new(env!("CARGO_BIN_EXE_kpatch-rs"))
        .arg("build")
        .args(patches)
        .args(["--name", name, "--kernel", abi, "-o"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        r.status.success(),
        "build {name}: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let ko = out.join(format!("livepatch-{name}.ko"));
    assert!(ko.is_file(), "{}", String::from_utf8_lossy(&r.stderr));
    ko
}

fn ko(name: &str) -> String {
    format!("/lib/modules/livepatch-{name}.ko")
}

/// The patches loaded now, in sysfs order, as one line.
fn loaded_are(names: &str) -> String {
    format!("[ \"$(ls {LP} | tr '\\n' ' ')\" = '{names}' ]")
}

/// Nothing of the patch `m` left: no sysfs directory, no module, no operation journal.
fn nothing_left(m: &str) -> String {
    format!(
        "[ ! -e {LP}/{m} ] && ! grep -q '^{m} ' /proc/modules && [ -z \"$(ls /run/kpatch-rs 2>/dev/null)\" ]"
    )
}

fn basic_sysfs_ftrace_kprobes_stacking(t: &mut TestScript) {
    let v1 = format!("{LP}/livepatch_scn_v1");
    t.check("basic:unpatched", "! grep -q 'kpatch-rs=' /proc/cmdline");
    t.check(
        "basic:load",
        &format!(
            "{} && grep -q ' kpatch-rs=live$' /proc/cmdline",
            kp(&format!("load {}", ko("scn-v1")), 0)
        ),
    );
    t.check(
        "sysfs:attributes",
        &format!(
            "[ \"$(stat -c %a {v1}/enabled)\" = 644 ] && [ \"$(stat -c %a {v1}/transition)\" = 444 ] \
             && [ \"$(stat -c %a {v1}/force)\" = 200 ] && [ \"$(stat -c %a {v1}/vmlinux/patched)\" = 444 ] \
             && [ -d '{v1}/vmlinux/cmdline_proc_show,1' ] && [ \"$(cat {v1}/enabled)\" = 1 ] \
             && [ \"$(cat {v1}/transition)\" = 0 ] && [ \"$(cat {v1}/vmlinux/patched)\" = 1 ]"
        ),
    );
    t.check(
        "sysfs:bad-writes-refused",
        &format!(
            "! echo 1 2>/dev/null > {v1}/transition && ! echo 1 2>/dev/null > {v1}/force \
             && ! cat {v1}/force 2>/dev/null && ! echo 2 2>/dev/null > {v1}/enabled \
             && ! echo 1 2>/dev/null > {v1}/enabled && ! echo 0 2>/dev/null > {v1}/vmlinux/patched \
             && [ \"$(cat {v1}/enabled)\" = 1 ] && grep -q ' kpatch-rs=live$' /proc/cmdline"
        ),
    );

    // ftrace: the patched function traced while patched.
    t.shell(&format!(
        "[ -e {T}/trace ] || mount -t tracefs nodev {T}\n\
         trace_calls() {{ echo > {T}/trace; cat /proc/cmdline >/dev/null; grep -c ' cmdline_proc_show' {T}/trace; }}"
    ));
    t.check(
        "ftrace:patched-function-traced",
        &format!(
            "echo cmdline_proc_show > {T}/set_ftrace_filter && echo function > {T}/current_tracer \
             && [ \"$(trace_calls)\" -ge 1 ] && grep -q ' kpatch-rs=live$' /proc/cmdline"
        ),
    );

    // Stacking, with the tracer on: the patch loaded last is the one that runs.
    t.check(
        "stack:second-on-top",
        &format!(
            "{} && grep -q ' kpatch-rs=live-v2$' /proc/cmdline && grep -q '^kpatch-rs: *live' /proc/meminfo \
             && {}",
            kp(&format!("load {}", ko("scn-v2")), 0),
            loaded_are("livepatch_scn_v1 livepatch_scn_v2 ")
        ),
    );
    t.check(
        "ftrace:traced-function-patched-again",
        "[ \"$(trace_calls)\" -ge 1 ] && grep -q ' kpatch-rs=live-v2$' /proc/cmdline",
    );

    // kprobes on the original function and on its replacement in the top module. With
    // livepatch modules loaded the bare name is ambiguous (the kernel refuses
    // `p:krs/old cmdline_proc_show` with EADDRNOTAVAIL, as 6.1 stable does), so the original is
    // probed at its address and the replacement as MODULE:SYMBOL.
    t.check(
        "kprobe:bare-name-is-ambiguous",
        &format!("! echo 'p:krs/old cmdline_proc_show' 2>/dev/null >> {T}/kprobe_events"),
    );
    t.check(
        "kprobe:on-patched-function",
        &format!(
            "a=$(awk '$3 == \"cmdline_proc_show\" && NF == 3 {{print $1}}' /proc/kallsyms) && [ -n \"$a\" ] \
             && echo \"p:krs/old 0x$a\" >> {T}/kprobe_events \
             && echo 'p:krs/new livepatch_scn_v2:cmdline_proc_show' >> {T}/kprobe_events \
             && echo 1 > {T}/events/krs/enable && echo > {T}/trace \
             && grep -q ' kpatch-rs=live-v2$' /proc/cmdline \
             && grep -q ' old: (cmdline_proc_show+0x0' {T}/trace \
             && grep -q ' new: (cmdline_proc_show+0x0' {T}/trace"
        ),
    );
    t.check(
        "kprobe:removed",
        &format!(
            "echo 0 > {T}/events/krs/enable && echo '-:krs/new' >> {T}/kprobe_events \
             && echo '-:krs/old' >> {T}/kprobe_events && [ -z \"$(cat {T}/kprobe_events)\" ]"
        ),
    );

    t.check(
        "stack:unload-top-restores-below",
        &format!(
            "{} && grep -q ' kpatch-rs=live$' /proc/cmdline && ! grep -q '^kpatch-rs:' /proc/meminfo && {} \
             && ! grep -q '^livepatch_scn_v2 ' /proc/modules",
            kp("unload livepatch_scn_v2", 0),
            loaded_are("livepatch_scn_v1 ")
        ),
    );
    t.check(
        "stack:top-again",
        &format!(
            "{} && grep -q ' kpatch-rs=live-v2$' /proc/cmdline",
            kp(&format!("load {}", ko("scn-v2")), 0)
        ),
    );
    t.check(
        "stack:unload-below-keeps-top",
        &format!(
            "{} && grep -q ' kpatch-rs=live-v2$' /proc/cmdline && {} && ! grep -q '^livepatch_scn_v1 ' /proc/modules",
            kp("unload livepatch_scn_v1", 0),
            loaded_are("livepatch_scn_v2 ")
        ),
    );
    t.check(
        "stack:last-loaded-is-top",
        &format!(
            "{} && grep -q ' kpatch-rs=live$' /proc/cmdline && grep -q '^kpatch-rs: *live' /proc/meminfo && {}",
            kp(&format!("load {}", ko("scn-v1")), 0),
            loaded_are("livepatch_scn_v1 livepatch_scn_v2 ")
        ),
    );
    t.check(
        "ftrace:still-traced-then-off",
        &format!(
            "[ \"$(trace_calls)\" -ge 1 ] && echo nop > {T}/current_tracer && echo > {T}/set_ftrace_filter \
             && [ \"$(trace_calls)\" = 0 ]"
        ),
    );

    // Atomic replace over the stack: only the replacing patch's changes remain.
    t.check(
        "replace:over-the-stack",
        &format!(
            "{} && {} && ! grep -q 'kpatch-rs=' /proc/cmdline && ! grep -q '^kpatch-rs:' /proc/meminfo \
             && grep -q 'kpatch-rs' /proc/version && kpatch-rs list > /tmp/list && cat /tmp/list \
             && grep -q livepatch_scn_replace /tmp/list && ! grep -q 'livepatch_scn_v[12].*enabled' /tmp/list",
            kp(&format!("load {}", ko("scn-replace")), 0),
            loaded_are("livepatch_scn_replace ")
        ),
    );
    t.check(
        "replace:replaced-modules-removable",
        "for m in livepatch_scn_v1 livepatch_scn_v2; do \
           if grep -q \"^$m \" /proc/modules; then kpatch-rs unload $m || rmmod $m || return 1; fi; \
           ! grep -q \"^$m \" /proc/modules || return 1; done",
    );
    t.check(
        "replace:unload",
        &format!(
            "{} && ! grep -q 'kpatch-rs' /proc/version && {}",
            kp("unload livepatch_scn_replace", 0),
            nothing_left("livepatch_scn_replace")
        ),
    );
}

fn failing_callbacks(t: &mut TestScript, zram: &[String]) {
    t.shell("dmesg -c >/dev/null");
    t.check(
        "callback:vmlinux-pre-patch-fails",
        &format!(
            "kpatch-rs load {} >/tmp/o 2>&1; r=$?; cat /tmp/o; [ $r != 0 ] \
             && grep -q 'livepatch_scn_cb_vmlinux: the patch.s own pre-patch callback for vmlinux failed' /tmp/o \
             && dmesg | grep -q 'kpatch-rs callback: pre-patch refuses vmlinux' \
             && dmesg | grep -q \"pre-patch callback failed for object 'vmlinux'\" \
             && ! grep -q 'kpatch-rs=' /proc/cmdline && {} && [ -z \"$(ls {LP})\" ]",
            ko("scn-cb-vmlinux"),
            nothing_left("livepatch_scn_cb_vmlinux")
        ),
    );
    let (deps, target) = zram.split_at(zram.len() - 1);
    let target = &target[0];
    let mut insmod_deps = String::new();
    for d in deps {
        insmod_deps.push_str(&format!("insmod {d} && "));
    }
    t.check(
        "callback:module-patch-loads-without-its-target",
        &format!(
            "{insmod_deps}! grep -q '^zram ' /proc/modules && {}",
            kp(&format!("load {}", ko("scn-cb-zram")), 0)
        ),
    );
    t.check(
        "callback:module-pre-patch-fails-so-the-module-does-not-load",
        &format!(
            "! insmod {target} && ! grep -q '^zram ' /proc/modules \
             && dmesg | grep -q 'kpatch-rs zram callback: pre-patch refuses zram' \
             && dmesg | grep -q \"pre-patch callback failed for object 'zram'\" \
             && [ \"$(cat {LP}/livepatch_scn_cb_zram/enabled)\" = 1 ]"
        ),
    );
    t.check(
        "callback:module-loads-once-the-patch-is-gone",
        &format!(
            "{} && {} && insmod {target} && [ -e /sys/block/zram0/disksize ] \
             && ! grep -q kpatch-rs /sys/block/zram0/disksize && rmmod zram",
            kp("unload livepatch_scn_cb_zram", 0),
            nothing_left("livepatch_scn_cb_zram")
        ),
    );
}

fn busy_target(t: &mut TestScript) {
    // The loads run as plain steps, not checks: a check's output is read through a pipe, so
    // the script's own shell would sleep in pipe_read too.
    let pipe = "livepatch_scn_pipe";
    t.shell("(sleep 100000) | cat >/dev/null &\nsleep 1");
    t.check("busy:reader-asleep", "pidof cat");
    t.shell(&format!(
        "kpatch-rs load --no-signal --wait 3 {} >/tmp/pipe1.out 2>&1; echo $? >/tmp/pipe1.rc",
        ko("scn-pipe")
    ));
    t.check(
        "busy:stalled-then-reversed",
        &format!(
            "cat /tmp/pipe1.out; [ \"$(cat /tmp/pipe1.rc)\" = 2 ] && grep -q 'stalled and was reversed' /tmp/pipe1.out \
             && grep -q \"$(pidof cat)\" /tmp/pipe1.out && {} && pidof cat",
            nothing_left(pipe)
        ),
    );
    t.shell(&format!(
        "kpatch-rs load --wait 3 {} >/tmp/pipe2.out 2>&1; echo $? >/tmp/pipe2.rc",
        ko("scn-pipe")
    ));
    t.check(
        "busy:reader-signalled-then-done",
        &format!(
            "cat /tmp/pipe2.out; [ \"$(cat /tmp/pipe2.rc)\" = 0 ] && [ \"$(cat {LP}/{pipe}/enabled)\" = 1 ] \
             && [ \"$(cat {LP}/{pipe}/transition)\" = 0 ] && pidof cat"
        ),
    );
    t.shell(&format!(
        "kpatch-rs unload --wait 3 {pipe} >/tmp/pipe3.out 2>&1; echo $? >/tmp/pipe3.rc"
    ));
    t.check(
        "busy:unloaded-the-same-way",
        &format!(
            "cat /tmp/pipe3.out; [ \"$(cat /tmp/pipe3.rc)\" = 0 ] && {} && pidof cat",
            nothing_left(pipe)
        ),
    );
    t.shell("kill $(pidof sleep) $(pidof cat) 2>/dev/null; sleep 1");
}

fn syscall_under_load(t: &mut TestScript) {
    t.shell(&format!(
        "rm -f /tmp/hammer.stop /tmp/hammer.ready\n\
         ( /bin/uname-hammer {HAMMERS} /tmp/hammer.stop /tmp/hammer.ready >/tmp/hammer.out 2>&1; echo $? >/tmp/hammer.rc ) &"
    ));
    t.check_eventually("syscall:callers-running", "[ -e /tmp/hammer.ready ]", 120);
    t.check(
        "syscall:patched-under-load",
        &format!(
            "uname -m | grep -qx x86_64 && {} && uname -m | grep -qx x86_64-kpatch-rs",
            kp(&format!("load {}", ko("scn-uname")), 0)
        ),
    );
    t.shell("sleep 3");
    t.check(
        "syscall:unpatched-under-load",
        &format!(
            "{} && uname -m | grep -qx x86_64 && {}",
            kp("unload livepatch_scn_uname", 0),
            nothing_left("livepatch_scn_uname")
        ),
    );
    t.shell("sleep 2; touch /tmp/hammer.stop");
    t.check_eventually("syscall:callers-done", "[ -s /tmp/hammer.rc ]", 120);
    t.check(
        "syscall:no-wrong-result",
        &format!(
            "cat /tmp/hammer.out; cat /tmp/hammer.out >/dev/console; [ \"$(cat /tmp/hammer.rc)\" = 0 ] \
             && grep -q '^uname-hammer: {HAMMERS} processes, .* 0 wrong; {HAMMERS} processes saw both' /tmp/hammer.out"
        ),
    );
}

fn script(zram: &[String]) -> TestScript {
    let mut t = TestScript::new();
    basic_sysfs_ftrace_kprobes_stacking(&mut t);
    failing_callbacks(&mut t, zram);
    busy_target(&mut t);
    syscall_under_load(&mut t);
    t.check(
        "kernel-log-clean",
        "dmesg | grep -E 'livepatch|kpatch-rs' >/dev/console; \
         ! dmesg | grep -E 'WARNING:|Call Trace|BUG:|Oops|general protection'",
    );
    t
}

#[test]
fn livepatch_selftest_scenarios_on_kpatch_rs_modules() {
    if !enabled() {
        return;
    }
    let kernel = DebianKernel::default_target().expect("default target");
    eprintln!("target {} ({})", kernel.abi, kernel.version);
    let abi = kernel.abi.as_str();
    let work = tempfile::Builder::new()
        .prefix("kpatch-rs-scenarios-")
        .tempdir()
        .unwrap();
    let out = work.path();
    let data = manifest().join("tests/data");
    let integration = manifest().join("../../tests/integration");
    let scn = data.join("scenarios");

    let started = Instant::now();
    let modules = vec![
        build(abi, out, "scn-v1", &[data.join("fleet-v1.patch")], &["-R"]),
        build(abi, out, "scn-v2", &[data.join("fleet-v2.patch")], &["-R"]),
        build(
            abi,
            out,
            "scn-replace",
            &[integration.join("proc-version-string.patch")],
            &[],
        ),
        build(
            abi,
            out,
            "scn-cb-vmlinux",
            &[scn.join("vmlinux-callback-fails.patch")],
            &[],
        ),
        build(
            abi,
            out,
            "scn-cb-zram",
            &[scn.join("module-callback-fails.patch")],
            &["-R"],
        ),
        build(
            abi,
            out,
            "scn-pipe",
            &[scn.join("busy-pipe-read.patch")],
            &[],
        ),
        build(
            abi,
            out,
            "scn-uname",
            &[integration.join("syscall-newuname.patch")],
            &[],
        ),
    ];
    let builds = started.elapsed();

    let mut img = Initramfs::new();
    img.add_busybox().expect("busybox");
    for m in &modules {
        let name = m.file_name().unwrap().to_str().unwrap();
        img.host_file(&format!("/lib/modules/{name}"), 0o644, m)
            .unwrap();
    }
    let zram = img
        .add_kernel_module(&kernel.modules_dir().expect("the target's modules"), "zram")
        .unwrap_or_else(|e| panic!("{e}"));
    img.host_file(
        "/bin/uname-hammer",
        0o755,
        &static_test_program(out, "uname-hammer"),
    )
    .unwrap();
    add_kpatch_rs(&mut img);
    let t = script(&zram);
    img.add_init(&t.render());
    let cpio = out.join("initramfs.cpio");
    img.write_to(&cpio).unwrap();

    let mut cfg = GuestConfig::new(kernel.vmlinux().expect("vmlinux"), &cpio);
    cfg.cpus = 2;
    // Two vCPUs on one host thread: multi-threaded TCG can run a stale int3 at a system call's
    // entry after ftrace rewrites it, and hang (see TcgThread).
    cfg.tcg_thread = TcgThread::Single;
    cfg.memory_mb = 1024;
    cfg.timeout = Duration::from_secs(900);
    let log = std::env::temp_dir().join("kpatch-rs-guest-scenarios.log");
    cfg.log_file = Some(log.clone());
    let run = boot(&cfg).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "scenarios: {} builds {:.0} s, one boot {:.0} s (console log: {})",
        modules.len(),
        builds.as_secs_f64(),
        run.elapsed.as_secs_f64(),
        log.display()
    );
    for l in run.lines.iter().filter(|l| l.starts_with("uname-hammer:")) {
        eprintln!("{l}");
    }
    run.verdict(&t).unwrap_or_else(|e| panic!("{e}"));
}
