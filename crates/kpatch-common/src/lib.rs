//! What the kpatch-rs crates share, in one small crate at the bottom of the dependency order
//! (std and libc only):
//!
//! - [`names`]: the core kernel's object name and module names as the kernel spells them;
//! - [`klp`]: the names and ELF values the livepatch core parses (`.klp.sym.*`, `.klp.rela.*`,
//!   `SHN_LIVEPATCH`);
//! - [`modinfo`]: the `.modinfo` format and the keys kpatch-rs records in it;
//! - [`cve`]: CVE numbers, as patches name them and `.modinfo` records them;
//! - [`fs`]: writing a file atomically;
//! - [`exec`]: the one seam through which external programs run;
//! - [`interrupt`]: the one flag SIGINT, SIGTERM and SIGHUP set;
//! - [`fault`]: the test hook that kills the process at a named step.

pub mod cve;
pub mod exec;
pub mod fault;
pub mod fs;
pub mod interrupt;
pub mod klp;
pub mod modinfo;
pub mod names;

pub use names::{canonical_module_name, VMLINUX};
