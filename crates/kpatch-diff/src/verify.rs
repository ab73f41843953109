//! Refusing what cannot be live-patched, with the reason named: the fifth phase, which reads
//! everything the phases before it wrote.

use crate::index::{Orig, Patched, PatchedSec, Sym};
use crate::kelf::{CodeRange, Kelf};
use crate::state::{Inclusion, Status, Statuses, Trimmed, Twins};
use crate::DiffError;
use kpatch_arch::sections::{self, is_carryable_data, is_data, is_init, is_metadata};

type O = Kelf<Orig>;
type P = Kelf<Patched>;

/// Refuses a change the output cannot carry: a changed section that nothing included (changed
/// data, `__init` code, code of a shared section, ...), new exports, changed section groups.
/// A special section that `special` emptied counts as the same.
pub fn verify(
    o: &O,
    p: &P,
    tw: &Twins,
    st: &Statuses,
    inc: &Inclusion,
    trimmed: &Trimmed,
) -> Result<(), DiffError> {
    let status_of = |i: PatchedSec| trimmed.section_status(st, i);
    // A new EXPORT_SYMBOL: its records are tables of the kernel image the patch cannot extend.
    // Before 6.5 a section of its own (`___ksymtab+foo`); from 6.5 on a record in the object's
    // one `.export_symbol` section, which the original may have too.
    let mut new_exports: Vec<&str> = p
        .sections()
        .filter(|&(i, s)| status_of(i) == Status::New && !s.is_rela())
        .filter_map(|(_, s)| sections::exported_by(&s.name))
        .collect();
    let exported_before = export_records(o);
    new_exports.extend(
        export_records(p)
            .into_iter()
            .filter(|name| !exported_before.contains(name)),
    );
    let exports: Vec<String> = new_exports
        .into_iter()
        .map(|name| format!("new exported symbol {name}: a livepatch cannot add exports to the kernel it patches (drop the EXPORT_SYMBOL)"))
        .collect();
    if !exports.is_empty() {
        return Err(DiffError::Unpatchable {
            file: p.file.clone(),
            reasons: exports,
        });
    }
    let mut reasons = Vec::new();
    for (i, sec) in p.sections() {
        let status = status_of(i);
        let name = sec.name.as_str();
        let what = || {
            let base = p.base_of[i].unwrap_or(i);
            match p.bundled[base] {
                Some(s) => format!("{} ({})", p.sym(s).name, p.sec_name(base)),
                None => p.sec_name(base).to_string(),
            }
        };
        if status == Status::Changed && !inc.sec[i] {
            let base_reported =
                p.base_of[i].is_some_and(|b| status_of(b) == Status::Changed && !inc.sec[b]);
            if is_carryable_data(name)
                || sections::is_debug(name)
                || is_metadata(name)
                || base_reported
            {
                // Source locations only (UBSAN records, WARN_ONCE flags, debug info), or
                // metadata the module gets its own copy of (.modinfo namespaces, notes).
                continue;
            }
            if is_init(name) {
                let funcs = if sec.is_text() {
                    changed_functions_in_shared_section(o, p, tw, i)
                } else {
                    Vec::new()
                };
                let place = if funcs.is_empty() {
                    what()
                } else {
                    format!("{} ({name})", funcs.join(", "))
                };
                reasons.push(format!(
                    "__init code or data changed: {place}: it ran at boot and was freed, so patching it has no effect; move the change out of __init or use a callback"
                ));
            } else if is_data(name) {
                reasons.push(format!(
                    "existing data changed: {}: the running kernel's copy would not change; use a shadow variable or a patch callback",
                    what()
                ));
            } else if sec.is_text() && p.bundled[i].is_none() {
                let funcs = changed_functions_in_shared_section(o, p, tw, i);
                let why = if sections::is_noinstr_text(name) {
                    "noinstr/entry code runs where ftrace cannot hook it, so it cannot be patched"
                } else {
                    "its functions share one section instead of one each (-ffunction-sections does not apply to it), so kpatch-rs cannot patch them one by one"
                };
                if funcs.is_empty() {
                    reasons.push(format!("changed code in section {name}: {why}"));
                }
                for f in funcs {
                    reasons.push(format!("function {f} changed in section {name}: {why}"));
                }
            } else {
                reasons.push(format!(
                    "changed section {} is not used by any changed function",
                    what()
                ));
            }
            continue;
        }
        if inc.sec[i] && is_init(name) && !sec.is_rela() {
            reasons.push(format!(
                "__init code or data changed: {}: it ran at boot and was freed, so patching it has no effect; move the change out of __init or use a callback",
                what()
            ));
            continue;
        }
        if status != Status::Same && p.grouped[i] {
            reasons.push(format!(
                "changed section {} is part of a section group (COMDAT)",
                what()
            ));
        }
        if sec.is_group() && status == Status::New {
            reasons.push(format!(
                "new or changed section group {name} is not supported"
            ));
        }
        if inc.sec[i]
            && status != Status::New
            && !sec.is_rela()
            && sections::is_writable_data(name)
            && !is_carryable_data(name)
        {
            reasons.push(format!(
                "existing data section {} would be copied into the patch: the patched code must use the kernel's copy (was its layout or initial value changed?)",
                what()
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

/// The symbols the `.export_symbol` records of an object export (6.5 and later), in record
/// order: the targets of the section's relocations, one per record.
fn export_records<S>(k: &Kelf<S>) -> Vec<&str> {
    let Some(rela) = k
        .section_named(sections::EXPORT_SYMBOL_RECORDS)
        .and_then(|sec| k.rela_of[sec])
    else {
        return Vec::new();
    };
    k.relas(rela)
        .iter()
        .map(|r| k.sym_name(k.target(r)))
        .collect()
}

/// The functions of a shared text section (`.sched.text`, `.noinstr.text`) whose bytes or
/// relocations differ from their original's.
fn changed_functions_in_shared_section(o: &O, p: &P, tw: &Twins, sec: PatchedSec) -> Vec<String> {
    fn slice<S>(k: &Kelf<S>, sym: Sym<S>) -> CodeRange<'_> {
        let s = k.sym(sym);
        k.code_range(
            k.sec_of(sym).unwrap(),
            s.st_value,
            s.st_value.saturating_add(s.st_size),
        )
    }
    let mut out = Vec::new();
    for &sym in &p.by_offset[sec] {
        let s = p.sym(sym);
        if !s.is_func() || p.is_padding_symbol(&s.name) {
            continue;
        }
        match tw.sym[sym] {
            Some(t) if slice(o, t) == slice(p, sym) => {}
            _ => out.push(s.name.clone()),
        }
    }
    out
}
