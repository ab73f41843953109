//! Generic edits of an [`Object`] that keep every index consistent: adding sections and symbols,
//! removing sections or symbols (renumbering the sections, symbols, relocations and group members
//! that refer to them), and restoring the locals-first symbol order ELF requires.

use crate::consts::*;
use crate::{ElfError, Object, Section, SectionIndex, Symbol, SymbolIndex};

impl Section {
    /// An empty section of the given name, type and flags (alignment 1, no link or info).
    pub fn new(name: impl Into<String>, sh_type: u32, sh_flags: u64) -> Section {
        Section {
            name: name.into(),
            sh_type,
            sh_flags,
            sh_addr: 0,
            sh_addralign: 1,
            sh_entsize: 0,
            sh_link: 0,
            sh_info: 0,
            sh_size: 0,
            data: Vec::new(),
            relas: Vec::new(),
        }
    }
}

impl Symbol {
    /// A symbol with the given name, binding and type, undefined until `section` is set.
    pub fn new(name: impl Into<String>, bind: u8, sym_type: u8) -> Symbol {
        Symbol {
            name: name.into(),
            st_info: (bind << 4) | (sym_type & 0xf),
            st_other: 0,
            st_shndx: SHN_UNDEF,
            section: None,
            st_value: 0,
            st_size: 0,
        }
    }
}

impl Object {
    /// Appends a section and returns its index. A `SHT_RELA` section gets `sh_link` set to the
    /// symbol table on write.
    pub fn add_section(&mut self, section: Section) -> SectionIndex {
        self.sections.push(section);
        SectionIndex(self.sections.len() - 1)
    }

    /// Adds a symbol, keeping locals before globals: a local is inserted after the last local
    /// (relocations are renumbered), a global is appended. Returns its index.
    pub fn add_symbol(&mut self, symbol: Symbol) -> SymbolIndex {
        if !symbol.is_local() {
            self.symbols.push(symbol);
            return SymbolIndex(self.symbols.len() - 1);
        }
        let at = self.num_locals();
        let map: Vec<Option<SymbolIndex>> = (0..self.symbols.len())
            .map(|i| Some(SymbolIndex(if i < at { i } else { i + 1 })))
            .collect();
        self.symbols.insert(at, symbol);
        self.renumber_relocations(&map);
        SymbolIndex(at)
    }

    /// Removes the sections `remove` selects (never the null section), with the relocation sections
    /// that apply to them and the symbols defined in them. Every remaining `sh_link`, `sh_info` (of
    /// relocation sections and `SHF_INFO_LINK` sections), group member and symbol section is
    /// renumbered. Fails, naming both, when a remaining relocation refers to a removed symbol.
    pub fn remove_sections(
        &mut self,
        mut remove: impl FnMut(SectionIndex, &Section) -> bool,
    ) -> Result<(), ElfError> {
        let mut gone: Vec<bool> = self
            .sections
            .iter()
            .enumerate()
            .map(|(i, s)| i != 0 && remove(SectionIndex(i), s))
            .collect();
        for (i, s) in self.sections.iter().enumerate() {
            if let Some(t) = s.rela_target() {
                if gone.get(t.0).copied().unwrap_or(false) {
                    gone[i] = true;
                }
            }
        }
        if !gone.iter().any(|&g| g) {
            return Ok(());
        }
        let mut map = Vec::with_capacity(self.sections.len());
        let mut next = 0usize;
        for &g in &gone {
            if g {
                map.push(None);
            } else {
                map.push(Some(next));
                next += 1;
            }
        }
        let symbols_in_gone: Vec<bool> = self
            .symbols
            .iter()
            .map(|s| s.section.map(|sec| gone[sec.0]).unwrap_or(false))
            .collect();
        // Refuse before changing anything if a section that stays relocates against a symbol
        // that goes with its section.
        for (si, s) in self
            .sections
            .iter()
            .enumerate()
            .filter(|(si, _)| !gone[*si])
        {
            if let Some(r) = s.relas.iter().find(|r| symbols_in_gone[r.r_sym.0]) {
                return Err(ElfError::BadSymbol {
                    file: "(object being edited)".into(),
                    index: r.r_sym.0,
                    symbol: self.symbol_name(r.r_sym).to_string(),
                    reason: format!(
                        "its section is being removed but section '{}' still relocates against it",
                        self.sections[si].name
                    ),
                });
            }
        }
        let old_sections = std::mem::take(&mut self.sections);
        self.sections = old_sections
            .into_iter()
            .zip(gone.iter())
            .filter(|(_, &g)| !g)
            .map(|(s, _)| s)
            .collect();
        let remap = |i: u32| -> u32 {
            map.get(i as usize)
                .copied()
                .flatten()
                .map(|n| n as u32)
                .unwrap_or(0)
        };
        let big_endian = self.header.big_endian;
        for s in self.sections.iter_mut() {
            if s.is_rela() || s.sh_flags & SHF_INFO_LINK != 0 {
                s.sh_info = remap(s.sh_info);
            }
            if s.sh_link != 0 && !s.is_rela() && !s.is_group() && s.sh_type != SHT_SYMTAB {
                s.sh_link = remap(s.sh_link);
            }
            if s.is_group() {
                let (flags, members) = s.group_members(big_endian);
                let members: Vec<SectionIndex> = members
                    .into_iter()
                    .filter_map(|m| map.get(m.0).copied().flatten().map(SectionIndex))
                    .collect();
                s.set_group_members(big_endian, flags, &members);
            }
        }
        for sym in self.symbols.iter_mut() {
            if let Some(sec) = sym.section {
                sym.section = map[sec.0].map(SectionIndex);
            }
        }
        self.remove_symbols(|i, _| symbols_in_gone[i.0])
    }

    /// Removes the symbols `remove` selects (never the null symbol) and renumbers relocations.
    /// Fails, naming the symbol and the section, when a relocation still refers to one of them.
    pub fn remove_symbols(
        &mut self,
        mut remove: impl FnMut(SymbolIndex, &Symbol) -> bool,
    ) -> Result<(), ElfError> {
        let gone: Vec<bool> = self
            .symbols
            .iter()
            .enumerate()
            .map(|(i, s)| i != 0 && remove(SymbolIndex(i), s))
            .collect();
        if !gone.iter().any(|&g| g) {
            return Ok(());
        }
        for s in &self.sections {
            if let Some(r) = s.relas.iter().find(|r| gone[r.r_sym.0]) {
                return Err(ElfError::BadSymbol {
                    file: "(object being edited)".into(),
                    index: r.r_sym.0,
                    symbol: self.symbol_name(r.r_sym).to_string(),
                    reason: format!(
                        "cannot remove it: section '{}' relocates against it at 0x{:x}",
                        s.name, r.r_offset
                    ),
                });
            }
        }
        let mut map = Vec::with_capacity(gone.len());
        let mut next = 0usize;
        for &g in &gone {
            if g {
                map.push(None);
            } else {
                map.push(Some(SymbolIndex(next)));
                next += 1;
            }
        }
        let old = std::mem::take(&mut self.symbols);
        self.symbols = old
            .into_iter()
            .zip(gone.iter())
            .filter(|(_, &g)| !g)
            .map(|(s, _)| s)
            .collect();
        self.renumber_relocations(&map);
        Ok(())
    }

    /// Reorders the symbol table so that every local precedes every global, keeping the relative
    /// order within each group, and renumbers relocations.
    pub fn sort_symbols_locals_first(&mut self) {
        let n = self.symbols.len();
        let mut order: Vec<usize> = (1..n).filter(|&i| self.symbols[i].is_local()).collect();
        order.extend((1..n).filter(|&i| !self.symbols[i].is_local()));
        order.insert(0, 0);
        if order.iter().enumerate().all(|(new, &old)| new == old) {
            return;
        }
        let mut map = vec![None; n];
        for (new, &old) in order.iter().enumerate() {
            map[old] = Some(SymbolIndex(new));
        }
        let mut old: Vec<Option<Symbol>> = std::mem::take(&mut self.symbols)
            .into_iter()
            .map(Some)
            .collect();
        self.symbols = order
            .iter()
            .map(|&i| old[i].take().expect("each index once"))
            .collect();
        self.renumber_relocations(&map);
    }

    /// Applies a symbol renumbering (old index -> new index) to every relocation.
    fn renumber_relocations(&mut self, map: &[Option<SymbolIndex>]) {
        for s in self.sections.iter_mut() {
            for r in s.relas.iter_mut() {
                if let Some(Some(n)) = map.get(r.r_sym.0) {
                    r.r_sym = *n;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Header, Rela};

    fn obj() -> Object {
        let mut o = Object::new(Header {
            e_machine: EM_X86_64,
            e_flags: 0,
            ei_osabi: 0,
            ei_abiversion: 0,
            big_endian: false,
        });
        let mut text = Section::new(".text.a", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR);
        text.data = vec![0; 16];
        let a = o.add_section(text);
        let mut data = Section::new(".data.x", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE);
        data.data = vec![0; 8];
        let x = o.add_section(data);
        o.add_section(Section::new(".symtab", SHT_SYMTAB, 0));
        o.add_section(Section::new(".strtab", SHT_STRTAB, 0));
        o.add_section(Section::new(".shstrtab", SHT_STRTAB, 0));
        let mut vx = Symbol::new("x", STB_LOCAL, STT_OBJECT);
        vx.section = Some(x);
        let vx = o.add_symbol(vx);
        let mut fa = Symbol::new("a", STB_GLOBAL, STT_FUNC);
        fa.section = Some(a);
        let fa = o.add_symbol(fa);
        let ext = o.add_symbol(Symbol::new("ext", STB_GLOBAL, STT_NOTYPE));
        let mut rela = Section::new(".rela.text.a", SHT_RELA, SHF_INFO_LINK);
        rela.sh_info = a.0 as u32;
        rela.relas = vec![
            Rela {
                r_offset: 1,
                r_sym: vx,
                r_type: 2,
                r_addend: -4,
            },
            Rela {
                r_offset: 6,
                r_sym: ext,
                r_type: 4,
                r_addend: -4,
            },
            Rela {
                r_offset: 11,
                r_sym: fa,
                r_type: 4,
                r_addend: -4,
            },
        ];
        o.add_section(rela);
        o
    }

    fn reloc_names(o: &Object) -> Vec<String> {
        let rs = o.section_by_name(".rela.text.a").unwrap();
        o.section(rs)
            .relas
            .iter()
            .map(|r| o.symbol_name(r.r_sym).to_string())
            .collect()
    }

    #[test]
    fn local_insert_keeps_relocations_pointing_at_the_same_symbols() {
        let mut o = obj();
        let y = o.add_symbol(Symbol::new("y", STB_LOCAL, STT_NOTYPE));
        assert_eq!(y, SymbolIndex(2));
        assert_eq!(o.num_locals(), 3, "y was inserted before the global a");
        assert_eq!(reloc_names(&o), ["x", "ext", "a"]);
        let bytes = o.write().unwrap();
        let back = Object::parse(&bytes, "t").unwrap();
        assert_eq!(reloc_names(&back), ["x", "ext", "a"]);
    }

    #[test]
    fn sorting_moves_locals_first_and_renumbers() {
        let mut o = obj();
        let e = o.symbols.iter().position(|s| s.name == "ext").unwrap();
        o.symbols[e].set_bind(STB_LOCAL);
        assert!(
            o.write().is_err(),
            "a local after a global is refused on write"
        );
        o.sort_symbols_locals_first();
        let names: Vec<&str> = o.symbols.iter().skip(1).map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["x", "ext", "a"]);
        assert_eq!(reloc_names(&o), ["x", "ext", "a"]);
        let back = Object::parse(&o.write().unwrap(), "t").unwrap();
        assert_eq!(reloc_names(&back), ["x", "ext", "a"]);
        assert_eq!(back.num_locals(), 3);
    }

    #[test]
    fn removing_a_section_drops_its_relocations_symbols_and_renumbers() {
        let mut o = obj();
        // Removing .data.x while .rela.text.a references x is refused.
        let err = o
            .clone()
            .remove_sections(|_, s| s.name == ".data.x")
            .unwrap_err();
        assert!(
            err.to_string().contains("x") && err.to_string().contains(".rela.text.a"),
            "{err}"
        );
        // Removing .text.a takes its relocation section and the symbol a with it.
        o.remove_sections(|_, s| s.name == ".text.a").unwrap();
        assert!(o.section_by_name(".rela.text.a").is_none());
        assert!(!o.symbols.iter().any(|s| s.name == "a"));
        let x = o.symbols.iter().find(|s| s.name == "x").unwrap();
        assert_eq!(o.section(x.section.unwrap()).name, ".data.x");
        let back = Object::parse(&o.write().unwrap(), "t").unwrap();
        assert_eq!(back.sections.len(), o.sections.len());
    }

    #[test]
    fn removing_a_referenced_symbol_is_refused() {
        let mut o = obj();
        let err = o.remove_symbols(|_, s| s.name == "ext").unwrap_err();
        assert!(err.to_string().contains("ext"), "{err}");
        let rs = o.section_by_name(".rela.text.a").unwrap();
        o.sections[rs.0].relas.retain(|r| r.r_offset != 6);
        o.remove_symbols(|_, s| s.name == "ext").unwrap();
        assert_eq!(reloc_names(&o), ["x", "a"]);
    }
}
