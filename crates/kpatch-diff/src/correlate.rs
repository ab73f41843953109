//! Pairing sections and symbols of the original object with those of the patched one.
//!
//! Names correlate modulo gcc's numbered suffixes; the patched element then takes the
//! original's name, so that the output references the names the running kernel has. Static
//! local variables (`counter.123`) are paired through the functions that use them, since their
//! numbers change arbitrarily.

use crate::compare::Status;
use crate::kelf::Kelf;
use crate::names::{is_special_static_name, mangled_eq, mangled_hash, HashIndex};
use crate::DiffError;
use kpatch_arch::sections;
use kpatch_elf::consts::*;
use kpatch_elf::{SectionIndex, SymbolIndex};

/// Correlation and status of every patched element (indexes are the patched object's, twins
/// are the original's), plus the reverse maps.
pub struct State {
    pub sec_twin: Vec<Option<SectionIndex>>,
    pub sym_twin: Vec<Option<SymbolIndex>>,
    pub orig_sec_twin: Vec<Option<SectionIndex>>,
    pub orig_sym_twin: Vec<Option<SymbolIndex>>,
    pub sec_status: Vec<Status>,
    pub sym_status: Vec<Status>,
    pub sec_ignore: Vec<bool>,
    pub warnings: Vec<String>,
}

impl State {
    fn pair_sec(&mut self, o: SectionIndex, p: SectionIndex) {
        self.orig_sec_twin[o.0] = Some(p);
        self.sec_twin[p.0] = Some(o);
    }
    fn pair_sym(&mut self, o: SymbolIndex, p: SymbolIndex) {
        self.orig_sym_twin[o.0] = Some(p);
        self.sym_twin[p.0] = Some(o);
    }
    fn unpair_orig_sec(&mut self, o: SectionIndex) {
        if let Some(p) = self.orig_sec_twin[o.0].take() {
            self.sec_twin[p.0] = None;
        }
    }
    fn unpair_orig_sym(&mut self, o: SymbolIndex) {
        if let Some(p) = self.orig_sym_twin[o.0].take() {
            self.sym_twin[p.0] = None;
        }
    }
}

/// Is this symbol a static local that must never be correlated (see [`is_special_static_name`])?
pub fn is_special_static(k: &Kelf, sym: SymbolIndex) -> bool {
    let mut s = &k.obj.symbols[sym.0];
    let Some(sec) = s.section else { return false };
    let secname = k.sec_name(sec);
    if (s.is_object() || s.is_section()) && sections::is_dynamic_debug(secname) {
        return true;
    }
    if s.is_section() {
        match k.bundled[sec.0] {
            Some(b) => s = &k.obj.symbols[b.0],
            None => return false,
        }
    }
    if !s.is_object() || !s.is_local() {
        return false;
    }
    is_special_static_name(&s.name, secname)
}

fn is_normal_static_local(k: &Kelf, sym: SymbolIndex) -> bool {
    let s = &k.obj.symbols[sym.0];
    s.is_object()
        && s.is_local()
        && !s.name.starts_with(".L")
        && s.name.contains('.')
        && s.section.is_some()
        && !is_special_static(k, sym)
}

pub fn correlate(o: &Kelf, p: &mut Kelf) -> Result<State, DiffError> {
    let mut st = State {
        sec_twin: vec![None; p.obj.sections.len()],
        sym_twin: vec![None; p.obj.symbols.len()],
        orig_sec_twin: vec![None; o.obj.sections.len()],
        orig_sym_twin: vec![None; o.obj.symbols.len()],
        sec_status: vec![Status::Same; p.obj.sections.len()],
        sym_status: vec![Status::Same; p.obj.symbols.len()],
        sec_ignore: vec![false; p.obj.sections.len()],
        warnings: Vec::new(),
    };
    correlate_sections(o, p, &mut st);
    correlate_symbols(o, p, &mut st);
    correlate_static_locals(o, p, &mut st)?;
    rename_to_original(o, p, &st);
    Ok(st)
}

/// Pairs a section, its relocation section or base, its section symbol and its bundled symbol.
fn pair_section_family(o: &Kelf, p: &Kelf, st: &mut State, so: SectionIndex, sp: SectionIndex) {
    st.pair_sec(so, sp);
    let (mut bo, mut bp) = (so, sp);
    if o.obj.sections[so.0].is_rela() {
        if let (Some(x), Some(y)) = (o.base_of[so.0], p.base_of[sp.0]) {
            st.pair_sec(x, y);
            bo = x;
            bp = y;
        }
    } else if let (Some(x), Some(y)) = (o.rela_of[so.0], p.rela_of[sp.0]) {
        st.pair_sec(x, y);
    }
    if let (Some(x), Some(y)) = (o.secsym[bo.0], p.secsym[bp.0]) {
        st.pair_sym(x, y);
    }
    if let (Some(x), Some(y)) = (o.bundled[bo.0], p.bundled[bp.0]) {
        st.pair_sym(x, y);
    }
}

fn correlate_sections(o: &Kelf, p: &Kelf, st: &mut State) {
    let mut by_key: HashIndex<SectionIndex> = HashIndex::default();
    for (i, s) in p.obj.sections_iter() {
        by_key.entry(mangled_hash(&s.name)).or_default().push(i);
    }
    let mut orig_key: HashIndex<SectionIndex> = HashIndex::default();
    for (i, s) in o.obj.sections_iter() {
        orig_key.entry(mangled_hash(&s.name)).or_default().push(i);
    }
    for (so, sec) in o.obj.sections_iter() {
        if st.orig_sec_twin[so.0].is_some() {
            continue;
        }
        let key = mangled_hash(&sec.name);
        let Some(cands) = by_key.get(&key) else {
            continue;
        };
        for sp in positional_first(&sec.name, so, &orig_key[&key], cands) {
            let psec = &p.obj.sections[sp.0];
            if st.sec_twin[sp.0].is_some() || !mangled_eq(&sec.name, &psec.name) {
                continue;
            }
            let base = if sec.is_rela() {
                o.base_of[so.0].unwrap_or(so)
            } else {
                so
            };
            if let Some(ss) = o.secsym[base.0] {
                if is_special_static(o, ss) {
                    continue;
                }
            }
            // Group sections must match exactly; changed groups are not supported.
            if sec.is_group() && group_key(o, so) != group_key(p, sp) {
                continue;
            }
            pair_section_family(o, p, st, so, sp);
            break;
        }
    }
}

fn correlate_symbols(o: &Kelf, p: &Kelf, st: &mut State) {
    let mut by_key: HashIndex<SymbolIndex> = HashIndex::default();
    for (i, _) in p.obj.symbols_iter() {
        by_key
            .entry(mangled_hash(p.sym_name(i)))
            .or_default()
            .push(i);
    }
    let mut orig_key: HashIndex<SymbolIndex> = HashIndex::default();
    for (i, _) in o.obj.symbols_iter() {
        orig_key
            .entry(mangled_hash(o.sym_name(i)))
            .or_default()
            .push(i);
    }
    for (so, sym) in o.obj.symbols_iter() {
        if st.orig_sym_twin[so.0].is_some() {
            continue;
        }
        let oname = o.sym_name(so);
        if is_special_static(o, so) || (sym.st_type() == STT_NOTYPE && oname.starts_with(".LC")) {
            continue;
        }
        let key = mangled_hash(oname);
        let Some(cands) = by_key.get(&key) else {
            continue;
        };
        for sp in positional_first(oname, so, &orig_key[&key], cands) {
            let psym = &p.obj.symbols[sp.0];
            if st.sym_twin[sp.0].is_some()
                || psym.st_type() != sym.st_type()
                || !mangled_eq(oname, p.sym_name(sp))
            {
                continue;
            }
            if let Some(sec) = sym.section {
                if o.obj.sections[sec.0].is_group() && st.orig_sec_twin[sec.0] != psym.section {
                    continue;
                }
            }
            st.pair_sym(so, sp);
            break;
        }
    }
}

/// In the patched relocation section `prsec`, the first uncorrelated symbol that could be the
/// twin of the original static local `sym`.
fn find_uncorrelated_rela(
    o: &Kelf,
    p: &Kelf,
    st: &State,
    prsec: SectionIndex,
    sym: SymbolIndex,
) -> Option<SymbolIndex> {
    let osym = &o.obj.symbols[sym.0];
    p.obj.sections[prsec.0]
        .relas
        .iter()
        .map(|r| r.r_sym)
        .find(|&ps| {
            let psym = &p.obj.symbols[ps.0];
            st.sym_twin[ps.0].is_none()
                && psym.st_type() == osym.st_type()
                && !(osym.is_object() && osym.st_size != psym.st_size)
                && mangled_eq(p.sym_name(ps), o.sym_name(sym))
        })
}

fn find_static_twin_in_children(
    o: &Kelf,
    p: &Kelf,
    st: &State,
    parent: SymbolIndex,
    sym: SymbolIndex,
) -> Option<SymbolIndex> {
    let psec = p.obj.symbols[parent.0].section?;
    for &child in &p.children[parent.0] {
        let csec = p.obj.symbols[child.0].section?;
        let crela = p.rela_of[csec.0];
        if crela.is_none() || crela == p.rela_of[psec.0] {
            continue;
        }
        let res = find_uncorrelated_rela(o, p, st, crela?, sym)
            .or_else(|| find_static_twin_in_children(o, p, st, child, sym));
        if res.is_some() {
            return res;
        }
    }
    None
}

/// The nearest ancestor of `sym` (an original function) that has a twin.
fn correlated_parent(o: &Kelf, st: &State, mut sym: SymbolIndex) -> Option<SymbolIndex> {
    while let Some(parent) = o.parent[sym.0] {
        if st.orig_sym_twin[parent.0].is_some() {
            return Some(parent);
        }
        sym = parent;
    }
    None
}

fn find_static_twin(
    o: &Kelf,
    p: &Kelf,
    st: &State,
    mut orsec: SectionIndex,
    sym: SymbolIndex,
) -> Option<SymbolIndex> {
    if st.orig_sec_twin[orsec.0].is_none() {
        let base = o.base_of[orsec.0]?;
        if let Some(func) = o.bundled[base.0] {
            // The reference may have been in a .part function that the patch removed.
            if let Some(parent) = correlated_parent(o, st, func) {
                orsec = o.rela_of[o.obj.symbols[parent.0].section?.0]?;
            }
        }
    }
    let prsec = st.orig_sec_twin[orsec.0]?;
    if let Some(res) = find_uncorrelated_rela(o, p, st, prsec, sym) {
        return Some(res);
    }
    let pbase = p.base_of[prsec.0]?;
    find_static_twin_in_children(o, p, st, p.bundled[pbase.0]?, sym)
}

fn has_static_twin_ref(
    o: &Kelf,
    p: &Kelf,
    st: &State,
    prsec: SectionIndex,
    sym: SymbolIndex,
) -> bool {
    let twin = st.orig_sym_twin[sym.0];
    if p.obj.sections[prsec.0]
        .relas
        .iter()
        .any(|r| Some(r.r_sym) == twin)
    {
        return true;
    }
    let Some(base) = p.base_of[prsec.0] else {
        return false;
    };
    let Some(parent) = p.bundled[base.0] else {
        return false;
    };
    let Some(psec) = p.obj.symbols[parent.0].section else {
        return false;
    };
    p.children[parent.0].iter().any(|&c| {
        let Some(csec) = p.obj.symbols[c.0].section else {
            return false;
        };
        match p.rela_of[csec.0] {
            Some(cr) if Some(cr) != p.rela_of[psec.0] => has_static_twin_ref(o, p, st, cr, sym),
            _ => false,
        }
    })
}

fn correlate_static_locals(o: &Kelf, p: &Kelf, st: &mut State) -> Result<(), DiffError> {
    let fatal = |reason: String| DiffError::Unpatchable {
        file: o.file.clone(),
        reasons: vec![reason],
    };
    // Undo name-based pairings of static locals: equal numbers can be a coincidence.
    for (so, sym) in o.obj.symbols_iter() {
        if !is_normal_static_local(o, so) {
            continue;
        }
        st.unpair_orig_sym(so);
        let sec = sym.section.unwrap();
        if o.bundled[sec.0] == Some(so) && st.orig_sec_twin[sec.0].is_some() {
            st.unpair_orig_sec(sec);
            if let Some(ss) = o.secsym[sec.0] {
                st.unpair_orig_sym(ss);
            }
            if let Some(r) = o.rela_of[sec.0] {
                st.unpair_orig_sec(r);
            }
        }
    }
    // Pair each static local through a reference to it from a correlated section.
    for (orsec, sec) in o.obj.sections_iter() {
        if !sec.is_rela() || sections::is_debug(&sec.name) {
            continue;
        }
        for r in &sec.relas {
            let sym = r.r_sym;
            if !is_normal_static_local(o, sym) || st.orig_sym_twin[sym.0].is_some() {
                continue;
            }
            let ssec = o.obj.symbols[sym.0].section.unwrap();
            let bundled = o.bundled[ssec.0] == Some(sym);
            if bundled && Some(ssec) == o.base_of[orsec.0] {
                continue; // a static that references itself: hope for another reference
            }
            let Some(psym) = find_static_twin(o, p, st, orsec, sym) else {
                return Err(fatal(format!(
                    "reference to static local variable {} in {} was removed",
                    o.sym_name(sym),
                    o.owner_name(orsec)
                )));
            };
            let psec = p.obj.symbols[psym.0].section;
            let pbundled = psec.is_some_and(|s| p.bundled[s.0] == Some(psym));
            if bundled != pbundled {
                return Err(DiffError::Invalid {
                    file: o.file.clone(),
                    reason: format!(
                        "static local {} is in its own section in one object only",
                        o.sym_name(sym)
                    ),
                });
            }
            if !bundled && st.orig_sec_twin[ssec.0] != psec {
                return Err(DiffError::Invalid {
                    file: o.file.clone(),
                    reason: format!(
                        "the sections of static local {} are not correlated",
                        o.sym_name(sym)
                    ),
                });
            }
            st.pair_sym(sym, psym);
            if bundled {
                if let Some(ps) = psec {
                    pair_section_family(o, p, st, ssec, ps);
                }
            }
        }
    }
    // Every reference to a static local in the original must have its twin in the patched code.
    for (orsec, sec) in o.obj.sections_iter() {
        if !sec.is_rela() || sections::is_debug(&sec.name) {
            continue;
        }
        for r in &sec.relas {
            let sym = r.r_sym;
            if !is_normal_static_local(o, sym) {
                continue;
            }
            let mut target = orsec;
            if st.orig_sec_twin[orsec.0].is_none() {
                if let Some(func) = o.base_of[orsec.0].and_then(|b| o.bundled[b.0]) {
                    if let Some(parent) = correlated_parent(o, st, func) {
                        if let Some(r) =
                            o.obj.symbols[parent.0].section.and_then(|s| o.rela_of[s.0])
                        {
                            target = r;
                        }
                    }
                }
            }
            let (Some(_), Some(ptarget)) = (st.orig_sym_twin[sym.0], st.orig_sec_twin[target.0])
            else {
                return Err(fatal(format!(
                    "reference to static local variable {} in {} was removed",
                    o.sym_name(sym),
                    o.owner_name(target)
                )));
            };
            if !has_static_twin_ref(o, p, st, ptarget, sym) {
                return Err(fatal(format!(
                    "static local {} is correlated, but {} no longer references it",
                    o.sym_name(sym),
                    p.owner_name(ptarget)
                )));
            }
        }
    }
    // A static local in the patched code that has no twin is new.
    'outer: for (prsec, sec) in p.obj.sections_iter() {
        if !sec.is_rela() || sections::is_debug(&sec.name) {
            continue;
        }
        for r in &sec.relas {
            if is_normal_static_local(p, r.r_sym) && st.sym_twin[r.r_sym.0].is_none() {
                st.warnings.push(format!(
                    "unable to correlate static local variable {} used by {}, assuming variable is new",
                    p.sym_name(r.r_sym),
                    p.owner_name(prsec)
                ));
                break 'outer;
            }
        }
    }
    Ok(())
}

/// Gives each correlated patched element its original's name.
fn rename_to_original(o: &Kelf, p: &mut Kelf, st: &State) {
    rename_pairs(o, p, st);
    p.reindex_names();
}

fn rename_pairs(o: &Kelf, p: &mut Kelf, st: &State) {
    for (i, twin) in st.sec_twin.iter().enumerate() {
        if let Some(t) = twin {
            if p.obj.sections[i].name != o.obj.sections[t.0].name {
                p.obj.sections[i].name = o.obj.sections[t.0].name.clone();
            }
        }
    }
    for (i, twin) in st.sym_twin.iter().enumerate() {
        if let Some(t) = twin {
            if !p.obj.symbols[i].is_section() && p.obj.symbols[i].name != o.obj.symbols[t.0].name {
                p.obj.symbols[i].name = o.obj.symbols[t.0].name.clone();
            }
        }
    }
}

/// A section group as it means: its flag and its members' names (their indexes shift freely).
pub fn group_key(k: &Kelf, sec: SectionIndex) -> (u32, Vec<&str>) {
    let (flags, members) = k.obj.sections[sec.0].group_members(k.obj.header.big_endian);
    (
        flags,
        members
            .iter()
            .map(|m| {
                k.obj
                    .sections
                    .get(m.0)
                    .map(|s| s.name.as_str())
                    .unwrap_or("")
            })
            .collect(),
    )
}

/// The candidates to try, in order. Names with a `__COUNTER__` (`__UNIQUE_ID_cnt0`,
/// `__UNIQUE_ID_cnt1`) all look alike once the counter is ignored: the one at the same place
/// among its look-alikes is tried first, since the counters shift together.
fn positional_first<T: Copy + PartialEq>(
    name: &str,
    this: T,
    orig_alike: &[T],
    cands: &[T],
) -> Vec<T> {
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
