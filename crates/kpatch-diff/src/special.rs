//! Special sections: the kernel's tables of fixed-size entries that point into functions
//! (`__bug_table`, `__jump_table`, `.altinstructions`, ORC, ...), as the architecture's table
//! describes them ([`kpatch_arch::special`]). The fourth phase: it reads the [`Statuses`] and
//! the [`Inclusion`], keeps of each special section only the entries that belong to included
//! code (including what those entries reference), and writes what it kept as [`Trimmed`].

use crate::index::{Patched, PatchedSec, PatchedSym};
use crate::kelf::Kelf;
use crate::state::{Inclusion, Regenerated, Statuses, Trimmed};
use crate::{DiffError, Options};
use kpatch_arch::{Entries, Entry, Kind, SpecialSection};
use kpatch_elf::Rela;
use std::collections::HashSet;

type P = Kelf<Patched>;

/// An entry belongs to the output when one of its relocations points into included code: an
/// included function, or the replacement code of a kept alternative (`replacement`).
fn reloc_keeps(p: &P, inc: &Inclusion, replacement: Option<&str>, sym: PatchedSym) -> bool {
    let s = p.sym(sym);
    let Some(sec) = p.sec_of(sym) else {
        return false;
    };
    inc.sec[sec] && (s.is_func() || (s.is_section() && Some(p.sec_name(sec)) == replacement))
}

/// The section of alternatives' replacement code, by the table.
fn replacement_section(p: &P) -> Option<&'static str> {
    p.arch.special_sections().iter().find_map(|s| match s.kind {
        Kind::Alternatives { replacement, .. } => Some(replacement),
        _ => None,
    })
}

/// Is the entry's key (a jump label's) a dynamic-debug descriptor? Such an entry is dropped: the
/// pr_debug stays off in the patched function, as kpatch does.
fn is_dynamic_debug_key(p: &P, sym: PatchedSym) -> bool {
    p.sec_of(sym)
        .is_some_and(|sec| kpatch_arch::sections::is_dynamic_debug(p.sec_name(sec)))
}

/// A `.printk_index` entry names its function through `__func__`, directly (the entry is the
/// record) or one pointer away (the entry points at the record, as in 6.1): the entry belongs
/// to an included function of that name.
fn printk_index_owner_included(p: &P, included: &HashSet<&str>, group: &[Rela]) -> bool {
    let names_included = |r: &Rela| {
        p.rela_string(r, false)
            .is_some_and(|s| std::str::from_utf8(s).is_ok_and(|s| included.contains(s)))
    };
    group.iter().any(|r| {
        if names_included(r) {
            return true;
        }
        let target = p.target(r);
        let t = p.sym(target);
        let Some(tsec) = p.sec_of(target) else {
            return false;
        };
        let Some(trela) = p.rela_of[tsec] else {
            return false;
        };
        let (lo, hi) = (
            t.st_value.saturating_add(r.r_addend.max(0) as u64),
            t.st_value.saturating_add(t.st_size.max(1)),
        );
        p.relas(trela)
            .iter()
            .filter(|x| t.st_size == 0 || (x.r_offset >= lo && x.r_offset < hi))
            .any(names_included)
    })
}

/// Splits `fixup` (`.fixup`, kernels before 5.17) into the stubs the entries of `ex` (the
/// `__ex_table`) jump to, keeps those that jump back into included functions, and returns where
/// each kept stub moved.
fn regenerate_fixup(
    p: &P,
    inc: &mut Inclusion,
    trimmed: &mut Trimmed,
    ex: PatchedSec,
    fixup: &str,
) -> Option<(PatchedSec, Vec<(i64, i64)>)> {
    let replacement = replacement_section(p);
    let fixup = p.section_named(fixup)?;
    let frela = p.rela_of[fixup]?;
    let exrela = p.rela_of[ex]?;
    let mut starts: Vec<i64> = p
        .relas(exrela)
        .iter()
        .filter(|r| p.sec_of(p.target(r)) == Some(fixup))
        .map(|r| (p.sym(p.target(r)).st_value as i64).saturating_add(r.r_addend))
        .collect();
    starts.sort_unstable();
    starts.dedup();
    let size = p.sec(fixup).sh_size as i64;
    let data = &p.sec(fixup).data;
    let mut out = Regenerated::default();
    let mut moved = Vec::new();
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(size).min(size);
        if start < 0 || start >= end {
            continue;
        }
        let relas: Vec<&Rela> = p
            .relas(frela)
            .iter()
            .filter(|r| (r.r_offset as i64) >= start && (r.r_offset as i64) < end)
            .collect();
        if !relas
            .iter()
            .any(|r| reloc_keeps(p, inc, replacement, p.target(r)))
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
            inc.sym[p.target(r)] = true;
        }
        out.data
            .extend_from_slice(&data[start as usize..end as usize]);
    }
    if out.data.is_empty() {
        return None;
    }
    // Mark it included now, so that including the __ex_table entries does not pull it in whole.
    inc.sec[fixup] = true;
    inc.sec[frela] = true;
    if let Some(ss) = p.secsym[fixup] {
        inc.sym[ss] = true;
    }
    trimmed.regen.insert(fixup, out);
    Some((fixup, moved))
}

/// Trims every special section of the table to the entries of included code, and includes what
/// the kept entries reference. Returns the completed inclusion and what was kept.
pub fn trim(
    p: &P,
    st: &Statuses,
    mut inc: Inclusion,
    options: &Options,
) -> Result<(Inclusion, Trimmed), DiffError> {
    let mut trimmed = Trimmed::default();
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
    let mut fixup: Option<(PatchedSec, Vec<(i64, i64)>)> = None;
    for spec in order {
        let Some(sec) = p.section_named(spec.name) else {
            continue;
        };
        let Some(rsec) = p.rela_of[sec] else {
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
            fixup = regenerate_fixup(p, &mut inc, &mut trimmed, sec, name);
        }
        let included_funcs: HashSet<&str> = if spec.kind == Kind::NamedByFunction {
            p.symbols()
                .filter(|&(i, s)| {
                    s.is_func() && inc.sym[i] && p.sec_of(i).is_some_and(|x| inc.sec[x])
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
                .any(|r| reloc_keeps(p, &inc, replacement, p.target(r)));
            if !keep && spec.kind == Kind::NamedByFunction {
                keep = printk_index_owner_included(p, &included_funcs, e.relas);
            }
            if let Some(key) = layout.and_then(|l| e.field_rela(l.key)) {
                if keep && is_dynamic_debug_key(p, p.target(key)) {
                    keep = false;
                }
            }
            keep
        };
        let mut out = Entries::new(p.sec(sec), p.relas(rsec), size).keep(keeps);
        // An exception entry's fixup address follows its stub to its new place.
        if let Some((fsec, moved)) = &fixup {
            for r in &mut out.relas {
                if p.sec_of(p.target(r)) == Some(*fsec) {
                    let at = (p.sym(p.target(r)).st_value as i64).saturating_add(r.r_addend);
                    if let Some(&(from, to)) = moved.iter().rev().find(|(from, _)| *from <= at) {
                        r.r_addend += to - from;
                    }
                }
            }
        }
        if out.data.is_empty() {
            trimmed.empty(sec);
            trimmed.empty(rsec);
            inc.sec[sec] = false;
            inc.sec[rsec] = false;
            continue;
        }
        inc.sec[sec] = true;
        inc.sec[rsec] = true;
        if let Some(ss) = p.secsym[sec] {
            inc.sym[ss] = true;
        }
        for r in &out.relas {
            inc.symbol(p, st, p.target(r));
        }
        trimmed.regen.insert(sec, out);
        if let Kind::Alternatives { replacement, .. } = spec.kind {
            // The replacement code goes in whole when any alternative is kept.
            if let Some(repl) = p.section_named(replacement) {
                inc.section(p, st, repl);
                for &s in &p.by_offset[repl] {
                    inc.sym[s] = true;
                }
            }
        }
    }
    for spec in p.arch.special_sections() {
        let Kind::Alternatives { replacement, .. } = spec.kind else {
            continue;
        };
        if !trimmed.regen.keys().any(|&k| p.sec_name(k) == spec.name) {
            if let Some(repl) = p.section_named(replacement) {
                inc.sec[repl] = false;
                if let Some(r) = p.rela_of[repl] {
                    inc.sec[r] = false;
                }
            }
        }
    }
    for spec in p.arch.special_sections() {
        let Kind::Exceptions { fixup } = spec.kind else {
            continue;
        };
        let Some(f) = p.section_named(fixup) else {
            continue;
        };
        if !trimmed.regen.contains_key(&f) {
            // Stubs of no included function: nothing of .fixup goes out.
            trimmed.empty(f);
            inc.sec[f] = false;
            if let Some(r) = p.rela_of[f] {
                trimmed.empty(r);
                inc.sec[r] = false;
            }
        }
    }
    for spec in p.arch.special_sections() {
        if let Kind::Parallel { table, .. } = spec.kind {
            regenerate_parallel(p, &mut inc, options, &mut trimmed, spec, table);
        }
    }
    Ok((inc, trimmed))
}

/// A parallel pair (ORC: `.orc_unwind_ip`, a relocated address each, and `.orc_unwind`, the
/// entries): keep the pairs that describe included functions.
fn regenerate_parallel(
    p: &P,
    inc: &mut Inclusion,
    options: &Options,
    trimmed: &mut Trimmed,
    spec: &SpecialSection,
    table: &str,
) {
    let Kind::Parallel { table_entry, .. } = spec.kind else {
        return;
    };
    let (Some(orc), Some(ip)) = (p.section_named(table), p.section_named(spec.name)) else {
        return;
    };
    let Some(iprela) = p.rela_of[ip] else {
        return;
    };
    let (Some(ip_size), Some(entry)) = (
        spec.entry_size.find(None, &p.obj, ip.raw(), None),
        table_entry.find(options.entry_size(table), &p.obj, orc.raw(), None),
    ) else {
        return;
    };
    let orc_sec = p.sec(orc);
    let n = p.sec(ip).sh_size / ip_size;
    if n.checked_mul(entry) != Some(orc_sec.sh_size) {
        return;
    }
    let replacement = replacement_section(p);
    let mut orc_out = Regenerated::default();
    let mut ip_out = Regenerated::default();
    let mut relas = p.relas(iprela).to_vec();
    relas.sort_by_key(|r| r.r_offset);
    for r in &relas {
        if !reloc_keeps(p, inc, replacement, p.target(r)) {
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
        inc.sym[p.target(r)] = true;
    }
    let keep = !ip_out.relas.is_empty();
    for s in [orc, ip, iprela] {
        inc.sec[s] = keep;
        if !keep {
            trimmed.empty(s);
        }
    }
    if keep {
        for s in [orc, ip] {
            if let Some(ss) = p.secsym[s] {
                inc.sym[ss] = true;
            }
        }
        trimmed.regen.insert(orc, orc_out);
        trimmed.regen.insert(ip, ip_out);
    }
}
