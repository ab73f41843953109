//! QEMU guest harness for kpatch-rs: build a cpio initramfs (busybox, modules, a test
//! script), boot a Debian kernel under `qemu-system-x86_64 -accel tcg`, read the serial
//! console, and report sentinel lines and kernel problems (panic, Oops, WARNING, BUG,
//! Call Trace).
//!
//! ```no_run
//! use kpatch_guest::{boot, GuestConfig, Initramfs, TestScript};
//! let kernel = kpatch_target::DebianKernel::default_target()?;
//! let mut script = TestScript::new();
//! script.check("uname", "uname -r");
//! let mut initramfs = Initramfs::new();
//! initramfs.add_busybox()?;
//! initramfs.add_init(&script.render());
//! let img = std::env::temp_dir().join("initramfs.cpio");
//! initramfs.write_to(&img)?;
//! let run = boot(&GuestConfig::new(kernel.vmlinux()?, img))?;
//! assert!(run.done && run.problems.is_empty() && run.result("uname").unwrap().ok);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod busybox;
pub mod console;
mod cpio;
pub mod debian_system;
mod error;
mod guest;
pub mod kallsyms;
pub mod kmod;
pub mod module_build;
mod qemu;
mod script;
pub mod transfer;

pub use busybox::static_busybox;
pub use console::{CheckResult, Problem, ProblemKind};
pub use cpio::Initramfs;
pub use debian_system::{make_test_disk, DebianSystem};
pub use error::GuestError;
pub use guest::Guest;
pub use qemu::{boot, GuestConfig, GuestRun, TcgThread};
pub use script::{sanitize_name, TestScript};
