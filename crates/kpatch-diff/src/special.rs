//! Special sections: the kernel's tables of fixed-size entries that point into functions
//! (`__bug_table`, `__jump_table`, `.altinstructions`, ORC, ...), as the architecture's table
//! describes them ([`kpatch_arch::special`]). Each is split into entries and keeps only those
//! that belong to an included function.

use crate::compare::Status;
use crate::correlate::State;
use crate::include::Inclusion;
use crate::kelf::Kelf;
use crate::{DiffError, Options};
use kpatch_arch::{Entries, Entry, Kind, SpecialSection};
use kpatch_elf::{Rela, SectionIndex, SymbolIndex};

/// The kept entries of a special section.
pub type Regenerated = kpatch_arch::Rebuilt;

/// Regenerated special sections, by base section index (applied when the output is built).
pub type RegenMap = std::collections::HashMap<SectionIndex, Regenerated>;

/// An entry belongs to the output when one of its relocations points into included code: an
/// included function, or the replacement code of a kept alternative (`replacement`).
fn reloc_keeps(p: &Kelf, inc: &Inclusion, replacement: Option<&str>, sym: SymbolIndex) -> bool {
    let s = &p.obj.symbols[sym.0];
    let Some(sec) = s.section else { return false };
    inc.sec[sec.0] && (s.is_func() || (s.is_section() && Some(p.sec_name(sec)) == replacement))
}

/// The section of alternatives' replacement code, by the table.
fn replacement_section(p: &Kelf) -> Option<&'static str> {
    p.arch.special_sections().iter().find_map(|s| match s.kind {
        Kind::Alternatives { replacement, .. } => Some(replacement),
        _ => None,
    })
}

/// Is the entry's key (a jump label's) a dynamic-debug descriptor? Such an entry is dropped: the
/// pr_debug stays off in the patched function, as kpatch does.
fn is_dynamic_debug_key(p: &Kelf, sym: SymbolIndex) -> bool {
    let s = &p.obj.symbols[sym.0];
    s.section
        .is_some_and(|sec| kpatch_arch::sections::is_dynamic_debug(p.sec_name(sec)))
}

/// A `.printk_index` entry names its function through `__func__`, directly (the entry is the
/// record) or one pointer away (the entry points at the record, as in 6.1): the entry belongs
/// to an included function of that name.
fn printk_index_owner_included(
    p: &Kelf,
    included: &std::collections::HashSet<&str>,
    group: &[Rela],
) -> bool {
    let names_included = |r: &Rela| {
        p.rela_string(r, false)
            .is_some_and(|s| std::str::from_utf8(s).is_ok_and(|s| included.contains(s)))
    };
    group.iter().any(|r| {
        if names_included(r) {
            return true;
        }
        let t = &p.obj.symbols[r.r_sym.0];
        let Some(tsec) = t.section else { return false };
        let Some(trela) = p.rela_of[tsec.0] else {
            return false;
        };
        let (lo, hi) = (
            t.st_value.saturating_add(r.r_addend.max(0) as u64),
            t.st_value.saturating_add(t.st_size.max(1)),
        );
        p.obj.sections[trela.0]
            .relas
            .iter()
            .filter(|x| t.st_size == 0 || (x.r_offset >= lo && x.r_offset < hi))
            .any(names_included)
    })
}

/// Splits `fixup` (`.fixup`, kernels before 5.17) into the stubs the entries of `ex` (the
/// `__ex_table`) jump to, keeps those that jump back into included functions, and returns where
/// each kept stub moved.
fn regenerate_fixup(
    p: &Kelf,
    inc: &mut Inclusion,
    regen: &mut RegenMap,
    ex: SectionIndex,
    fixup: &str,
) -> Option<(SectionIndex, Vec<(i64, i64)>)> {
    let fixup = p.section_named(fixup)?;
    let frela = p.rela_of[fixup.0]?;
    let exrela = p.rela_of[ex.0]?;
    let fixup_sym = |s: SymbolIndex| p.obj.symbols[s.0].section == Some(fixup);
    let mut starts: Vec<i64> = p.obj.sections[exrela.0]
        .relas
        .iter()
        .filter(|r| fixup_sym(r.r_sym))
        .map(|r| (p.obj.symbols[r.r_sym.0].st_value as i64).saturating_add(r.r_addend))
        .collect();
    starts.sort_unstable();
    starts.dedup();
    let size = p.obj.sections[fixup.0].sh_size as i64;
    let data = &p.obj.sections[fixup.0].data;
    let mut out = Regenerated::default();
    let mut moved = Vec::new();
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(size).min(size);
        if start < 0 || start >= end {
            continue;
        }
        let relas: Vec<&Rela> = p.obj.sections[frela.0]
            .relas
            .iter()
            .filter(|r| (r.r_offset as i64) >= start && (r.r_offset as i64) < end)
            .collect();
        if !relas
            .iter()
            .any(|r| reloc_keeps(p, inc, replacement_section(p), r.r_sym))
        {
            continue;
        }
        let dest = out.data.len() as i64;
        moved.push((start, dest));
        for r in relas {
            out.relas.push(Rela {
                r_offset: (r.r_offset as i64 - start + dest) as u64,
                ..*r
            });
            inc.sym[r.r_sym.0] = true;
        }
        out.data
            .extend_from_slice(&data[start as usize..end as usize]);
    }
    if out.data.is_empty() {
        return None;
    }
    // Mark it included now, so that including the __ex_table entries does not pull it in whole.
    inc.sec[fixup.0] = true;
    inc.sec[frela.0] = true;
    if let Some(ss) = p.secsym[fixup.0] {
        inc.sym[ss.0] = true;
    }
    regen.insert(fixup, out);
    Some((fixup, moved))
}

pub fn process(
    p: &Kelf,
    st: &mut State,
    inc: &mut Inclusion,
    options: &Options,
) -> Result<RegenMap, DiffError> {
    let mut regen = RegenMap::new();
    let replacement = replacement_section(p);
    // Alternatives first: their replacement code decides which other entries point into
    // included code (an exception entry inside a replacement, say).
    let mut order: Vec<&SpecialSection> = p
        .arch
        .special_sections()
        .iter()
        .filter(|s| s.has_sites())
        .collect();
    order.sort_by_key(|s| !matches!(s.kind, Kind::Alternatives { .. }));
    let mut fixup: Option<(SectionIndex, Vec<(i64, i64)>)> = None;
    let mut fixup_name = None;
    for spec in order {
        let Some(sec) = p.section_named(spec.name) else {
            continue;
        };
        let Some(rsec) = p.rela_of[sec.0] else {
            continue;
        };
        let size = p.entry_size(spec, sec, options).ok_or_else(|| DiffError::Invalid {
            file: p.file.clone(),
            reason: format!(
                "cannot split special section {} into entries: its relocations have no regular pattern; give its entry size",
                spec.name
            ),
        })?;
        if let Kind::Exceptions { fixup: name } = spec.kind {
            fixup = regenerate_fixup(p, inc, &mut regen, sec, name);
            fixup_name = Some(name);
        }
        let included_funcs: std::collections::HashSet<&str> = if spec.kind == Kind::NamedByFunction
        {
            p.obj
                .symbols_iter()
                .filter(|(i, s)| {
                    s.is_func() && inc.sym[i.0] && s.section.is_some_and(|x| inc.sec[x.0])
                })
                .map(|(_, s)| s.name.as_str())
                .collect()
        } else {
            Default::default()
        };
        let layout = spec.layout(size);
        let keeps = |e: &Entry| {
            let mut keep = e
                .relas
                .iter()
                .any(|r| reloc_keeps(p, inc, replacement, r.r_sym));
            if !keep && spec.kind == Kind::NamedByFunction {
                keep = printk_index_owner_included(p, &included_funcs, e.relas);
            }
            if let Some(key) = layout.and_then(|l| e.field_rela(l.key)) {
                if keep && is_dynamic_debug_key(p, key.r_sym) {
                    keep = false;
                }
            }
            keep
        };
        let mut out =
            Entries::new(&p.obj.sections[sec.0], &p.obj.sections[rsec.0].relas, size).keep(keeps);
        // An exception entry's fixup address follows its stub to its new place.
        if let Some((fsec, moved)) = &fixup {
            for r in &mut out.relas {
                if p.obj.symbols[r.r_sym.0].section == Some(*fsec) {
                    let at = (p.obj.symbols[r.r_sym.0].st_value as i64).saturating_add(r.r_addend);
                    if let Some(&(from, to)) = moved.iter().rev().find(|(from, _)| *from <= at) {
                        r.r_addend += to - from;
                    }
                }
            }
        }
        if out.data.is_empty() {
            st.sec_status[sec.0] = Status::Same;
            st.sec_status[rsec.0] = Status::Same;
            inc.sec[sec.0] = false;
            inc.sec[rsec.0] = false;
            continue;
        }
        inc.sec[sec.0] = true;
        inc.sec[rsec.0] = true;
        if let Some(ss) = p.secsym[sec.0] {
            inc.sym[ss.0] = true;
        }
        for r in &out.relas {
            inc.symbol(p, st, r.r_sym);
        }
        regen.insert(sec, out);
        if let Kind::Alternatives { replacement, .. } = spec.kind {
            // The replacement code goes in whole when any alternative is kept.
            if let Some(repl) = p.section_named(replacement) {
                inc.section(p, st, repl);
                for &s in &p.by_offset[repl.0] {
                    inc.sym[s.0] = true;
                }
            }
        }
    }
    for spec in p.arch.special_sections() {
        let Kind::Alternatives { replacement, .. } = spec.kind else {
            continue;
        };
        if !regen.keys().any(|&k| p.sec_name(k) == spec.name) {
            if let Some(repl) = p.section_named(replacement) {
                inc.sec[repl.0] = false;
                if let Some(r) = p.rela_of[repl.0] {
                    inc.sec[r.0] = false;
                }
            }
        }
    }
    if let Some(f) = fixup_name.and_then(|name| p.section_named(name)) {
        if !regen.contains_key(&f) {
            // Stubs of no included function: nothing of .fixup goes out.
            st.sec_status[f.0] = Status::Same;
            inc.sec[f.0] = false;
            if let Some(r) = p.rela_of[f.0] {
                st.sec_status[r.0] = Status::Same;
                inc.sec[r.0] = false;
            }
        }
    }
    for spec in p.arch.special_sections() {
        if let Kind::Parallel { table, .. } = spec.kind {
            regenerate_parallel(p, st, inc, options, &mut regen, spec, table);
        }
    }
    Ok(regen)
}

/// A parallel pair (ORC: `.orc_unwind_ip`, a relocated address each, and `.orc_unwind`, the
/// entries): keep the pairs that describe included functions.
fn regenerate_parallel(
    p: &Kelf,
    st: &mut State,
    inc: &mut Inclusion,
    options: &Options,
    regen: &mut RegenMap,
    spec: &SpecialSection,
    table: &str,
) {
    let Kind::Parallel { table_entry, .. } = spec.kind else {
        return;
    };
    let (Some(orc), Some(ip)) = (p.section_named(table), p.section_named(spec.name)) else {
        return;
    };
    let Some(iprela) = p.rela_of[ip.0] else {
        return;
    };
    let (Some(ip_size), Some(entry)) = (
        spec.entry_size.find(None, &p.obj, ip, None),
        table_entry.find(options.entry_size(table), &p.obj, orc, None),
    ) else {
        return;
    };
    let orc_sec = &p.obj.sections[orc.0];
    let n = p.obj.sections[ip.0].sh_size / ip_size;
    if n.checked_mul(entry) != Some(orc_sec.sh_size) {
        return;
    }
    let mut orc_out = Regenerated::default();
    let mut ip_out = Regenerated::default();
    let mut relas = p.obj.sections[iprela.0].relas.clone();
    relas.sort_by_key(|r| r.r_offset);
    for r in &relas {
        if !reloc_keeps(p, inc, replacement_section(p), r.r_sym) {
            continue;
        }
        let k = r.r_offset / ip_size;
        let dest = ip_out.data.len() as u64;
        ip_out.relas.push(Rela {
            r_offset: dest,
            ..*r
        });
        ip_out.data.extend(std::iter::repeat_n(0, ip_size as usize));
        let start = k.saturating_mul(entry) as usize;
        orc_out.data.extend_from_slice(
            orc_sec
                .data
                .get(start..start.saturating_add(entry as usize))
                .unwrap_or(&[]),
        );
        inc.sym[r.r_sym.0] = true;
    }
    let keep = !ip_out.relas.is_empty();
    for s in [orc, ip, iprela] {
        inc.sec[s.0] = keep;
        if !keep {
            st.sec_status[s.0] = Status::Same;
        }
    }
    if keep {
        for s in [orc, ip] {
            if let Some(ss) = p.secsym[s.0] {
                inc.sym[ss.0] = true;
            }
        }
        regen.insert(orc, orc_out);
        regen.insert(ip, ip_out);
    }
}
