//! Pairing sections and symbols of the original object with those of the patched one: the
//! first phase, which writes the [`Twins`].
//!
//! Names correlate modulo gcc's numbered suffixes; the patched element then takes the
//! original's name, so that the output references the names the running kernel has. Static
//! local variables (`counter.123`) are paired through the functions that use them, since their
//! numbers change arbitrarily.

use crate::index::{Orig, OrigSec, OrigSym, Patched, PatchedSec, PatchedSym};
use crate::kelf::Kelf;
use crate::names::{mangled_eq, mangled_hash, HashIndex};
use crate::state::Twins;
use crate::{DiffError, Report};
use kpatch_arch::sections;
use kpatch_elf::consts::*;

type O = Kelf<Orig>;
type P = Kelf<Patched>;

fn is_normal_static_local<S>(k: &Kelf<S>, sym: crate::index::Sym<S>) -> bool {
    let s = k.sym(sym);
    s.is_object()
        && s.is_local()
        && !s.name.starts_with(".L")
        && s.name.contains('.')
        && s.section.is_some()
        && !k.is_special_static(sym)
}

/// Pairs the sections and symbols of `o` and `p`, and renames the paired elements of `p` to
/// their originals' names. A static local of `p` that cannot be paired is assumed new, with a
/// warning in `report`.
pub fn correlate(o: &O, p: &mut P, report: &mut Report) -> Result<Twins, DiffError> {
    let mut tw = Twins::new(o, p);
    correlate_sections(o, p, &mut tw);
    correlate_symbols(o, p, &mut tw);
    correlate_static_locals(o, p, &mut tw, report)?;
    rename_to_original(o, p, &tw);
    Ok(tw)
}

/// Pairs a section, its relocation section or base, its section symbol and its bundled symbol.
fn pair_section_family(o: &O, p: &P, tw: &mut Twins, so: OrigSec, sp: PatchedSec) {
    tw.pair_sec(so, sp);
    let (mut bo, mut bp) = (so, sp);
    if o.sec(so).is_rela() {
        if let (Some(x), Some(y)) = (o.base_of[so], p.base_of[sp]) {
            tw.pair_sec(x, y);
            bo = x;
            bp = y;
        }
    } else if let (Some(x), Some(y)) = (o.rela_of[so], p.rela_of[sp]) {
        tw.pair_sec(x, y);
    }
    if let (Some(x), Some(y)) = (o.secsym[bo], p.secsym[bp]) {
        tw.pair_sym(x, y);
    }
    if let (Some(x), Some(y)) = (o.bundled[bo], p.bundled[bp]) {
        tw.pair_sym(x, y);
    }
}

fn correlate_sections(o: &O, p: &P, tw: &mut Twins) {
    let mut by_key: HashIndex<PatchedSec> = HashIndex::default();
    for (i, s) in p.sections() {
        by_key.entry(mangled_hash(&s.name)).or_default().push(i);
    }
    let mut orig_key: HashIndex<OrigSec> = HashIndex::default();
    for (i, s) in o.sections() {
        orig_key.entry(mangled_hash(&s.name)).or_default().push(i);
    }
    for (so, sec) in o.sections() {
        if tw.orig_sec[so].is_some() {
            continue;
        }
        let key = mangled_hash(&sec.name);
        let Some(cands) = by_key.get(&key) else {
            continue;
        };
        for sp in positional_first(&sec.name, so, &orig_key[&key], cands) {
            let psec = p.sec(sp);
            if tw.sec[sp].is_some() || !mangled_eq(&sec.name, &psec.name) {
                continue;
            }
            let base = if sec.is_rela() {
                o.base_of[so].unwrap_or(so)
            } else {
                so
            };
            if let Some(ss) = o.secsym[base] {
                if o.is_special_static(ss) {
                    continue;
                }
            }
            // Group sections must match exactly; changed groups are not supported.
            if sec.is_group() && o.group_key(so) != p.group_key(sp) {
                continue;
            }
            pair_section_family(o, p, tw, so, sp);
            break;
        }
    }
}

fn correlate_symbols(o: &O, p: &P, tw: &mut Twins) {
    let mut by_key: HashIndex<PatchedSym> = HashIndex::default();
    for (i, _) in p.symbols() {
        by_key
            .entry(mangled_hash(p.sym_name(i)))
            .or_default()
            .push(i);
    }
    let mut orig_key: HashIndex<OrigSym> = HashIndex::default();
    for (i, _) in o.symbols() {
        orig_key
            .entry(mangled_hash(o.sym_name(i)))
            .or_default()
            .push(i);
    }
    for (so, sym) in o.symbols() {
        if tw.orig_sym[so].is_some() {
            continue;
        }
        let oname = o.sym_name(so);
        if o.is_special_static(so) || (sym.st_type() == STT_NOTYPE && oname.starts_with(".LC")) {
            continue;
        }
        let key = mangled_hash(oname);
        let Some(cands) = by_key.get(&key) else {
            continue;
        };
        for sp in positional_first(oname, so, &orig_key[&key], cands) {
            let psym = p.sym(sp);
            if tw.sym[sp].is_some()
                || psym.st_type() != sym.st_type()
                || !mangled_eq(oname, p.sym_name(sp))
            {
                continue;
            }
            if let Some(sec) = o.sec_of(so) {
                if o.sec(sec).is_group() && tw.orig_sec[sec] != p.sec_of(sp) {
                    continue;
                }
            }
            tw.pair_sym(so, sp);
            break;
        }
    }
}

/// In the patched relocation section `prsec`, the first uncorrelated symbol that could be the
/// twin of the original static local `sym`.
fn find_uncorrelated_rela(
    o: &O,
    p: &P,
    tw: &Twins,
    prsec: PatchedSec,
    sym: OrigSym,
) -> Option<PatchedSym> {
    let osym = o.sym(sym);
    p.relas(prsec).iter().map(|r| p.target(r)).find(|&ps| {
        let psym = p.sym(ps);
        tw.sym[ps].is_none()
            && psym.st_type() == osym.st_type()
            && !(osym.is_object() && osym.st_size != psym.st_size)
            && mangled_eq(p.sym_name(ps), o.sym_name(sym))
    })
}

fn find_static_twin_in_children(
    o: &O,
    p: &P,
    tw: &Twins,
    parent: PatchedSym,
    sym: OrigSym,
) -> Option<PatchedSym> {
    let psec = p.sec_of(parent)?;
    for &child in &p.children[parent] {
        let csec = p.sec_of(child)?;
        let crela = p.rela_of[csec];
        if crela.is_none() || crela == p.rela_of[psec] {
            continue;
        }
        let res = find_uncorrelated_rela(o, p, tw, crela?, sym)
            .or_else(|| find_static_twin_in_children(o, p, tw, child, sym));
        if res.is_some() {
            return res;
        }
    }
    None
}

/// The nearest ancestor of `sym` (an original function) that has a twin.
fn correlated_parent(o: &O, tw: &Twins, mut sym: OrigSym) -> Option<OrigSym> {
    while let Some(parent) = o.parent[sym] {
        if tw.orig_sym[parent].is_some() {
            return Some(parent);
        }
        sym = parent;
    }
    None
}

fn find_static_twin(
    o: &O,
    p: &P,
    tw: &Twins,
    mut orsec: OrigSec,
    sym: OrigSym,
) -> Option<PatchedSym> {
    if tw.orig_sec[orsec].is_none() {
        let base = o.base_of[orsec]?;
        if let Some(func) = o.bundled[base] {
            // The reference may have been in a .part function that the patch removed.
            if let Some(parent) = correlated_parent(o, tw, func) {
                orsec = o.rela_of[o.sec_of(parent)?]?;
            }
        }
    }
    let prsec = tw.orig_sec[orsec]?;
    if let Some(res) = find_uncorrelated_rela(o, p, tw, prsec, sym) {
        return Some(res);
    }
    let pbase = p.base_of[prsec]?;
    find_static_twin_in_children(o, p, tw, p.bundled[pbase]?, sym)
}

/// Whether the patched relocation section `prsec`, or that of a child of its function,
/// references the twin of the original static local `sym`.
fn has_static_twin_ref(p: &P, tw: &Twins, prsec: PatchedSec, sym: OrigSym) -> bool {
    let twin = tw.orig_sym[sym];
    if p.relas(prsec).iter().any(|r| Some(p.target(r)) == twin) {
        return true;
    }
    let Some(base) = p.base_of[prsec] else {
        return false;
    };
    let Some(parent) = p.bundled[base] else {
        return false;
    };
    let Some(psec) = p.sec_of(parent) else {
        return false;
    };
    p.children[parent].iter().any(|&c| {
        let Some(csec) = p.sec_of(c) else {
            return false;
        };
        match p.rela_of[csec] {
            Some(cr) if Some(cr) != p.rela_of[psec] => has_static_twin_ref(p, tw, cr, sym),
            _ => false,
        }
    })
}

fn correlate_static_locals(
    o: &O,
    p: &P,
    tw: &mut Twins,
    report: &mut Report,
) -> Result<(), DiffError> {
    let fatal = |reason: String| DiffError::Unpatchable {
        file: o.file.clone(),
        reasons: vec![reason],
    };
    // Undo name-based pairings of static locals: equal numbers can be a coincidence.
    for (so, _) in o.symbols() {
        if !is_normal_static_local(o, so) {
            continue;
        }
        tw.unpair_orig_sym(so);
        let sec = o.sec_of(so).unwrap();
        if o.bundled[sec] == Some(so) && tw.orig_sec[sec].is_some() {
            tw.unpair_orig_sec(sec);
            if let Some(ss) = o.secsym[sec] {
                tw.unpair_orig_sym(ss);
            }
            if let Some(r) = o.rela_of[sec] {
                tw.unpair_orig_sec(r);
            }
        }
    }
    // Pair each static local through a reference to it from a correlated section. One that
    // only another static local references (a compound literal pointing at another, as in
    // sound/usb/quirks-table.h) pairs once that one has, whichever section comes first: repeat
    // until a pass pairs nothing, and only then is a reference without a twin an error.
    loop {
        let mut paired = false;
        let mut unresolved = None;
        for (orsec, sec) in o.sections() {
            if !sec.is_rela() || sections::is_debug(&sec.name) {
                continue;
            }
            for r in &sec.relas {
                let sym = o.target(r);
                if !is_normal_static_local(o, sym) || tw.orig_sym[sym].is_some() {
                    continue;
                }
                let ssec = o.sec_of(sym).unwrap();
                let bundled = o.bundled[ssec] == Some(sym);
                if bundled && Some(ssec) == o.base_of[orsec] {
                    continue; // a static that references itself: hope for another reference
                }
                let Some(psym) = find_static_twin(o, p, tw, orsec, sym) else {
                    unresolved.get_or_insert_with(|| {
                        fatal(format!(
                            "reference to static local variable {} in {} was removed",
                            o.sym_name(sym),
                            o.owner_name(orsec)
                        ))
                    });
                    continue;
                };
                let psec = p.sec_of(psym);
                let pbundled = psec.is_some_and(|s| p.bundled[s] == Some(psym));
                if bundled != pbundled {
                    return Err(DiffError::Invalid {
                        file: o.file.clone(),
                        reason: format!(
                            "static local {} is in its own section in one object only",
                            o.sym_name(sym)
                        ),
                    });
                }
                if !bundled && tw.orig_sec[ssec] != psec {
                    return Err(DiffError::Invalid {
                        file: o.file.clone(),
                        reason: format!(
                            "the sections of static local {} are not correlated",
                            o.sym_name(sym)
                        ),
                    });
                }
                tw.pair_sym(sym, psym);
                paired = true;
                if bundled {
                    if let Some(ps) = psec {
                        pair_section_family(o, p, tw, ssec, ps);
                    }
                }
            }
        }
        if !paired {
            if let Some(e) = unresolved {
                return Err(e);
            }
            break;
        }
    }
    // Every reference to a static local in the original must have its twin in the patched code.
    for (orsec, sec) in o.sections() {
        if !sec.is_rela() || sections::is_debug(&sec.name) {
            continue;
        }
        for r in &sec.relas {
            let sym = o.target(r);
            if !is_normal_static_local(o, sym) {
                continue;
            }
            let mut target = orsec;
            if tw.orig_sec[orsec].is_none() {
                if let Some(func) = o.base_of[orsec].and_then(|b| o.bundled[b]) {
                    if let Some(parent) = correlated_parent(o, tw, func) {
                        if let Some(r) = o.sec_of(parent).and_then(|s| o.rela_of[s]) {
                            target = r;
                        }
                    }
                }
            }
            let (Some(_), Some(ptarget)) = (tw.orig_sym[sym], tw.orig_sec[target]) else {
                return Err(fatal(format!(
                    "reference to static local variable {} in {} was removed",
                    o.sym_name(sym),
                    o.owner_name(target)
                )));
            };
            if !has_static_twin_ref(p, tw, ptarget, sym) {
                return Err(fatal(format!(
                    "static local {} is correlated, but {} no longer references it",
                    o.sym_name(sym),
                    p.owner_name(ptarget)
                )));
            }
        }
    }
    // A static local in the patched code that has no twin is new.
    'outer: for (prsec, sec) in p.sections() {
        if !sec.is_rela() || sections::is_debug(&sec.name) {
            continue;
        }
        for r in &sec.relas {
            let sym = p.target(r);
            if is_normal_static_local(p, sym) && tw.sym[sym].is_none() {
                report.warnings.push(format!(
                    "unable to correlate static local variable {} used by {}, assuming variable is new",
                    p.sym_name(sym),
                    p.owner_name(prsec)
                ));
                break 'outer;
            }
        }
    }
    Ok(())
}

/// Gives each correlated patched element its original's name.
fn rename_to_original(o: &O, p: &mut P, tw: &Twins) {
    let secs: Vec<(PatchedSec, OrigSec)> = p
        .sections()
        .filter_map(|(i, _)| Some((i, tw.sec[i]?)))
        .collect();
    for (sp, so) in secs {
        if p.sec_name(sp) != o.sec_name(so) {
            p.rename_sec(sp, o.sec_name(so));
        }
    }
    let syms: Vec<(PatchedSym, OrigSym)> = p
        .symbols()
        .filter_map(|(i, _)| Some((i, tw.sym[i]?)))
        .collect();
    for (sp, so) in syms {
        if !p.sym(sp).is_section() && p.sym(sp).name != o.sym(so).name {
            p.rename_sym(sp, &o.sym(so).name);
        }
    }
    p.reindex_names();
}

/// The candidates to try, in order. Names with a `__COUNTER__` (`__UNIQUE_ID_cnt0`,
/// `__UNIQUE_ID_cnt1`) all look alike once the counter is ignored: the one at the same place
/// among its look-alikes is tried first, since the counters shift together.
fn positional_first<T: Copy + PartialEq, U: Copy>(
    name: &str,
    this: T,
    orig_alike: &[T],
    cands: &[U],
) -> Vec<U> {
    let mut out = cands.to_vec();
    if name.contains("__UNIQUE_ID_") {
        if let Some(k) = orig_alike.iter().position(|&x| x == this) {
            if k < out.len() {
                let preferred = out.remove(k);
                out.insert(0, preferred);
            }
        }
    }
    out
}
