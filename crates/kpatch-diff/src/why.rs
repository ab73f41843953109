//! Why each function of the output is there, for the report: read off what the phases decided
//! (the [`Cause`] `compare` recorded, the [`Inclusion`] of `include`), with a changed function's
//! first differing instruction found on instruction boundaries.

use crate::compare::first_difference;
use crate::include::is_patch_target;
use crate::index::{Orig, Patched, PatchedSym};
use crate::kelf::Kelf;
use crate::state::{Cause, Inclusion, Status, Statuses, Twins};
use crate::{Change, CodeDifference, FunctionReason, Report, Why};
use std::collections::HashSet;

type O = Kelf<Orig>;
type P = Kelf<Patched>;

/// The reason of every function `report.output_functions` lists, padding symbols aside.
pub fn reasons(
    o: &O,
    p: &P,
    tw: &Twins,
    st: &Statuses,
    inc: &Inclusion,
    report: &Report,
) -> Vec<FunctionReason> {
    let output: HashSet<&str> = report.output_functions.iter().map(String::as_str).collect();
    let forced: HashSet<&str> = report.forced.iter().map(String::as_str).collect();
    p.symbols()
        .filter(|&(i, s)| {
            inc.sym[i]
                && s.is_func()
                && s.section.is_some()
                && !p.is_padding_symbol(&s.name)
                && output.contains(s.name.as_str())
        })
        .map(|(i, s)| FunctionReason {
            name: s.name.clone(),
            why: why(o, p, tw, st, inc, i),
            forced: forced.contains(s.name.as_str()),
        })
        .collect()
}

fn why(o: &O, p: &P, tw: &Twins, st: &Statuses, inc: &Inclusion, sym: PatchedSym) -> Why {
    if !is_patch_target(p, st, sym) {
        if let Some(parent) = p.parent[sym] {
            return Why::Child {
                parent: p.sym_name(parent).to_string(),
            };
        }
    }
    if let Some((_, kind)) = inc.callbacks.iter().find(|(s, _)| *s == sym) {
        return Why::Callback { kind: kind.clone() };
    }
    match st.sym[sym] {
        Status::Changed => Why::Changed {
            change: change(o, p, tw, st, sym),
        },
        Status::New => Why::New,
        Status::Same => Why::Referenced,
    }
}

fn change(o: &O, p: &P, tw: &Twins, st: &Statuses, sym: PatchedSym) -> Change {
    let name = |s: PatchedSym| p.sym_name(s).to_string();
    match st.cause[sym] {
        Some(Cause::Child(child)) => Change::Child {
            child: name(child),
            difference: code_difference(o, p, tw, child),
        },
        Some(Cause::Moved) => {
            let from = tw.sym[sym]
                .and_then(|s| o.sec_of(s))
                .map_or_else(String::new, |s| o.sec_name(s).to_string());
            let to = p
                .sec_of(sym)
                .map_or_else(String::new, |s| p.sec_name(s).to_string());
            Change::Moved { from, to }
        }
        Some(Cause::SpecialEntries(section, site)) => Change::SpecialEntries {
            section: section.to_string(),
            at: site.map(|at| place(p.sym_name(sym), at)),
        },
        Some(Cause::ReadOnlyData(object)) => Change::ReadOnlyData {
            object: name(object),
        },
        Some(Cause::Code) | None => code_difference(o, p, tw, sym)
            .map(Change::Code)
            .unwrap_or(Change::Section),
    }
}

/// Where function `sym`'s section first differs from its twin, from the function's start.
fn code_difference(o: &O, p: &P, tw: &Twins, sym: PatchedSym) -> Option<CodeDifference> {
    let sp = p.sec_of(sym)?;
    let so = tw.sec[sp]?;
    let d = first_difference(o, p, so, sp)?;
    let offset = d.offset as i64 - p.sym(sym).st_value as i64;
    Some(CodeDifference {
        at: place(p.sym_name(sym), offset),
        offset,
        differs: d.differs,
        was: d.was,
        now: d.now,
    })
}

/// `func+0x1a`, as objtool names a place in a function.
fn place(func: &str, offset: i64) -> String {
    if offset < 0 {
        format!("{func}-{:#x}", offset.unsigned_abs())
    } else {
        format!("{func}+{offset:#x}")
    }
}
