//! Marking each patched section and symbol as the same, changed or new.

use crate::correlate::{is_special_static, State};
use crate::kelf::Kelf;
use crate::names::mangled_eq;
use crate::{DiffError, Report};
use kpatch_arch::{sections, Entries, Kind};
use kpatch_elf::{Rela, SectionIndex, SymbolIndex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Same,
    Changed,
    New,
}

/// Functions whose changed instructions only load a new `__LINE__` for these calls are the same.
const LINE_MACRO_CALLEES: &[&str] = &[
    "__warn_printk",
    "__might_sleep",
    "___might_sleep",
    "__might_resched",
    "__might_fault",
    "printk",
    "_printk",
    "lockdep_rcu_suspicious",
    "__btrfs_abort_transaction",
    "__btrfs_handle_fs_error",
    "__btrfs_panic",
];

pub fn compare(
    o: &Kelf,
    p: &Kelf,
    st: &mut State,
    report: &mut Report,
    options: &crate::Options,
) -> Result<(), DiffError> {
    mark_ignored_sections(p, st, report)?;
    compare_sections(o, p, st)?;
    compare_symbols(o, p, st)?;
    compare_special_entries(o, p, st, options);
    propagate_read_only_data_changes(p, st);
    mark_ignored_functions(p, st, report)?;
    mark_ignored_sections_same(p, st);
    check_ftrace_entries(o, p, st)?;
    report.warnings.append(&mut st.warnings);
    Ok(())
}

fn fatal(p: &Kelf, reason: String) -> DiffError {
    DiffError::Unpatchable {
        file: p.file.clone(),
        reasons: vec![reason],
    }
}

fn mark_ignored_sections(p: &Kelf, st: &mut State, report: &mut Report) -> Result<(), DiffError> {
    for (i, s) in p.obj.sections_iter() {
        if sections::is_discard(&s.name) {
            st.sec_ignore[i.0] = true;
        }
    }
    let Some(marker) = p.section_named(sections::IGNORE_SECTIONS) else {
        return Ok(());
    };
    let Some(rsec) = p.rela_of[marker.0] else {
        return Ok(());
    };
    for r in &p.obj.sections[rsec.0].relas {
        let sym = &p.obj.symbols[r.r_sym.0];
        let Some(strsec) = sym.section else { continue };
        let name = p.obj.sections[strsec.0]
            .string_at((sym.st_value as i64).saturating_add(r.r_addend).max(0) as u64)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let target = p.section_named(&name).ok_or_else(|| DiffError::Invalid {
            file: p.file.clone(),
            reason: format!("KPATCH_IGNORE_SECTION: no section named {name}"),
        })?;
        let target = p.base_of[target.0].unwrap_or(target);
        st.sec_ignore[target.0] = true;
        report.ignored.push(name);
    }
    Ok(())
}

/// A table the compiler writes one entry per function into (`__mcount_loc`), or its relocations:
/// never compared.
fn is_per_function_table(p: &Kelf, name: &str) -> bool {
    p.arch
        .special_section(sections::base_name(name))
        .is_some_and(|s| matches!(s.kind, Kind::PerFunction { .. }))
}

/// The section of `static_cpu_has()`'s boot-time code (`.altinstr_aux`), by the table.
fn alternatives_aux(p: &Kelf) -> Option<&'static str> {
    p.arch.special_sections().iter().find_map(|s| match s.kind {
        Kind::Alternatives { aux, .. } => Some(aux),
        _ => None,
    })
}

/// Whether relocations `a` (of `o`) and `b` (of `p`) point at the same thing. `aux`: the section
/// of inert boot-time code (`.altinstr_aux`), references to which are equal whatever their
/// addend.
fn rela_equal(o: &Kelf, p: &Kelf, a: &Rela, b: &Rela, in_code: bool, aux: Option<&str>) -> bool {
    if a.r_type != b.r_type || a.r_offset != b.r_offset {
        return false;
    }
    let (an, bn) = (o.sym_name(a.r_sym), p.sym_name(b.r_sym));
    if aux.is_some() && Some(an) == aux && Some(bn) == aux {
        return true;
    }
    if let Some(sa) = o.rela_string(a, in_code) {
        return p.rela_string(b, in_code) == Some(sa);
    }
    if a.r_addend != b.r_addend {
        return false;
    }
    if !mangled_eq(an, bn) {
        return false;
    }
    // Special statics are never correlated (CSWTCH switch tables, __func__, ...): a reference to
    // one is the same only if what it references is the same.
    if is_special_static(o, a.r_sym) && is_special_static(p, b.r_sym) {
        return static_content(o, a.r_sym) == static_content(p, b.r_sym);
    }
    true
}

/// The bytes of a read-only object and the names and addends its relocations reference;
/// `None` for writable data, whose contents are state, not code.
fn static_content(
    k: &Kelf,
    sym: kpatch_elf::SymbolIndex,
) -> Option<(&[u8], Vec<(&str, i64, u64)>)> {
    let s = &k.obj.symbols[sym.0];
    let sec = s.section?;
    let section = &k.obj.sections[sec.0];
    if section.sh_flags & kpatch_elf::consts::SHF_WRITE != 0 || section.is_nobits() {
        return None;
    }
    let (lo, hi) = if s.is_section() {
        (0, section.data.len() as u64)
    } else {
        (s.st_value, s.st_value + s.st_size)
    };
    let bytes = section.data.get(lo as usize..hi as usize)?;
    let relas = k.rela_of[sec.0]
        .map(|r| {
            k.obj.sections[r.0]
                .relas
                .iter()
                .filter(|r| r.r_offset >= lo && r.r_offset < hi)
                .map(|r| (k.sym_name(r.r_sym), r.r_addend, r.r_offset - lo))
                .collect()
        })
        .unwrap_or_default();
    Some((bytes, relas))
}

fn compare_sections(o: &Kelf, p: &Kelf, st: &mut State) -> Result<(), DiffError> {
    let aux = alternatives_aux(p);
    for (sp, psec) in p.obj.sections_iter() {
        let Some(so) = st.sec_twin[sp.0] else {
            st.sec_status[sp.0] = Status::New;
            continue;
        };
        let osec = &o.obj.sections[so.0];
        if osec.sh_type != psec.sh_type
            || osec.sh_flags != psec.sh_flags
            || osec.sh_entsize != psec.sh_entsize
            || (osec.sh_addralign != psec.sh_addralign && !osec.is_text())
        {
            return Err(fatal(
                p,
                format!(
                    "section {} header details differ between the objects",
                    psec.name
                ),
            ));
        }
        let name = psec.name.as_str();
        st.sec_status[sp.0] = if is_per_function_table(p, name) || psec.is_generated_table() {
            Status::Same
        } else if osec.sh_size != psec.sh_size
            || osec.data.len() != psec.data.len()
            || osec.relas.len() != psec.relas.len()
        {
            Status::Changed
        } else if psec.is_rela() {
            let in_code = p.base_of[sp.0].is_some_and(|b| p.obj.sections[b.0].is_text());
            if osec
                .relas
                .iter()
                .zip(&psec.relas)
                .all(|(a, b)| rela_equal(o, p, a, b, in_code, aux))
            {
                Status::Same
            } else {
                Status::Changed
            }
        } else if psec.is_group() {
            if crate::correlate::group_key(o, so) == crate::correlate::group_key(p, sp) {
                Status::Same
            } else {
                Status::Changed
            }
        } else if !psec.is_nobits() && osec.data != psec.data {
            Status::Changed
        } else {
            Status::Same
        };
    }
    // Changes that only move a __LINE__ (WARN, might_sleep, printk) are not changes.
    for (sp, _) in p.obj.sections_iter() {
        if line_macro_change_only(o, p, st, sp)? {
            st.sec_status[sp.0] = Status::Same;
        }
    }
    // A bundled symbol takes its section's status (and its relocation section's).
    for (sp, psec) in p.obj.sections_iter() {
        let owner = if psec.is_rela() {
            p.base_of[sp.0].and_then(|b| p.bundled[b.0])
        } else {
            p.bundled[sp.0]
        };
        if let Some(sym) = owner {
            if st.sym_status[sym.0] != Status::Changed {
                st.sym_status[sym.0] = st.sec_status[sp.0];
            }
        }
    }
    for (sp, psec) in p.obj.sections_iter() {
        if psec.is_rela() {
            continue;
        }
        if let Some(sym) = p.bundled[sp.0] {
            if st.sym_status[sym.0] == Status::Same && changed_child_needs_parent_ftrace(p, st, sym)
            {
                st.sym_status[sym.0] = Status::Changed;
            }
        }
    }
    Ok(())
}

/// A changed `.cold` child has no ftrace entry of its own: its parent must be patched.
fn changed_child_needs_parent_ftrace(p: &Kelf, st: &State, sym: SymbolIndex) -> bool {
    p.children[sym.0].iter().any(|&c| {
        if p.has_fentry[c.0] {
            return false;
        }
        // The child's symbol status covers both its code and its relocations.
        st.sym_status[c.0] == Status::Changed || changed_child_needs_parent_ftrace(p, st, c)
    })
}

fn line_macro_change_only(
    o: &Kelf,
    p: &Kelf,
    st: &State,
    sp: SectionIndex,
) -> Result<bool, DiffError> {
    let psec = &p.obj.sections[sp.0];
    let Some(so) = st.sec_twin[sp.0] else {
        return Ok(false);
    };
    let osec = &o.obj.sections[so.0];
    let Some(prela) = p.rela_of[sp.0] else {
        return Ok(false);
    };
    if st.sec_status[sp.0] != Status::Changed
        || psec.is_rela()
        || !psec.is_text()
        || psec.data.len() != osec.data.len()
        || st.sec_status[prela.0] != Status::Same
    {
        return Ok(false);
    }
    let relas = &psec_relas(p, prela);
    let (a, b) = (&osec.data, &psec.data);
    let mut offset = 0usize;
    let mut line_only = false;
    while offset < a.len() {
        let (Some(la), Some(lb)) = (o.arch.insn_len(&a[offset..]), p.arch.insn_len(&b[offset..]))
        else {
            return Ok(false);
        };
        if la != lb {
            return Ok(false);
        }
        if a[offset..offset + la] != b[offset..offset + la] {
            if !p.arch.is_line_number_load(&a[offset..offset + la])
                || !p.arch.is_line_number_load(&b[offset..offset + la])
            {
                return Ok(false);
            }
            // What follows must be string references, WARN_ONCE flags, then the call.
            let mut found = false;
            for r in relas.iter().filter(|r| r.r_offset >= (offset + la) as u64) {
                let name = p.sym_name(r.r_sym);
                if p.rela_string(r, true).is_some()
                    || name.starts_with("__warned.")
                    || name.starts_with("__already_done.")
                {
                    continue;
                }
                if name.starts_with("warn_slowpath_") || LINE_MACRO_CALLEES.contains(&name) {
                    found = true;
                    break;
                }
                return Ok(false);
            }
            if !found {
                return Ok(false);
            }
            line_only = true;
        }
        offset += la;
    }
    Ok(line_only)
}

fn psec_relas(p: &Kelf, rsec: SectionIndex) -> Vec<Rela> {
    let mut v = p.obj.sections[rsec.0].relas.clone();
    v.sort_by_key(|r| r.r_offset);
    v
}

fn compare_symbols(o: &Kelf, p: &Kelf, st: &mut State) -> Result<(), DiffError> {
    for (sp, psym) in p.obj.symbols_iter() {
        let Some(so) = st.sym_twin[sp.0] else {
            st.sym_status[sp.0] = Status::New;
            continue;
        };
        let osym = &o.obj.symbols[so.0];
        if osym.st_info != psym.st_info || osym.section.is_some() != psym.section.is_some() {
            return Err(fatal(
                p,
                format!("symbol info mismatch: {}", p.sym_name(sp)),
            ));
        }
        if let (Some(os), Some(ps)) = (osym.section, psym.section) {
            if st.orig_sec_twin[os.0] != Some(ps) {
                let moved_from_ignored = st.sec_twin[ps.0].is_some_and(|_| st.sec_ignore[ps.0]);
                if moved_from_ignored
                    || sections::text_subsection(o.sec_name(os))
                        != sections::text_subsection(p.sec_name(ps))
                {
                    st.sym_status[sp.0] = Status::Changed;
                } else {
                    return Err(fatal(
                        p,
                        format!("symbol {} changed sections", p.sym_name(sp)),
                    ));
                }
            }
        }
        let metadata = osym
            .section
            .is_some_and(|s| o.sec_name(s) == sections::MODINFO);
        if osym.is_object()
            && osym.st_size != psym.st_size
            && !is_special_static(o, so)
            && !metadata
        {
            return Err(fatal(
                p,
                format!(
                    "data object {} changed size ({} to {} bytes): changing the layout of existing data cannot be live-patched",
                    psym.name, osym.st_size, psym.st_size
                ),
            ));
        }
        if osym.section.is_none() {
            st.sym_status[sp.0] = Status::Same;
        }
    }
    Ok(())
}

fn mark_ignored_functions(p: &Kelf, st: &mut State, report: &mut Report) -> Result<(), DiffError> {
    let Some(marker) = p.section_named(sections::IGNORE_FUNCTIONS) else {
        return Ok(());
    };
    let Some(rsec) = p.rela_of[marker.0] else {
        return Ok(());
    };
    for r in &p.obj.sections[rsec.0].relas {
        let sym = &p.obj.symbols[r.r_sym.0];
        let Some(sec) = sym.section.filter(|_| sym.is_func()) else {
            return Err(DiffError::Invalid {
                file: p.file.clone(),
                reason: format!(
                    "KPATCH_IGNORE_FUNCTION({}) does not name a function of this object",
                    p.sym_name(r.r_sym)
                ),
            });
        };
        report.ignored.push(sym.name.clone());
        let mut stack = vec![r.r_sym];
        while let Some(s) = stack.pop() {
            st.sym_status[s.0] = Status::Same;
            stack.extend(p.children[s.0].iter().copied());
        }
        st.sec_status[sec.0] = Status::Same;
        if let Some(ss) = p.secsym[sec.0] {
            st.sym_status[ss.0] = Status::Same;
        }
        if let Some(rs) = p.rela_of[sec.0] {
            st.sec_status[rs.0] = Status::Same;
        }
    }
    for (i, s) in p.obj.symbols_iter() {
        if s.name.starts_with(sections::IGNORE_FUNCTION_SYMBOL_PREFIX) {
            st.sym_status[i.0] = Status::Same;
        }
    }
    Ok(())
}

fn mark_ignored_sections_same(p: &Kelf, st: &mut State) {
    for (i, s) in p.obj.sections_iter() {
        if !st.sec_ignore[i.0] {
            continue;
        }
        st.sec_status[i.0] = Status::Same;
        if !s.is_rela() {
            if let Some(ss) = p.secsym[i.0] {
                st.sym_status[ss.0] = Status::Same;
            }
            if let Some(r) = p.rela_of[i.0] {
                st.sec_status[r.0] = Status::Same;
            }
        }
        for &sym in &p.by_offset[i.0] {
            st.sym_status[sym.0] = Status::Same;
        }
    }
    for (i, s) in p.obj.symbols_iter() {
        if s.name.starts_with(sections::IGNORE_SECTION_SYMBOL_PREFIX) {
            st.sym_status[i.0] = Status::Same;
        }
    }
}

/// A changed function is patched through its ftrace entry; one without it cannot be patched.
fn check_ftrace_entries(o: &Kelf, p: &Kelf, st: &State) -> Result<(), DiffError> {
    let mut reasons = Vec::new();
    for (sp, sym) in p.obj.symbols_iter() {
        if !sym.is_func() || st.sym_status[sp.0] != Status::Changed {
            continue;
        }
        if p.parent[sp.0].is_some_and(|par| st.sym_status[par.0] == Status::Changed) {
            continue;
        }
        let Some(so) = st.sym_twin[sp.0] else {
            continue;
        };
        if !o.has_fentry[so.0] {
            reasons.push(format!(
                "function {} has no ftrace entry (__fentry__ call): it is notrace or inlined-only and cannot be patched",
                sym.name
            ));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(DiffError::Unpatchable {
            file: p.file.clone(),
            reasons,
        })
    }
}

/// What a function's entries in the special sections say, position-independently: per section,
/// each entry's bytes (the `__bug_table` line number masked: it moves with unrelated edits) and
/// what its relocations point at (names, addends, the code of an alternative's replacement,
/// strings by content).
type EntrySignature = Vec<(String, Vec<u8>, Vec<(u64, u32, String, i64, Vec<u8>)>)>;

fn special_signatures(
    k: &Kelf,
    options: &crate::Options,
) -> std::collections::HashMap<SymbolIndex, EntrySignature> {
    let mut out: std::collections::HashMap<SymbolIndex, EntrySignature> = Default::default();
    // Code that special entries point into outside any function (an alternative's replacement
    // in .altinstr_replacement, an exception fixup stub in .fixup) is compared by content: each
    // piece runs from where an entry points to where the next one does.
    let mut starts: std::collections::HashMap<SectionIndex, Vec<i64>> = Default::default();
    let specs = || k.arch.special_sections().iter().filter(|s| s.has_sites());
    for spec in specs() {
        let Some(sec) = k.section_named(spec.name) else {
            continue;
        };
        let Some(rsec) = k.rela_of[sec.0] else {
            continue;
        };
        for x in &k.obj.sections[rsec.0].relas {
            let t = &k.obj.symbols[x.r_sym.0];
            if let Some(ts) = t.section.filter(|s| {
                t.is_section() && k.obj.sections[s.0].is_text() && k.bundled[s.0].is_none()
            }) {
                starts
                    .entry(ts)
                    .or_default()
                    .push((t.st_value as i64).saturating_add(x.r_addend));
            }
        }
    }
    for v in starts.values_mut() {
        v.sort_unstable();
        v.dedup();
    }
    for spec in specs() {
        let Some(sec) = k.section_named(spec.name) else {
            continue;
        };
        let Some(rsec) = k.rela_of[sec.0] else {
            continue;
        };
        let Some(size) = k.entry_size(spec, sec, options) else {
            continue;
        };
        let layout = spec.layout(size);
        for entry in
            Entries::new(&k.obj.sections[sec.0], &k.obj.sections[rsec.0].relas, size).iter()
        {
            let owner =
                entry.relas.iter().map(|r| r.r_sym).find(|&s| {
                    k.obj.symbols[s.0].is_func() && k.obj.symbols[s.0].section.is_some()
                });
            let Some(owner) = owner else {
                continue;
            };
            let mut bytes = entry.data.to_vec();
            // The __LINE__ of a bug entry moves with unrelated edits.
            if let Some(line) = layout.filter(|l| entry.is_whole(l)).and_then(|l| l.line) {
                bytes[line.offset as usize..(line.offset + line.len) as usize].fill(0);
            }
            let targets = entry
                .relas
                .iter()
                .map(|r| {
                    let t = &k.obj.symbols[r.r_sym.0];
                    let at = (t.st_value as i64).saturating_add(r.r_addend);
                    let content = if let Some(s) = k.rela_string(r, false) {
                        s.to_vec()
                    } else if let Some(piece) =
                        t.section.and_then(|ts| starts.get(&ts).map(|v| (ts, v)))
                    {
                        let (ts, v) = piece;
                        let data = &k.obj.sections[ts.0].data;
                        let end = v
                            .iter()
                            .copied()
                            .find(|&x| x > at)
                            .unwrap_or(data.len() as i64);
                        data.get(at.max(0) as usize..end.max(0) as usize)
                            .unwrap_or(&[])
                            .to_vec()
                    } else {
                        Vec::new()
                    };
                    // What is compared by content needs no name (`.LC6` and `.LC8` may hold
                    // the same string).
                    let (name, addend) = if content.is_empty() {
                        (
                            crate::names::mangled_key_string(k.sym_name(r.r_sym)),
                            r.r_addend,
                        )
                    } else {
                        (String::new(), 0)
                    };
                    (r.r_offset - entry.offset, r.r_type, name, addend, content)
                })
                .collect();
            out.entry(owner)
                .or_default()
                .push((spec.name.to_string(), bytes, targets));
        }
    }
    out
}

/// A function whose code is the same is still changed when its alternatives, exception
/// entries, bug flags or jump-label keys changed.
fn compare_special_entries(o: &Kelf, p: &Kelf, st: &mut State, options: &crate::Options) {
    let (so, sp) = (
        special_signatures(o, options),
        special_signatures(p, options),
    );
    for (&psym, sig) in &sp {
        if st.sym_status[psym.0] != Status::Same {
            continue;
        }
        let Some(osym) = st.sym_twin[psym.0] else {
            continue;
        };
        // Only a function alone in its section (-ffunction-sections) is known to have the same
        // code; one in a shared section (.init.text, .sched.text) is judged by its section.
        if p.obj.symbols[psym.0]
            .section
            .is_none_or(|s| p.bundled[s.0] != Some(psym))
        {
            continue;
        }
        // Unchanged code has the same sites: only the same number of entries, with different
        // contents, is a change of the entries themselves.
        if so
            .get(&osym)
            .is_some_and(|o| o.len() == sig.len() && o != sig)
        {
            if options.debug {
                eprintln!(
                    "special entries of {} differ:\n  orig {:?}\n  new  {:?}",
                    p.sym_name(psym),
                    so.get(&osym),
                    sig
                );
            }
            st.sym_status[psym.0] = Status::Changed;
        }
    }
}

/// A changed constant (a `.rodata` table) cannot be patched in place, but the functions that
/// read it can be, with a new copy of the table. That is sound only when no one else holds its
/// address: every code reference must be a load (a memory operand), and a constant that
/// points to a changed one is itself changed (a new copy of the pointer table). A constant whose
/// address the code computes (`lea`, an immediate, a pointer stored elsewhere) stays refused.
fn propagate_read_only_data_changes(p: &Kelf, st: &mut State) {
    let owner_of = |sym: SymbolIndex| -> Option<SymbolIndex> {
        let s = &p.obj.symbols[sym.0];
        let sec = s.section?;
        let owner = p.bundled[sec.0]?;
        (s.is_section() || owner == sym).then_some(owner)
    };
    let is_const = |obj: SymbolIndex| {
        let s = &p.obj.symbols[obj.0];
        let Some(sec) = s.section else { return false };
        let section = &p.obj.sections[sec.0];
        s.is_object()
            && section.is_alloc()
            && section.sh_flags & kpatch_elf::consts::SHF_WRITE == 0
            && !section.is_strings()
            && !section.is_text()
            && sections::is_rodata(&section.name)
    };
    let sec_of = |obj: SymbolIndex| p.obj.symbols[obj.0].section.unwrap();
    let mut changed: Vec<bool> = vec![false; p.obj.symbols.len()];
    for (i, _) in p.obj.symbols_iter() {
        if is_const(i) && p.bundled[sec_of(i).0] == Some(i) {
            let sec = sec_of(i);
            // Its bytes changed, or what its pointers point at (a string table, say).
            if st.sec_status[sec.0] == Status::Changed
                || p.rela_of[sec.0].is_some_and(|r| st.sec_status[r.0] == Status::Changed)
            {
                changed[i.0] = true;
            }
        }
    }
    if !changed.iter().any(|&c| c) {
        return;
    }
    // Constants that point to changed constants need new copies too.
    loop {
        let mut more = false;
        for (i, _) in p.obj.symbols_iter() {
            if changed[i.0]
                || !is_const(i)
                || p.bundled[sec_of(i).0] != Some(i)
                || st.sym_twin[i.0].is_none()
            {
                continue;
            }
            let Some(r) = p.rela_of[sec_of(i).0] else {
                continue;
            };
            if p.obj.sections[r.0]
                .relas
                .iter()
                .any(|x| owner_of(x.r_sym).is_some_and(|o| changed[o.0]))
            {
                changed[i.0] = true;
                more = true;
            }
        }
        if !more {
            break;
        }
    }
    // Readers: every function that loads a changed constant, if no reference escapes.
    let mut readers = Vec::new();
    let mut escaped = vec![false; p.obj.symbols.len()];
    for (rsec, sec) in p.obj.sections_iter() {
        if !sec.is_rela() || st.sec_ignore[rsec.0] {
            continue;
        }
        let Some(base) = p.base_of[rsec.0] else {
            continue;
        };
        let text = &p.obj.sections[base.0];
        for r in &sec.relas {
            let Some(obj) = owner_of(r.r_sym).filter(|o| changed[o.0]) else {
                continue;
            };
            if obj == p.bundled[base.0].unwrap_or_default() {
                continue;
            }
            match p.bundled[base.0] {
                Some(f)
                    if text.is_text()
                        && p.obj.symbols[f.0].is_func()
                        && p.arch.is_memory_access(&text.data, r.r_offset) =>
                {
                    readers.push(f)
                }
                _ if changed[p.bundled[base.0].unwrap_or_default().0] => {} // a changed pointer table
                _ => escaped[obj.0] = true,
            }
        }
    }
    if escaped.iter().any(|&e| e) {
        for (i, s) in p.obj.symbols_iter() {
            if escaped[i.0] {
                st.warnings.push(format!(
                    "read-only object {} changed and its address is taken: the kernel may hold the old copy, so its readers cannot simply be patched",
                    s.name
                ));
            }
        }
        return;
    }
    for (i, _) in p.obj.symbols_iter() {
        if changed[i.0] {
            st.sym_status[i.0] = Status::Changed;
            st.sec_status[sec_of(i).0] = Status::Changed;
        }
    }
    for r in readers {
        if st.sym_status[r.0] == Status::Same && st.sym_twin[r.0].is_some() {
            st.sym_status[r.0] = Status::Changed;
        }
    }
}
