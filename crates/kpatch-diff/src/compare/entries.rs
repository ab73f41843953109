//! Special-section entries as part of the function they belong to: a function whose code is the
//! same is still changed when its alternatives, exception entries, bug flags or jump-label keys
//! changed.

use super::{O, P};
use crate::index::{Sec, Sym};
use crate::kelf::Kelf;
use crate::state::{Cause, Status, Statuses, Twins};
use crate::Options;
use kpatch_arch::Entries;
use std::collections::HashMap;

/// What a function's entries in the special sections say, position-independently: per section,
/// each entry's bytes (the `__bug_table` line number masked: it moves with unrelated edits) and
/// what its relocations point at (names, addends, the code of an alternative's replacement,
/// strings by content).
type EntrySignature = Vec<(&'static str, Vec<u8>, Vec<(u64, u32, String, i64, Vec<u8>)>)>;

fn special_signatures<S>(k: &Kelf<S>, options: &Options) -> HashMap<Sym<S>, EntrySignature> {
    let mut out: HashMap<Sym<S>, EntrySignature> = Default::default();
    // Code that special entries point into outside any function (an alternative's replacement
    // in .altinstr_replacement, an exception fixup stub in .fixup) is compared by content: each
    // piece runs from where an entry points to where the next one does.
    let mut starts: HashMap<Sec<S>, Vec<i64>> = Default::default();
    let specs = || k.arch.special_sections().iter().filter(|s| s.has_sites());
    for spec in specs() {
        let Some(sec) = k.section_named(spec.name) else {
            continue;
        };
        let Some(rsec) = k.rela_of[sec] else {
            continue;
        };
        for x in k.relas(rsec) {
            let t = k.sym(k.target(x));
            if let Some(ts) = k
                .sec_of(k.target(x))
                .filter(|&s| t.is_section() && k.sec(s).is_text() && k.bundled[s].is_none())
            {
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
        let Some(rsec) = k.rela_of[sec] else {
            continue;
        };
        let Some(size) = k.entry_size(spec, sec, options) else {
            continue;
        };
        let layout = spec.layout(size);
        for entry in Entries::new(k.sec(sec), k.relas(rsec), size).iter() {
            let owner = entry
                .relas
                .iter()
                .map(|r| k.target(r))
                .find(|&s| k.sym(s).is_func() && k.sym(s).section.is_some());
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
                    let target = k.target(r);
                    let t = k.sym(target);
                    let at = (t.st_value as i64).saturating_add(r.r_addend);
                    let content = if let Some(s) = k.rela_string(r, false) {
                        s.to_vec()
                    } else if let Some((ts, v)) = k
                        .sec_of(target)
                        .and_then(|ts| starts.get(&ts).map(|v| (ts, v)))
                    {
                        let data = &k.sec(ts).data;
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
                            crate::names::mangled_key_string(k.sym_name(target)),
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
                .push((spec.name, bytes, targets));
        }
    }
    out
}

/// Pass 4: a function whose code is the same is still changed when its alternatives, exception
/// entries, bug flags or jump-label keys changed.
pub(super) fn compare_special_entries(
    o: &O,
    p: &P,
    tw: &Twins,
    st: &mut Statuses,
    options: &Options,
) {
    let (so, sp) = (
        special_signatures(o, options),
        special_signatures(p, options),
    );
    for (&psym, sig) in &sp {
        if st.sym[psym] != Status::Same {
            continue;
        }
        let Some(osym) = tw.sym[psym] else {
            continue;
        };
        // Only a function alone in its section (-ffunction-sections) is known to have the same
        // code; one in a shared section (.init.text, .sched.text) is judged by its section.
        if p.sec_of(psym).is_none_or(|s| p.bundled[s] != Some(psym)) {
            continue;
        }
        // Unchanged code has the same sites: only the same number of entries, with different
        // contents, is a change of the entries themselves.
        let Some(osig) = so.get(&osym).filter(|o| o.len() == sig.len()) else {
            continue;
        };
        let Some(k) = osig.iter().zip(sig).position(|(a, b)| a != b) else {
            continue;
        };
        if options.debug {
            eprintln!(
                "special entries of {} differ:\n  orig {:?}\n  new  {:?}",
                p.sym_name(psym),
                osig,
                sig
            );
        }
        // The site of the first entry that differs: its relocation to the function.
        let own = crate::names::mangled_key_string(p.sym_name(psym));
        let (section, _, targets) = &sig[k];
        let site = targets.iter().find(|t| t.2 == own).map(|t| t.3);
        st.changed(psym, Cause::SpecialEntries(section, site));
    }
}
