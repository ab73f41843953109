use crate::consts::*;
use std::collections::HashMap;

/// Position of a section in [`Object::sections`] (equal to its index in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SectionIndex(pub usize);

/// Position of a symbol in [`Object::symbols`] (equal to its index in `.symtab`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SymbolIndex(pub usize);

/// The ELF file header fields a relocatable object carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub e_machine: u16,
    pub e_flags: u32,
    pub ei_osabi: u8,
    pub ei_abiversion: u8,
    pub big_endian: bool,
}

/// A relocation with an explicit addend (`Elf64_Rela`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rela {
    pub r_offset: u64,
    pub r_sym: SymbolIndex,
    pub r_type: u32,
    pub r_addend: i64,
}

/// A section. `data` holds the bytes of every section but the regenerated tables
/// (`.symtab`, its string table, `.shstrtab`, `SHT_SYMTAB_SHNDX`) and `SHT_NOBITS`, whose size
/// is `sh_size`. A `SHT_RELA` section keeps its entries in `relas` and the index of the section
/// they apply to in `sh_info`; a `SHT_GROUP` section keeps its words in `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub sh_type: u32,
    pub sh_flags: u64,
    pub sh_addr: u64,
    pub sh_addralign: u64,
    pub sh_entsize: u64,
    pub sh_link: u32,
    pub sh_info: u32,
    /// Size in bytes; for `SHT_NOBITS` the only record of it.
    pub sh_size: u64,
    pub data: Vec<u8>,
    pub relas: Vec<Rela>,
}

/// A symbol-table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    /// The name in `.strtab` (empty for section symbols: see [`Object::symbol_name`]).
    pub name: String,
    pub st_info: u8,
    pub st_other: u8,
    /// The raw `st_shndx` for symbols with no section (`SHN_UNDEF`, `SHN_ABS`, `SHN_COMMON`,
    /// `SHN_LIVEPATCH`); ignored on write when `section` is set.
    pub st_shndx: u16,
    /// The section the symbol is defined in (extended indexes resolved).
    pub section: Option<SectionIndex>,
    pub st_value: u64,
    pub st_size: u64,
}

impl Symbol {
    pub fn st_bind(&self) -> u8 {
        self.st_info >> 4
    }
    pub fn st_type(&self) -> u8 {
        self.st_info & 0xf
    }
    pub fn set_bind(&mut self, bind: u8) {
        self.st_info = (bind << 4) | self.st_type();
    }
    pub fn is_local(&self) -> bool {
        self.st_bind() == STB_LOCAL
    }
    pub fn is_func(&self) -> bool {
        self.st_type() == STT_FUNC
    }
    pub fn is_object(&self) -> bool {
        self.st_type() == STT_OBJECT
    }
    pub fn is_section(&self) -> bool {
        self.st_type() == STT_SECTION
    }
    pub fn is_undefined(&self) -> bool {
        self.section.is_none() && self.st_shndx == SHN_UNDEF
    }
    /// The null symbol at index 0.
    pub fn null() -> Symbol {
        Symbol {
            name: String::new(),
            st_info: 0,
            st_other: 0,
            st_shndx: 0,
            section: None,
            st_value: 0,
            st_size: 0,
        }
    }
}

impl Section {
    pub fn is_rela(&self) -> bool {
        self.sh_type == SHT_RELA
    }
    pub fn is_group(&self) -> bool {
        self.sh_type == SHT_GROUP
    }
    pub fn is_nobits(&self) -> bool {
        self.sh_type == SHT_NOBITS
    }
    pub fn is_alloc(&self) -> bool {
        self.sh_flags & SHF_ALLOC != 0
    }
    pub fn is_text(&self) -> bool {
        self.sh_type == SHT_PROGBITS && self.sh_flags & SHF_EXECINSTR != 0
    }
    pub fn is_strings(&self) -> bool {
        self.sh_flags & SHF_STRINGS != 0
    }
    /// True for the tables the writer regenerates from the model.
    pub fn is_generated_table(&self) -> bool {
        matches!(self.sh_type, SHT_SYMTAB | SHT_SYMTAB_SHNDX)
            || (self.sh_type == SHT_STRTAB && matches!(self.name.as_str(), ".strtab" | ".shstrtab"))
    }
    /// For a `SHT_RELA` section, the section its entries apply to.
    pub fn rela_target(&self) -> Option<SectionIndex> {
        (self.is_rela() && self.sh_info != 0).then_some(SectionIndex(self.sh_info as usize))
    }
    /// For a `SHT_GROUP` section: the flag word and the member section indexes.
    pub fn group_members(&self, big_endian: bool) -> (u32, Vec<SectionIndex>) {
        let word = |c: &[u8]| {
            let b = [c[0], c[1], c[2], c[3]];
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let mut words = self.data.chunks_exact(4).map(word);
        let flags = words.next().unwrap_or(0);
        (flags, words.map(|w| SectionIndex(w as usize)).collect())
    }
    /// Builds a group section's words from its flag and members.
    pub fn set_group_members(&mut self, big_endian: bool, flags: u32, members: &[SectionIndex]) {
        let enc = |w: u32| {
            if big_endian {
                w.to_be_bytes()
            } else {
                w.to_le_bytes()
            }
        };
        self.data.clear();
        self.data.extend_from_slice(&enc(flags));
        for m in members {
            self.data.extend_from_slice(&enc(m.0 as u32));
        }
        self.sh_size = self.data.len() as u64;
    }
    /// The bytes of a string starting at `offset` in a `SHF_STRINGS` section (without the NUL).
    pub fn string_at(&self, offset: u64) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        let rest = self.data.get(start..)?;
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        Some(&rest[..end])
    }
}

/// A relocatable ELF object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub header: Header,
    /// All sections, index 0 being the null section.
    pub sections: Vec<Section>,
    /// All symbols, index 0 being the null symbol; locals first, as ELF requires.
    pub symbols: Vec<Symbol>,
}

impl Object {
    /// An empty object with the null section and the null symbol, ready to be filled in.
    pub fn new(header: Header) -> Object {
        Object {
            header,
            sections: vec![Section {
                name: String::new(),
                sh_type: SHT_NULL,
                sh_flags: 0,
                sh_addr: 0,
                sh_addralign: 0,
                sh_entsize: 0,
                sh_link: 0,
                sh_info: 0,
                sh_size: 0,
                data: Vec::new(),
                relas: Vec::new(),
            }],
            symbols: vec![Symbol::null()],
        }
    }

    pub fn section(&self, index: SectionIndex) -> &Section {
        &self.sections[index.0]
    }
    pub fn symbol(&self, index: SymbolIndex) -> &Symbol {
        &self.symbols[index.0]
    }

    /// Iterates sections with their indexes, skipping the null section.
    pub fn sections_iter(&self) -> impl Iterator<Item = (SectionIndex, &Section)> {
        self.sections
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, s)| (SectionIndex(i), s))
    }
    /// Iterates symbols with their indexes, skipping the null symbol.
    pub fn symbols_iter(&self) -> impl Iterator<Item = (SymbolIndex, &Symbol)> {
        self.symbols
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, s)| (SymbolIndex(i), s))
    }

    /// A symbol's display name: its own, or its section's for a section symbol.
    pub fn symbol_name(&self, index: SymbolIndex) -> &str {
        let sym = &self.symbols[index.0];
        match (sym.is_section(), sym.section) {
            (true, Some(sec)) if sym.name.is_empty() => &self.sections[sec.0].name,
            _ => &sym.name,
        }
    }

    /// Index of the first section named `name`.
    pub fn section_by_name(&self, name: &str) -> Option<SectionIndex> {
        self.sections_iter()
            .find(|(_, s)| s.name == name)
            .map(|(i, _)| i)
    }

    /// A map from name to section indexes (names may repeat, e.g. `__patchable_function_entries`).
    pub fn section_name_index(&self) -> HashMap<&str, Vec<SectionIndex>> {
        let mut map: HashMap<&str, Vec<SectionIndex>> = HashMap::with_capacity(self.sections.len());
        for (i, s) in self.sections_iter() {
            map.entry(s.name.as_str()).or_default().push(i);
        }
        map
    }

    /// A map from name to symbol indexes (section symbols are left out).
    pub fn symbol_name_index(&self) -> HashMap<&str, Vec<SymbolIndex>> {
        let mut map: HashMap<&str, Vec<SymbolIndex>> = HashMap::with_capacity(self.symbols.len());
        for (i, s) in self.symbols_iter() {
            if !s.is_section() && !s.name.is_empty() {
                map.entry(s.name.as_str()).or_default().push(i);
            }
        }
        map
    }

    /// For each section, the `SHT_RELA` section that applies to it (if any).
    pub fn rela_sections(&self) -> Vec<Option<SectionIndex>> {
        let mut out = vec![None; self.sections.len()];
        for (i, s) in self.sections_iter() {
            if let Some(t) = s.rela_target() {
                if let Some(slot) = out.get_mut(t.0) {
                    *slot = Some(i);
                }
            }
        }
        out
    }

    /// For each section, its `STT_SECTION` symbol (if any).
    pub fn section_symbols(&self) -> Vec<Option<SymbolIndex>> {
        let mut out = vec![None; self.sections.len()];
        for (i, s) in self.symbols_iter() {
            if s.is_section() {
                if let Some(sec) = s.section {
                    if out[sec.0].is_none() {
                        out[sec.0] = Some(i);
                    }
                }
            }
        }
        out
    }

    /// Number of local symbols, counting the null symbol (the `.symtab` `sh_info`).
    pub fn num_locals(&self) -> usize {
        self.symbols.iter().take_while(|s| s.is_local()).count()
    }
}
