//! Refusing what cannot be live-patched, with the reason named.

use crate::compare::Status;
use crate::correlate::State;
use crate::include::Inclusion;
use crate::kelf::Kelf;
use crate::DiffError;

fn is_init(name: &str) -> bool {
    let n = name.strip_prefix(".rela").unwrap_or(name);
    n.starts_with(".init.") || n.starts_with(".exit.") || n.starts_with(".meminit.") || n.starts_with(".initcall")
        || n == ".init.setup" || n.starts_with(".con_initcall")
}

fn is_data(name: &str) -> bool {
    let n = name.strip_prefix(".rela").unwrap_or(name);
    n.starts_with(".data") || n.starts_with(".bss") || n.starts_with(".rodata") || n.starts_with(".tbss")
        || n.starts_with(".tdata")
}

/// Data sections that may be carried though they exist in the original: WARN_ONCE flags
/// and UBSAN's per-call-site records (they only hold source locations).
fn is_carryable_data(name: &str) -> bool {
    let n = name.strip_prefix(".rela").unwrap_or(name);
    n == ".data.unlikely" || n == ".data.once" || n.starts_with(".data..Lubsan") || n.starts_with(".data..L__unnamed")
}

/// Sections read once, at boot or module load, that a livepatch module neither needs nor can
/// update: module information, notes, and the syscall trace tables a `KPATCH_SYSCALL_DEFINEn`
/// leaves out (the running kernel keeps its own entries for the system call).
fn is_metadata(name: &str) -> bool {
    let n = name.strip_prefix(".rela").unwrap_or(name);
    matches!(n, ".modinfo" | ".comment" | "__syscalls_metadata" | "_ftrace_events") || n.starts_with(".note")
}

pub fn verify(o: &Kelf, p: &Kelf, st: &State, inc: &Inclusion) -> Result<(), DiffError> {
    // A new EXPORT_SYMBOL: its records are tables of the kernel image the patch cannot extend.
    let exports: Vec<String> = p
        .obj
        .sections_iter()
        .filter(|(i, s)| st.sec_status[i.0] == Status::New && !s.is_rela())
        .filter_map(|(_, s)| s.name.strip_prefix("___ksymtab_gpl+").or_else(|| s.name.strip_prefix("___ksymtab+")))
        .map(|name| format!("new exported symbol {name}: a livepatch cannot add exports to the kernel it patches (drop the EXPORT_SYMBOL)"))
        .collect();
    if !exports.is_empty() {
        return Err(DiffError::Unpatchable { file: p.file.clone(), reasons: exports });
    }
    let mut reasons = Vec::new();
    for (i, sec) in p.obj.sections_iter() {
        let status = st.sec_status[i.0];
        let name = sec.name.as_str();
        let what = || {
            let base = p.base_of[i.0].unwrap_or(i);
            match p.bundled[base.0] {
                Some(s) => format!("{} ({})", p.obj.symbols[s.0].name, p.sec_name(base)),
                None => p.sec_name(base).to_string(),
            }
        };
        if status == Status::Changed && !inc.sec[i.0] {
            if is_carryable_data(name) || crate::kelf::is_debug(name) || is_metadata(name) {
                // Source locations only (UBSAN records, WARN_ONCE flags, debug info), or
                // metadata the module gets its own copy of (.modinfo namespaces, notes).
                continue;
            }
            if is_init(name) {
                reasons.push(format!(
                    "__init code or data changed: {}: it ran at boot and was freed, so patching it has no effect; move the change out of __init or use a callback",
                    what()
                ));
            } else if is_data(name) {
                reasons.push(format!(
                    "existing data changed: {}: the running kernel's copy would not change; use a shadow variable or a patch callback",
                    what()
                ));
            } else {
                reasons.push(format!("changed section {} is not used by any changed function", what()));
            }
            continue;
        }
        if status != Status::Same && p.grouped[i.0] {
            reasons.push(format!("changed section {} is part of a section group (COMDAT)", what()));
        }
        if sec.is_group() && status == Status::New {
            reasons.push(format!("new or changed section group {name} is not supported"));
        }
        if inc.sec[i.0] && status != Status::New && !sec.is_rela() && (name.starts_with(".data") || name.starts_with(".bss"))
            && !is_carryable_data(name)
        {
            reasons.push(format!(
                "existing data section {} would be copied into the patch: the patched code must use the kernel's copy (was its layout or initial value changed?)",
                what()
            ));
        }
    }
    let _ = o;
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(DiffError::Unpatchable { file: p.file.clone(), reasons })
    }
}
