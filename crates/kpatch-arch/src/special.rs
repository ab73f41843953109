//! Special sections: the kernel's arrays of fixed-size entries that point into functions
//! (`__bug_table`, `__jump_table`, `.altinstructions`, ...), described as data, the way objtool
//! describes them (its `arch/x86/special.c` `entries[]`): per section, how big an entry is, where
//! its fields are, and what the differ does with it. One table per architecture
//! ([`crate::Arch::special_sections`]); a kernel version that changes a layout changes that table.
//!
//! [`Entries`] is the one splitter of a special section into its entries, for the differ and the
//! module generator alike.

use kpatch_elf::{Object, Rela, Section, SectionIndex};
use std::ops::RangeInclusive;

/// How big the entries of a special section are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntrySize {
    /// Every entry has this many bytes.
    Fixed(u64),
    /// Given through this environment variable (kpatch's `*_STRUCT_SIZE`, read by the caller) when
    /// it is set, else found from the entries' relocation pattern ([`detect_entry_size`]): the
    /// size changed across kernel versions.
    Env(&'static str),
    /// Given through this environment variable when it is set, else this size (a section without
    /// relocations, whose size cannot be found).
    EnvOr(&'static str, u64),
}

impl EntrySize {
    /// The size of the entries in `obj`'s section `sec` (relocations `relas`): `given` (by the
    /// caller, from the environment variable), fixed, the default, or found from the
    /// relocations. `None` when it cannot be found (or is given as 0).
    pub fn find(
        self,
        given: Option<u64>,
        obj: &Object,
        sec: SectionIndex,
        relas: Option<&[Rela]>,
    ) -> Option<u64> {
        let size = match (given, self) {
            (Some(n), _) | (None, EntrySize::Fixed(n)) | (None, EntrySize::EnvOr(_, n)) => n,
            (None, EntrySize::Env(_)) => detect_entry_size(obj, obj.section(sec), relas?)?,
        };
        (size > 0).then_some(size)
    }

    /// The environment variable that gives the size, if any.
    pub fn variable(self) -> Option<&'static str> {
        match self {
            EntrySize::Fixed(_) => None,
            EntrySize::Env(v) | EntrySize::EnvOr(v, _) => Some(v),
        }
    }
}

/// A field of an entry: its byte offset in the entry and its length. A field that holds an
/// address (code, target, key) carries the relocation at its offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub offset: u64,
    pub len: u64,
}

/// Where an entry's fields are, for entries of the sizes in `sizes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The entry sizes this layout applies to. An entry shorter than the smallest (the cut-off
    /// last entry of a malformed section) has none of the fields.
    pub sizes: RangeInclusive<u64>,
    /// The code site the entry describes (objtool's `orig`).
    pub code: Option<Field>,
    /// Where the code goes instead: the replacement, the fixup, the jump target (objtool's `new`).
    pub target: Option<Field>,
    /// The key that decides (a jump label's `static_key`, a static call's key).
    pub key: Option<Field>,
    /// A `__bug_table` entry's `__LINE__`, which moves with unrelated edits.
    pub line: Option<Field>,
}

/// What the differ does with a special section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Entries that point into functions: the entries of included code are kept (with what they
    /// reference), the others dropped; a function whose entries changed is changed.
    Sites,
    /// As [`Kind::Sites`], for alternatives (objtool's group entries): the replacement code the
    /// entries' targets point at is in `replacement`, carried whole when any entry is kept. They
    /// are trimmed before the other sections, since the replacement code decides which of their
    /// entries point into included code. `aux` holds `static_cpu_has()`'s boot-time slow path:
    /// references to it compare equal whatever their addend.
    Alternatives {
        replacement: &'static str,
        aux: &'static str,
    },
    /// As [`Kind::Sites`], for exception entries: before 5.17 their fixup code is in `fixup`, one
    /// stub per entry, and a stub goes where its entry goes.
    Exceptions { fixup: &'static str },
    /// As [`Kind::Sites`]; an entry also belongs to the function that its `__func__` string names
    /// (`.printk_index`, whose entries point at the format's record rather than into code).
    NamedByFunction,
    /// One relocated address per entry, whose data is the entry of the same index in `table`
    /// (entries of `table_entry` bytes, without relocations): ORC's `.orc_unwind_ip` and
    /// `.orc_unwind`. Kept in step for included code; not compared (ORC follows the code).
    Parallel {
        table: &'static str,
        table_entry: EntrySize,
    },
    /// One entry per function, written by the compiler for every function (`__mcount_loc`,
    /// `__patchable_function_entries`): never compared, never carried. When `rebuilt`, the output
    /// has a section of its own with the entries of its new and changed functions.
    PerFunction { rebuilt: bool },
}

/// A special section of an architecture's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialSection {
    pub name: &'static str,
    pub entry_size: EntrySize,
    /// Where the fields are, by entry size (none known: empty).
    pub layouts: &'static [Layout],
    pub kind: Kind,
}

impl SpecialSection {
    /// The layout of entries of `entry_size` bytes.
    pub fn layout(&self, entry_size: u64) -> Option<&Layout> {
        self.layouts.iter().find(|l| l.sizes.contains(&entry_size))
    }

    /// Where entries of `size` bytes contradict `obj`'s section `sec` (relocations `relas`): the
    /// offset of the first whole entry whose code field holds no relocation of the field's width
    /// into code (every entry of every table points at its code site), or, for a size without a
    /// known layout, of the first entry whose relocations do not start as the first entry's do.
    /// `None` where they agree. `width`: the bytes a relocation type writes (the arch's
    /// `reloc_width`).
    pub fn misfit(
        &self,
        size: u64,
        obj: &Object,
        sec: SectionIndex,
        relas: &[Rela],
        width: impl Fn(u32) -> Option<u64>,
    ) -> Option<u64> {
        let section = obj.section(sec);
        let entries = Entries::new(section, relas, size);
        let Some(layout) = self.layout(size) else {
            if self.layouts.is_empty() || pattern_fits(obj, section, &entries.relas, size) {
                return None;
            }
            let first = |e: &Entry| e.relas.first().map(|r| (r.r_offset - e.offset, r.r_type));
            let want = entries.iter().next().and_then(|e| first(&e));
            let at = entries
                .iter()
                .find(|e| first(e).is_none() || first(e) != want)
                .map_or(0, |e| e.offset);
            return Some(at);
        };
        let code = layout.code?;
        let at = entries
            .iter()
            .filter(|e| e.is_whole(layout))
            .find(|e| {
                e.field_rela(Some(code))
                    .is_none_or(|r| width(r.r_type) != Some(code.len) || !points_to_code(obj, r))
            })
            .map(|e| e.offset);
        at
    }

    /// Whether the section is trimmed entry by entry to the included code, and its entries are
    /// compared as part of the functions they belong to.
    pub fn has_sites(&self) -> bool {
        matches!(
            self.kind,
            Kind::Sites
                | Kind::Alternatives { .. }
                | Kind::Exceptions { .. }
                | Kind::NamedByFunction
        )
    }
}

/// Finds the smallest entry size for which every entry has relocations and starts with the same
/// kind of relocation (offset in the entry, type, whether it points at code). Entries need not
/// all have the same relocations (a static_cpu_has() pair of `.altinstructions` entries differ),
/// so only the first relocation of each is compared.
pub fn detect_entry_size(obj: &Object, section: &Section, relas: &[Rela]) -> Option<u64> {
    let mut relas = relas.to_vec();
    relas.sort_by_key(|r| r.r_offset);
    if relas.is_empty() || section.sh_size == 0 {
        return None;
    }
    (4..=64u64).find(|&s| pattern_fits(obj, section, &relas, s))
}

/// Whether entries of `s` bytes of `section` (relocations `relas`, by offset) each have
/// relocations, the first of each of the same kind (see [`detect_entry_size`]).
fn pattern_fits(obj: &Object, section: &Section, relas: &[Rela], s: u64) -> bool {
    let size = section.sh_size;
    // The last entry may be short by its tail padding (kpatch notes this of
    // .parainstructions), never by more than an alignment.
    if !size.is_multiple_of(s) && s - size % s >= 8 {
        return false;
    }
    let n = size.div_ceil(s) as usize;
    let mut patterns: Vec<Vec<(u64, (u32, bool))>> = vec![Vec::new(); n];
    for r in relas {
        let k = (r.r_offset / s) as usize;
        if k >= n {
            return false;
        }
        patterns[k].push((r.r_offset % s, (r.r_type, points_to_code(obj, r))));
    }
    if patterns.iter().any(|p| p.is_empty()) {
        return false;
    }
    patterns.iter().all(|p| p[0] == patterns[0][0])
}

/// Whether a relocation of `obj` points into code.
fn points_to_code(obj: &Object, r: &Rela) -> bool {
    obj.symbols[r.r_sym.0]
        .section
        .is_some_and(|s| obj.sections[s.0].is_text())
}

/// A special section split into entries of one size: the last may be short (cut off at the
/// section's end), and relocations past the end belong to none.
pub struct Entries<'a> {
    section: &'a Section,
    size: u64,
    /// The section's relocations, by offset.
    relas: Vec<Rela>,
}

/// One entry: its place in the section, its bytes and its relocations (by offset).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'e> {
    pub offset: u64,
    pub len: u64,
    /// The entry's bytes (fewer than `len` where the section's data is shorter than its size).
    pub data: &'e [u8],
    pub relas: &'e [Rela],
}

impl<'e> Entry<'e> {
    /// The relocation at `field` (of this entry's layout), if the entry has one there.
    pub fn field_rela(&self, field: Option<Field>) -> Option<&'e Rela> {
        let field = field?;
        self.relas
            .iter()
            .find(|r| r.r_offset - self.offset == field.offset)
    }

    /// Whether the entry has all of `layout`'s bytes (the last entry may be cut off).
    pub fn is_whole(&self, layout: &Layout) -> bool {
        self.data.len() as u64 >= *layout.sizes.start()
    }
}

/// The kept entries of a special section, one after the other, their relocations moved with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rebuilt {
    pub data: Vec<u8>,
    pub relas: Vec<Rela>,
}

impl<'a> Entries<'a> {
    /// Splits `section` (relocations `relas`, in any order) into entries of `size` bytes.
    pub fn new(section: &'a Section, relas: &[Rela], size: u64) -> Entries<'a> {
        assert!(size > 0, "special-section entries of 0 bytes");
        let mut relas = relas.to_vec();
        relas.sort_by_key(|r| r.r_offset);
        Entries {
            section,
            size,
            relas,
        }
    }

    /// The entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = Entry<'_>> + '_ {
        let total = self.section.sh_size;
        let mut offset = 0u64;
        let mut at = 0usize;
        std::iter::from_fn(move || {
            if offset >= total {
                return None;
            }
            let len = self.size.min(total - offset);
            let start = at;
            while at < self.relas.len() && self.relas[at].r_offset < offset + len {
                at += 1;
            }
            let data = self
                .section
                .data
                .get(offset as usize..(offset + len) as usize)
                .unwrap_or(&[]);
            let entry = Entry {
                offset,
                len,
                data,
                relas: &self.relas[start..at],
            };
            offset += len;
            Some(entry)
        })
    }

    /// The entries `keep` selects, one after the other.
    pub fn keep(&self, mut keep: impl FnMut(&Entry) -> bool) -> Rebuilt {
        let mut out = Rebuilt::default();
        for e in self.iter() {
            if !keep(&e) {
                continue;
            }
            let dest = out.data.len() as u64;
            out.relas.extend(e.relas.iter().map(|r| Rela {
                r_offset: r.r_offset - e.offset + dest,
                ..*r
            }));
            out.data.extend_from_slice(e.data);
        }
        out
    }
}

/// The `*_STRUCT_SIZE` environment variables of a table, with the section each sizes (the
/// section whose entries they size: for a parallel table, that table).
pub fn size_variables(table: &[SpecialSection]) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    for s in table {
        if let Some(v) = s.entry_size.variable() {
            out.push((v, s.name));
        }
        if let Kind::Parallel { table, table_entry } = s.kind {
            if let Some(v) = table_entry.variable() {
                out.push((v, table));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpatch_elf::consts::*;
    use kpatch_elf::{Header, Symbol};

    /// An object with a function `f` in `.text.f` and a data symbol `k` in `.data`, and a special
    /// section `name` of `size` bytes with relocations `(offset, type, to code?)`.
    fn object(size: u64, relas: &[(u64, u32, bool)]) -> (Object, SectionIndex, Vec<Rela>) {
        let mut o = Object::new(Header {
            e_machine: EM_X86_64,
            e_flags: 0,
            ei_osabi: 0,
            ei_abiversion: 0,
            big_endian: false,
        });
        let text = o.add_section(Section::new(
            ".text.f",
            SHT_PROGBITS,
            SHF_ALLOC | SHF_EXECINSTR,
        ));
        let data = o.add_section(Section::new(".data", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE));
        let mut f = Symbol::new("f", STB_GLOBAL, STT_FUNC);
        f.section = Some(text);
        let f = o.add_symbol(f);
        let mut k = Symbol::new("k", STB_GLOBAL, STT_OBJECT);
        k.section = Some(data);
        let k = o.add_symbol(k);
        let mut s = Section::new("__table", SHT_PROGBITS, SHF_ALLOC);
        s.sh_size = size;
        s.data = (0..size).map(|b| b as u8).collect();
        let sec = o.add_section(s);
        let relas = relas
            .iter()
            .map(|&(r_offset, r_type, code)| Rela {
                r_offset,
                r_sym: if code { f } else { k },
                r_type,
                r_addend: 0,
            })
            .collect();
        (o, sec, relas)
    }

    #[test]
    fn entry_sizes_are_found_from_the_relocation_pattern() {
        // {s32 code, s32 target, s64 key}: 16 bytes, code and target point into code.
        let jump: Vec<(u64, u32, bool)> = (0..3)
            .flat_map(|k| {
                [
                    (16 * k, 2, true),
                    (16 * k + 4, 2, true),
                    (16 * k + 8, 24, false),
                ]
            })
            .collect();
        let (o, sec, relas) = object(48, &jump);
        assert_eq!(detect_entry_size(&o, o.section(sec), &relas), Some(16));
        // The last entry short by its tail padding.
        let (o, sec, relas) = object(44, &jump);
        assert_eq!(detect_entry_size(&o, o.section(sec), &relas), Some(16));
        // No relocations: no pattern.
        let (o, sec, _) = object(48, &[]);
        assert_eq!(detect_entry_size(&o, o.section(sec), &[]), None);
        // An entry without relocations (24..48) rules its size out.
        let (o, sec, relas) = object(96, &[(0, 2, true), (48, 2, true), (72, 2, true)]);
        assert_eq!(detect_entry_size(&o, o.section(sec), &relas), Some(48));
    }

    #[test]
    fn the_splitter_cuts_entries_and_gives_each_its_relocations() {
        let (o, sec, relas) = object(
            20,
            &[
                (8, 2, true),
                (0, 2, true),
                (12, 24, false),
                (4, 2, true),
                (19, 2, true),
                (20, 1, true),
            ],
        );
        let entries = Entries::new(o.section(sec), &relas, 8);
        let got: Vec<(u64, u64, Vec<u64>, usize)> = entries
            .iter()
            .map(|e| {
                (
                    e.offset,
                    e.len,
                    e.relas.iter().map(|r| r.r_offset).collect(),
                    e.data.len(),
                )
            })
            .collect();
        // 8 + 8 + a short last entry of 4; the relocation at 20 is past the end.
        assert_eq!(
            got,
            vec![
                (0, 8, vec![0, 4], 8),
                (8, 8, vec![8, 12], 8),
                (16, 4, vec![19], 4)
            ]
        );
        assert_eq!(
            entries.iter().nth(1).unwrap().data,
            &[8, 9, 10, 11, 12, 13, 14, 15]
        );

        // Keeping the second and third: bytes and relocations move to the front.
        let kept = entries.keep(|e| e.offset >= 8);
        assert_eq!(
            kept.data,
            vec![8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
        );
        assert_eq!(
            kept.relas.iter().map(|r| r.r_offset).collect::<Vec<_>>(),
            vec![0, 4, 11]
        );
        assert_eq!(kept.relas[1].r_type, 24);
    }

    #[test]
    fn fields_are_found_by_their_offset_in_the_entry() {
        let layout = Layout {
            sizes: 8..=8,
            code: Some(Field { offset: 0, len: 4 }),
            target: None,
            key: Some(Field { offset: 4, len: 4 }),
            line: None,
        };
        let (o, sec, relas) = object(
            20,
            &[(0, 2, true), (4, 2, false), (8, 2, true), (16, 2, true)],
        );
        let entries = Entries::new(o.section(sec), &relas, 8);
        let all: Vec<Entry> = entries.iter().collect();
        assert_eq!(all[0].field_rela(layout.key).map(|r| r.r_offset), Some(4));
        assert_eq!(all[0].field_rela(layout.line), None);
        // The second entry has no key; the cut-off last one has its code, but is not whole.
        assert_eq!(all[1].field_rela(layout.key), None);
        assert_eq!(all[2].field_rela(layout.code).map(|r| r.r_offset), Some(16));
        assert!(all[1].is_whole(&layout) && !all[2].is_whole(&layout));
    }

    #[test]
    fn entry_size_is_given_fixed_or_found() {
        let (o, sec, relas) = object(
            16,
            &[(0, 2, true), (4, 2, true), (8, 2, true), (12, 2, true)],
        );
        let env = EntrySize::Env("X");
        assert_eq!(env.find(None, &o, sec, Some(&relas)), Some(4));
        assert_eq!(env.find(Some(8), &o, sec, Some(&relas)), Some(8));
        assert_eq!(env.find(None, &o, sec, None), None);
        assert_eq!(EntrySize::Fixed(16).find(None, &o, sec, None), Some(16));
        assert_eq!(EntrySize::EnvOr("X", 6).find(None, &o, sec, None), Some(6));
        assert_eq!(EntrySize::Fixed(16).find(Some(0), &o, sec, None), None);
    }
}
