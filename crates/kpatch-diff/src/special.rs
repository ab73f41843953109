//! Special sections: the kernel's tables of fixed-size entries that point into functions
//! (`__bug_table`, `__jump_table`, `.altinstructions`, ORC, ...). Each is split into entries and
//! keeps only those that belong to an included function.

use crate::compare::Status;
use crate::correlate::State;
use crate::include::Inclusion;
use crate::kelf::Kelf;
use crate::{DiffError, Options};
use kpatch_arch::EntrySize;
use kpatch_elf::{Rela, SectionIndex, SymbolIndex};

/// The replacement entries of a special section.
pub struct Regenerated {
    pub data: Vec<u8>,
    pub relas: Vec<Rela>,
}

/// Regenerated special sections, by base section index (applied when the output is built).
pub type RegenMap = std::collections::HashMap<SectionIndex, Regenerated>;

/// The entry size of special section `name`: given, fixed by the architecture, or found from
/// the pattern of its relocations. `None` when the pattern is not regular.
pub fn entry_size_for(p: &Kelf, name: &str, sec: SectionIndex, options: &Options) -> Option<u64> {
    if let Some((_, s)) = options.entry_sizes.iter().find(|(n, _)| n == name) {
        return Some(*s);
    }
    let spec = p.arch.special_sections().iter().find(|s| s.name == name)?;
    match spec.entry_size {
        EntrySize::Fixed(n) => Some(n),
        EntrySize::Env(_) => detect_entry_size(p, sec),
    }
}

/// Finds the smallest entry size for which every entry has relocations and starts with the same
/// kind of relocation (offset in the entry, type, whether it points at code).
fn detect_entry_size(p: &Kelf, sec: SectionIndex) -> Option<u64> {
    let size = p.obj.sections[sec.0].sh_size;
    let rsec = p.rela_of[sec.0]?;
    let mut relas = p.obj.sections[rsec.0].relas.clone();
    relas.sort_by_key(|r| r.r_offset);
    if relas.is_empty() || size == 0 {
        return None;
    }
    let class = |r: &Rela| {
        let to_text = p.obj.symbols[r.r_sym.0]
            .section
            .is_some_and(|s| p.obj.sections[s.0].is_text());
        (r.r_type, to_text)
    };
    // The last entry may lack its tail padding (kpatch notes this of .parainstructions).
    let fits = |s: u64| -> bool {
        // The last entry may be short by its tail padding, never by more than an alignment.
        if !size.is_multiple_of(s) && s - size % s >= 8 {
            return false;
        }
        let n = size.div_ceil(s) as usize;
        let mut patterns: Vec<Vec<(u64, (u32, bool))>> = vec![Vec::new(); n];
        for r in &relas {
            let k = (r.r_offset / s) as usize;
            if k >= n {
                return false;
            }
            patterns[k].push((r.r_offset % s, class(r)));
        }
        if patterns.iter().any(|p| p.is_empty()) {
            return false;
        }
        patterns.iter().all(|p| p[0] == patterns[0][0])
    };
    // Entries need not all have the same relocations (a static_cpu_has() pair of
    // .altinstructions entries differ), so only the first relocation of each is compared.
    (4..=64u64).find(|&s| fits(s))
}

/// An entry belongs to the output when one of its relocations points into included code: an
/// included function, or the replacement code of a kept alternative.
fn reloc_keeps(p: &Kelf, inc: &Inclusion, sym: SymbolIndex) -> bool {
    let s = &p.obj.symbols[sym.0];
    let Some(sec) = s.section else { return false };
    inc.sec[sec.0]
        && (s.is_func() || (s.is_section() && p.sec_name(sec) == ".altinstr_replacement"))
}

/// Is the jump label's key a dynamic-debug descriptor? Such an entry is dropped: the pr_debug
/// stays off in the patched function, as kpatch does.
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
    group: &[&Rela],
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

/// Splits `.fixup` (kernels before 5.17) into the stubs the `__ex_table` entries jump to, keeps
/// those that jump back into included functions, and returns where each kept stub moved.
fn regenerate_fixup(
    p: &Kelf,
    inc: &mut Inclusion,
    regen: &mut RegenMap,
) -> Option<(SectionIndex, Vec<(i64, i64)>)> {
    let fixup = p.section_named(".fixup")?;
    let frela = p.rela_of[fixup.0]?;
    let ex = p.section_named("__ex_table")?;
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
    let mut out = Regenerated {
        data: Vec::new(),
        relas: Vec::new(),
    };
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
        if !relas.iter().any(|r| reloc_keeps(p, inc, r.r_sym)) {
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
    // Alternatives first: their replacement code decides which other entries point into
    // included code (an exception entry inside a replacement, say).
    let mut order: Vec<&kpatch_arch::SpecialSection> = p.arch.special_sections().iter().collect();
    order.sort_by_key(|s| s.name != ".altinstructions");
    let mut fixup: Option<(SectionIndex, Vec<(i64, i64)>)> = None;
    for spec in order {
        let Some(sec) = p.section_named(spec.name) else {
            continue;
        };
        let Some(rsec) = p.rela_of[sec.0] else {
            continue;
        };
        let size = entry_size_for(p, spec.name, sec, options).ok_or_else(|| DiffError::Invalid {
            file: p.file.clone(),
            reason: format!(
                "cannot split special section {} into entries: its relocations have no regular pattern; give its entry size",
                spec.name
            ),
        })?;
        if spec.name == "__ex_table" {
            fixup = regenerate_fixup(p, inc, &mut regen);
        }
        let included_funcs: std::collections::HashSet<&str> = if spec.name == ".printk_index" {
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
        let base = &p.obj.sections[sec.0];
        let mut relas = p.obj.sections[rsec.0].relas.clone();
        relas.sort_by_key(|r| r.r_offset);
        let mut out = Regenerated {
            data: Vec::new(),
            relas: Vec::new(),
        };
        let mut to_include = Vec::new();
        let mut offset = 0u64;
        while offset < base.sh_size {
            let len = size.min(base.sh_size - offset);
            let group: Vec<&Rela> = relas
                .iter()
                .filter(|r| r.r_offset >= offset && r.r_offset < offset + len)
                .collect();
            let mut keep = group.iter().any(|r| reloc_keeps(p, inc, r.r_sym));
            if !keep && spec.name == ".printk_index" {
                keep = printk_index_owner_included(p, &included_funcs, &group);
            }
            if keep && spec.name == "__jump_table" {
                if let Some(key) = group.get(2) {
                    if is_dynamic_debug_key(p, key.r_sym) {
                        keep = false;
                    }
                }
            }
            if keep {
                let dest = out.data.len() as u64;
                for r in &group {
                    let mut r = Rela {
                        r_offset: r.r_offset - offset + dest,
                        ..**r
                    };
                    // An exception entry's fixup address follows its stub to its new place.
                    if let Some((fsec, moved)) = &fixup {
                        if p.obj.symbols[r.r_sym.0].section == Some(*fsec) {
                            let at = (p.obj.symbols[r.r_sym.0].st_value as i64)
                                .saturating_add(r.r_addend);
                            if let Some(&(from, to)) =
                                moved.iter().rev().find(|(from, _)| *from <= at)
                            {
                                r.r_addend += to - from;
                            }
                        }
                    }
                    out.relas.push(r);
                    to_include.push(r.r_sym);
                }
                let end = (offset + len) as usize;
                out.data
                    .extend_from_slice(base.data.get(offset as usize..end).unwrap_or(&[]));
            }
            offset += len;
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
        for s in to_include {
            inc.symbol(p, st, s);
        }
        regen.insert(sec, out);
        if spec.name == ".altinstructions" {
            // The replacement code goes in whole when any alternative is kept.
            if let Some(repl) = p.section_named(".altinstr_replacement") {
                inc.section(p, st, repl);
                for &s in &p.by_offset[repl.0] {
                    inc.sym[s.0] = true;
                }
            }
        }
    }
    if !regen.keys().any(|&k| p.sec_name(k) == ".altinstructions") {
        if let Some(repl) = p.section_named(".altinstr_replacement") {
            inc.sec[repl.0] = false;
            if let Some(r) = p.rela_of[repl.0] {
                inc.sec[r.0] = false;
            }
        }
    }
    if let Some(f) = p.section_named(".fixup") {
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
    regenerate_orc(p, st, inc, options, &mut regen);
    Ok(regen)
}

/// ORC entries are split across `.orc_unwind` (the entries) and `.orc_unwind_ip` (a relocated
/// 4-byte pointer each); keep the pairs that describe included functions.
fn regenerate_orc(
    p: &Kelf,
    st: &mut State,
    inc: &mut Inclusion,
    options: &Options,
    regen: &mut RegenMap,
) {
    const IP_SIZE: u64 = 4;
    let (Some(orc), Some(ip)) = (
        p.section_named(".orc_unwind"),
        p.section_named(".orc_unwind_ip"),
    ) else {
        return;
    };
    let Some(iprela) = p.rela_of[ip.0] else {
        return;
    };
    let entry = options
        .entry_sizes
        .iter()
        .find(|(n, _)| n == ".orc_unwind")
        .map(|e| e.1)
        .unwrap_or(6);
    let orc_sec = &p.obj.sections[orc.0];
    let n = p.obj.sections[ip.0].sh_size / IP_SIZE;
    if n.checked_mul(entry) != Some(orc_sec.sh_size) {
        return;
    }
    let mut orc_out = Regenerated {
        data: Vec::new(),
        relas: Vec::new(),
    };
    let mut ip_out = Regenerated {
        data: Vec::new(),
        relas: Vec::new(),
    };
    let mut relas = p.obj.sections[iprela.0].relas.clone();
    relas.sort_by_key(|r| r.r_offset);
    for r in &relas {
        if !reloc_keeps(p, inc, r.r_sym) {
            continue;
        }
        let k = r.r_offset / IP_SIZE;
        let dest = ip_out.data.len() as u64;
        ip_out.relas.push(Rela {
            r_offset: dest,
            ..*r
        });
        ip_out.data.extend_from_slice(&[0; IP_SIZE as usize]);
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
