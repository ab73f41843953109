//! Per-object tables the differ derives once: bundled symbols, section symbols, relocation
//! sections, `.cold`/`.part` children, ftrace entries, and an interval index of symbols by offset.
//! A `Kelf<S>` is object `S` ([`Orig`](crate::index::Orig) or
//! [`Patched`](crate::index::Patched)): its tables and accessors take and give `S`'s indexes only.

use crate::index::{IdxVec, Sec, Sym};
use crate::names::{is_special_static_name, name_hash, HashIndex};
use crate::DiffError;
use kpatch_arch::{sections, Arch};
use kpatch_elf::consts::*;
use kpatch_elf::{Object, Rela, Section, SectionIndex, Symbol, SymbolIndex};

/// An object with the indexes the differ needs.
pub struct Kelf<S> {
    pub obj: Object,
    pub file: String,
    pub arch: &'static dyn Arch,
    /// base section → its `SHT_RELA` section.
    pub rela_of: IdxVec<Sec<S>, Option<Sec<S>>>,
    /// `SHT_RELA` section → the section it applies to.
    pub base_of: IdxVec<Sec<S>, Option<Sec<S>>>,
    /// section → the function or object symbol that owns it (`.text.foo` → `foo`).
    pub bundled: IdxVec<Sec<S>, Option<Sym<S>>>,
    /// section → its `STT_SECTION` symbol.
    pub secsym: IdxVec<Sec<S>, Option<Sym<S>>>,
    /// section is a member of a `SHT_GROUP`.
    pub grouped: IdxVec<Sec<S>, bool>,
    /// symbol → parent function (`foo.cold` → `foo`, `foo.part.0` → `foo`).
    pub parent: IdxVec<Sym<S>, Option<Sym<S>>>,
    pub children: IdxVec<Sym<S>, Vec<Sym<S>>>,
    /// function starts with an ftrace call (`__fentry__`).
    pub has_fentry: IdxVec<Sym<S>, bool>,
    /// section → function/object symbols in it, sorted by start (for offset lookups).
    pub by_offset: IdxVec<Sec<S>, Vec<Sym<S>>>,
    /// name hash → sections (confirm the name on lookup).
    sec_by_name: HashIndex<Sec<S>>,
}

impl<S> Kelf<S> {
    pub fn new(obj: Object, file: &str, arch: &'static dyn Arch) -> Result<Kelf<S>, DiffError> {
        let nsec = obj.sections.len();
        let nsym = obj.symbols.len();
        let invalid = |reason: String| DiffError::Invalid {
            file: file.into(),
            reason,
        };
        // The output carries the object's tables by name, and the writer regenerates them by
        // role: one of each, named as the reader requires of what it reads.
        for (table, sh_type) in [
            (".symtab", SHT_SYMTAB),
            (".strtab", SHT_STRTAB),
            (".shstrtab", SHT_STRTAB),
        ] {
            if obj
                .sections_iter()
                .filter(|(_, s)| s.name == table && s.sh_type == sh_type)
                .count()
                != 1
            {
                return Err(invalid(format!(
                    "the object does not have exactly one {table}"
                )));
            }
        }
        let sec = Sec::<S>::from_raw;
        let sym = Sym::<S>::from_raw;
        let rela_of = IdxVec::from_vec(
            obj.rela_sections()
                .into_iter()
                .map(|r| r.map(sec))
                .collect(),
        );
        let mut base_of = IdxVec::filled(None, nsec);
        for (i, s) in obj.sections_iter() {
            if s.is_rela() {
                let t = s.rela_target().ok_or_else(|| {
                    invalid(format!(
                        "relocation section {} applies to no section",
                        s.name
                    ))
                })?;
                base_of[sec(i)] = Some(sec(t));
            }
        }
        let secsym = IdxVec::from_vec(
            obj.section_symbols()
                .into_iter()
                .map(|s| s.map(sym))
                .collect(),
        );
        let mut grouped = IdxVec::filled(false, nsec);
        for (_, s) in obj.sections_iter().filter(|(_, s)| s.is_group()) {
            for m in s.group_members(obj.header.big_endian).1 {
                grouped[sec(m)] = true;
            }
        }
        let mut bundled = IdxVec::filled(None, nsec);
        for (i, symbol) in obj.symbols_iter() {
            let Some(in_sec) = symbol.section else {
                continue;
            };
            let sname = &obj.sections[in_sec.0].name;
            if sections::is_bundleable(sname, &symbol.name, symbol.st_type()) {
                // A function may start after its padding (x86: __pfx_foo at 0, foo at 16).
                let padding = arch.function_entry().padding;
                if symbol.st_value != 0 && !(symbol.is_func() && symbol.st_value == padding) {
                    return Err(invalid(format!(
                        "symbol {} is at offset {} of its section {}, expected 0 (was the object built with -ffunction-sections -fdata-sections?)",
                        symbol.name, symbol.st_value, sname
                    )));
                }
                bundled[sec(in_sec)] = Some(sym(i));
            }
        }
        let mut funcs_by_name: HashIndex<SymbolIndex> = HashIndex::default();
        for (i, s) in obj.symbols_iter() {
            if s.is_func() {
                funcs_by_name.entry(name_hash(&s.name)).or_default().push(i);
            }
        }
        let mut parent = IdxVec::filled(None, nsym);
        let mut children: IdxVec<Sym<S>, Vec<Sym<S>>> = IdxVec::filled(Vec::new(), nsym);
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
                    parent[sym(i)] = Some(sym(p));
                    children[sym(p)].push(sym(i));
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
        let mut by_offset: IdxVec<Sec<S>, Vec<Sym<S>>> = IdxVec::filled(Vec::new(), nsec);
        for (i, s) in obj.symbols_iter() {
            if let Some(in_sec) = s.section {
                if !s.is_section() && s.st_type() != STT_FILE {
                    by_offset[sec(in_sec)].push(sym(i));
                }
            }
        }
        for v in by_offset.values_mut() {
            v.sort_by_key(|&i| (obj.symbols[i.get()].st_value, i));
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
            has_fentry: IdxVec::filled(false, nsym),
            by_offset,
            sec_by_name: HashIndex::default(),
        };
        k.find_fentry_calls();
        k.reindex_names();
        Ok(k)
    }

    // Access by this object's indexes.

    pub fn sec(&self, i: Sec<S>) -> &Section {
        &self.obj.sections[i.get()]
    }

    pub fn sym(&self, i: Sym<S>) -> &Symbol {
        &self.obj.symbols[i.get()]
    }

    /// The sections with their indexes, without the null section.
    pub fn sections(&self) -> impl Iterator<Item = (Sec<S>, &Section)> {
        self.obj.sections_iter().map(|(i, s)| (Sec::from_raw(i), s))
    }

    /// The symbols with their indexes, without the null symbol.
    pub fn symbols(&self) -> impl Iterator<Item = (Sym<S>, &Symbol)> {
        self.obj.symbols_iter().map(|(i, s)| (Sym::from_raw(i), s))
    }

    /// A table with `value` for every section.
    pub fn per_section<T: Clone>(&self, value: T) -> IdxVec<Sec<S>, T> {
        IdxVec::filled(value, self.obj.sections.len())
    }

    /// A table with `value` for every symbol.
    pub fn per_symbol<T: Clone>(&self, value: T) -> IdxVec<Sym<S>, T> {
        IdxVec::filled(value, self.obj.symbols.len())
    }

    /// The section symbol `i` is defined in.
    pub fn sec_of(&self, i: Sym<S>) -> Option<Sec<S>> {
        self.sym(i).section.map(Sec::from_raw)
    }

    /// The symbol a relocation of this object references.
    pub fn target(&self, r: &Rela) -> Sym<S> {
        Sym::from_raw(r.r_sym)
    }

    /// The relocations of relocation section `rsec`.
    pub fn relas(&self, rsec: Sec<S>) -> &[Rela] {
        &self.sec(rsec).relas
    }

    /// A symbol's name as the differ shows it (a section symbol by its section's name).
    pub fn sym_name(&self, i: Sym<S>) -> &str {
        self.obj.symbol_name(i.raw())
    }

    pub fn sec_name(&self, i: Sec<S>) -> &str {
        &self.sec(i).name
    }

    /// The function or section a relocation section belongs to, for messages.
    pub fn owner_name(&self, sec: Sec<S>) -> &str {
        let base = self.base_of[sec].unwrap_or(sec);
        match self.bundled[base] {
            Some(s) => &self.sym(s).name,
            None => self.sec_name(base),
        }
    }

    /// Renames a section (to its twin's name) or a symbol.
    pub fn rename_sec(&mut self, i: Sec<S>, name: &str) {
        self.obj.sections[i.get()].name = name.to_string();
    }

    pub fn rename_sym(&mut self, i: Sym<S>, name: &str) {
        self.obj.symbols[i.get()].name = name.to_string();
    }

    fn find_fentry_calls(&mut self) {
        let entry = self.arch.function_entry();
        let calls_fentry = |i: Sym<S>| {
            let sym = self.sym(i);
            let Some(rsec) = self.sec_of(i).and_then(|sec| self.rela_of[sec]) else {
                return false;
            };
            // The first relocation of the function (past its padding) is the ftrace call.
            let first = self
                .relas(rsec)
                .iter()
                .filter(|r| r.r_offset >= sym.st_value)
                .min_by_key(|r| r.r_offset);
            first.is_some_and(|r| {
                entry.fentry_relocs.contains(&r.r_type)
                    && self.sym(self.target(r)).name == entry.fentry
            })
        };
        let found: Vec<Sym<S>> = self
            .symbols()
            .filter(|&(i, sym)| sym.is_func() && calls_fentry(i))
            .map(|(i, _)| i)
            .collect();
        for i in found {
            self.has_fentry[i] = true;
        }
    }

    /// Rewrites relocations that reference a section symbol to reference the function or
    /// object at that place, so that they correlate by name and link to the original symbol.
    pub fn replace_section_symbols(&mut self) {
        let r32s = self.arch.abs32s();
        for rsec in (0..self.obj.sections.len()).map(|i| Sec::<S>::from_raw(SectionIndex(i))) {
            if !self.sec(rsec).is_rela() || sections::is_debug(self.sec_name(rsec)) {
                continue;
            }
            let base = self.base_of[rsec].unwrap_or(Sec::from_raw(SectionIndex(0)));
            // Instruction boundaries of the base section, decoded once when first needed.
            let mut insn_ends: Option<Vec<u64>> = None;
            for n in 0..self.relas(rsec).len() {
                let r = self.relas(rsec)[n];
                let target = self.sym(self.target(&r));
                if !target.is_section() {
                    continue;
                }
                let Some(tsec) = self.sec_of(self.target(&r)) else {
                    continue;
                };
                if let Some(b) = self.bundled[tsec] {
                    let value = self.sym(b).st_value as i64;
                    let rr = &mut self.obj.sections[rsec.get()].relas[n];
                    rr.r_sym = b.raw();
                    rr.r_addend -= value;
                    continue;
                }
                let add_off = if self.arch.is_pc_relative(r.r_type) {
                    if self.sec(base).is_text() {
                        let ends = insn_ends.get_or_insert_with(|| {
                            instruction_ends(self.arch, &self.sec(base).data)
                        });
                        // The end of the instruction that holds the relocation.
                        match ends.get(ends.partition_point(|&e| e <= r.r_offset)) {
                            Some(&end) => (end - r.r_offset) as i64,
                            None => continue,
                        }
                    } else {
                        0
                    }
                } else if self.arch.is_exact_address(r.r_type) {
                    // Data: a pointer, or a field-relative address (a 16-byte jump entry's
                    // key into __dyndbg or __tracepoints), which moves with every object added
                    // before it in that section.
                    0
                } else {
                    continue;
                };
                let tsec_size = self.sec(tsec).sh_size as i64;
                let at = r.r_addend.saturating_add(add_off);
                let syms = &self.by_offset[tsec];
                let sym_at = |s: Sym<S>| {
                    let sym = self.sym(s);
                    (
                        sym.st_value as i64,
                        sym.st_value as i64 + sym.st_size as i64,
                    )
                };
                let found = if !self.sec(tsec).is_text()
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
                    let start = self.sym(s).st_value as i64;
                    let rr = &mut self.obj.sections[rsec.get()].relas[n];
                    rr.r_sym = s.raw();
                    rr.r_addend -= start;
                }
            }
        }
    }

    /// For a relocation into a string section (`SHF_STRINGS`, or `.rodata.__func__.*`), the
    /// string it points at: such references compare by content, not by offset. `in_code`: the
    /// relocation is in an instruction, where a PC-relative one is biased by the distance to the
    /// end of the instruction (x86: `lea str-4(%rip)`).
    pub fn rela_string(&self, r: &Rela, in_code: bool) -> Option<&[u8]> {
        let target = self.target(r);
        let sym = self.sym(target);
        let sec = self.sec(self.sec_of(target)?);
        if !sec.is_strings() && !sections::is_func_name_strings(&sec.name) {
            return None;
        }
        let bias = if in_code && self.arch.is_pc_relative(r.r_type) {
            self.arch.pc_rel_default_bias()
        } else {
            0
        };
        let off = (sym.st_value as i64)
            .saturating_add(r.r_addend)
            .saturating_add(bias);
        sec.string_at(off.max(0) as u64)
    }

    /// For a relocation into a constant pool (`.rodata.cstN`), the N-byte constant it points at:
    /// such references compare by value, not by offset (a patch that changes a constant changes
    /// the pool, not the instruction). `in_code` as for [`rela_string`](Self::rela_string).
    pub fn rela_constant(&self, r: &Rela, in_code: bool) -> Option<&[u8]> {
        let target = self.target(r);
        let sym = self.sym(target);
        let sec = self.sec(self.sec_of(target)?);
        let size: usize = sec.name.strip_prefix(".rodata.cst")?.parse().ok()?;
        if !sections::is_constant_pool(&sec.name) {
            return None;
        }
        let bias = if in_code && self.arch.is_pc_relative(r.r_type) {
            self.arch.pc_rel_default_bias()
        } else {
            0
        };
        let off = (sym.st_value as i64)
            .saturating_add(r.r_addend)
            .saturating_add(bias);
        let start = usize::try_from(off).ok()?;
        sec.data.get(start..start.checked_add(size)?)
    }

    /// Rebuilds the section-name index (after sections were renamed).
    pub fn reindex_names(&mut self) {
        let mut index: HashIndex<Sec<S>> = HashIndex::default();
        for (i, s) in self.sections() {
            index.entry(name_hash(&s.name)).or_default().push(i);
        }
        self.sec_by_name = index;
    }

    /// The bytes `[lo, hi)` of a section (clamped to it) and the relocations in that range as
    /// (offset from `lo`, type, target name without gcc numbers, addend), sorted: what two
    /// versions of a piece of code are compared by.
    pub fn code_range(&self, sec: Sec<S>, lo: u64, hi: u64) -> CodeRange<'_> {
        let data = &self.sec(sec).data;
        let end = (hi.min(data.len() as u64)) as usize;
        let bytes = data.get((lo as usize).min(end)..end).unwrap_or(&[]);
        let mut relas: Vec<_> = self.rela_of[sec]
            .map(|r| {
                self.relas(r)
                    .iter()
                    .filter(|x| x.r_offset >= lo && x.r_offset < hi)
                    .map(|x| {
                        (
                            x.r_offset - lo,
                            x.r_type,
                            crate::names::mangled_key_string(self.sym_name(self.target(x))),
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
        sec: Sec<S>,
        options: &crate::Options,
    ) -> Option<u64> {
        let relas = self.rela_of[sec].map(|r| self.relas(r));
        spec.entry_size
            .find(options.entry_size(spec.name), &self.obj, sec.raw(), relas)
    }

    /// Whether entries of `size` bytes contradict special section `spec` of this object (see
    /// [`kpatch_arch::SpecialSection::misfit`]); `false` where the object has no such section.
    pub fn entry_size_misfits(&self, spec: &kpatch_arch::SpecialSection, size: u64) -> bool {
        let Some(sec) = self.section_named(spec.name) else {
            return false;
        };
        let Some(rsec) = self.rela_of[sec] else {
            return false;
        };
        spec.misfit(size, &self.obj, sec.raw(), self.relas(rsec), |t| {
            self.arch.reloc_width(t)
        })
        .is_some()
    }

    /// The entry size of special section `spec` found from its relocations, if it has any.
    pub fn detected_entry_size(&self, spec: &kpatch_arch::SpecialSection) -> Option<u64> {
        let sec = self.section_named(spec.name)?;
        let rsec = self.rela_of[sec]?;
        kpatch_arch::special::detect_entry_size(&self.obj, self.sec(sec), self.relas(rsec))
    }

    /// Whether `name` is that of a function's padding symbol (x86's `__pfx_foo`), which travels
    /// with its function and is no function of its own.
    pub fn is_padding_symbol(&self, name: &str) -> bool {
        name.starts_with(self.arch.function_entry().padding_symbol_prefix)
    }

    /// The first section named `name`.
    pub fn section_named(&self, name: &str) -> Option<Sec<S>> {
        self.sec_by_name
            .get(&name_hash(name))?
            .iter()
            .copied()
            .find(|&i| self.sec(i).name == name)
    }

    /// Is this symbol a static local that must never be correlated (see
    /// [`is_special_static_name`]), or a dynamic-debug descriptor?
    pub fn is_special_static(&self, sym: Sym<S>) -> bool {
        let mut s = self.sym(sym);
        let Some(sec) = self.sec_of(sym) else {
            return false;
        };
        let secname = self.sec_name(sec);
        if (s.is_object() || s.is_section()) && sections::is_dynamic_debug(secname) {
            return true;
        }
        if s.is_section() {
            match self.bundled[sec] {
                Some(b) => s = self.sym(b),
                None => return false,
            }
        }
        if !s.is_object() || !s.is_local() {
            return false;
        }
        is_special_static_name(&s.name, secname)
    }

    /// A section group as it means: its flag and its members' names (their indexes shift freely).
    pub fn group_key(&self, sec: Sec<S>) -> (u32, Vec<&str>) {
        let (flags, members) = self.sec(sec).group_members(self.obj.header.big_endian);
        (
            flags,
            members
                .iter()
                .map(|m| {
                    self.obj
                        .sections
                        .get(m.0)
                        .map(|s| s.name.as_str())
                        .unwrap_or("")
                })
                .collect(),
        )
    }
}

/// A piece of code as [`Kelf::code_range`] gives it: bytes, and relocations as (offset, type,
/// target name without gcc numbers, addend).
pub type CodeRange<'a> = (&'a [u8], Vec<(u64, u32, String, i64)>);

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

/// The caller's options with each given entry size checked against both objects: a size that
/// their entries contradict (cut at it, an entry does not start with a reference to its code)
/// would pair the entries' fields wrongly and give one function's entries to another. It is
/// replaced by the size the relocations show, where that fits both, with a warning.
pub fn checked_options<O, P>(
    o: &Kelf<O>,
    p: &Kelf<P>,
    options: &crate::Options,
    warnings: &mut Vec<String>,
) -> crate::Options {
    let mut checked = options.clone();
    for (name, size) in checked.entry_sizes.iter_mut() {
        let Some(spec) = p.arch.special_section(name) else {
            continue;
        };
        if !(o.entry_size_misfits(spec, *size) || p.entry_size_misfits(spec, *size)) {
            continue;
        }
        let found = p
            .detected_entry_size(spec)
            .or_else(|| o.detected_entry_size(spec))
            .filter(|&n| !o.entry_size_misfits(spec, n) && !p.entry_size_misfits(spec, n));
        if let Some(n) = found {
            let by = spec
                .entry_size
                .variable()
                .map_or(String::new(), |v| format!(" ({v})"));
            warnings.push(format!(
                "special section {name}: its entries are {n} bytes, not the given {size}{by}: cut at {size} bytes, an entry would not start with a reference to its code; using {n}"
            ));
            *size = n;
        }
    }
    checked
}
