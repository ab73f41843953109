//! The compiler must be the one the target kernel was built with.

use std::path::Path;

use object::{Object, ObjectSection};

use crate::config::KernelConfig;
use crate::error::{io_err, BuildError, Result};
use crate::exec::{Cmd, Runner};

/// The compiler identification without its program name:
/// `gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0` → `(Debian 12.2.0-14+deb12u1) 12.2.0`.
pub fn identity(version_text: &str) -> &str {
    let t = version_text.trim();
    let t = t.strip_prefix("GCC:").map(str::trim_start).unwrap_or(t);
    if t.starts_with('(') {
        return t;
    }
    match t.split_once(' ') {
        Some((_, rest)) => rest.trim(),
        None => t,
    }
}

/// The compiler command the target names (`gcc-12`), when it is on PATH; else `gcc`.
pub fn default_cc(config: &KernelConfig) -> String {
    let named = config
        .get("CONFIG_CC_VERSION_TEXT")
        .and_then(|t| t.split_whitespace().next().map(String::from))
        .filter(|n| !n.contains('/') && on_path(n));
    named.unwrap_or_else(|| "gcc".to_string())
}

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// First line of `<cc> --version`.
pub fn cc_version(runner: &dyn Runner, cc: &str) -> Result<String> {
    let out = runner.run_ok(&Cmd::new(cc).arg("--version"))?;
    Ok(out.stdout.lines().next().unwrap_or("").trim().to_string())
}

/// The compiler named in a kernel banner (`/proc/version`, or `linux_banner` in vmlinux):
/// `Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian
/// 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP ...` →
/// `gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0`.
pub fn banner_compiler(banner: &str) -> Option<String> {
    let rest = banner.strip_prefix("Linux version ")?;
    let (_, rest) = rest.split_once(") (")?;
    let end = rest
        .find(", GNU ld")
        .or_else(|| rest.find(", LLD"))
        .or_else(|| rest.find(") #"))?;
    Some(rest[..end].trim().to_string())
}

/// The compiler strings of a vmlinux: its `.comment` section's `GCC:` entries, or, in a
/// stripped image without `.comment`, the compiler in its `linux_banner`.
pub fn vmlinux_compilers(vmlinux: &Path) -> Result<Vec<String>> {
    let data = std::fs::read(vmlinux).map_err(io_err(vmlinux))?;
    let bad = |reason: String| BuildError::Vmlinux {
        path: vmlinux.to_path_buf(),
        reason,
    };
    let file = object::File::parse(&*data).map_err(|e| bad(e.to_string()))?;
    if let Some(sec) = file.section_by_name(".comment") {
        let bytes = sec.data().map_err(|e| bad(e.to_string()))?;
        let found: Vec<String> = bytes
            .split(|&b| b == 0)
            .filter_map(|s| std::str::from_utf8(s).ok())
            .filter(|s| s.starts_with("GCC:"))
            .map(String::from)
            .collect();
        if !found.is_empty() {
            return Ok(found);
        }
    }
    let needle = b"Linux version ";
    let banner = data
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .filter_map(|(i, _)| {
            let end = data[i..].iter().position(|&b| b == 0 || b == b'\n')?;
            banner_compiler(std::str::from_utf8(&data[i..i + end]).ok()?)
        })
        .next();
    banner.map(|b| vec![b]).ok_or_else(|| {
        bad("has neither a .comment section nor a kernel banner naming the compiler".into())
    })
}

/// Fails with [`BuildError::CompilerMismatch`] unless `cc` is the compiler named by the
/// target's `CONFIG_CC_VERSION_TEXT` and, when given, by the vmlinux's `.comment`.
/// Returns `cc`'s version line.
pub fn check(
    runner: &dyn Runner,
    config: &KernelConfig,
    cc: &str,
    vmlinux: Option<&Path>,
) -> Result<String> {
    let found = cc_version(runner, cc)?;
    let target =
        config
            .get("CONFIG_CC_VERSION_TEXT")
            .ok_or_else(|| BuildError::MissingConfigOption {
                config: config.path.clone(),
                option: "CONFIG_CC_VERSION_TEXT".into(),
            })?;
    if identity(target) != identity(&found) {
        return Err(BuildError::CompilerMismatch {
            target: target.to_string(),
            cc: cc.to_string(),
            found,
        });
    }
    if let Some(v) = vmlinux {
        for c in vmlinux_compilers(v)? {
            if identity(&c) != identity(&found) {
                return Err(BuildError::CompilerMismatch {
                    target: c,
                    cc: cc.to_string(),
                    found,
                });
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::CmdOutput;

    struct FakeCc(&'static str);
    impl Runner for FakeCc {
        fn run(&self, cmd: &Cmd) -> Result<CmdOutput, crate::exec::RunError> {
            assert_eq!(cmd.args, vec![std::ffi::OsString::from("--version")]);
            Ok(CmdOutput {
                code: Some(0),
                stdout: format!("{}\nCopyright (C) 2022\n", self.0),
                stderr: String::new(),
            })
        }
    }

    fn config(text: &str) -> KernelConfig {
        KernelConfig::parse(Path::new("/boot/config-test"), text)
    }

    #[test]
    fn banner_names_the_compiler() {
        let b = "Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)";
        assert_eq!(
            banner_compiler(b).as_deref(),
            Some("gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0")
        );
        assert_eq!(
            banner_compiler("Linux version 6.18.0 (a@b) (clang version 19.1.0, LLD 19.1.0) #1"),
            Some("clang version 19.1.0".into())
        );
        assert_eq!(banner_compiler("not a banner"), None);
    }

    #[test]
    fn identity_strips_program_names() {
        assert_eq!(
            identity("gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"),
            "(Debian 12.2.0-14+deb12u1) 12.2.0"
        );
        assert_eq!(
            identity("GCC: (Debian 12.2.0-14+deb12u1) 12.2.0"),
            "(Debian 12.2.0-14+deb12u1) 12.2.0"
        );
        assert_eq!(
            identity("gcc (GCC) 14.2.1 20240912"),
            "(GCC) 14.2.1 20240912"
        );
    }

    #[test]
    fn same_compiler_passes_under_another_name() {
        let c = config("CONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0\"\n");
        let v = check(
            &FakeCc("gcc (Debian 12.2.0-14+deb12u1) 12.2.0"),
            &c,
            "gcc",
            None,
        )
        .unwrap();
        assert_eq!(v, "gcc (Debian 12.2.0-14+deb12u1) 12.2.0");
    }

    #[test]
    fn mismatch_names_both_versions() {
        let c = config("CONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0\"\n");
        let e = check(
            &FakeCc("gcc-13 (Debian 13.3.0-1) 13.3.0"),
            &c,
            "gcc-13",
            None,
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("12.2.0-14+deb12u1") && msg.contains("13.3.0-1"),
            "{msg}"
        );
    }

    #[test]
    fn missing_version_text_is_reported() {
        let c = config("CONFIG_X=y\n");
        assert!(matches!(
            check(&FakeCc("gcc (x) 1"), &c, "gcc", None),
            Err(BuildError::MissingConfigOption { .. })
        ));
    }
}
