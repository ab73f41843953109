//! The target kernel's `/proc/kallsyms`, read from a guest boot and cached.
//!
//! Debian's image packages ship a stub System.map (the real one is in the ~850 MB `-dbg`
//! package) and the vmlinux has no symbol table, so the symbols of the running kernel are
//! taken from the kernel itself: boot once with `nokaslr` (addresses are then the link-time
//! ones), send `/proc/kallsyms` back, cache it at
//! `<cache>/kallsyms/<abi>_<version>/kallsyms`. About 95,000 lines, vmlinux only (no modules
//! are loaded).

use crate::{Guest, GuestError, TestScript};
use kpatch_target::DebianKernel;
use std::path::PathBuf;
use std::time::Duration;

/// The cached kallsyms of `kernel`, booting a guest to produce it on first use.
pub fn guest_kallsyms(kernel: &DebianKernel) -> Result<PathBuf, GuestError> {
    let dir = kernel
        .store()
        .root()
        .join("kallsyms")
        .join(format!("{}_{}", kernel.abi, kernel.version));
    let out = dir.join("kallsyms");
    if out.is_file() {
        return Ok(out);
    }
    let mut guest = Guest::for_kernel(kernel)?;
    guest.config.append.push_str(" nokaslr");
    guest.config.timeout = Duration::from_secs(600);
    let mut t = TestScript::new();
    t.shell("echo 0 > /proc/sys/kernel/kptr_restrict");
    t.send_file("kallsyms", "/proc/kallsyms");
    let run = guest.run(&t)?;
    let data = run.file("kallsyms")?;
    // per-cpu symbols come first with small offsets; the text symbols tell if addresses are shown
    let text = String::from_utf8_lossy(&data);
    let shown = text
        .lines()
        .find(|l| l.ends_with(" _text"))
        .is_some_and(|l| l.starts_with("ffffffff"));
    if !shown {
        return Err(GuestError::Transfer {
            name: "kallsyms".into(),
            what: "addresses are hidden (kptr_restrict) or the file is not kallsyms".into(),
        });
    }
    std::fs::create_dir_all(&dir).map_err(|e| GuestError::io(&dir, e))?;
    kpatch_common::fs::write_atomic(&out, &data).map_err(|e| GuestError::io(&out, e))?;
    Ok(out)
}
