//! Marking each patched section and symbol as the same, changed or new.

use crate::correlate::{is_special_static, State};
use crate::kelf::Kelf;
use crate::names::mangled_eq;
use crate::{DiffError, Report};
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

pub fn compare(o: &Kelf, p: &Kelf, st: &mut State, report: &mut Report) -> Result<(), DiffError> {
    mark_ignored_sections(p, st, report)?;
    compare_sections(o, p, st)?;
    compare_symbols(o, p, st)?;
    mark_ignored_functions(p, st, report)?;
    mark_ignored_sections_same(p, st);
    check_ftrace_entries(o, p, st)?;
    report.warnings.append(&mut st.warnings);
    Ok(())
}

fn fatal(p: &Kelf, reason: String) -> DiffError {
    DiffError::Unpatchable { file: p.file.clone(), reasons: vec![reason] }
}

fn mark_ignored_sections(p: &Kelf, st: &mut State, report: &mut Report) -> Result<(), DiffError> {
    for (i, s) in p.obj.sections_iter() {
        if s.name.starts_with(".discard") || s.name.starts_with(".rela.discard") {
            st.sec_ignore[i.0] = true;
        }
    }
    let Some(marker) = p.section_named(".kpatch.ignore.sections") else { return Ok(()) };
    let Some(rsec) = p.rela_of[marker.0] else { return Ok(()) };
    for r in &p.obj.sections[rsec.0].relas {
        let sym = &p.obj.symbols[r.r_sym.0];
        let Some(strsec) = sym.section else { continue };
        let name = p.obj.sections[strsec.0]
            .string_at((sym.st_value as i64 + r.r_addend).max(0) as u64)
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

fn rela_equal(o: &Kelf, p: &Kelf, a: &Rela, b: &Rela) -> bool {
    if a.r_type != b.r_type || a.r_offset != b.r_offset {
        return false;
    }
    let (an, bn) = (o.sym_name(a.r_sym), p.sym_name(b.r_sym));
    // .altinstr_aux holds inert boot-time code; references to it are equal whatever their addend.
    if an == ".altinstr_aux" && bn == ".altinstr_aux" {
        return true;
    }
    if let Some(sa) = o.rela_string(a) {
        return p.rela_string(b) == Some(sa);
    }
    if a.r_addend != b.r_addend {
        return false;
    }
    mangled_eq(an, bn)
}

fn compare_sections(o: &Kelf, p: &Kelf, st: &mut State) -> Result<(), DiffError> {
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
            return Err(fatal(p, format!("section {} header details differ between the objects", psec.name)));
        }
        let name = psec.name.as_str();
        st.sec_status[sp.0] = if matches!(
            name,
            "__mcount_loc" | ".rela__mcount_loc" | "__patchable_function_entries" | ".rela__patchable_function_entries"
        ) || psec.is_generated_table()
        {
            Status::Same
        } else if osec.sh_size != psec.sh_size || osec.data.len() != psec.data.len() || osec.relas.len() != psec.relas.len() {
            Status::Changed
        } else if psec.is_rela() {
            if osec.relas.iter().zip(&psec.relas).all(|(a, b)| rela_equal(o, p, a, b)) {
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
        let owner = if psec.is_rela() { p.base_of[sp.0].and_then(|b| p.bundled[b.0]) } else { p.bundled[sp.0] };
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
            if st.sym_status[sym.0] == Status::Same && changed_child_needs_parent_ftrace(p, st, sym) {
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
        let changed = p.obj.symbols[c.0].section.is_some_and(|s| st.sec_status[s.0] == Status::Changed);
        changed || changed_child_needs_parent_ftrace(p, st, c)
    })
}

fn line_macro_change_only(o: &Kelf, p: &Kelf, st: &State, sp: SectionIndex) -> Result<bool, DiffError> {
    let psec = &p.obj.sections[sp.0];
    let Some(so) = st.sec_twin[sp.0] else { return Ok(false) };
    let osec = &o.obj.sections[so.0];
    let Some(prela) = p.rela_of[sp.0] else { return Ok(false) };
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
        let (Some(la), Some(lb)) = (o.arch.insn_len(&a[offset..]), p.arch.insn_len(&b[offset..])) else {
            return Ok(false);
        };
        if la != lb {
            return Ok(false);
        }
        if a[offset..offset + la] != b[offset..offset + la] {
            if !p.arch.is_line_number_load(&a[offset..offset + la]) || !p.arch.is_line_number_load(&b[offset..offset + la]) {
                return Ok(false);
            }
            // What follows must be string references, WARN_ONCE flags, then the call.
            let mut found = false;
            for r in relas.iter().filter(|r| r.r_offset >= (offset + la) as u64) {
                let name = p.sym_name(r.r_sym);
                if p.rela_string(r).is_some() || name.starts_with("__warned.") || name.starts_with("__already_done.") {
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

fn subsection(name: &str) -> u8 {
    if name.starts_with(".text.unlikely.") {
        2
    } else if name.starts_with(".text.hot.") {
        1
    } else {
        0
    }
}

fn compare_symbols(o: &Kelf, p: &Kelf, st: &mut State) -> Result<(), DiffError> {
    for (sp, psym) in p.obj.symbols_iter() {
        let Some(so) = st.sym_twin[sp.0] else {
            st.sym_status[sp.0] = Status::New;
            continue;
        };
        let osym = &o.obj.symbols[so.0];
        if osym.st_info != psym.st_info || osym.section.is_some() != psym.section.is_some() {
            return Err(fatal(p, format!("symbol info mismatch: {}", p.sym_name(sp))));
        }
        if let (Some(os), Some(ps)) = (osym.section, psym.section) {
            if st.orig_sec_twin[os.0] != Some(ps) {
                let moved_from_ignored = st.sec_twin[ps.0].is_some_and(|_| st.sec_ignore[ps.0]);
                if moved_from_ignored || subsection(o.sec_name(os)) != subsection(p.sec_name(ps)) {
                    st.sym_status[sp.0] = Status::Changed;
                } else {
                    return Err(fatal(p, format!("symbol {} changed sections", p.sym_name(sp))));
                }
            }
        }
        if osym.is_object() && osym.st_size != psym.st_size && !is_special_static(o, so) {
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
    let Some(marker) = p.section_named(".kpatch.ignore.functions") else { return Ok(()) };
    let Some(rsec) = p.rela_of[marker.0] else { return Ok(()) };
    for r in &p.obj.sections[rsec.0].relas {
        let sym = &p.obj.symbols[r.r_sym.0];
        let Some(sec) = sym.section.filter(|_| sym.is_func()) else {
            return Err(DiffError::Invalid {
                file: p.file.clone(),
                reason: format!("KPATCH_IGNORE_FUNCTION({}) does not name a function of this object", p.sym_name(r.r_sym)),
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
        if s.name.starts_with("__kpatch_ignore_func_") {
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
        if s.name.starts_with("__UNIQUE_ID_kpatch_ignore_section_") {
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
        let Some(so) = st.sym_twin[sp.0] else { continue };
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
        Err(DiffError::Unpatchable { file: p.file.clone(), reasons })
    }
}
