//! Changed constants: a changed `.rodata` table cannot be patched in place, but the functions
//! that read it can be, with a new copy of the table.

use super::P;
use crate::index::PatchedSym;
use crate::state::{Cause, Status, Statuses, Twins};
use crate::Report;
use kpatch_arch::sections;

/// Pass 5: a changed constant (a `.rodata` table) and its readers are changed. That is sound
/// only when no one else holds its address: every code reference must be a load (a memory
/// operand), and a constant that points to a changed one is itself changed (a new copy of the
/// pointer table). A constant whose address the code computes (`lea`, an immediate, a pointer
/// stored elsewhere) stays refused, with a warning in `report`.
pub(super) fn propagate_read_only_data_changes(
    p: &P,
    tw: &Twins,
    st: &mut Statuses,
    report: &mut Report,
) {
    let owner_of = |sym: PatchedSym| -> Option<PatchedSym> {
        let s = p.sym(sym);
        let sec = p.sec_of(sym)?;
        let owner = p.bundled[sec]?;
        (s.is_section() || owner == sym).then_some(owner)
    };
    let is_const = |obj: PatchedSym| {
        let s = p.sym(obj);
        let Some(sec) = p.sec_of(obj) else {
            return false;
        };
        let section = p.sec(sec);
        s.is_object()
            && section.is_alloc()
            && section.sh_flags & kpatch_elf::consts::SHF_WRITE == 0
            && !section.is_strings()
            && !section.is_text()
            && sections::is_rodata(&section.name)
    };
    let sec_of = |obj: PatchedSym| p.sec_of(obj).unwrap();
    let mut changed = p.per_symbol(false);
    for (i, _) in p.symbols() {
        if is_const(i) && p.bundled[sec_of(i)] == Some(i) {
            let sec = sec_of(i);
            // Its bytes changed, or what its pointers point at (a string table, say).
            if st.sec[sec] == Status::Changed
                || p.rela_of[sec].is_some_and(|r| st.sec[r] == Status::Changed)
            {
                changed[i] = true;
            }
        }
    }
    if !changed.values().any(|&c| c) {
        return;
    }
    // Constants that point to changed constants need new copies too.
    loop {
        let mut more = false;
        for (i, _) in p.symbols() {
            if changed[i] || !is_const(i) || p.bundled[sec_of(i)] != Some(i) || tw.sym[i].is_none()
            {
                continue;
            }
            let Some(r) = p.rela_of[sec_of(i)] else {
                continue;
            };
            if p.relas(r)
                .iter()
                .any(|x| owner_of(p.target(x)).is_some_and(|o| changed[o]))
            {
                changed[i] = true;
                more = true;
            }
        }
        if !more {
            break;
        }
    }
    // Readers: every function that loads a changed constant, if no reference escapes.
    let mut readers = Vec::new();
    let mut escaped = p.per_symbol(false);
    for (rsec, sec) in p.sections() {
        if !sec.is_rela() || st.ignored[rsec] {
            continue;
        }
        let Some(base) = p.base_of[rsec] else {
            continue;
        };
        let text = p.sec(base);
        let owner = p.bundled[base];
        for r in &sec.relas {
            let Some(obj) = owner_of(p.target(r)).filter(|&o| changed[o]) else {
                continue;
            };
            if Some(obj) == owner {
                continue;
            }
            match owner {
                Some(f)
                    if text.is_text()
                        && p.sym(f).is_func()
                        && p.arch.is_memory_access(&text.data, r.r_offset) =>
                {
                    readers.push((f, obj))
                }
                Some(table) if changed[table] => {} // a changed pointer table
                _ => escaped[obj] = true,
            }
        }
    }
    if escaped.values().any(|&e| e) {
        for (i, s) in p.symbols() {
            if escaped[i] {
                report.warnings.push(format!(
                    "read-only object {} changed and its address is taken: the kernel may hold the old copy, so its readers cannot simply be patched",
                    s.name
                ));
            }
        }
        return;
    }
    for (i, _) in p.symbols() {
        if changed[i] {
            st.sym[i] = Status::Changed;
            st.sec[sec_of(i)] = Status::Changed;
        }
    }
    for (r, obj) in readers {
        if st.sym[r] == Status::Same && tw.sym[r].is_some() {
            st.changed(r, Cause::ReadOnlyData(obj));
        }
    }
}
