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

    /// Parses a 64-bit relocatable ELF object. `file` names it in errors. Every index is
    /// checked, so that later code can index without checking.
    pub fn parse(data: &[u8], file: &str) -> Result<Object, ElfError> {
        // 1. ELF magic, 64-bit class, a relocatable object.
        let r = Reader::new(data, file)?;
        let header = r.header();
        // 2. Section headers and contents, each checked on its own.
        let mut sections = r.sections(&header)?;
        // 3. Exactly one .symtab, .strtab and .shstrtab, where the headers say.
        let symtab = r.check_tables(&sections)?;
        // 4. Symbols, each in an existing section, the null symbol first.
        let symbols = r.symbols(sections.len())?;
        // Section 0's header may carry extended counts; the writer regenerates it.
        sections[0] = Object::new(header.clone()).sections.remove(0);
        // 5. Relocations, each naming an existing symbol.
        r.relocations(&mut sections, symtab, symbols.len())?;
        // 6. Relocations inside their sections, symbols inside theirs.
        check_offsets(file, &sections, &symbols)?;
        // 7. Locals first.
        let object = Object {
            header,
            sections,
            symbols,
        };
        check_locals_first(file, &object)?;
        Ok(object)
    }
}

type Elf64 = object::elf::FileHeader64<Endianness>;

/// The parser's view of the file: its header and section table.
struct Reader<'d> {
    data: &'d [u8],
    file: &'d str,
    hdr: &'d Elf64,
    endian: Endianness,
    table: object::read::elf::SectionTable<'d, Elf64>,
}

impl<'d> Reader<'d> {
    fn malformed(&self, reason: String) -> ElfError {
        malformed(self.file, reason)
    }

    fn bad_section(&self, index: usize, section: &str, reason: String) -> ElfError {
        ElfError::BadSection {
            file: self.file.into(),
            index,
            section: section.to_string(),
            reason,
        }
    }

    fn new(data: &'d [u8], file: &'d str) -> Result<Self, ElfError> {
        if data.len() < 16 || &data[..4] != b"\x7fELF" {
            return Err(malformed(file, "no ELF magic".into()));
        }
        if data[4] != object::elf::ELFCLASS64.0 {
            return Err(ElfError::Unsupported {
                file: file.into(),
                reason: "only 64-bit ELF objects are supported".into(),
            });
        }
        let hdr = Elf64::parse(data).map_err(|e| malformed(file, e.to_string()))?;
        let endian = hdr.endian().map_err(|e| malformed(file, e.to_string()))?;
        if hdr.e_type(endian).0 != object::elf::ET_REL.0 {
            return Err(ElfError::Unsupported {
                file: file.into(),
                reason: format!(
                    "not a relocatable object (e_type {}); give the .o files kbuild compiled",
                    hdr.e_type(endian).0
                ),
            });
        }
        let table = hdr
            .sections(endian, data)
            .map_err(|e| malformed(file, format!("section headers: {e}")))?;
        if table.is_empty() {
            return Err(malformed(file, "no section headers".into()));
        }
        Ok(Reader {
            data,
            file,
            hdr,
            endian,
            table,
        })
    }

    fn header(&self) -> Header {
        Header {
            e_machine: self.hdr.e_machine(self.endian).0,
            e_flags: self.hdr.e_flags(self.endian).0,
            ei_osabi: self.hdr.e_ident().os_abi.0,
            ei_abiversion: self.hdr.e_ident().abi_version,
            big_endian: self.endian == Endianness::Big,
        }
    }

    /// Every section header with its contents (none for relocation sections, which
    /// [`Self::relocations`] fills, and for the tables the writer regenerates).
    fn sections(&self, header: &Header) -> Result<Vec<Section>, ElfError> {
        let mut sections = Vec::with_capacity(self.table.len());
        let mut symtab_seen = false;
        for (i, sh) in self.table.iter().enumerate() {
            let name = self
                .table
                .section_name(self.endian, sh)
                .map_err(|e| self.malformed(format!("section [{i}] name: {e}")))?;
            let sec = self.section(i, sh, name_string(name), header)?;
            if sec.sh_type == SHT_SYMTAB && std::mem::replace(&mut symtab_seen, true) {
                return Err(self.bad_section(i, &sec.name, "a second symbol table".into()));
            }
            sections.push(sec);
        }
        Ok(sections)
    }

    /// Section `i`, checked: alignment, compression, type, group members.
    fn section(
        &self,
        i: usize,
        sh: &object::elf::SectionHeader64<Endianness>,
        name: String,
        header: &Header,
    ) -> Result<Section, ElfError> {
        let e = self.endian;
        let nsec = self.table.len();
        let bad = |reason: String| self.bad_section(i, &name, reason);
        let sh_type = sh.sh_type(e).0;
        let mut sec = Section {
            name: name.clone(),
            sh_type,
            sh_flags: sh.sh_flags(e).0,
            sh_addr: sh.sh_addr(e),
            sh_addralign: sh.sh_addralign(e),
            sh_entsize: sh.sh_entsize(e),
            sh_link: sh.sh_link(e),
            sh_info: sh.sh_info(e),
            sh_size: sh.sh_size(e),
            data: Vec::new(),
            relas: Vec::new(),
        };
        // Alignment pads the written file: an absurd one would make writing it absurd too.
        if sec.sh_addralign > 1
            && (!sec.sh_addralign.is_power_of_two() || sec.sh_addralign > MAX_ALIGN)
        {
            return Err(bad(format!(
                "sh_addralign {:#x} is not a power of two up to {MAX_ALIGN:#x}",
                sec.sh_addralign
            )));
        }
        if sec.sh_flags & object::elf::SHF_COMPRESSED.0 != 0 {
            return Err(bad("compressed sections are not supported".into()));
        }
        match sh_type {
            SHT_NULL if i > 0 => return Err(bad("an inactive (SHT_NULL) section header after index 0".into())),
            SHT_NULL | SHT_NOBITS | SHT_SYMTAB => {}
            SHT_RELA => {
                if i != 0 && sec.sh_info as usize >= nsec {
                    return Err(bad(format!("sh_info {} is not a section", sec.sh_info)));
                }
            }
            SHT_REL => return Err(bad("SHT_REL sections are not supported (x86_64 and the other kernel targets use SHT_RELA)".into())),
            _ => {
                if !sec.is_generated_table() {
                    sec.data = sh.data(e, self.data).map_err(|err| bad(format!("data: {err}")))?.to_vec();
                }
            }
        }
        if sh_type == SHT_GROUP {
            if !sec.data.len().is_multiple_of(4) {
                return Err(bad("group size is not a multiple of 4".into()));
            }
            for w in sec.data.chunks_exact(4).skip(1) {
                let b = [w[0], w[1], w[2], w[3]];
                let m = if header.big_endian {
                    u32::from_be_bytes(b)
                } else {
                    u32::from_le_bytes(b)
                };
                if m == 0 || m as usize >= nsec {
                    return Err(bad(format!("group member {m} is not a section")));
                }
            }
        }
        Ok(sec)
    }

    /// The writer regenerates the string tables by role, so their names must say which is
    /// which: `.symtab`, the `.strtab` it links to and `.shstrtab` where the header says, no
    /// second copy of any, at most one `SHT_SYMTAB_SHNDX` (for the symbol table). Returns the
    /// symbol table's index.
    fn check_tables(&self, sections: &[Section]) -> Result<usize, ElfError> {
        let Some(symtab_index) = sections.iter().position(|s| s.sh_type == SHT_SYMTAB) else {
            return Err(self.malformed("no symbol table (.symtab)".into()));
        };
        let strtab_index = sections[symtab_index].sh_link as usize;
        let shstrndx = self
            .hdr
            .shstrndx(self.endian, self.data)
            .map_err(|e| self.malformed(e.to_string()))? as usize;
        for (index, want) in [
            (symtab_index, ".symtab"),
            (strtab_index, ".strtab"),
            (shstrndx, ".shstrtab"),
        ] {
            match sections.get(index) {
                Some(s) if s.name == want && (want == ".symtab" || s.sh_type == SHT_STRTAB) => {}
                Some(s) => {
                    return Err(self.bad_section(
                        index,
                        &s.name,
                        format!("expected the string or symbol table {want} here"),
                    ))
                }
                None => {
                    return Err(
                        self.malformed(format!("{want}: section index {index} does not exist"))
                    )
                }
            }
        }
        if let Some((i, s)) = sections
            .iter()
            .enumerate()
            .find(|(_, s)| s.sh_type == SHT_SYMTAB_SHNDX && s.sh_link as usize != symtab_index)
        {
            return Err(self.bad_section(
                i,
                &s.name,
                format!("SHT_SYMTAB_SHNDX not linked to the symbol table [{symtab_index}]"),
            ));
        }
        if sections
            .iter()
            .filter(|s| s.sh_type == SHT_SYMTAB_SHNDX)
            .count()
            > 1
        {
            return Err(self.malformed("more than one SHT_SYMTAB_SHNDX section".into()));
        }
        if let Some((i, s)) = sections.iter().enumerate().find(|(i, s)| {
            s.is_generated_table()
                && ![symtab_index, strtab_index, shstrndx].contains(i)
                && s.sh_type != SHT_SYMTAB_SHNDX
        }) {
            return Err(self.bad_section(
                i,
                &s.name,
                "a second copy of a string or symbol table".into(),
            ));
        }
        Ok(symtab_index)
    }

    /// The symbol table, each symbol's section existing; symbol 0 the null symbol.
    fn symbols(&self, nsec: usize) -> Result<Vec<Symbol>, ElfError> {
        let e = self.endian;
        let symtab = self
            .table
            .symbols(e, self.data, object::elf::SHT_SYMTAB)
            .map_err(|err| self.malformed(format!("symbol table: {err}")))?;
        let mut symbols = Vec::with_capacity(symtab.len());
        for (i, sym) in symtab.iter().enumerate() {
            let name = symtab
                .symbol_name(e, sym)
                .map_err(|err| self.malformed(format!("symbol [{i}] name: {err}")))?;
            let name = name_string(name);
            let bad = |symbol: String, reason: String| ElfError::BadSymbol {
                file: self.file.into(),
                index: i,
                symbol,
                reason,
            };
            let section = symtab
                .symbol_section(e, sym, object::SymbolIndex(i))
                .map_err(|err| bad(name.clone(), err.to_string()))?
                .map(|s| SectionIndex(s.0));
            if let Some(s) = section {
                if s.0 == 0 || s.0 >= nsec {
                    return Err(bad(name, format!("st_shndx {} is not a section", s.0)));
                }
            }
            symbols.push(Symbol {
                name,
                st_info: sym.st_info().0,
                st_other: sym.st_other().0,
                st_shndx: sym.st_shndx(e).0,
                section,
                st_value: sym.st_value(e),
                st_size: sym.st_size(e),
            });
        }
        if symbols.is_empty() {
            symbols.push(Symbol::null());
        }
        if symbols[0] != Symbol::null() {
            return Err(ElfError::BadSymbol {
                file: self.file.into(),
                index: 0,
                symbol: symbols[0].name.clone(),
                reason: "symbol 0 must be the all-zero null symbol".into(),
            });
        }
        Ok(symbols)
    }

    /// The entries of every relocation section, which must use the symbol table and name
    /// symbols that exist.
    fn relocations(
        &self,
        sections: &mut [Section],
        symtab_index: usize,
        nsym: usize,
    ) -> Result<(), ElfError> {
        let e = self.endian;
        for (i, sh) in self.table.iter().enumerate() {
            if sh.sh_type(e).0 != SHT_RELA {
                continue;
            }
            let bad = |reason: String| self.bad_section(i, &sections[i].name, reason);
            if sh.sh_link(e) as usize != symtab_index {
                return Err(bad(format!(
                    "sh_link {} is not the symbol table [{symtab_index}]",
                    sh.sh_link(e)
                )));
            }
            let relas = sh
                .data_as_array::<object::elf::Rela64<Endianness>, _>(e, self.data)
                .map_err(|err| bad(format!("entries: {err}")))?;
            let mut out = Vec::with_capacity(relas.len());
            for (n, r) in relas.iter().enumerate() {
                let r_sym = r.r_sym(e, false) as usize;
                if r_sym >= nsym {
                    return Err(bad(format!(
                        "entry {n} names symbol {r_sym}, past the symbol table"
                    )));
                }
                out.push(Rela {
                    r_offset: r.r_offset(e),
                    r_sym: SymbolIndex(r_sym),
                    r_type: r.r_type(e, false).0,
                    r_addend: r.r_addend(e),
                });
            }
            sections[i].relas = out;
        }
        Ok(())
    }
}

/// A name from a string table: as it is when it is UTF-8 (always, in practice: the lossy
/// conversion's chunk scan was a measurable part of reading an object), else lossily.
fn name_string(name: &[u8]) -> String {
    match std::str::from_utf8(name) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(name).into_owned(),
    }
}

fn malformed(file: &str, reason: String) -> ElfError {
    ElfError::Malformed {
        file: file.to_string(),
        reason,
    }
}

/// Relocations inside their sections, symbols inside theirs: what every later offset
/// computation relies on.
fn check_offsets(file: &str, sections: &[Section], symbols: &[Symbol]) -> Result<(), ElfError> {
    for (i, sec) in sections.iter().enumerate() {
        let Some(target) =
            (sec.sh_type == SHT_RELA && sec.sh_info != 0).then(|| &sections[sec.sh_info as usize])
        else {
            continue;
        };
        if target.is_nobits() && !sec.relas.is_empty() {
            return Err(ElfError::BadSection {
                file: file.into(),
                index: i,
                section: sec.name.clone(),
                reason: format!(
                    "relocations for {}, which has no contents (SHT_NOBITS)",
                    target.name
                ),
            });
        }
        if let Some(r) = sec.relas.iter().find(|r| r.r_offset >= target.sh_size) {
            return Err(ElfError::BadSection {
                file: file.into(),
                index: i,
                section: sec.name.clone(),
                reason: format!(
                    "relocation at 0x{:x} is past the end of {} (0x{:x} bytes)",
                    r.r_offset, target.name, target.sh_size
                ),
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
                reason: format!(
                    "value 0x{:x} size 0x{:x} lie outside {} (0x{:x} bytes)",
                    sym.st_value, sym.st_size, sections[s.0].name, size
                ),
            });
        }
    }
    Ok(())
}

/// No local symbol after the first global (the ELF rule the writer keeps).
fn check_locals_first(file: &str, object: &Object) -> Result<(), ElfError> {
    let locals = object.num_locals();
    if let Some((i, s)) = object
        .symbols_iter()
        .skip(locals.saturating_sub(1))
        .find(|(_, s)| s.is_local())
    {
        return Err(ElfError::BadSymbol {
            file: file.into(),
            index: i.0,
            symbol: s.name.clone(),
            reason: "local symbol after the first global".into(),
        });
    }
    Ok(())
}
