//! One call from a kernel and a script to a finished boot.

use crate::{boot, GuestConfig, GuestError, GuestRun, Initramfs, TestScript};
use kpatch_target::DebianKernel;
use std::path::PathBuf;

/// A guest ready to boot: QEMU settings plus an initramfs that already has busybox.
/// Add modules to `initramfs`, tune `config`, then [`run`](Self::run) a script.
#[derive(Debug, Clone)]
pub struct Guest {
    /// `config.initramfs` is replaced by the image [`run`](Self::run) writes.
    pub config: GuestConfig,
    pub initramfs: Initramfs,
}

impl Guest {
    /// Boots `kernel_image` (a vmlinux or vmlinuz) with a busybox initramfs.
    pub fn new(kernel_image: impl Into<PathBuf>) -> Result<Self, GuestError> {
        let mut initramfs = Initramfs::new();
        initramfs.add_busybox()?;
        Ok(Guest {
            config: GuestConfig::new(kernel_image, PathBuf::new()),
            initramfs,
        })
    }

    /// The Debian kernel's decompressed vmlinux (fetched into the cache if needed).
    pub fn for_kernel(kernel: &DebianKernel) -> Result<Self, GuestError> {
        Self::new(kernel.vmlinux()?)
    }

    /// Writes the initramfs with `script` as `/init` to a temporary directory and boots it.
    pub fn run(&self, script: &TestScript) -> Result<GuestRun, GuestError> {
        let tmp = tempfile::Builder::new()
            .prefix("kpatch-rs-guest-")
            .tempdir()
            .map_err(|e| GuestError::io(std::env::temp_dir(), e))?;
        let mut img = self.initramfs.clone();
        img.add_init(&script.render());
        let path = tmp.path().join("initramfs.cpio");
        img.write_to(&path)?;
        let mut cfg = self.config.clone();
        cfg.initramfs = path;
        boot(&cfg)
    }
}
