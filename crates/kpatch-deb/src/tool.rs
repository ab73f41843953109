//! kpatch-rs's own package: the binary as `/usr/bin/kpatch-rs` (stripped, as dh_strip would)
//! and the systemd unit that loads the patches installed for the running kernel at boot,
//! enabled on installation. Its library dependencies come from dpkg-shlibdeps.

use crate::{Control, Deb, DebError};
use kpatch_common::exec::{Cmd, Runner};
use std::path::{Path, PathBuf};

/// The unit's name and where the package installs it.
pub const UNIT_PATH: &str = "/lib/systemd/system/kpatch-rs.service";
/// Where the package installs the binary.
pub const BINARY_PATH: &str = "/usr/bin/kpatch-rs";

/// What goes into the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPackageOptions {
    /// The kpatch-rs executable to ship.
    pub binary: PathBuf,
    pub version: String,
    pub maintainer: String,
    /// The systemd unit's text (kpatch-kernel's, for `BINARY_PATH`).
    pub unit: String,
}

/// The package (dpkg-shlibdeps runs on the binary for `Depends`).
pub fn tool_package(opts: &ToolPackageOptions, runner: &dyn Runner) -> Result<Deb, DebError> {
    let binary = stripped(&opts.binary, runner)?;
    let mut c = Control::new("kpatch-rs", &opts.version, "amd64", &opts.maintainer)?;
    c.set("Section", "admin")?;
    c.set("Priority", "optional")?;
    c.set("Depends", &shlib_depends(&opts.binary, runner)?)?;
    c.set(
        "Suggests",
        "gcc-12, make, bison, flex, bc, libelf-dev, libssl-dev, dwarves, qemu-system-x86, \
         busybox-static, dpkg-dev, apt-utils, gnupg",
    )?;
    c.set_description(
        "live patching of Debian kernels",
        &[
            "kpatch-rs builds livepatch modules from kernel source patches for one exact Debian \
             kernel, packages them, and loads, watches and unloads them through the kernel's \
             livepatch core."
                .into(),
            String::new(),
            "kpatch-rs.service loads the patches installed for the running kernel at boot; \
             `kpatch-rs status` reports what is loaded and installed."
                .into(),
        ],
    )?;
    let mut deb = Deb::new(c);
    deb.file(BINARY_PATH, binary, 0o755);
    deb.file(UNIT_PATH, opts.unit.clone().into_bytes(), 0o644);
    deb.script("postinst", POSTINST.into());
    deb.script("postrm", POSTRM.into());
    Ok(deb)
}

/// The binary without its symbols and debug information (`strip --strip-unneeded`).
fn stripped(binary: &Path, runner: &dyn Runner) -> Result<Vec<u8>, DebError> {
    let scratch = tempfile::tempdir().map_err(|e| DebError::io(std::env::temp_dir(), e))?;
    let out = scratch.path().join("kpatch-rs");
    runner
        .run_ok(
            &Cmd::new("strip")
                .arg("--strip-unneeded")
                .arg("-o")
                .arg(&out)
                .arg(binary),
        )
        .map_err(|source| DebError::Tool {
            what: "stripping the binary",
            source,
        })?;
    std::fs::read(&out).map_err(|e| DebError::io(&out, e))
}

/// `shlibs:Depends` of `binary` (dpkg-shlibdeps wants a debian/control to read, and is given
/// a minimal one in a scratch directory).
fn shlib_depends(binary: &Path, runner: &dyn Runner) -> Result<String, DebError> {
    let scratch = tempfile::tempdir().map_err(|e| DebError::io(std::env::temp_dir(), e))?;
    let debian = scratch.path().join("debian");
    std::fs::create_dir(&debian).map_err(|e| DebError::io(&debian, e))?;
    let control = debian.join("control");
    std::fs::write(
        &control,
        "Source: kpatch-rs\n\nPackage: kpatch-rs\nArchitecture: any\n",
    )
    .map_err(|e| DebError::io(&control, e))?;
    let binary = std::fs::canonicalize(binary).map_err(|e| DebError::io(binary, e))?;
    let out = runner
        .run_ok(
            &Cmd::new("dpkg-shlibdeps")
                .args(["-O", "-e"])
                .arg(&binary)
                .dir(scratch.path()),
        )
        .map_err(|source| DebError::Tool {
            what: "finding the binary's library dependencies",
            source,
        })?;
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .ok_or_else(|| DebError::BadField {
            field: "Depends".into(),
            reason: "dpkg-shlibdeps printed no shlibs:Depends",
        })
}

/// Enables the unit on installation, keeps an administrator's `systemctl disable` across
/// upgrades (deb-systemd-helper remembers it), and reloads systemd.
const POSTINST: &str = r#"#!/bin/sh
# postinst of kpatch-rs, written by kpatch-rs package --tool.
set -e
case "$1" in
configure|abort-upgrade|abort-remove|abort-deconfigure)
    if command -v deb-systemd-helper >/dev/null; then
        # A mask left by an earlier removal goes; the unit is enabled unless an administrator
        # disabled it before.
        deb-systemd-helper unmask kpatch-rs.service >/dev/null || true
        if deb-systemd-helper --quiet was-enabled kpatch-rs.service; then
            deb-systemd-helper enable kpatch-rs.service >/dev/null || true
        else
            deb-systemd-helper update-state kpatch-rs.service >/dev/null || true
        fi
    fi
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
    fi
    ;;
esac
exit 0
"#;

/// Removal masks the (now missing) unit so that its enable link does nothing; purge forgets it.
const POSTRM: &str = r#"#!/bin/sh
# postrm of kpatch-rs, written by kpatch-rs package --tool.
set -e
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
if command -v deb-systemd-helper >/dev/null; then
    case "$1" in
    remove)
        deb-systemd-helper mask kpatch-rs.service >/dev/null || true
        ;;
    purge)
        deb-systemd-helper purge kpatch-rs.service >/dev/null || true
        deb-systemd-helper unmask kpatch-rs.service >/dev/null || true
        ;;
    esac
fi
exit 0
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use kpatch_common::exec::{CmdOutput, RunError};
    use std::sync::Mutex;

    /// dpkg-shlibdeps answers; strip copies the file and appends a marker.
    struct FakeTools(Mutex<Vec<String>>);
    impl Runner for FakeTools {
        fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
            self.0.lock().unwrap().push(cmd.to_string());
            if cmd.program == "strip" {
                let a = cmd.arg_strings();
                let mut data = std::fs::read(&a[3]).unwrap();
                data.extend_from_slice(b" stripped");
                std::fs::write(&a[2], data).unwrap();
                return Ok(CmdOutput::ok());
            }
            assert!(cmd.dir.as_ref().unwrap().join("debian/control").is_file());
            Ok(CmdOutput {
                stdout: "shlibs:Depends=libc6 (>= 2.34), libgcc-s1 (>= 4.2)\n".into(),
                ..CmdOutput::ok()
            })
        }
    }

    #[test]
    fn the_tool_package_ships_the_binary_and_the_unit() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("kpatch-rs");
        std::fs::write(&bin, b"\x7fELF").unwrap();
        let runner = FakeTools(Mutex::new(Vec::new()));
        let opts = ToolPackageOptions {
            binary: bin,
            version: "0.1.0".into(),
            maintainer: "Ops <ops@example.org>".into(),
            unit: "[Unit]\n".into(),
        };
        let deb = tool_package(&opts, &runner).unwrap();
        assert_eq!(
            deb.control.get("Depends"),
            Some("libc6 (>= 2.34), libgcc-s1 (>= 4.2)")
        );
        assert_eq!(deb.file_name(), "kpatch-rs_0.1.0_amd64.deb");
        let paths: Vec<(&str, u32)> = deb
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.mode))
            .collect();
        assert_eq!(paths, [(BINARY_PATH, 0o755), (UNIT_PATH, 0o644)]);
        assert_eq!(deb.files[0].data, b"\x7fELF stripped");
        let calls = runner.0.lock().unwrap();
        assert!(
            calls[0].starts_with("strip --strip-unneeded -o "),
            "{calls:?}"
        );
        assert!(
            calls[1].starts_with("(cd ") && calls[1].contains("dpkg-shlibdeps"),
            "{calls:?}"
        );
        assert!(deb
            .scripts
            .iter()
            .any(|(n, t)| n == "postinst"
                && t.contains("deb-systemd-helper enable kpatch-rs.service")));
    }

    /// dpkg-shlibdeps on a real executable (skipped, saying so, where it is missing).
    #[test]
    fn shlibdeps_of_a_real_binary() {
        if std::process::Command::new("dpkg-shlibdeps")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: no dpkg-shlibdeps");
            return;
        }
        let d = shlib_depends(Path::new("/bin/sh"), &kpatch_common::exec::SystemRunner).unwrap();
        assert!(d.contains("libc6 (>= "), "{d}");
    }
}
