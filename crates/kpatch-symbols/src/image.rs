//! The symbols of a kernel image the user gives: its `.symtab` when it has one (a self-built or
//! `-dbg` vmlinux: FILE symbols make every local's unit known), else the kallsyms table it carries
//! (Debian's vmlinux as decompressed from the vmlinuz).

use std::path::Path;

use crate::{elf_symtab, kallsyms_table, Error, KernelSymbols};

/// Symbols of the vmlinux at `path`, from its symbol table or else from its kallsyms table.
pub fn read_kernel_image(path: &Path) -> Result<KernelSymbols, Error> {
    let data = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_kernel_image(&data, &path.display().to_string())
}

/// [`read_kernel_image`] on data already read; `file` names it in errors.
pub fn parse_kernel_image(data: &[u8], file: &str) -> Result<KernelSymbols, Error> {
    match elf_symtab::parse_vmlinux(data, file) {
        Err(Error::NoSymtab { .. }) => kallsyms_table::parse_kallsyms_image(data, file),
        other => other,
    }
}
