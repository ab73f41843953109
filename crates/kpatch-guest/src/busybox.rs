//! A statically linked busybox for the initramfs, with its applet symlinks.

use crate::{GuestError, Initramfs};
use object::Object;
use std::path::{Path, PathBuf};
use std::process::Command;

/// True when `data` is an ELF executable with no program interpreter (statically linked).
fn is_static_elf(data: &[u8]) -> bool {
    match object::File::parse(data) {
        Ok(f) => f.section_by_name(".interp").is_none(),
        Err(_) => false,
    }
}

/// A static busybox: the host's `/bin/busybox` when it is static (Debian's busybox-static
/// package puts it there), else `busybox-static` fetched with apt into the kpatch-rs cache.
pub fn static_busybox() -> Result<PathBuf, GuestError> {
    let host = Path::new("/bin/busybox");
    if let Ok(data) = std::fs::read(host) {
        if is_static_elf(&data) {
            return Ok(host.to_path_buf());
        }
    }
    let store = kpatch_target::Store::system();
    let pkg = "busybox-static";
    let version = store
        .candidate(pkg)?
        .ok_or_else(|| kpatch_target::TargetError::NoCandidate {
            package: pkg.into(),
        })?;
    let path = store.package(pkg, &version)?.join("bin/busybox");
    let data = std::fs::read(&path).map_err(|e| GuestError::io(&path, e))?;
    if !is_static_elf(&data) {
        return Err(GuestError::BadInput {
            path,
            what: "busybox from busybox-static is not a static ELF".into(),
        });
    }
    Ok(path)
}

/// Applet paths (`usr/bin/[`, `sbin/insmod`, ...) as `busybox --list-full` prints them.
pub(crate) fn parse_applet_list(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains(char::is_whitespace))
        .map(|l| format!("/{}", l.trim_start_matches('/')))
        .filter(|p| p != "/bin/busybox")
        .collect()
}

impl Initramfs {
    /// Installs [`static_busybox`] as `/bin/busybox` plus a symlink for each applet.
    pub fn add_busybox(&mut self) -> Result<&mut Self, GuestError> {
        let bin = static_busybox()?;
        self.add_busybox_from(&bin)
    }

    /// Installs the given static busybox binary as `/bin/busybox` plus its applet symlinks
    /// (listed by running it with `--list-full`).
    pub fn add_busybox_from(&mut self, busybox: &Path) -> Result<&mut Self, GuestError> {
        let out = Command::new(busybox)
            .arg("--list-full")
            .output()
            .map_err(|e| GuestError::Spawn {
                program: busybox.into(),
                source: e,
            })?;
        let applets = parse_applet_list(&String::from_utf8_lossy(&out.stdout));
        if !out.status.success() || !applets.iter().any(|a| a.ends_with("/sh")) {
            return Err(GuestError::BadInput {
                path: busybox.into(),
                what: "`--list-full` did not list a shell applet".into(),
            });
        }
        self.host_file("/bin/busybox", 0o755, busybox)?;
        for a in applets {
            self.symlink(&a, "/bin/busybox");
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applet_list_parsing() {
        let l = parse_applet_list("usr/bin/[\nbin/sh\n\nsbin/insmod\nbin/busybox\n");
        assert_eq!(l, ["/usr/bin/[", "/bin/sh", "/sbin/insmod"]);
    }

    #[test]
    fn dynamic_binaries_are_not_static() {
        // the test binary itself is dynamically linked
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_static_elf(&me));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }
}
