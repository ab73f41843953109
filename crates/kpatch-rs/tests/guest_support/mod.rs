//! Helpers for the guest tests that run the real kpatch-rs binary on a Debian kernel under QEMU:
//! the binary and its shared libraries in the initramfs, the klp-test fixture modules, and a
//! shell wrapper that checks kpatch-rs's exit status.

#![allow(dead_code)]

use kpatch_guest::module_build::build_external_module;
use kpatch_guest::Initramfs;
use std::path::{Path, PathBuf};

pub fn enabled() -> bool {
    if std::env::var("KPATCH_RS_GUEST_TESTS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!(
        "skipped: set KPATCH_RS_GUEST_TESTS=1 to download Debian packages and boot QEMU guests"
    );
    false
}

/// Run kpatch-rs with its output in /tmp/o (copied to the console), and check its exit status.
pub fn kp(args: &str, rc: u8) -> String {
    format!(
        "kpatch-rs {args} >/tmp/o 2>&1; krs_rc=$?; echo \"--- kpatch-rs {args} (rc $krs_rc)\" >/dev/console; \
         cat /tmp/o >/dev/console; [ $krs_rc = {rc} ]"
    )
}

/// Shared libraries the binary needs (from ldd), to copy into the initramfs at the same paths.
pub fn shared_libs(exe: &Path) -> Vec<PathBuf> {
    let out = std::process::Command::new("ldd")
        .arg(exe)
        .output()
        .expect("running ldd");
    assert!(
        out.status.success(),
        "ldd {}: {}",
        exe.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

pub fn add_with_parents(img: &mut Initramfs, guest: &Path, host: &Path, mode: u32) {
    let mut dir = PathBuf::from("/");
    for c in guest.parent().unwrap().components().skip(1) {
        dir.push(c);
        img.dir(dir.to_str().unwrap(), 0o755);
    }
    img.host_file(guest.to_str().unwrap(), mode, host).unwrap();
}

/// The kpatch-rs binary under test as /bin/kpatch-rs, with its shared libraries.
pub fn add_kpatch_rs(img: &mut Initramfs) {
    let exe = Path::new(env!("CARGO_BIN_EXE_kpatch-rs"));
    img.host_file("/bin/kpatch-rs", 0o755, exe).unwrap();
    for lib in shared_libs(exe) {
        add_with_parents(img, &lib, &lib, 0o755);
    }
}

/// The klp-test fixture modules (crates/kpatch-kernel/tests/fixtures/klp-test) built against
/// `kbuild` in `work`; returns the .ko files.
pub fn klp_test_modules(kbuild: &Path, work: &Path) -> Vec<PathBuf> {
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../kpatch-kernel/tests/fixtures/klp-test");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, work.join(p.file_name().unwrap())).unwrap();
    }
    let kos = build_external_module(kbuild, work).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(kos.len(), 4, "{kos:?}");
    kos
}

/// `tests/data/NAME.c` compiled statically into `work/NAME`, for a busybox guest (which has no
/// shared C library).
pub fn static_test_program(work: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/{name}.c"));
    let out = work.join(name);
    let r = std::process::Command::new("gcc")
        .args(["-O2", "-static", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .expect("running gcc");
    assert!(
        r.status.success(),
        "gcc {}: {}",
        src.display(),
        String::from_utf8_lossy(&r.stderr)
    );
    out
}
