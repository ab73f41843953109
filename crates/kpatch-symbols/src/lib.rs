//! Symbol resolution against a target kernel: vmlinux symtab, kallsyms, Module.symvers.
//!
//! Sources of the target's symbols, all giving a [`KernelSymbols`] in kallsyms order:
//! - [`elf_symtab`]: a vmlinux with `.symtab` (self-built, or Debian's `-dbg` one); locals carry
//!   their STT_FILE, so a translation unit's block is known exactly. Also a module `.ko`.
//! - [`kallsyms_table`]: the kallsyms tables embedded in a kernel image without a symbol table
//!   (the vmlinux decompressed from Debian's vmlinuz, 6.1 or 6.12: the tables' order is found).
//! - [`proc_kallsyms`]: `/proc/kallsyms` of the running target.
//!
//! [`read_kernel_image`] picks the first two for a vmlinux the user gives.
//!
//! [`KernelSymbols::resolve_in_unit`] gives a symbol's livepatch `sympos`; [`Symvers`] gives the
//! exported symbols and their CRCs, and checks a module's `__versions` against them.

mod align;
mod elf_file;
pub mod elf_symtab;
mod error;
pub mod ibt;
mod image;
pub mod kallsyms_table;
mod model;
pub mod modversions;
pub mod proc_kallsyms;
mod resolve;
pub mod symvers;

pub use elf_symtab::{parse_module, parse_vmlinux, read_vmlinux};
pub use error::{Candidate, Error};
pub use ibt::{sealed_endbr_addresses, sealed_module_functions};
pub use image::{parse_kernel_image, read_kernel_image};
pub use kallsyms_table::{parse_kallsyms_image, read_kallsyms_image, KallsymsTable};
pub use model::{KernelSymbol, KernelSymbols, VMLINUX};
pub use modversions::{modversions_of_elf, parse_modversions};
pub use proc_kallsyms::{parse_proc_kallsyms, read_proc_kallsyms};
pub use resolve::{Resolved, TranslationUnit};
pub use symvers::{ExportKind, Symvers, SymversEntry};
