//! The author's ignore markers (`KPATCH_IGNORE_SECTION`, `KPATCH_IGNORE_FUNCTION` of
//! kpatch-macros.h) and the sections that never count (`.discard*`).

use super::P;
use crate::state::{Status, Statuses};
use crate::{DiffError, Report};
use kpatch_arch::sections;

/// Pass 1: marks `.discard*` and the sections `KPATCH_IGNORE_SECTION` names as ignored (a
/// relocation section's name stands for its base).
pub(super) fn mark_ignored_sections(
    p: &P,
    st: &mut Statuses,
    report: &mut Report,
) -> Result<(), DiffError> {
    for (i, s) in p.sections() {
        if sections::is_discard(&s.name) {
            st.ignored[i] = true;
        }
    }
    let Some(marker) = p.section_named(sections::IGNORE_SECTIONS) else {
        return Ok(());
    };
    let Some(rsec) = p.rela_of[marker] else {
        return Ok(());
    };
    for r in p.relas(rsec) {
        let target = p.target(r);
        let sym = p.sym(target);
        let Some(strsec) = p.sec_of(target) else {
            continue;
        };
        let name = p
            .sec(strsec)
            .string_at((sym.st_value as i64).saturating_add(r.r_addend).max(0) as u64)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let ignored = p.section_named(&name).ok_or_else(|| DiffError::Invalid {
            file: p.file.clone(),
            reason: format!("KPATCH_IGNORE_SECTION: no section named {name}"),
        })?;
        let ignored = p.base_of[ignored].unwrap_or(ignored);
        st.ignored[ignored] = true;
        report.ignored.push(name);
    }
    Ok(())
}

/// Pass 6: the functions `KPATCH_IGNORE_FUNCTION` names, their `.cold`/`.part` children, their
/// sections and the records themselves are the same.
pub(super) fn mark_ignored_functions(
    p: &P,
    st: &mut Statuses,
    report: &mut Report,
) -> Result<(), DiffError> {
    let Some(marker) = p.section_named(sections::IGNORE_FUNCTIONS) else {
        return Ok(());
    };
    let Some(rsec) = p.rela_of[marker] else {
        return Ok(());
    };
    for r in p.relas(rsec) {
        let func = p.target(r);
        let sym = p.sym(func);
        let Some(sec) = p.sec_of(func).filter(|_| sym.is_func()) else {
            return Err(DiffError::Invalid {
                file: p.file.clone(),
                reason: format!(
                    "KPATCH_IGNORE_FUNCTION({}) does not name a function of this object",
                    p.sym_name(func)
                ),
            });
        };
        report.ignored.push(sym.name.clone());
        let mut stack = vec![func];
        while let Some(s) = stack.pop() {
            st.sym[s] = Status::Same;
            stack.extend(p.children[s].iter().copied());
        }
        st.sec[sec] = Status::Same;
        if let Some(ss) = p.secsym[sec] {
            st.sym[ss] = Status::Same;
        }
        if let Some(rs) = p.rela_of[sec] {
            st.sec[rs] = Status::Same;
        }
    }
    for (i, s) in p.symbols() {
        if s.name.starts_with(sections::IGNORE_FUNCTION_SYMBOL_PREFIX) {
            st.sym[i] = Status::Same;
        }
    }
    Ok(())
}

/// Pass 7: ignored sections, their relocation sections and everything defined in them are the
/// same, and so are the section-ignore records.
pub(super) fn mark_ignored_sections_same(p: &P, st: &mut Statuses) {
    for (i, s) in p.sections() {
        if !st.ignored[i] {
            continue;
        }
        st.sec[i] = Status::Same;
        if !s.is_rela() {
            if let Some(ss) = p.secsym[i] {
                st.sym[ss] = Status::Same;
            }
            if let Some(r) = p.rela_of[i] {
                st.sec[r] = Status::Same;
            }
        }
        for &sym in &p.by_offset[i] {
            st.sym[sym] = Status::Same;
        }
    }
    for (i, s) in p.symbols() {
        if s.name.starts_with(sections::IGNORE_SECTION_SYMBOL_PREFIX) {
            st.sym[i] = Status::Same;
        }
    }
}
