//! Selecting what the output holds: the changed functions and, transitively, what they need:
//! the third phase, which reads the [`Twins`] and [`Statuses`] and writes the [`Inclusion`].
//!
//! A function or object that is unchanged is not carried: references to it stay undefined and
//! resolve to the running kernel's copy. A section symbol always brings its section, since a
//! reference through it cannot be resolved outside this object.

use crate::index::{Orig, Patched, PatchedSym};
use crate::kelf::Kelf;
use crate::state::{Inclusion, Status, Statuses, Twins};
use crate::{Options, Report};
use kpatch_arch::sections;
use kpatch_elf::consts::*;

type O = Kelf<Orig>;
type P = Kelf<Patched>;

/// What the output holds before its special sections are trimmed: the object's tables and
/// string literals, the changed functions (with the `.cold` children that rejoin changed code,
/// unless `options.kpatch_compat`), the patch callbacks and force records, and new globals; each
/// with what it references that is not the same. Callbacks, forced functions and new globals
/// go to `report`.
pub fn include(
    o: &O,
    p: &P,
    tw: &Twins,
    st: &Statuses,
    report: &mut Report,
    options: &Options,
) -> Inclusion {
    let mut inc = Inclusion::new(p);
    // Standard elements: tables, .rodata (switch tables), string literals and constant pools.
    for (i, s) in p.sections() {
        let n = s.name.as_str();
        if sections::is_always_carried(n) || sections::is_literal_pool(n) {
            inc.section(p, st, i);
        }
    }
    for (i, _) in p.symbols() {
        if p.sec_of(i)
            .is_some_and(|sec| sections::is_literal_pool(p.sec_name(sec)))
        {
            inc.sym[i] = true;
        }
    }
    // The changed functions.
    for (i, s) in p.symbols() {
        if s.is_func() && st.sym[i] == Status::Changed {
            inc.symbol(p, st, i);
            if !options.kpatch_compat {
                include_rejoining_children(o, p, tw, st, &mut inc, i);
            }
        }
        if s.st_type() == STT_FILE {
            inc.sym[i] = true;
        }
    }
    // Patch callbacks.
    for (i, s) in p.sections() {
        let base = p.base_of[i].map(|b| p.sec_name(b)).unwrap_or(&s.name);
        if !sections::is_callbacks(base) {
            continue;
        }
        inc.sec[i] = true;
        if s.is_rela() {
            if let Some(r) = s.relas.first() {
                let name = p.sym_name(p.target(r)).to_string();
                report.callbacks.push(name);
                let kind = base
                    .strip_prefix(sections::CALLBACKS_PREFIX)
                    .unwrap_or(base);
                inc.callbacks.push((p.target(r), kind.to_string()));
                inc.symbol(p, st, p.target(r));
            }
            for r in s.relas.iter().skip(1) {
                inc.symbol(p, st, p.target(r));
            }
        } else if let Some(ss) = p.secsym[i] {
            inc.sym[ss] = true;
        }
    }
    for (i, s) in p.symbols() {
        if s.is_object()
            && p.sec_of(i)
                .is_some_and(|sec| sections::is_callbacks(p.sec_name(sec)))
        {
            inc.sym[i] = false;
        }
    }
    // Functions forced through KPATCH_FORCE_UNSAFE.
    for (i, s) in p.sections() {
        let base = p.base_of[i].map(|b| p.sec_name(b)).unwrap_or(&s.name);
        if base != sections::FORCE {
            continue;
        }
        inc.sec[i] = true;
        if s.is_rela() {
            report
                .forced
                .extend(s.relas.iter().map(|r| p.sym_name(p.target(r)).to_string()));
        } else if let Some(ss) = p.secsym[i] {
            inc.sym[ss] = true;
        }
    }
    for (i, s) in p.symbols() {
        if s.name.starts_with(sections::FORCE_SYMBOL_PREFIX) {
            inc.sym[i] = false;
        }
    }
    // New global functions and data.
    for (i, s) in p.symbols() {
        if s.st_bind() == STB_GLOBAL && s.section.is_some() && st.sym[i] == Status::New {
            report.new_globals.push(s.name.clone());
            inc.symbol(p, st, i);
        }
    }
    inc
}

/// The top-level functions with `status` that the output includes, in symbol order.
pub fn functions_with(p: &P, st: &Statuses, inc: &Inclusion, status: Status) -> Vec<String> {
    p.symbols()
        .filter(|&(i, s)| {
            inc.sym[i]
                && s.section.is_some()
                && s.is_func()
                && is_patch_target(p, st, i)
                && !p.is_padding_symbol(&s.name)
                && st.sym[i] == status
        })
        .map(|(_, s)| s.name.clone())
        .collect()
}

/// A function the livepatch core replaces on its own: a top-level function, or a child
/// (`foo.part.0`) with its own ftrace entry whose parent is not being replaced.
pub fn is_patch_target(p: &P, st: &Statuses, sym: PatchedSym) -> bool {
    match p.parent[sym] {
        None => true,
        Some(parent) => p.has_fentry[sym] && st.sym[parent] == Status::Same,
    }
}

/// A `.cold` (or `.part`) child without an ftrace entry of its own is a piece of its parent:
/// it jumps back into it. Left out because its bytes are the same, the kernel's copy would
/// jump back into the kernel's *old* parent and run the old code from there. So a changed parent
/// carries every such child that rejoins it at a place after which the parent changed.
fn include_rejoining_children(
    o: &O,
    p: &P,
    tw: &Twins,
    st: &Statuses,
    inc: &mut Inclusion,
    parent: PatchedSym,
) {
    let Some(psec) = p.sec_of(parent) else {
        return;
    };
    for &child in &p.children[parent] {
        if p.has_fentry[child] || inc.sym[child] && p.sec_of(child).is_some_and(|s| inc.sec[s]) {
            continue;
        }
        let Some(csec) = p.sec_of(child) else {
            continue;
        };
        let Some(crela) = p.rela_of[csec] else {
            continue;
        };
        let code = &p.sec(csec).data;
        let rejoin_points: Vec<i64> = p
            .relas(crela)
            .iter()
            .filter(|x| p.target(x) == parent || p.sec_of(p.target(x)) == Some(psec))
            .map(|x| {
                let bias = if p.arch.is_pc_relative(x.r_type) {
                    p.arch
                        .pc_rel_bias(code, x.r_offset)
                        .unwrap_or(p.arch.pc_rel_default_bias())
                } else {
                    0
                };
                (p.sym(p.target(x)).st_value as i64)
                    .saturating_add(x.r_addend)
                    .saturating_add(bias)
            })
            .collect();
        if rejoin_points
            .iter()
            .any(|&at| tail_differs(o, p, tw, parent, at))
        {
            inc.sym[child] = false;
            inc.section(p, st, csec);
            inc.sym[child] = true;
            include_rejoining_children(o, p, tw, st, inc, child);
        }
    }
}

/// Whether the parent's code from offset `at` of its section on differs between the kernel's
/// copy and the patched one (bytes, or where its relocations point).
fn tail_differs(o: &O, p: &P, tw: &Twins, parent: PatchedSym, at: i64) -> bool {
    let (Some(psec), Some(osym)) = (p.sec_of(parent), tw.sym[parent]) else {
        return true;
    };
    let Some(osec) = o.sec_of(osym) else {
        return true;
    };
    let at = at.max(0) as u64;
    p.code_range(psec, at, u64::MAX) != o.code_range(osec, at, u64::MAX)
}
