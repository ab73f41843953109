//! Parsing: `object::read::elf` into the owned model, with every index checked.

use crate::consts::*;
use crate::{ElfError, Header, Object, Rela, Section, SectionIndex, Symbol, SymbolIndex};
use object::read::elf::{FileHeader, Rela as _, SectionHeader, Sym};
use object::Endianness;
use std::path::Path;

/// The largest section alignment accepted (2 MiB, a huge page; kernel objects use at most 4 KiB).
pub const MAX_ALIGN: u64 = 1 << 21;

impl Object {
    /// Reads and parses the object at `path`.
    pub fn read(path: &Path) -> Result<Object, ElfError> {
        let data = std::fs::read(path).map_err(|source| ElfError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Object::parse(&data, &path.display().to_string())
    }

    /// Parses a 64-bit relocatable ELF object. `file` names it in errors.
    pub fn parse(data: &[u8], file: &str) -> Result<Object, ElfError> {
        let malformed = |reason: String| ElfError::Malformed {
            file: file.to_string(),
            reason,
        };
        if data.len() < 16 || &data[..4] != b"\x7fELF" {
            return Err(malformed("no ELF magic".into()));
        }
        if data[4] != object::elf::ELFCLASS64.0 {
            return Err(ElfError::Unsupported {
                file: file.into(),
                reason: "only 64-bit ELF objects are supported".into(),
            });
        }
        let hdr = object::elf::FileHeader64::<Endianness>::parse(data)
            .map_err(|e| malformed(e.to_string()))?;
        let endian = hdr.endian().map_err(|e| malformed(e.to_string()))?;
        if hdr.e_type(endian).0 != object::elf::ET_REL.0 {
            return Err(ElfError::Unsupported {
                file: file.into(),
                reason: format!(
                    "not a relocatable object (e_type {}); give the .o files kbuild compiled",
                    hdr.e_type(endian).0
                ),
            });
        }
        let header = Header {
            e_machine: hdr.e_machine(endian).0,
            e_flags: hdr.e_flags(endian).0,
            ei_osabi: hdr.e_ident().os_abi.0,
            ei_abiversion: hdr.e_ident().abi_version,
            big_endian: endian == Endianness::Big,
        };
        let table = hdr
            .sections(endian, data)
            .map_err(|e| malformed(format!("section headers: {e}")))?;
        let nsec = table.len();
        if nsec == 0 {
            return Err(malformed("no section headers".into()));
        }

        let mut sections = Vec::with_capacity(nsec);
        let mut symtab_index = None;
        for (i, sh) in table.iter().enumerate() {
            let name = table
                .section_name(endian, sh)
                .map_err(|e| malformed(format!("section [{i}] name: {e}")))?;
            let name = String::from_utf8_lossy(name).into_owned();
            let bad = |reason: String| ElfError::BadSection {
                file: file.into(),
                index: i,
                section: name.clone(),
                reason,
            };
            let sh_type = sh.sh_type(endian).0;
            let sh_flags = sh.sh_flags(endian).0;
            let mut sec = Section {
                name: name.clone(),
                sh_type,
                sh_flags,
                sh_addr: sh.sh_addr(endian),
                sh_addralign: sh.sh_addralign(endian),
                sh_entsize: sh.sh_entsize(endian),
                sh_link: sh.sh_link(endian),
                sh_info: sh.sh_info(endian),
                sh_size: sh.sh_size(endian),
                data: Vec::new(),
                relas: Vec::new(),
            };
            // Alignment pads the written file: an absurd one would make writing it absurd too.
            if sec.sh_addralign > 1 && (!sec.sh_addralign.is_power_of_two() || sec.sh_addralign > MAX_ALIGN) {
                return Err(bad(format!("sh_addralign {:#x} is not a power of two up to {MAX_ALIGN:#x}", sec.sh_addralign)));
            }
            if sec.sh_flags & object::elf::SHF_COMPRESSED.0 != 0 {
                return Err(bad("compressed sections are not supported".into()));
            }
            match sh_type {
                SHT_NULL if i > 0 => return Err(bad("an inactive (SHT_NULL) section header after index 0".into())),
                SHT_NULL | SHT_NOBITS => {}
                SHT_SYMTAB => {
                    if symtab_index.replace(i).is_some() {
                        return Err(bad("a second symbol table".into()));
                    }
                }
                SHT_RELA => {
                    if i != 0 && sec.sh_info as usize >= nsec {
                        return Err(bad(format!("sh_info {} is not a section", sec.sh_info)));
                    }
                }
                SHT_REL => return Err(bad("SHT_REL sections are not supported (x86_64 and the other kernel targets use SHT_RELA)".into())),
                _ => {
                    if !sec.is_generated_table() {
                        sec.data = sh
                            .data(endian, data)
                            .map_err(|e| bad(format!("data: {e}")))?
                            .to_vec();
                    }
                }
            }
            if sh_type == SHT_GROUP && !sec.data.len().is_multiple_of(4) {
                return Err(bad("group size is not a multiple of 4".into()));
            }
            if sh_type == SHT_GROUP {
                for w in sec.data.chunks_exact(4).skip(1) {
                    let b = [w[0], w[1], w[2], w[3]];
                    let m = if header.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) };
                    if m == 0 || m as usize >= nsec {
                        return Err(bad(format!("group member {m} is not a section")));
                    }
                }
            }
            sections.push(sec);
        }

        let Some(symtab_index) = symtab_index else {
            return Err(malformed("no symbol table (.symtab)".into()));
        };
        // The writer regenerates the string tables by role; their names must say which is which.
        let strtab_index = sections[symtab_index].sh_link as usize;
        let shstrndx = hdr.shstrndx(endian, data).map_err(|e| malformed(e.to_string()))? as usize;
        for (index, want) in [(symtab_index, ".symtab"), (strtab_index, ".strtab"), (shstrndx, ".shstrtab")] {
            match sections.get(index) {
                Some(s) if s.name == want && (want == ".symtab" || s.sh_type == SHT_STRTAB) => {}
                Some(s) => {
                    return Err(ElfError::BadSection {
                        file: file.into(),
                        index,
                        section: s.name.clone(),
                        reason: format!("expected the string or symbol table {want} here"),
                    })
                }
                None => return Err(malformed(format!("{want}: section index {index} does not exist"))),
            }
        }
        if let Some((i, s)) = sections.iter().enumerate().find(|(_, s)| s.sh_type == SHT_SYMTAB_SHNDX && s.sh_link as usize != symtab_index) {
            return Err(ElfError::BadSection { file: file.into(), index: i, section: s.name.clone(), reason: format!("SHT_SYMTAB_SHNDX not linked to the symbol table [{symtab_index}]") });
        }
        if sections.iter().filter(|s| s.sh_type == SHT_SYMTAB_SHNDX).count() > 1 {
            return Err(malformed("more than one SHT_SYMTAB_SHNDX section".into()));
        }
        if let Some((i, s)) = sections.iter().enumerate().find(|(i, s)| {
            s.is_generated_table() && ![symtab_index, strtab_index, shstrndx].contains(i) && s.sh_type != SHT_SYMTAB_SHNDX
        }) {
            return Err(ElfError::BadSection { file: file.into(), index: i, section: s.name.clone(), reason: "a second copy of a string or symbol table".into() });
        }
        let symtab = table
            .symbols(endian, data, object::elf::SHT_SYMTAB)
            .map_err(|e| malformed(format!("symbol table: {e}")))?;
        let mut symbols = Vec::with_capacity(symtab.len());
        for (i, sym) in symtab.iter().enumerate() {
            let name = symtab
                .symbol_name(endian, sym)
                .map_err(|e| malformed(format!("symbol [{i}] name: {e}")))?;
            let name = String::from_utf8_lossy(name).into_owned();
            let st_shndx = sym.st_shndx(endian).0;
            let section = symtab
                .symbol_section(endian, sym, object::SymbolIndex(i))
                .map_err(|e| ElfError::BadSymbol {
                    file: file.into(),
                    index: i,
                    symbol: name.clone(),
                    reason: e.to_string(),
                })?
                .map(|s| SectionIndex(s.0));
            if let Some(s) = section {
                if s.0 == 0 || s.0 >= nsec {
                    return Err(ElfError::BadSymbol {
                        file: file.into(),
                        index: i,
                        symbol: name,
                        reason: format!("st_shndx {} is not a section", s.0),
                    });
                }
            }
            symbols.push(Symbol {
                name,
                st_info: sym.st_info().0,
                st_other: sym.st_other().0,
                st_shndx,
                section,
                st_value: sym.st_value(endian),
                st_size: sym.st_size(endian),
            });
        }
        if symbols.is_empty() {
            symbols.push(Symbol::null());
        }
        if symbols[0] != Symbol::null() {
            return Err(ElfError::BadSymbol {
                file: file.into(),
                index: 0,
                symbol: symbols[0].name.clone(),
                reason: "symbol 0 must be the all-zero null symbol".into(),
            });
        }
        // Section 0's header may carry extended counts; the writer regenerates it.
        sections[0] = Object::new(header.clone()).sections.remove(0);

        for (i, sh) in table.iter().enumerate() {
            if sh.sh_type(endian).0 != SHT_RELA {
                continue;
            }
            let bad = |reason: String| ElfError::BadSection {
                file: file.into(),
                index: i,
                section: sections[i].name.clone(),
                reason,
            };
            if sh.sh_link(endian) as usize != symtab_index {
                return Err(bad(format!(
                    "sh_link {} is not the symbol table [{symtab_index}]",
                    sh.sh_link(endian)
                )));
            }
            let relas = sh
                .data_as_array::<object::elf::Rela64<Endianness>, _>(endian, data)
                .map_err(|e| bad(format!("entries: {e}")))?;
            let mut out = Vec::with_capacity(relas.len());
            for (n, r) in relas.iter().enumerate() {
                let r_sym = r.r_sym(endian, false) as usize;
                if r_sym >= symbols.len() {
                    return Err(bad(format!("entry {n} names symbol {r_sym}, past the symbol table")));
                }
                out.push(Rela {
                    r_offset: r.r_offset(endian),
                    r_sym: SymbolIndex(r_sym),
                    r_type: r.r_type(endian, false).0,
                    r_addend: r.r_addend(endian),
                });
            }
            sections[i].relas = out;
        }
        // Relocations inside their sections, symbols inside theirs: what every later offset
        // computation relies on.
        for (i, sec) in sections.iter().enumerate() {
            let Some(target) = (sec.sh_type == SHT_RELA && sec.sh_info != 0).then(|| &sections[sec.sh_info as usize]) else { continue };
            if target.is_nobits() && !sec.relas.is_empty() {
                return Err(ElfError::BadSection {
                    file: file.into(),
                    index: i,
                    section: sec.name.clone(),
                    reason: format!("relocations for {}, which has no contents (SHT_NOBITS)", target.name),
                });
            }
            if let Some(r) = sec.relas.iter().find(|r| r.r_offset >= target.sh_size) {
                return Err(ElfError::BadSection {
                    file: file.into(),
                    index: i,
                    section: sec.name.clone(),
                    reason: format!("relocation at 0x{:x} is past the end of {} (0x{:x} bytes)", r.r_offset, target.name, target.sh_size),
                });
            }
        }
        for (i, sym) in symbols.iter().enumerate() {
            let Some(s) = sym.section else { continue };
            let size = sections[s.0].sh_size;
            if sym.st_value > size || sym.st_size > size {
                return Err(ElfError::BadSymbol {
                    file: file.into(),
                    index: i,
                    symbol: sym.name.clone(),
                    reason: format!("value 0x{:x} size 0x{:x} lie outside {} (0x{:x} bytes)", sym.st_value, sym.st_size, sections[s.0].name, size),
                });
            }
        }

        let object = Object { header, sections, symbols };
        let locals = object.num_locals();
        if let Some((i, s)) = object.symbols_iter().skip(locals.saturating_sub(1)).find(|(_, s)| s.is_local()) {
            return Err(ElfError::BadSymbol {
                file: file.into(),
                index: i.0,
                symbol: s.name.clone(),
                reason: "local symbol after the first global".into(),
            });
        }
        Ok(object)
    }
}

