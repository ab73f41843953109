//! Per-object tables the differ derives once: bundled symbols, section symbols, relocation
//! sections, `.cold`/`.part` children, ftrace entries, and an interval index of symbols by offset.

use crate::names::{name_hash, HashIndex};
use crate::DiffError;
use kpatch_arch::{sections, Arch};
use kpatch_elf::consts::*;
use kpatch_elf::{Object, SectionIndex, SymbolIndex};

/// An object with the indexes the differ needs.
pub struct Kelf {
    pub obj: Object,
    pub file: String,
    pub arch: &'static dyn Arch,
    /// base section → its `SHT_RELA` section.
    pub rela_of: Vec<Option<SectionIndex>>,
    /// `SHT_RELA` section → the section it applies to.
    pub base_of: Vec<Option<SectionIndex>>,
    /// section → the function or object symbol that owns it (`.text.foo` → `foo`).
    pub bundled: Vec<Option<SymbolIndex>>,
    /// section → its `STT_SECTION` symbol.
    pub secsym: Vec<Option<SymbolIndex>>,
    /// section is a member of a `SHT_GROUP`.
    pub grouped: Vec<bool>,
    /// symbol → parent function (`foo.cold` → `foo`, `foo.part.0` → `foo`).
    pub parent: Vec<Option<SymbolIndex>>,
    pub children: Vec<Vec<SymbolIndex>>,
    /// function starts with an ftrace call (`__fentry__`).
    pub has_fentry: Vec<bool>,
    /// section → function/object symbols in it, sorted by start (for offset lookups).
    pub by_offset: Vec<Vec<SymbolIndex>>,
    /// name hash → sections (confirm the name on lookup).
    pub sec_by_name: HashIndex<SectionIndex>,
}

impl Kelf {
    pub fn new(obj: Object, file: &str, arch: &'static dyn Arch) -> Result<Kelf, DiffError> {
        let nsec = obj.sections.len();
        let nsym = obj.symbols.len();
        let invalid = |reason: String| DiffError::Invalid {
            file: file.into(),
            reason,
        };
        let rela_of = obj.rela_sections();
        let mut base_of = vec![None; nsec];
        for (i, s) in obj.sections_iter() {
            if s.is_rela() {
                let t = s.rela_target().ok_or_else(|| {
                    invalid(format!(
                        "relocation section {} applies to no section",
                        s.name
                    ))
                })?;
                base_of[i.0] = Some(t);
            }
        }
        let secsym = obj.section_symbols();
        let mut grouped = vec![false; nsec];
        for (_, s) in obj.sections_iter().filter(|(_, s)| s.is_group()) {
            for m in s.group_members(obj.header.big_endian).1 {
                grouped[m.0] = true;
            }
        }
        let mut bundled = vec![None; nsec];
        for (i, sym) in obj.symbols_iter() {
            let Some(sec) = sym.section else { continue };
            let sname = &obj.sections[sec.0].name;
            if sections::is_bundleable(sname, &sym.name, sym.st_type()) {
                // A function may start after its padding (x86: __pfx_foo at 0, foo at 16).
                let padding = arch.function_entry().padding;
                if sym.st_value != 0 && !(sym.is_func() && sym.st_value == padding) {
                    return Err(invalid(format!(
                        "symbol {} is at offset {} of its section {}, expected 0 (was the object built with -ffunction-sections -fdata-sections?)",
                        sym.name, sym.st_value, sname
                    )));
                }
                bundled[sec.0] = Some(i);
            }
        }
        let mut funcs_by_name: HashIndex<SymbolIndex> = HashIndex::default();
        for (i, s) in obj.symbols_iter() {
            if s.is_func() {
                funcs_by_name.entry(name_hash(&s.name)).or_default().push(i);
            }
        }
        let mut parent = vec![None; nsym];
        let mut children = vec![Vec::new(); nsym];
        for (i, s) in obj.symbols_iter() {
            if !s.is_func() {
                continue;
            }
            let cut = s.name.find(".cold").or_else(|| s.name.find(".part."));
            let Some(cut) = cut else { continue };
            let pname = &s.name[..cut];
            let p = funcs_by_name
                .get(&name_hash(pname))
                .and_then(|v| v.iter().copied().find(|&j| obj.symbols[j.0].name == pname));
            match p {
                Some(p) if p != i => {
                    parent[i.0] = Some(p);
                    children[p.0].push(i);
                }
                _ if s.name[cut..].starts_with(".cold") => {
                    return Err(invalid(format!(
                        "cannot find the parent function of {}",
                        s.name
                    )));
                }
                _ => {}
            }
        }
        let mut by_offset = vec![Vec::new(); nsec];
        for (i, s) in obj.symbols_iter() {
            if let Some(sec) = s.section {
                if !s.is_section() && s.st_type() != STT_FILE {
                    by_offset[sec.0].push(i);
                }
            }
        }
        for v in &mut by_offset {
            v.sort_by_key(|&i| (obj.symbols[i.0].st_value, i));
        }
        let mut k = Kelf {
            obj,
            file: file.into(),
            arch,
            rela_of,
            base_of,
            bundled,
            secsym,
            grouped,
            parent,
            children,
            has_fentry: vec![false; nsym],
            by_offset,
            sec_by_name: HashIndex::default(),
        };
        k.find_fentry_calls();
        k.reindex_names();
        Ok(k)
    }

    /// A symbol's name as the differ shows it (a section symbol by its section's name).
    pub fn sym_name(&self, i: SymbolIndex) -> &str {
        self.obj.symbol_name(i)
    }

    pub fn sec_name(&self, i: SectionIndex) -> &str {
        &self.obj.sections[i.0].name
    }

    /// The function or section a relocation section belongs to, for messages.
    pub fn owner_name(&self, sec: SectionIndex) -> &str {
        let base = self.base_of[sec.0].unwrap_or(sec);
        match self.bundled[base.0] {
            Some(s) => &self.obj.symbols[s.0].name,
            None => self.sec_name(base),
        }
    }

    fn find_fentry_calls(&mut self) {
        for (i, sym) in self.obj.symbols.iter().enumerate() {
            if !sym.is_func() {
                continue;
            }
            let Some(sec) = sym.section else { continue };
            let Some(rsec) = self.rela_of[sec.0] else {
                continue;
            };
            let relas = &self.obj.sections[rsec.0].relas;
            // The first relocation of the function (past its padding) is the ftrace call.
            let first = relas
                .iter()
                .filter(|r| r.r_offset >= sym.st_value)
                .min_by_key(|r| r.r_offset);
            if let Some(r) = first {
                let entry = self.arch.function_entry();
                if entry.fentry_relocs.contains(&r.r_type)
                    && self.obj.symbols[r.r_sym.0].name == entry.fentry
                {
                    self.has_fentry[i] = true;
                }
            }
        }
    }

    /// Rewrites relocations that reference a section symbol to reference the function or
    /// object at that place, so that they correlate by name and link to the original symbol.
    pub fn replace_section_symbols(&mut self) {
        let abs64 = self.arch.abs64();
        let r32s = self.arch.abs32s();
        for rsec in 0..self.obj.sections.len() {
            if !self.obj.sections[rsec].is_rela()
                || sections::is_debug(&self.obj.sections[rsec].name)
            {
                continue;
            }
            let base = self.base_of[rsec].unwrap_or_default();
            // Instruction boundaries of the base section, decoded once when first needed.
            let mut insn_ends: Option<Vec<u64>> = None;
            for n in 0..self.obj.sections[rsec].relas.len() {
                let r = self.obj.sections[rsec].relas[n];
                let target = &self.obj.symbols[r.r_sym.0];
                if !target.is_section() {
                    continue;
                }
                let Some(tsec) = target.section else { continue };
                if let Some(b) = self.bundled[tsec.0] {
                    let value = self.obj.symbols[b.0].st_value as i64;
                    let rr = &mut self.obj.sections[rsec].relas[n];
                    rr.r_sym = b;
                    rr.r_addend -= value;
                    continue;
                }
                let add_off = if self.arch.is_pc_relative(r.r_type) {
                    if self.obj.sections[base.0].is_text() {
                        let ends = insn_ends.get_or_insert_with(|| {
                            instruction_ends(self.arch, &self.obj.sections[base.0].data)
                        });
                        // The end of the instruction that holds the relocation.
                        match ends.get(ends.partition_point(|&e| e <= r.r_offset)) {
                            Some(&end) => (end - r.r_offset) as i64,
                            None => continue,
                        }
                    } else {
                        0
                    }
                } else if r.r_type == abs64 || Some(r.r_type) == r32s {
                    0
                } else {
                    continue;
                };
                let tsec_size = self.obj.sections[tsec.0].sh_size as i64;
                let at = r.r_addend.saturating_add(add_off);
                let syms = &self.by_offset[tsec.0];
                let sym_at = |s: SymbolIndex| {
                    let sym = &self.obj.symbols[s.0];
                    (
                        sym.st_value as i64,
                        sym.st_value as i64 + sym.st_size as i64,
                    )
                };
                let found = if !self.obj.sections[tsec.0].is_text()
                    && Some(r.r_type) == r32s
                    && r.r_addend == tsec_size
                {
                    // A pointer just past the end of a data section: the object that ends there.
                    syms.iter().copied().find(|&s| sym_at(s).1 == tsec_size)
                } else {
                    // Symbols are sorted by start; the candidates start at or before `at`.
                    let upto = syms.partition_point(|&s| sym_at(s).0 <= at);
                    syms[..upto].iter().copied().find(|&s| {
                        let (start, end) = sym_at(s);
                        at >= start && at < end
                    })
                };
                if let Some(s) = found {
                    let start = self.obj.symbols[s.0].st_value as i64;
                    let rr = &mut self.obj.sections[rsec].relas[n];
                    rr.r_sym = s;
                    rr.r_addend -= start;
                }
            }
        }
    }

    /// For a relocation into a string section (`SHF_STRINGS`, or `.rodata.__func__.*`), the
    /// string it points at: such references compare by content, not by offset. `in_code`: the
    /// relocation is in an instruction, where a PC-relative one is biased by the 4 bytes to the
    /// end of the instruction (`lea str-4(%rip)`).
    pub fn rela_string(&self, r: &kpatch_elf::Rela, in_code: bool) -> Option<&[u8]> {
        let sym = &self.obj.symbols[r.r_sym.0];
        let sec = &self.obj.sections[sym.section?.0];
        if !sec.is_strings() && !sections::is_func_name_strings(&sec.name) {
            return None;
        }
        let bias = if in_code && self.arch.is_pc_relative(r.r_type) {
            4
        } else {
            0
        };
        let off = (sym.st_value as i64)
            .saturating_add(r.r_addend)
            .saturating_add(bias);
        sec.string_at(off.max(0) as u64)
    }
}

impl Kelf {
    /// Rebuilds the section-name index (after sections were renamed).
    pub fn reindex_names(&mut self) {
        self.sec_by_name.clear();
        for (i, s) in self.obj.sections_iter() {
            self.sec_by_name
                .entry(name_hash(&s.name))
                .or_default()
                .push(i);
        }
    }

    /// The bytes `[lo, hi)` of a section (clamped to it) and the relocations in that range as
    /// (offset from `lo`, type, target name without gcc numbers, addend), sorted: what two
    /// versions of a piece of code are compared by.
    pub fn code_range(
        &self,
        sec: SectionIndex,
        lo: u64,
        hi: u64,
    ) -> (&[u8], Vec<(u64, u32, String, i64)>) {
        let data = &self.obj.sections[sec.0].data;
        let end = (hi.min(data.len() as u64)) as usize;
        let bytes = data.get((lo as usize).min(end)..end).unwrap_or(&[]);
        let mut relas: Vec<_> = self.rela_of[sec.0]
            .map(|r| {
                self.obj.sections[r.0]
                    .relas
                    .iter()
                    .filter(|x| x.r_offset >= lo && x.r_offset < hi)
                    .map(|x| {
                        (
                            x.r_offset - lo,
                            x.r_type,
                            crate::names::mangled_key_string(self.sym_name(x.r_sym)),
                            x.r_addend,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        relas.sort();
        (bytes, relas)
    }

    /// The entry size of special section `spec` in section `sec`: given by `options`, fixed by
    /// the architecture's table, or found from the pattern of its relocations. `None` when the
    /// pattern is not regular.
    pub fn entry_size(
        &self,
        spec: &kpatch_arch::SpecialSection,
        sec: SectionIndex,
        options: &crate::Options,
    ) -> Option<u64> {
        let relas = self.rela_of[sec.0].map(|r| self.obj.sections[r.0].relas.as_slice());
        spec.entry_size
            .find(options.entry_size(spec.name), &self.obj, sec, relas)
    }

    /// Whether `name` is that of a function's padding symbol (x86's `__pfx_foo`), which travels
    /// with its function and is no function of its own.
    pub fn is_padding_symbol(&self, name: &str) -> bool {
        name.starts_with(self.arch.function_entry().padding_symbol_prefix)
    }

    /// The first section named `name`.
    pub fn section_named(&self, name: &str) -> Option<SectionIndex> {
        self.sec_by_name
            .get(&name_hash(name))?
            .iter()
            .copied()
            .find(|&i| self.obj.sections[i.0].name == name)
    }
}

/// The end offset of every instruction in `code`, in order (stops at the first undecodable byte).
fn instruction_ends(arch: &dyn Arch, code: &[u8]) -> Vec<u64> {
    let mut ends = Vec::new();
    let mut at = 0usize;
    while at < code.len() {
        let Some(len) = arch.insn_len(&code[at..]) else {
            break;
        };
        at += len;
        ends.push(at as u64);
    }
    ends
}
