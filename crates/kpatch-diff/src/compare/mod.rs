//! Marking each patched section and symbol as the same, changed or new: the second phase, which
//! reads the [`Twins`] and writes the [`Statuses`].
//!
//! Eight passes, in an order that matters:
//!
//! 1. [`ignore::mark_ignored_sections`]: which sections do not count (`KPATCH_IGNORE_SECTION`,
//!    `.discard*`). First, because passes 3 and 5 read it: a symbol that moved out of an ignored
//!    section is changed, and a reference from one does not make a read-only object escape.
//! 2. [`compare_sections`]: each section against its twin (bytes, relocations by what they
//!    point at, `__LINE__`-only moves forgiven by [`lines`]); a function or object takes the
//!    status of its own section.
//! 3. [`compare_symbols`]: symbols without twin are new; a function that moved between text
//!    subsections is changed. After 2, whose statuses it refines.
//! 4. [`entries::compare_special_entries`]: a function whose code is the same is still changed
//!    when its special-section entries changed. After 2 and 3: it looks only at functions that
//!    are still the same.
//! 5. [`rodata::propagate_read_only_data_changes`]: a changed constant changes the functions that
//!    read it. After 2-4, on the final changes of the constants' sections.
//! 6. [`ignore::mark_ignored_functions`] and 7. [`ignore::mark_ignored_sections_same`]: what the
//!    author ignores is the same. After every pass that finds changes, so that none of them can
//!    mark an ignored function changed again.
//! 8. [`check_ftrace_entries`]: every changed function can be patched through ftrace. Last: on
//!    the final set of changed functions.

mod difference;
mod entries;
mod ignore;
mod lines;
mod rodata;

pub(crate) use difference::first_difference;

use crate::index::{Orig, Patched, PatchedSym, Sym};
use crate::kelf::Kelf;
use crate::names::mangled_eq;
use crate::state::{Cause, Status, Statuses, Twins};
use crate::{DiffError, Options, Report};
use kpatch_arch::{sections, Kind};
use kpatch_elf::Rela;

type O = Kelf<Orig>;
type P = Kelf<Patched>;

/// Compares `p` with `o` through their twins; ignored sections and functions go to `report`, and
/// so do warnings.
pub fn compare(
    o: &O,
    p: &P,
    tw: &Twins,
    report: &mut Report,
    options: &Options,
) -> Result<Statuses, DiffError> {
    let mut st = Statuses::new(p);
    ignore::mark_ignored_sections(p, &mut st, report)?;
    compare_sections(o, p, tw, &mut st)?;
    compare_symbols(o, p, tw, &mut st)?;
    entries::compare_special_entries(o, p, tw, &mut st, options);
    rodata::propagate_read_only_data_changes(p, tw, &mut st, report);
    ignore::mark_ignored_functions(p, &mut st, report)?;
    ignore::mark_ignored_sections_same(p, &mut st);
    check_ftrace_entries(o, p, tw, &st)?;
    Ok(st)
}

fn fatal(p: &P, reason: String) -> DiffError {
    DiffError::Unpatchable {
        file: p.file.clone(),
        reasons: vec![reason],
    }
}

/// A table the compiler writes one entry per function into (`__mcount_loc`), or its relocations:
/// never compared.
fn is_per_function_table(p: &P, name: &str) -> bool {
    p.arch
        .special_section(sections::base_name(name))
        .is_some_and(|s| matches!(s.kind, Kind::PerFunction { .. }))
}

/// The section of `static_cpu_has()`'s boot-time code (`.altinstr_aux`), by the table.
fn alternatives_aux(p: &P) -> Option<&'static str> {
    p.arch.special_sections().iter().find_map(|s| match s.kind {
        Kind::Alternatives { aux, .. } => Some(aux),
        _ => None,
    })
}

/// Whether relocations `a` (of `o`) and `b` (of `p`) point at the same thing. `aux`: the section
/// of inert boot-time code (`.altinstr_aux`), references to which are equal whatever their
/// addend.
fn rela_equal(o: &O, p: &P, a: &Rela, b: &Rela, in_code: bool, aux: Option<&str>) -> bool {
    if a.r_type != b.r_type || a.r_offset != b.r_offset {
        return false;
    }
    let (at, bt) = (o.target(a), p.target(b));
    let (an, bn) = (o.sym_name(at), p.sym_name(bt));
    if aux.is_some() && Some(an) == aux && Some(bn) == aux {
        return true;
    }
    if let Some(sa) = o.rela_string(a, in_code) {
        return p.rela_string(b, in_code) == Some(sa);
    }
    if let Some(ca) = o.rela_constant(a, in_code) {
        return p.rela_constant(b, in_code) == Some(ca);
    }
    if a.r_addend != b.r_addend {
        return false;
    }
    if !mangled_eq(an, bn) {
        return false;
    }
    // Special statics are never correlated (CSWTCH switch tables, __func__, ...): a reference to
    // one is the same only if what it references is the same.
    if o.is_special_static(at) && p.is_special_static(bt) {
        return static_content(o, at) == static_content(p, bt);
    }
    true
}

/// What a read-only object holds: its bytes, and the names, addends and offsets its relocations
/// reference.
type StaticContent<'a> = (&'a [u8], Vec<(&'a str, i64, u64)>);

/// The contents of a read-only object; `None` for writable data, whose contents are state, not
/// code.
fn static_content<S>(k: &Kelf<S>, sym: Sym<S>) -> Option<StaticContent<'_>> {
    let s = k.sym(sym);
    let sec = k.sec_of(sym)?;
    let section = k.sec(sec);
    if section.sh_flags & kpatch_elf::consts::SHF_WRITE != 0 || section.is_nobits() {
        return None;
    }
    let (lo, hi) = if s.is_section() {
        (0, section.data.len() as u64)
    } else {
        (s.st_value, s.st_value + s.st_size)
    };
    let bytes = section.data.get(lo as usize..hi as usize)?;
    let relas = k.rela_of[sec]
        .map(|r| {
            k.relas(r)
                .iter()
                .filter(|r| r.r_offset >= lo && r.r_offset < hi)
                .map(|r| (k.sym_name(k.target(r)), r.r_addend, r.r_offset - lo))
                .collect()
        })
        .unwrap_or_default();
    Some((bytes, relas))
}

fn compare_sections(o: &O, p: &P, tw: &Twins, st: &mut Statuses) -> Result<(), DiffError> {
    let aux = alternatives_aux(p);
    for (sp, psec) in p.sections() {
        let Some(so) = tw.sec[sp] else {
            st.sec[sp] = Status::New;
            continue;
        };
        let osec = o.sec(so);
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
        st.sec[sp] = if is_per_function_table(p, name) || psec.is_generated_table() {
            Status::Same
        } else if osec.sh_size != psec.sh_size
            || osec.data.len() != psec.data.len()
            || osec.relas.len() != psec.relas.len()
        {
            Status::Changed
        } else if psec.is_rela() {
            let in_code = p.base_of[sp].is_some_and(|b| p.sec(b).is_text());
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
            if o.group_key(so) == p.group_key(sp) {
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
    for (sp, _) in p.sections() {
        if lines::line_macro_change_only(o, p, tw, st, sp)? {
            st.sec[sp] = Status::Same;
        }
    }
    // A bundled symbol takes its section's status (and its relocation section's).
    for (sp, psec) in p.sections() {
        let owner = if psec.is_rela() {
            p.base_of[sp].and_then(|b| p.bundled[b])
        } else {
            p.bundled[sp]
        };
        if let Some(sym) = owner {
            match (st.sym[sym], st.sec[sp]) {
                (Status::Changed, _) => {}
                (_, Status::Changed) => st.changed(sym, Cause::Code),
                (_, status) => st.sym[sym] = status,
            }
        }
    }
    for (sp, psec) in p.sections() {
        if psec.is_rela() {
            continue;
        }
        if let Some(sym) = p.bundled[sp] {
            if st.sym[sym] == Status::Same {
                if let Some(child) = changed_child_needing_parent_ftrace(p, st, sym) {
                    st.changed(sym, Cause::Child(child));
                }
            }
        }
    }
    Ok(())
}

/// A changed `.cold` child has no ftrace entry of its own: its parent must be patched. The
/// child of `sym` that changed (or whose own such child did), if any.
fn changed_child_needing_parent_ftrace(
    p: &P,
    st: &Statuses,
    sym: PatchedSym,
) -> Option<PatchedSym> {
    p.children[sym].iter().copied().find(|&c| {
        if p.has_fentry[c] {
            return false;
        }
        // The child's symbol status covers both its code and its relocations.
        st.sym[c] == Status::Changed || changed_child_needing_parent_ftrace(p, st, c).is_some()
    })
}

fn compare_symbols(o: &O, p: &P, tw: &Twins, st: &mut Statuses) -> Result<(), DiffError> {
    for (sp, psym) in p.symbols() {
        let Some(so) = tw.sym[sp] else {
            st.sym[sp] = Status::New;
            continue;
        };
        let osym = o.sym(so);
        if osym.st_info != psym.st_info || osym.section.is_some() != psym.section.is_some() {
            return Err(fatal(
                p,
                format!("symbol info mismatch: {}", p.sym_name(sp)),
            ));
        }
        if let (Some(os), Some(ps)) = (o.sec_of(so), p.sec_of(sp)) {
            if tw.orig_sec[os] != Some(ps) {
                let moved_from_ignored = tw.sec[ps].is_some() && st.ignored[ps];
                if moved_from_ignored
                    || sections::text_subsection(o.sec_name(os))
                        != sections::text_subsection(p.sec_name(ps))
                {
                    st.changed(sp, Cause::Moved);
                } else {
                    return Err(fatal(
                        p,
                        format!("symbol {} changed sections", p.sym_name(sp)),
                    ));
                }
            }
        }
        let metadata = o
            .sec_of(so)
            .is_some_and(|s| o.sec_name(s) == sections::MODINFO);
        if osym.is_object() && osym.st_size != psym.st_size && !o.is_special_static(so) && !metadata
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
            st.sym[sp] = Status::Same;
        }
    }
    Ok(())
}

/// A changed function is patched through its ftrace entry; one without it cannot be patched.
fn check_ftrace_entries(o: &O, p: &P, tw: &Twins, st: &Statuses) -> Result<(), DiffError> {
    let mut reasons = Vec::new();
    for (sp, sym) in p.symbols() {
        if !sym.is_func() || st.sym[sp] != Status::Changed {
            continue;
        }
        if p.parent[sp].is_some_and(|par| st.sym[par] == Status::Changed) {
            continue;
        }
        let Some(so) = tw.sym[sp] else {
            continue;
        };
        if !o.has_fentry[so] {
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
