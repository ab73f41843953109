//! Emitting: the model through `object::write::elf::Writer`, section indexes kept as they are.

use crate::consts::*;
use crate::{ElfError, Object};
use object::write::elf::{FileHeader, Rel, SectionHeader, Sym, Writer};
use object::write::StringId;
use object::Endianness;
use std::path::Path;

enum Role {
    Null,
    Symtab,
    Strtab,
    Shstrtab,
    SymtabShndx,
    Rela { name: StringId, offset: u64 },
    Data { name: StringId, offset: u64 },
}

impl Object {
    /// Serialises the object. Section and symbol indexes are those of the model; the string
    /// tables and the symbol table are regenerated.
    pub fn write(&self) -> Result<Vec<u8>, ElfError> {
        let err = |reason: String| ElfError::Write { reason };
        self.check_for_write().map_err(err)?;
        let endian = if self.header.big_endian {
            Endianness::Big
        } else {
            Endianness::Little
        };
        let mut buf = Vec::new();
        let mut w = Writer::new(endian, true, &mut buf);
        w.reserve_file_header();

        // Section indexes, in model order.
        let mut roles = Vec::with_capacity(self.sections.len());
        for (i, sec) in self.sections.iter().enumerate() {
            let role = if i == 0 {
                w.reserve_null_section_index();
                Role::Null
            } else if sec.sh_type == SHT_SYMTAB {
                w.reserve_symtab_section_index();
                Role::Symtab
            } else if sec.sh_type == SHT_SYMTAB_SHNDX {
                w.reserve_symtab_shndx_section_index();
                Role::SymtabShndx
            } else if sec.sh_type == SHT_STRTAB && sec.name == ".strtab" {
                w.reserve_strtab_section_index();
                Role::Strtab
            } else if sec.sh_type == SHT_STRTAB && sec.name == ".shstrtab" {
                w.reserve_shstrtab_section_index();
                Role::Shstrtab
            } else {
                let name = w.add_section_name(sec.name.as_bytes());
                w.reserve_section_index();
                if sec.is_rela() {
                    Role::Rela { name, offset: 0 }
                } else {
                    Role::Data { name, offset: 0 }
                }
            };
            roles.push(role);
        }

        let has_shndx = roles.iter().any(|r| matches!(r, Role::SymtabShndx));

        // Symbols.
        w.reserve_null_symbol_index();
        let mut sym_names = Vec::with_capacity(self.symbols.len());
        for sym in self.symbols.iter().skip(1) {
            let name = (!sym.name.is_empty()).then(|| w.add_string(sym.name.as_bytes()));
            sym_names.push(name);
            w.reserve_symbol_index(
                sym.section
                    .map(|s| object::write::elf::SectionIndex(s.0 as u32)),
            );
        }

        // File layout: section data in model order, then the tables.
        for (i, sec) in self.sections.iter().enumerate() {
            match &mut roles[i] {
                Role::Data { offset, .. } => {
                    if !sec.is_nobits() {
                        *offset = w.reserve(sec.data.len() as u64, sec.sh_addralign.max(1));
                    }
                }
                Role::Rela { offset, .. } => {
                    *offset = w.reserve_relocations(sec.relas.len(), true);
                }
                Role::Symtab => {
                    w.reserve_symtab();
                    // The extended indexes are gathered while the symbols are written, so their
                    // data follows the symbol table's wherever their header stands.
                    if has_shndx {
                        w.require_symtab_shndx();
                        w.reserve_symtab_shndx();
                    }
                }
                Role::SymtabShndx => {}
                Role::Strtab => w.reserve_strtab().map_err(|e| err(e.to_string()))?,
                Role::Shstrtab => w.reserve_shstrtab().map_err(|e| err(e.to_string()))?,
                Role::Null => {}
            }
        }
        w.reserve_section_headers();

        w.write_file_header(&FileHeader {
            os_abi: object::elf::OsAbi(self.header.ei_osabi),
            abi_version: self.header.ei_abiversion,
            e_type: object::elf::ET_REL,
            e_machine: object::elf::Machine(self.header.e_machine),
            e_entry: 0,
            e_flags: object::elf::FileFlags(self.header.e_flags),
        })
        .map_err(|e| err(e.to_string()))?;

        for (i, sec) in self.sections.iter().enumerate() {
            match &roles[i] {
                Role::Data { offset, .. } => {
                    if !sec.is_nobits() {
                        w.write_align(sec.sh_addralign.max(1));
                        debug_assert_eq!(w.len(), *offset);
                        w.write(&sec.data);
                    }
                }
                Role::Rela { .. } => {
                    w.write_align_relocation();
                    for r in &sec.relas {
                        w.write_relocation(
                            true,
                            &Rel {
                                r_offset: r.r_offset,
                                r_sym: r.r_sym.0 as u32,
                                r_type: object::elf::RelocationType(r.r_type),
                                r_addend: r.r_addend,
                            },
                        );
                    }
                }
                Role::Symtab => {
                    w.write_null_symbol();
                    for (sym, name) in self.symbols.iter().skip(1).zip(&sym_names) {
                        w.write_symbol(&Sym {
                            st_name: w.string_offset(*name),
                            section: sym.section.map(|s| s.0 as u32),
                            st_info: object::elf::SymbolInfo(sym.st_info),
                            st_other: object::elf::SymbolOther(sym.st_other),
                            st_shndx: object::elf::SymbolSection(sym.st_shndx),
                            st_value: sym.st_value,
                            st_size: sym.st_size,
                        });
                    }
                    if has_shndx {
                        w.write_symtab_shndx();
                    }
                }
                Role::SymtabShndx => {}
                Role::Strtab => w.write_strtab(),
                Role::Shstrtab => w.write_shstrtab(),
                Role::Null => {}
            }
        }

        w.write_null_section_header();
        let symtab_index = self
            .sections
            .iter()
            .position(|s| s.sh_type == SHT_SYMTAB)
            .unwrap_or(0) as u32;
        let num_locals = self.num_locals() as u32;
        for (i, sec) in self.sections.iter().enumerate() {
            match &roles[i] {
                Role::Null => {}
                Role::Symtab => w.write_symtab_section_header(num_locals),
                Role::SymtabShndx => w.write_symtab_shndx_section_header(),
                Role::Strtab => w.write_strtab_section_header(),
                Role::Shstrtab => w.write_shstrtab_section_header(),
                Role::Rela { name, offset } => {
                    w.write_section_header(&SectionHeader {
                        sh_name: w.section_name_offset(Some(*name)),
                        sh_type: object::elf::SectionType(SHT_RELA),
                        sh_flags: object::elf::SectionFlags(sec.sh_flags),
                        sh_addr: sec.sh_addr,
                        sh_offset: *offset,
                        sh_size: sec.relas.len() as u64 * 24,
                        sh_link: symtab_index,
                        sh_info: sec.sh_info,
                        sh_addralign: sec.sh_addralign.max(8),
                        sh_entsize: 24,
                    });
                }
                Role::Data { name, offset } => {
                    let sh_link = if sec.sh_type == SHT_GROUP {
                        symtab_index
                    } else {
                        sec.sh_link
                    };
                    w.write_section_header(&SectionHeader {
                        sh_name: w.section_name_offset(Some(*name)),
                        sh_type: object::elf::SectionType(sec.sh_type),
                        sh_flags: object::elf::SectionFlags(sec.sh_flags),
                        sh_addr: sec.sh_addr,
                        sh_offset: *offset,
                        sh_size: if sec.is_nobits() {
                            sec.sh_size
                        } else {
                            sec.data.len() as u64
                        },
                        sh_link,
                        sh_info: sec.sh_info,
                        sh_addralign: sec.sh_addralign,
                        sh_entsize: sec.sh_entsize,
                    });
                }
            }
        }
        Ok(buf)
    }

    /// Writes the object to `path` atomically ([`kpatch_common::fs::replace_atomic`]: not
    /// synced, an object is made again after a machine crash), so a failure never leaves a
    /// partial output.
    pub fn write_to_path(&self, path: &Path) -> Result<(), ElfError> {
        let bytes = self.write()?;
        kpatch_common::fs::replace_atomic(path, &bytes).map_err(|source| ElfError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Checks the invariants the writer relies on: indexes in range, locals first.
    fn check_for_write(&self) -> Result<(), String> {
        let nsec = self.sections.len();
        let nsym = self.symbols.len();
        if self
            .sections
            .iter()
            .filter(|s| s.sh_type == SHT_SYMTAB)
            .count()
            != 1
        {
            return Err("an object needs exactly one .symtab section".into());
        }
        for table in [".strtab", ".shstrtab"] {
            if self
                .sections
                .iter()
                .filter(|s| s.sh_type == SHT_STRTAB && s.name == table)
                .count()
                != 1
            {
                return Err(format!("an object needs exactly one {table} section"));
            }
        }
        for (i, sym) in self.symbols.iter().enumerate() {
            if let Some(s) = sym.section {
                if s.0 == 0 || s.0 >= nsec {
                    return Err(format!(
                        "symbol [{i}] '{}' is in section {}, which does not exist",
                        sym.name, s.0
                    ));
                }
            }
        }
        let locals = self.num_locals();
        if let Some(i) = self.symbols.iter().skip(locals).position(|s| s.is_local()) {
            return Err(format!(
                "local symbol [{}] '{}' after the first global",
                i + locals,
                self.symbols[i + locals].name
            ));
        }
        for sec in &self.sections {
            for r in &sec.relas {
                if r.r_sym.0 >= nsym {
                    return Err(format!(
                        "section '{}': relocation at 0x{:x} names symbol {}, past the symbol table",
                        sec.name, r.r_offset, r.r_sym.0
                    ));
                }
            }
            if sec.is_rela() && sec.sh_info as usize >= nsec {
                return Err(format!(
                    "section '{}': sh_info {} is not a section",
                    sec.name, sec.sh_info
                ));
            }
            if sec.sh_flags & SHF_LINK_ORDER != 0 && sec.sh_link as usize >= nsec {
                return Err(format!(
                    "section '{}': sh_link {} is not a section",
                    sec.name, sec.sh_link
                ));
            }
        }
        Ok(())
    }
}
