//! What the phases find out about the patched object, in the order they find it. Each part is
//! written by one phase and only read by the phases after it (see [`crate::diff`]):
//!
//! - [`Twins`], by `correlate`: which original section or symbol each patched one is;
//! - [`Statuses`], by `compare`: whether each patched section and symbol is the same, changed
//!   or new (and which sections are ignored);
//! - [`Inclusion`], by `include` and completed by `special`: what the output holds;
//! - [`Trimmed`], by `special`: the special sections cut down to the entries of included code.
//!
//! Tables of the patched object are indexed by its indexes ([`PatchedSec`], [`PatchedSym`]),
//! those of the original by the original's: one cannot be used on the other.

use crate::index::{IdxVec, OrigSec, OrigSym, Patched, PatchedSec, PatchedSym};
use crate::kelf::Kelf;
use std::collections::{HashMap, HashSet};

/// The pairing of the two objects' sections and symbols (`correlate`), both ways.
pub struct Twins {
    /// The original twin of each patched section.
    pub sec: IdxVec<PatchedSec, Option<OrigSec>>,
    /// The original twin of each patched symbol.
    pub sym: IdxVec<PatchedSym, Option<OrigSym>>,
    /// The patched twin of each original section.
    pub orig_sec: IdxVec<OrigSec, Option<PatchedSec>>,
    /// The patched twin of each original symbol.
    pub orig_sym: IdxVec<OrigSym, Option<PatchedSym>>,
}

impl Twins {
    /// No pairs yet.
    pub fn new(o: &Kelf<crate::index::Orig>, p: &Kelf<Patched>) -> Twins {
        Twins {
            sec: p.per_section(None),
            sym: p.per_symbol(None),
            orig_sec: o.per_section(None),
            orig_sym: o.per_symbol(None),
        }
    }

    pub fn pair_sec(&mut self, o: OrigSec, p: PatchedSec) {
        self.orig_sec[o] = Some(p);
        self.sec[p] = Some(o);
    }

    pub fn pair_sym(&mut self, o: OrigSym, p: PatchedSym) {
        self.orig_sym[o] = Some(p);
        self.sym[p] = Some(o);
    }

    pub fn unpair_orig_sec(&mut self, o: OrigSec) {
        if let Some(p) = self.orig_sec[o].take() {
            self.sec[p] = None;
        }
    }

    pub fn unpair_orig_sym(&mut self, o: OrigSym) {
        if let Some(p) = self.orig_sym[o].take() {
            self.sym[p] = None;
        }
    }
}

/// Whether a patched section or symbol differs from its twin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Same,
    Changed,
    /// No twin: the patch adds it.
    New,
}

/// Which pass of `compare` found a function changed, and through what: the report's "why".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Its section's bytes or relocations differ from its twin's.
    Code,
    /// This `.cold`/`.part` child, which has no ftrace entry of its own, changed.
    Child(PatchedSym),
    /// It moved to another text subsection (`.text.unlikely.foo` to `.text.foo`), or out of an
    /// ignored section.
    Moved,
    /// Its entries in this special section differ; the site of the first that differs, as an
    /// offset from the function's start, where the entry names one.
    SpecialEntries(&'static str, Option<i64>),
    /// It reads this read-only object, which changed.
    ReadOnlyData(PatchedSym),
}

/// The verdict of `compare` on each patched section and symbol.
pub struct Statuses {
    pub sec: IdxVec<PatchedSec, Status>,
    pub sym: IdxVec<PatchedSym, Status>,
    /// Sections whose changes do not count: `KPATCH_IGNORE_SECTION` and `.discard*`.
    pub ignored: IdxVec<PatchedSec, bool>,
    /// Why each changed symbol is changed: the first pass that found it (read for functions).
    pub cause: IdxVec<PatchedSym, Option<Cause>>,
}

impl Statuses {
    /// Everything the same, nothing ignored.
    pub fn new(p: &Kelf<Patched>) -> Statuses {
        Statuses {
            sec: p.per_section(Status::Same),
            sym: p.per_symbol(Status::Same),
            ignored: p.per_section(false),
            cause: p.per_symbol(None),
        }
    }

    /// Marks `sym` changed for `cause`, keeping the cause already found.
    pub fn changed(&mut self, sym: PatchedSym, cause: Cause) {
        self.sym[sym] = Status::Changed;
        self.cause[sym].get_or_insert(cause);
    }
}

/// What the output holds.
pub struct Inclusion {
    pub sec: IdxVec<PatchedSec, bool>,
    pub sym: IdxVec<PatchedSym, bool>,
    /// The patch callbacks, each with its kind (`pre_patch`, ...).
    pub callbacks: Vec<(PatchedSym, String)>,
}

impl Inclusion {
    /// Nothing yet.
    pub fn new(p: &Kelf<Patched>) -> Inclusion {
        Inclusion {
            sec: p.per_section(false),
            sym: p.per_symbol(false),
            callbacks: Vec::new(),
        }
    }

    /// Includes a section, its section symbol, its relocation section and, recursively, what
    /// those relocations reference.
    pub fn section(&mut self, p: &Kelf<Patched>, st: &Statuses, sec: PatchedSec) {
        let mut work = Vec::new();
        self.section_into(p, sec, &mut work);
        self.drain(p, st, work);
    }

    /// Includes a symbol and, if it is a section symbol or it is not the same as its original,
    /// its section (recursively, as [`Inclusion::section`]). An unchanged symbol stays a
    /// reference to the kernel's copy.
    pub fn symbol(&mut self, p: &Kelf<Patched>, st: &Statuses, sym: PatchedSym) {
        self.drain(p, st, vec![sym]);
    }

    fn section_into(&mut self, p: &Kelf<Patched>, sec: PatchedSec, work: &mut Vec<PatchedSym>) {
        if self.sec[sec] {
            return;
        }
        self.sec[sec] = true;
        if let Some(ss) = p.secsym[sec] {
            self.sym[ss] = true;
        }
        // A function's padding symbol (x86's `__pfx_`) travels with it.
        for &s in &p.by_offset[sec] {
            if p.is_padding_symbol(&p.sym(s).name) {
                self.sym[s] = true;
            }
        }
        if let Some(r) = p.rela_of[sec] {
            self.sec[r] = true;
            work.extend(p.relas(r).iter().map(|r| p.target(r)));
        }
    }

    fn drain(&mut self, p: &Kelf<Patched>, st: &Statuses, mut work: Vec<PatchedSym>) {
        while let Some(sym) = work.pop() {
            if self.sym[sym] {
                continue;
            }
            self.sym[sym] = true;
            if let Some(sec) = p.sec_of(sym) {
                if p.sym(sym).is_section() || st.sym[sym] != Status::Same {
                    self.section_into(p, sec, &mut work);
                }
            }
        }
    }
}

/// The kept entries of a special section.
pub type Regenerated = kpatch_arch::Rebuilt;

/// What `special` made of the special sections.
#[derive(Default)]
pub struct Trimmed {
    /// The special sections that keep some entries, with those entries (the output's contents
    /// of the section and of its relocation section).
    pub regen: HashMap<PatchedSec, Regenerated>,
    /// The special sections (and their relocation sections) that keep no entry: they carry
    /// nothing, so whatever changed in them is no change of the patch.
    emptied: HashSet<PatchedSec>,
}

impl Trimmed {
    /// Records that `sec` keeps no entry.
    pub fn empty(&mut self, sec: PatchedSec) {
        self.emptied.insert(sec);
    }

    pub fn is_emptied(&self, sec: PatchedSec) -> bool {
        self.emptied.contains(&sec)
    }

    /// The status of `sec` as the output sees it: a special section that keeps no entry is the
    /// same, whatever its entries' changes; any other has the status `compare` found.
    pub fn section_status(&self, st: &Statuses, sec: PatchedSec) -> Status {
        if self.is_emptied(sec) {
            Status::Same
        } else {
            st.sec[sec]
        }
    }
}
