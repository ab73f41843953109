//! How make is invoked on a prepared kernel tree. Every invocation passes the same variables,
//! so kbuild never sees a changed command line and never rebuilds what `make prepare` made.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::distributed::Distributed;
use crate::exec::Cmd;

/// The flags kpatch needs on every object: one section per function and per data object.
pub const KPATCH_KCFLAGS: &str = "-ffunction-sections -fdata-sections";

/// The make variables for one kernel tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kbuild {
    pub tree: PathBuf,
    /// The C compiler, as the target was built with it (`gcc-12`).
    pub cc: String,
    /// `KERNELRELEASE=` override (Debian: the ABI name, `6.1.0-56-amd64`); `None` keeps the tree's.
    pub kernelrelease: Option<String>,
    pub kcflags: String,
    /// make -j.
    pub jobs: usize,
    /// The tree is known to be prepared with these very variables (a cached Debian tree with
    /// a matching marker): object builds pass `-o prepare`, so make does not re-walk the
    /// prepare chain (objtool, scripts, generated headers) on every invocation.
    #[serde(default)]
    pub prepared: bool,
    /// `RUSTC=` override: [`NO_RUSTC`] when the target was built without a Rust toolchain
    /// (its `CONFIG_RUSTC_VERSION` is 0), so that Kconfig's probes of the host's rustc
    /// (6.12: `RUSTC_VERSION`, `RUSTC_LLVM_VERSION`, the `rustc-option` tests) find none either.
    #[serde(default)]
    pub rustc: Option<String>,
    /// Object compiles go through distcc or icecream ([`crate::distributed`]).
    #[serde(skip)]
    pub distributed: Option<Distributed>,
}

/// A `RUSTC` that is no command: Kconfig's rustc probes then say 0, as in a build environment
/// without Rust.
pub const NO_RUSTC: &str = "kpatch-rs-target-built-without-rustc";

impl Kbuild {
    /// The `RUSTC` a tree needs to configure as the target was: none when the target's config
    /// records no rustc (`CONFIG_RUSTC_VERSION` absent or 0), else the host's.
    pub fn rustc_for(config: &crate::config::KernelConfig) -> Option<String> {
        match config.get("CONFIG_RUSTC_VERSION") {
            None | Some("0") => Some(NO_RUSTC.to_string()),
            Some(_) => None,
        }
    }
}

impl Kbuild {
    pub fn new(
        tree: impl Into<PathBuf>,
        cc: impl Into<String>,
        kernelrelease: Option<String>,
    ) -> Self {
        Kbuild {
            tree: tree.into(),
            cc: cc.into(),
            kernelrelease,
            kcflags: KPATCH_KCFLAGS.to_string(),
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            prepared: false,
            rustc: None,
            distributed: None,
        }
    }

    /// `make -C <tree> -j<jobs> CC=... KCFLAGS=... [KERNELRELEASE=...] <targets>`.
    pub fn make<I, S>(&self, targets: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut c = Cmd::new("make")
            .arg("-C")
            .arg(&self.tree)
            .arg(format!("-j{}", self.jobs.max(1)))
            .arg(format!("CC={}", self.cc))
            .arg(format!("KCFLAGS={}", self.kcflags));
        if let Some(kr) = &self.kernelrelease {
            c = c.arg(format!("KERNELRELEASE={kr}"));
        }
        if let Some(r) = &self.rustc {
            c = c.arg(format!("RUSTC={r}"));
        }
        c.args(targets)
    }

    /// [`make`](Self::make) for object (and probe) goals: with `-o prepare` on a tree known
    /// to be prepared, and through the distributed compiler when there is one.
    pub fn make_objects<I, S>(&self, targets: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut c = if self.prepared {
            self.make(["-o", "prepare"]).args(targets)
        } else {
            self.make(targets)
        };
        if let Some(d) = &self.distributed {
            // Later -j wins in make.
            c = c.arg(format!("-j{}", d.jobs));
            for (k, v) in d.env() {
                c = c.env(k, v);
            }
        }
        c
    }
}

/// The object kbuild builds from a source file: `fs/proc/cmdline.c` → `fs/proc/cmdline.o`.
pub fn object_of(unit: &Path) -> Option<String> {
    let s = unit.to_str()?;
    let stem = s.strip_suffix(".c").or_else(|| s.strip_suffix(".S"))?;
    Some(format!("{stem}.o"))
}

/// Lexically normalizes `a/b/../c` to `a/c` (kbuild paths never involve symlinks).
pub fn normalize(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n.to_str().unwrap_or("")),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out.join("/")
}

/// kbuild's name-fix: the module name the kernel sees (`nf-conntrack` → `nf_conntrack`).
pub fn module_name_fix(name: &str) -> String {
    name.replace(['-', ','], "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_command_carries_all_variables() {
        let mut k = Kbuild::new("/t", "gcc-12", Some("6.1.0-56-amd64".into()));
        k.jobs = 3;
        let c = k.make(["fs/proc/cmdline.o"]);
        assert_eq!(
            c.to_string(),
            "make -C /t -j3 CC=gcc-12 'KCFLAGS=-ffunction-sections -fdata-sections' KERNELRELEASE=6.1.0-56-amd64 fs/proc/cmdline.o"
        );
        assert_eq!(
            k.make_objects(["x.o"]).to_string(),
            k.make(["x.o"]).to_string()
        );
        k.prepared = true;
        assert!(k
            .make_objects(["x.o"])
            .to_string()
            .ends_with(" -o prepare x.o"));
        assert!(!k.make(["prepare"]).to_string().contains("-o prepare"));
    }

    #[test]
    fn objects_and_paths() {
        assert_eq!(
            object_of(Path::new("fs/proc/cmdline.c")).as_deref(),
            Some("fs/proc/cmdline.o")
        );
        assert_eq!(
            object_of(Path::new("arch/x86/entry/entry_64.S")).as_deref(),
            Some("arch/x86/entry/entry_64.o")
        );
        assert_eq!(object_of(Path::new("include/linux/fs.h")), None);
        assert_eq!(
            normalize("drivers/gpu/amdgpu/../display/dc.o"),
            "drivers/gpu/display/dc.o"
        );
        assert_eq!(normalize("./fs/proc/x.o"), "fs/proc/x.o");
        assert_eq!(module_name_fix("nf-conntrack"), "nf_conntrack");
    }
}
