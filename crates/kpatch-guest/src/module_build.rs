//! Building an external (out-of-tree) module against a Debian headers tree with kbuild.

use crate::GuestError;
use kpatch_common::exec::{Cmd, RunError, Runner, SystemRunner};
use std::path::{Path, PathBuf};

/// The compiler Debian 12 builds its 6.1 kernels with; kbuild checks it matches.
pub const DEBIAN_CC: &str = "gcc-12";

/// The `make` command line for `make -C <kbuild_dir> M=<module_dir> CC=gcc-12 modules`.
pub fn make_command(kbuild_dir: &Path, module_dir: &Path) -> Cmd {
    Cmd::new("make")
        .arg("-C")
        .arg(kbuild_dir)
        .arg(format!("M={}", module_dir.display()))
        .arg(format!("CC={DEBIAN_CC}"))
        .arg("modules")
}

/// Builds the module(s) whose Kbuild/Makefile is in `module_dir` and returns the `.ko` files
/// produced there. `kbuild_dir` is `DebianKernel::kbuild_dir()`.
pub fn build_external_module(
    kbuild_dir: &Path,
    module_dir: &Path,
) -> Result<Vec<PathBuf>, GuestError> {
    let cmd = make_command(kbuild_dir, module_dir);
    let shown = cmd.to_string();
    let out = SystemRunner.run(&cmd).map_err(|e| match e {
        RunError::Spawn { source, .. } => GuestError::Spawn {
            program: "make".into(),
            source,
        },
        RunError::Failed {
            command,
            status,
            output,
        } => GuestError::Build {
            command,
            dir: module_dir.into(),
            status,
            output,
        },
    })?;
    if !out.success() {
        return Err(GuestError::Build {
            command: shown,
            dir: module_dir.into(),
            status: out.status(),
            output: format!("{}{}", out.stdout, out.stderr),
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
            status: out.status(),
            output: "make succeeded but produced no .ko".into(),
        });
    }
    Ok(kos)
}
