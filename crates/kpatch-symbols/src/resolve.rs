//! Finding the target's copy of a symbol: its address and its livepatch `sympos`.
//!
//! A name that occurs once in its object resolves to `sympos` 0 (livepatch: "unique"). A local name
//! that occurs several times is resolved through the translation unit that defines it: with FILE
//! symbols (a vmlinux with `.symtab`) the occurrence in the unit's FILE block, else the occurrence
//! whose block in kallsyms order holds, in the unit's order, more of the unit's distinctive
//! symbols (names that occur once in the object) than any other. When no single occurrence wins,
//! the error lists every candidate; nothing is guessed.

use std::collections::HashSet;

use crate::align;
use crate::error::Candidate;
use crate::model::{section_boundary, KernelSymbols};
use crate::symvers::Symvers;
use crate::Error;

/// The symbols one translation unit (one `.o` of the kernel build) defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslationUnit {
    /// Source path in the kernel tree, e.g. `fs/proc/consoles.c`.
    pub source: String,
    /// `vmlinux`, or the module the unit is linked into.
    pub object: String,
    /// Names of the functions and data objects the unit defines, local and global, in the order
    /// of the original object's symbol table (the order matters: without FILE symbols, the
    /// unit's symbols must surround an occurrence in that order for it to be the unit's).
    pub symbols: Vec<String>,
}

/// A symbol found in the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub name: String,
    pub object: String,
    pub address: u64,
    pub kind: char,
    /// 1-based place among the object's symbols of this name, in kallsyms order.
    pub position: usize,
    /// How many symbols of this name the object has.
    pub occurrences: usize,
    /// The livepatch `sympos` (for `.klp.sym.<object>.<name>,<sympos>` and `old_sympos`): 0 when
    /// the name is unique in the object, else `position`.
    pub sympos: usize,
}

impl KernelSymbols {
    fn resolved(&self, index: usize, position: usize, occurrences: usize) -> Resolved {
        let s = &self.symbols()[index];
        Resolved {
            name: s.name.clone(),
            object: s.object.clone(),
            address: s.address,
            kind: s.kind,
            position,
            occurrences,
            sympos: if occurrences == 1 { 0 } else { position },
        }
    }

    /// A symbol that must be unique in `object` (a global, or a local not tied to a unit).
    pub fn resolve(&self, object: &str, name: &str) -> Result<Resolved, Error> {
        let occ = self.occurrences(object, name);
        match occ.len() {
            0 => Err(self.not_found(object, name)),
            1 => Ok(self.resolved(occ[0], 1, 1)),
            _ => Err(Error::Ambiguous {
                symbol: name.to_string(),
                object: object.to_string(),
                tu: "no translation unit".to_string(),
                file: self.source.clone(),
                candidates: occ
                    .iter()
                    .enumerate()
                    .map(|(p, &i)| self.candidate(i, p + 1, &[], name))
                    .collect(),
            }),
        }
    }

    /// Occurrence `position` (1-based, kallsyms order) of `name` in `object`, as a user picked it
    /// after an ambiguity error listed the candidates.
    pub fn resolve_position(
        &self,
        object: &str,
        name: &str,
        position: usize,
    ) -> Result<Resolved, Error> {
        let occ = self.occurrences(object, name);
        match position.checked_sub(1).and_then(|p| occ.get(p)) {
            Some(&i) => Ok(self.resolved(i, position, occ.len())),
            None if occ.is_empty() => Err(self.not_found(object, name)),
            None => Err(Error::NoSuchPosition {
                symbol: name.to_string(),
                object: object.to_string(),
                position,
                occurrences: occ.len(),
                file: self.source.clone(),
            }),
        }
    }

    /// The occurrence of `name` that translation unit `tu` defines.
    ///
    /// A name that occurs once in the object resolves to it (sympos 0), unless FILE symbols show
    /// that it belongs to another source file. Several occurrences: the one in the unit's FILE
    /// block when FILE symbols say so; else the one whose block holds strictly more of the unit's
    /// distinctive symbols (names that occur once in the object, or FILE block members), then
    /// more of its symbols at all, than any other. Anything else is an error listing every
    /// candidate: occurrences told apart only by names that many units share are not guessed at.
    pub fn resolve_in_unit(&self, tu: &TranslationUnit, name: &str) -> Result<Resolved, Error> {
        let occ = self.occurrences(&tu.object, name);
        if occ.is_empty() {
            return Err(self.not_found(&tu.object, name));
        }
        let candidates: Vec<Candidate> = occ
            .iter()
            .enumerate()
            .map(|(p, &i)| self.candidate(i, p + 1, &tu.symbols, name))
            .collect();

        // With FILE symbols: keep the occurrences whose FILE names the unit's source.
        let with_file: Vec<usize> = (0..occ.len())
            .filter(|&c| candidates[c].file.is_some())
            .collect();
        let mut pool: Vec<usize> = (0..occ.len()).collect();
        let mut same_file_pool = false;
        if !with_file.is_empty() {
            let same_file: Vec<usize> = with_file
                .iter()
                .copied()
                .filter(|&c| file_matches(candidates[c].file.as_deref().unwrap_or(""), &tu.source))
                .collect();
            if same_file.len() == 1 {
                return Ok(self.resolved(occ[same_file[0]], same_file[0] + 1, occ.len()));
            }
            if same_file.is_empty() && with_file.len() == occ.len() {
                return Err(self.no_block(tu, name, candidates));
            }
            if !same_file.is_empty() {
                pool = same_file;
                same_file_pool = true;
            }
        }
        if occ.len() == 1 {
            return Ok(self.resolved(occ[0], 1, 1));
        }
        let key = |c: usize| (candidates[c].anchors, candidates[c].score);
        let best = pool.iter().map(|&c| key(c)).max().unwrap_or((0, 0));
        let winners: Vec<usize> = pool.iter().copied().filter(|&c| key(c) == best).collect();
        match winners.as_slice() {
            // No occurrence lies among the unit's other symbols.
            _ if best == (0, 0) && !same_file_pool => Err(self.no_block(tu, name, candidates)),
            // One occurrence has more distinctive neighbours than any other, and no same-named
            // symbol right next to it could own those neighbours instead.
            [one] if best.0 > 0 && !candidates[*one].twin => {
                Ok(self.resolved(occ[*one], one + 1, occ.len()))
            }
            // Several occurrences fit equally well, or only through names that many units share
            // (or several lie in files of the unit's name, with nothing else to go on).
            _ => Err(Error::Ambiguous {
                symbol: name.to_string(),
                object: tu.object.clone(),
                tu: tu.source.clone(),
                file: self.source.clone(),
                candidates,
            }),
        }
    }

    /// Which object defines `name`: the exporter named by `Module.symvers` when it is exported,
    /// else the single object whose symbols include it.
    pub fn object_of(&self, name: &str, symvers: Option<&Symvers>) -> Result<String, Error> {
        if let Some(entry) = symvers.and_then(|s| s.get(name)) {
            return Ok(entry.object());
        }
        let objects = self.objects_defining(name);
        match objects.as_slice() {
            [] => Err(self.not_found("any object", name)),
            [one] => Ok(one.to_string()),
            many => Err(Error::Ambiguous {
                symbol: name.to_string(),
                object: many.join(", "),
                tu: "no translation unit".to_string(),
                file: self.source.clone(),
                candidates: many
                    .iter()
                    .flat_map(|o| self.occurrences(o, name).into_iter().enumerate())
                    .map(|(p, i)| self.candidate(i, p + 1, &[], name))
                    .collect(),
            }),
        }
    }

    fn not_found(&self, object: &str, name: &str) -> Error {
        Error::SymbolNotFound {
            symbol: name.to_string(),
            object: object.to_string(),
            file: self.source.clone(),
        }
    }

    fn no_block(&self, tu: &TranslationUnit, name: &str, candidates: Vec<Candidate>) -> Error {
        Error::NoMatchingBlock {
            symbol: name.to_string(),
            object: tu.object.clone(),
            tu: tu.source.clone(),
            file: self.source.clone(),
            candidates,
        }
    }

    /// Describe occurrence `index` of `name`: with FILE symbols, score it by the members of its
    /// FILE block among `unit`'s symbols; else by how well the symbols around it line up with
    /// `unit`'s symbols before and after `name` (see [`crate::align`]).
    fn candidate(&self, index: usize, position: usize, unit: &[String], name: &str) -> Candidate {
        let syms = self.symbols();
        let me = &syms[index];
        let others: HashSet<&str> = unit
            .iter()
            .map(String::as_str)
            .filter(|s| *s != name)
            .collect();
        let (near, score, anchors, twin) = match me.file_group {
            Some(g) => {
                let near: Vec<usize> = self
                    .file_group(g)
                    .iter()
                    .copied()
                    .filter(|&j| j != index && syms[j].object == me.object)
                    .filter(|&j| others.contains(syms[j].name.as_str()))
                    .collect();
                let mut names: Vec<&str> = near.iter().map(|&j| syms[j].name.as_str()).collect();
                names.sort();
                names.dedup();
                // Every member of the unit's FILE block is the unit's own.
                (near, names.len(), names.len(), false)
            }
            None => self.alignment(index, unit, name, &others),
        };
        let mut neighbours: Vec<String> = Vec::new();
        for &j in &near {
            if !neighbours.contains(&syms[j].name) && neighbours.len() < 8 {
                neighbours.push(syms[j].name.clone());
            }
        }
        if neighbours.is_empty() {
            // Nothing matched: show the closest few symbols so the user can tell the places apart.
            let lo = index.saturating_sub(2);
            let hi = (index + 3).min(syms.len());
            neighbours = (lo..hi)
                .filter(|&j| j != index && syms[j].object == me.object)
                .map(|j| syms[j].name.clone())
                .collect();
        }
        Candidate {
            position,
            address: me.address,
            kind: me.kind,
            file: me.file.clone(),
            neighbours,
            score,
            anchors,
            twin,
        }
    }

    /// `(the unit's symbols found around occurrence index, matches, distinctive matches, twin)`:
    /// the unit's block around the occurrence is the run of the unit's symbols on either side,
    /// broken by more than [`MAX_GAP`] foreign symbols in a row, by a section boundary
    /// (`__start_once`, `_etext`, ...) or by another symbol called `name` (another unit's); in it, the unit's symbols before `name` are looked for, in
    /// order, before the occurrence, and those after it after it. `twin`: another `name` is the
    /// occurrence's direct neighbour, as where zero-size objects share an address: which of the
    /// two the block belongs to is unknown.
    fn alignment(
        &self,
        index: usize,
        unit: &[String],
        name: &str,
        others: &HashSet<&str>,
    ) -> (Vec<usize>, usize, usize, bool) {
        let syms = self.symbols();
        let me = &syms[index];
        // The unit's symbols on one side, and whether another `name` came before any of them.
        let block = |indices: &mut dyn Iterator<Item = usize>| {
            let mut found = Vec::new();
            let mut gap = 0;
            for j in indices {
                let s = &syms[j];
                if s.name == name {
                    let twin = found.is_empty() && gap == 0 && s.object == me.object;
                    return (found, twin);
                }
                if s.object != me.object {
                    break;
                }
                if s.name.starts_with(PADDING_PREFIX) {
                    // CALL_PADDING's `__pfx_foo` travels with `foo` (6.12 has one before
                    // every function): counted as a foreign symbol of its own, it halved the
                    // reach of a block.
                    continue;
                }
                if section_boundary(&s.name) && !others.contains(s.name.as_str()) {
                    // Past a section boundary lie other sections' blocks.
                    break;
                }
                if others.contains(s.name.as_str()) {
                    found.push(j);
                    gap = 0;
                } else if !s.name.starts_with(".L") {
                    // (Local labels, kept in a module's symbol table, belong to no unit.)
                    gap += 1;
                    if gap > MAX_GAP {
                        break;
                    }
                }
            }
            (found, false)
        };
        let (mut before, twin_before) = block(&mut (0..index).rev());
        before.reverse();
        let (after, twin_after) = block(&mut (index + 1..syms.len()));
        let (unit_before, unit_after): (Vec<&str>, Vec<&str>) =
            match unit.iter().position(|s| s == name) {
                Some(t) => (
                    unit[..t].iter().map(String::as_str).collect(),
                    unit[t + 1..].iter().map(String::as_str).collect(),
                ),
                None => {
                    let all: Vec<&str> = unit.iter().map(String::as_str).collect();
                    (all.clone(), all)
                }
            };
        let mut near = Vec::new();
        let mut total = 0;
        for (side, unit_side) in [(before, unit_before), (after, unit_after)] {
            let names: Vec<&str> = side.iter().map(|&j| syms[j].name.as_str()).collect();
            let weights: Vec<u64> = names
                .iter()
                .map(|n| {
                    if self.occurrences(&me.object, n).len() == 1 {
                        align::DISTINCTIVE + 1
                    } else {
                        1
                    }
                })
                .collect();
            total += align::weighted_lcs(&unit_side, &names, &weights);
            near.extend(side);
        }
        let (anchors, score) = align::split(total);
        (near, score, anchors, twin_before || twin_after)
    }
}

/// How many symbols that the unit does not define may separate two of its symbols in kallsyms
/// order before its block is taken to end (a unit's code is contiguous in the image, and so are
/// its data of one section; the slack covers symbols a caller leaves out of the unit).
const MAX_GAP: usize = 3;

/// The symbol over a function's padding (`__pfx_foo`): part of its function, no unit's own.
const PADDING_PREFIX: &str = kpatch_arch::x86_64::FUNCTION_ENTRY.padding_symbol_prefix;

/// Whether a FILE symbol's name denotes the source path `source`.
fn file_matches(file: &str, source: &str) -> bool {
    file == source
        || source.rsplit('/').next() == Some(file)
        || source.ends_with(&format!("/{file}"))
}
