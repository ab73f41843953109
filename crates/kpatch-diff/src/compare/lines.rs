//! Changes that only move a `__LINE__`: `WARN`, `might_sleep`, `printk` and friends pass their
//! line to a call, so an edit above a function changes an immediate in it without changing
//! what it does.

use super::{O, P};
use crate::index::PatchedSec;
use crate::state::{Status, Statuses, Twins};
use crate::DiffError;
use kpatch_elf::Rela;

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

/// Whether changed text section `sp` differs from its twin only in instructions that load the
/// line argument of a call to one of [`LINE_MACRO_CALLEES`] (or `warn_slowpath_*`), its
/// relocations being the same.
pub(super) fn line_macro_change_only(
    o: &O,
    p: &P,
    tw: &Twins,
    st: &Statuses,
    sp: PatchedSec,
) -> Result<bool, DiffError> {
    let psec = p.sec(sp);
    let Some(so) = tw.sec[sp] else {
        return Ok(false);
    };
    let osec = o.sec(so);
    let Some(prela) = p.rela_of[sp] else {
        return Ok(false);
    };
    if st.sec[sp] != Status::Changed
        || psec.is_rela()
        || !psec.is_text()
        || psec.data.len() != osec.data.len()
        || st.sec[prela] != Status::Same
    {
        return Ok(false);
    }
    let relas = &sorted_relas(p, prela);
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
                let name = p.sym_name(p.target(r));
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

fn sorted_relas(p: &P, rsec: PatchedSec) -> Vec<Rela> {
    let mut v = p.relas(rsec).to_vec();
    v.sort_by_key(|r| r.r_offset);
    v
}
