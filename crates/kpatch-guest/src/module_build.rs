//! Building an external (out-of-tree) module against a Debian headers tree with kbuild.

use crate::GuestError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The compiler Debian 12 builds its 6.1 kernels with; kbuild checks it matches.
pub const DEBIAN_CC: &str = "gcc-12";

/// The `make` command line for `make -C <kbuild_dir> M=<module_dir> CC=gcc-12 modules`.
pub fn make_command(kbuild_dir: &Path, module_dir: &Path) -> Command {
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(kbuild_dir)
        .arg(format!("M={}", module_dir.display()))
        .arg(format!("CC={DEBIAN_CC}"))
        .arg("modules");
    c
}

/// Builds the module(s) whose Kbuild/Makefile is in `module_dir` and returns the `.ko` files
/// produced there. `kbuild_dir` is `DebianKernel::kbuild_dir()`.
pub fn build_external_module(kbuild_dir: &Path, module_dir: &Path) -> Result<Vec<PathBuf>, GuestError> {
    let mut cmd = make_command(kbuild_dir, module_dir);
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| GuestError::Spawn {
        program: "make".into(),
        source: e,
    })?;
    if !out.status.success() {
        return Err(GuestError::Build {
            command: shown,
            dir: module_dir.into(),
            status: out.status.to_string(),
            output: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        });
    }
    let mut kos = Vec::new();
    let entries = std::fs::read_dir(module_dir).map_err(|e| GuestError::io(module_dir, e))?;
    for e in entries {
        let p = e.map_err(|e| GuestError::io(module_dir, e))?.path();
        if p.extension().is_some_and(|x| x == "ko") {
            kos.push(p);
        }
    }
    kos.sort();
    if kos.is_empty() {
        return Err(GuestError::Build {
            command: shown,
            dir: module_dir.into(),
            status: out.status.to_string(),
            output: "make succeeded but produced no .ko".into(),
        });
    }
    Ok(kos)
}
