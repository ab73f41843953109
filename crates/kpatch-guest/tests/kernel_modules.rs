//! Loads a module of the Debian kernel's own tree, with its dependencies, in a guest.
//! Gated by KPATCH_RS_GUEST_TESTS=1 (downloads packages, boots QEMU).

use kpatch_guest::{Guest, TestScript};
use kpatch_target::DebianKernel;
use std::time::Duration;

#[test]
fn ext4_and_its_dependencies_load_in_order() {
    if std::env::var("KPATCH_RS_GUEST_TESTS").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set KPATCH_RS_GUEST_TESTS=1 to download Debian packages and boot QEMU guests"
        );
        return;
    }
    let kernel = DebianKernel::default_target().expect("default target");
    let mut guest = Guest::for_kernel(&kernel).unwrap_or_else(|e| panic!("{e}"));
    guest.config.timeout = Duration::from_secs(300);
    let order = guest
        .initramfs
        .add_kernel_module(&kernel.modules_dir().unwrap(), "ext4")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        order.last().map(String::as_str),
        Some("/lib/modules/ext4.ko")
    );
    assert!(order.iter().any(|p| p.ends_with("/jbd2.ko")), "{order:?}");

    let mut t = TestScript::new();
    for path in &order {
        t.check(&format!("insmod-{path}"), &format!("insmod {path}"));
    }
    t.check("ext4-listed", "grep '^ext4 ' /proc/modules");
    t.check("ext4-registered", "grep -w ext4 /proc/filesystems");
    let run = guest.run(&t).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "boot: script after {:?}, total {:?}",
        run.booted_after.unwrap_or_default(),
        run.elapsed
    );
    assert!(run.done, "{}", run.tail(40));
    assert_eq!(run.results.len(), t.check_names().len(), "{}", run.log());
    assert!(
        run.failed().is_empty(),
        "{:#?}\n{}",
        run.failed(),
        run.log()
    );
    assert!(run.problems.is_empty(), "{:#?}", run.problems);
}
