//! Symbols from an ELF `.symtab`: a vmlinux (self-built, or Debian's `-dbg` one) or a module.
//!
//! For vmlinux the symbols are put in kallsyms order, which is what `scripts/kallsyms` makes of
//! `nm -n vmlinux`: sorted by address, weak symbols after strong ones at the same address, fewer
//! leading underscores first, then by name; symbols kallsyms leaves out (undefined, absolute,
//! non-allocated, local labels) are left out here too, and per-CPU symbols get type `A`, as with
//! `CONFIG_KALLSYMS_ABSOLUTE_PERCPU`. For a module they stay in symbol-table order (the order of
//! the module's kallsyms), keeping the kernel's `is_core_symbol` selection: named, defined in an
//! allocated, non-init section (local labels such as `.LC0` included, as the kernel keeps them).
//! While a module is still initialising, livepatch walks its full symbol table instead, init
//! symbols included; positions differ only if a name is shared with an init symbol.
//!
//! Every local symbol carries the name of the STT_FILE symbol that precedes it in `.symtab`, and a
//! group number shared by the symbols of one translation unit.

use std::path::Path;

use object::elf::{SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE};
use object::{
    Object, ObjectSection, ObjectSymbol, SectionFlags, SectionIndex, SectionKind, SymbolKind,
    SymbolSection,
};

use crate::model::{linker_provided, KernelSymbol, KernelSymbols, VMLINUX};
use crate::Error;

/// Names that `scripts/kallsyms` never puts in the table.
const IGNORED_NAMES: &[&str] = &[
    "kallsyms_addresses",
    "kallsyms_offsets",
    "kallsyms_relative_base",
    "kallsyms_num_syms",
    "kallsyms_names",
    "kallsyms_markers",
    "kallsyms_token_table",
    "kallsyms_token_index",
    "kallsyms_seqs_of_names",
];
const IGNORED_PREFIXES: &[&str] = &[
    "$",
    ".L",
    "__efistub_",
    "__kvm_nvhe_",
    "__crc_",
    "__kstrtab_",
    "__kstrtabns_",
];

/// Read a vmlinux with a symbol table.
pub fn read_vmlinux(path: &Path) -> Result<KernelSymbols, Error> {
    let data = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_vmlinux(&data, &path.display().to_string())
}

/// Symbols of a vmlinux image in kallsyms order; `file` names it in errors.
pub fn parse_vmlinux(data: &[u8], file: &str) -> Result<KernelSymbols, Error> {
    let mut raw = collect(data, file, VMLINUX, false)?;
    make_percpu_absolute(&mut raw);
    let mut indexed: Vec<(usize, KernelSymbol)> = raw.into_iter().enumerate().collect();
    indexed.sort_by(|(ia, a), (ib, b)| {
        let weak = |s: &KernelSymbol| matches!(s.kind, 'w' | 'W' | 'v' | 'V');
        let underscores = |s: &KernelSymbol| s.name.bytes().take_while(|&c| c == b'_').count();
        a.address
            .cmp(&b.address)
            .then(weak(a).cmp(&weak(b)))
            .then(linker_provided(&a.name).cmp(&linker_provided(&b.name)))
            .then(underscores(a).cmp(&underscores(b)))
            .then(a.name.cmp(&b.name))
            .then(ia.cmp(ib))
    });
    Ok(KernelSymbols::new(
        file,
        indexed.into_iter().map(|(_, s)| s).collect(),
    ))
}

/// With `CONFIG_KALLSYMS_ABSOLUTE_PERCPU`, kallsyms gives type `A` to the symbols whose address
/// lies in `[__per_cpu_start, __per_cpu_end]`.
fn make_percpu_absolute(symbols: &mut [KernelSymbol]) {
    let find = |name: &str| symbols.iter().find(|s| s.name == name).map(|s| s.address);
    let (Some(start), Some(end)) = (find("__per_cpu_start"), find("__per_cpu_end")) else {
        return;
    };
    for s in symbols
        .iter_mut()
        .filter(|s| (start..=end).contains(&s.address))
    {
        s.kind = 'A';
    }
}

/// Symbols of a module (`.ko`) in its symbol-table order, as the kernel lists them; `object` is the
/// module name (e.g. `ext4`).
pub fn parse_module(data: &[u8], file: &str, object: &str) -> Result<KernelSymbols, Error> {
    Ok(KernelSymbols::new(file, collect(data, file, object, true)?))
}

fn collect(
    data: &[u8],
    file: &str,
    object: &str,
    module: bool,
) -> Result<Vec<KernelSymbol>, Error> {
    let elf = crate::elf_file::parse(data, file)?;
    if elf.symbol_table().is_none() {
        return Err(Error::NoSymtab {
            file: file.to_string(),
        });
    }
    let mut out = Vec::new();
    let mut current_file: Option<String> = None;
    let mut group: u32 = 0;
    for sym in elf.symbols() {
        let name = sym.name().map_err(|e| Error::Elf {
            file: file.to_string(),
            reason: e.to_string(),
        })?;
        if sym.kind() == SymbolKind::File {
            current_file = Some(name.to_string());
            group += 1;
            continue;
        }
        if name.is_empty() || sym.kind() == SymbolKind::Section {
            continue;
        }
        let ignored =
            IGNORED_NAMES.contains(&name) || IGNORED_PREFIXES.iter().any(|p| name.starts_with(p));
        if ignored && !module {
            continue;
        }
        let SymbolSection::Section(index) = sym.section() else {
            continue;
        };
        let Some(kind) = type_letter(&elf, index, &sym, module) else {
            continue;
        };
        let local = sym.is_local();
        out.push(KernelSymbol {
            address: sym.address(),
            kind,
            name: name.to_string(),
            object: object.to_string(),
            file: if local { current_file.clone() } else { None },
            file_group: if local && current_file.is_some() {
                Some(group)
            } else {
                None
            },
        });
    }
    if out.is_empty() {
        return Err(Error::NoSymtab {
            file: file.to_string(),
        });
    }
    Ok(out)
}

/// nm's type letter for a defined symbol, or `None` when kallsyms would leave it out.
fn type_letter<'d, 'f>(
    elf: &object::File<'d>,
    index: SectionIndex,
    sym: &object::Symbol<'d, 'f>,
    module: bool,
) -> Option<char> {
    let section = elf.section_by_index(index).ok()?;
    let SectionFlags::Elf { sh_flags, .. } = section.flags() else {
        return None;
    };
    let sh_flags = sh_flags.0;
    if sh_flags & SHF_ALLOC.0 == 0 {
        return None;
    }
    let section_name = section.name().unwrap_or("");
    if module && section_name.starts_with(".init") {
        return None;
    }
    let letter = if sym.is_weak() {
        if sym.kind() == SymbolKind::Data {
            'V'
        } else {
            'W'
        }
    } else if sh_flags & SHF_EXECINSTR.0 != 0 {
        'T'
    } else if section.kind() == SectionKind::UninitializedData {
        'B'
    } else if sh_flags & SHF_WRITE.0 != 0 {
        'D'
    } else {
        'R'
    };
    Some(if sym.is_local() {
        letter.to_ascii_lowercase()
    } else {
        letter
    })
}
