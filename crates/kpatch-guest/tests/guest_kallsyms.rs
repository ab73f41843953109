//! The target kernel's /proc/kallsyms read back from a guest (gated by KPATCH_RS_GUEST_TESTS=1).

use kpatch_guest::kallsyms::guest_kallsyms;
use kpatch_target::DebianKernel;

#[test]
fn kallsyms_from_guest_has_link_time_addresses() {
    if std::env::var("KPATCH_RS_GUEST_TESTS").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set KPATCH_RS_GUEST_TESTS=1 to download Debian packages and boot QEMU guests"
        );
        return;
    }
    let kernel = DebianKernel::default_target().expect("default target");
    let t0 = std::time::Instant::now();
    let path = guest_kallsyms(&kernel).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("kallsyms in {:?}", t0.elapsed());
    let text = std::fs::read_to_string(&path).unwrap();
    let syms: Vec<(u64, &str, &str)> = text
        .lines()
        .map(|l| {
            let mut f = l.split_whitespace();
            let addr = u64::from_str_radix(f.next().unwrap(), 16).unwrap();
            (addr, f.next().unwrap(), f.next().unwrap())
        })
        .collect();
    assert!(syms.len() > 50_000, "{} symbols", syms.len());
    let find = |n: &str| syms.iter().find(|s| s.2 == n).copied();
    // nokaslr: the kernel runs at its link address
    assert_eq!(find("_text").map(|s| s.0), Some(0xffff_ffff_8100_0000));
    let (addr, ty, _) = find("cmdline_proc_show").expect("cmdline_proc_show");
    assert_eq!(ty, "t");
    assert!(addr > 0xffff_ffff_8100_0000);
    // cached: a second call does not boot again
    let t1 = std::time::Instant::now();
    assert_eq!(guest_kallsyms(&kernel).unwrap(), path);
    assert!(t1.elapsed().as_secs() < 2);
}
