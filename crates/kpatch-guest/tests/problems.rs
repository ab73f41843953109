//! A crashing guest is reported as such (gated by KPATCH_RS_GUEST_TESTS=1).

use kpatch_guest::{Guest, ProblemKind, TestScript};
use kpatch_target::DebianKernel;
use std::time::Duration;

#[test]
fn sysrq_crash_is_reported_as_panic_and_guest_exits() {
    if std::env::var("KPATCH_RS_GUEST_TESTS").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set KPATCH_RS_GUEST_TESTS=1 to download Debian packages and boot QEMU guests"
        );
        return;
    }
    let kernel = DebianKernel::default_target().expect("default target");
    let mut guest = Guest::for_kernel(&kernel).unwrap_or_else(|e| panic!("{e}"));
    guest.config.timeout = Duration::from_secs(300);
    let mut t = TestScript::new();
    t.check("before", "true");
    t.shell("echo 1 > /proc/sys/kernel/sysrq\necho c > /proc/sysrq-trigger");
    t.check("after", "true");
    // panic=-1 reboots at once and -no-reboot turns that into QEMU's exit: no timeout
    let run = guest.run(&t).unwrap_or_else(|e| panic!("{e}"));
    assert!(run.result("before").is_some_and(|r| r.ok));
    assert!(run.result("after").is_none(), "{}", run.log());
    assert!(!run.done);
    let kinds: Vec<ProblemKind> = run.problems.iter().map(|p| p.kind).collect();
    assert!(
        kinds.contains(&ProblemKind::Panic),
        "{kinds:?}\n{}",
        run.log()
    );
    let panic = run
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::Panic)
        .unwrap();
    assert!(
        panic.line.contains("sysrq triggered crash"),
        "{}",
        panic.line
    );
}
