//! Kernel interface for managing livepatch modules on a running kernel.
//!
//! Everything that touches the kernel (sysfs, procfs, `finit_module`, `delete_module`, `kill`,
//! `uname`, the clock) goes through the [`Kernel`] trait. [`RealKernel`] talks to the running
//! kernel; [`FakeKernel`] simulates sysfs/procfs and the livepatch transition in a temporary
//! directory tree so the management logic can be tested without root or a guest.

mod error;
pub mod fake;
pub mod freeze;
pub mod modinfo;
pub mod opjournal;
pub mod ops;
pub mod patches;
mod real;
pub mod report;
pub mod series;
pub mod status;
pub mod store;
mod sys;
pub mod tasks;
pub mod watch;
pub mod watchdog;

pub use error::KernelError;
pub use fake::FakeKernel;
pub use modinfo::{
    ModInfo, PatchedFunction, MODINFO_FUNCTIONS, MODINFO_KERNEL, MODINFO_PATCH_SHA256,
};
pub use real::RealKernel;
pub use sys::{Kernel, Sig, LIVEPATCH_DIR};
