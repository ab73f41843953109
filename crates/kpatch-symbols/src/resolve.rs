//! Finding the target's copy of a symbol: its address and its livepatch `sympos`.
//!
//! A name that occurs once in its object resolves to `sympos` 0 (livepatch: "unique"). A local name
//! that occurs several times is resolved through the translation unit that defines it: with FILE
//! symbols (a vmlinux with `.symtab`) the occurrence in the unit's FILE block, else the occurrence
//! whose neighbourhood in kallsyms order holds most of the unit's other symbols. When no single
//! occurrence wins, the error lists every candidate; nothing is guessed.

use std::collections::HashSet;

use crate::error::Candidate;
use crate::model::{KernelSymbol, KernelSymbols};
use crate::symvers::Symvers;
use crate::Error;

/// The symbols one translation unit (one `.o` of the kernel build) defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslationUnit {
    /// Source path in the kernel tree, e.g. `fs/proc/consoles.c`.
    pub source: String,
    /// `vmlinux`, or the module the unit is linked into.
    pub object: String,
    /// Names of the functions and data objects the unit defines, local and global, e.g. from the
    /// original object's symbol table.
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
                    .map(|(p, &i)| self.candidate(i, p + 1, &HashSet::new(), 4))
                    .collect(),
            }),
        }
    }

    /// The occurrence of `name` that translation unit `tu` defines.
    ///
    /// A name that occurs once in the object resolves to it (sympos 0), unless FILE symbols show
    /// that it belongs to another source file. Several occurrences: the one in the unit's FILE
    /// block when FILE symbols say so, else the one whose block holds strictly more of the unit's
    /// other symbols than any other; anything else is an error listing every candidate.
    pub fn resolve_in_unit(&self, tu: &TranslationUnit, name: &str) -> Result<Resolved, Error> {
        let occ = self.occurrences(&tu.object, name);
        if occ.is_empty() {
            return Err(self.not_found(&tu.object, name));
        }
        let others: HashSet<&str> = tu
            .symbols
            .iter()
            .map(String::as_str)
            .filter(|s| *s != name)
            .collect();
        let window = 4;
        let candidates: Vec<Candidate> = occ
            .iter()
            .enumerate()
            .map(|(p, &i)| self.candidate(i, p + 1, &others, window))
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
        let best = pool.iter().map(|&c| candidates[c].score).max().unwrap_or(0);
        let winners: Vec<usize> = pool
            .iter()
            .copied()
            .filter(|&c| candidates[c].score == best)
            .collect();
        match winners.as_slice() {
            // No occurrence lies among the unit's other symbols.
            _ if best == 0 && !same_file_pool => Err(self.no_block(tu, name, candidates)),
            [one] if best > 0 => Ok(self.resolved(occ[*one], one + 1, occ.len())),
            // Several occurrences fit equally well (or several in files of the unit's name and
            // nothing else to go on).
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
                    .map(|(p, i)| self.candidate(i, p + 1, &HashSet::new(), 0))
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

    /// Describe occurrence `index`: its FILE block, or its block of `others` in kallsyms order,
    /// scored by how many of `others` it holds; with no match, show `window` symbols either side.
    fn candidate(
        &self,
        index: usize,
        position: usize,
        others: &HashSet<&str>,
        window: usize,
    ) -> Candidate {
        let syms = self.symbols();
        let me = &syms[index];
        let near: Vec<usize> = match me.file_group {
            Some(g) => {
                // A FILE block is contiguous in .symtab but not in kallsyms order: scan the object.
                (0..syms.len())
                    .filter(|&j| {
                        j != index && syms[j].file_group == Some(g) && syms[j].object == me.object
                    })
                    .collect()
            }
            None => {
                let mut near = unit_block(syms, index, others);
                if near.is_empty() {
                    let lo = index.saturating_sub(window);
                    let hi = (index + window + 1).min(syms.len());
                    near = (lo..hi)
                        .filter(|&j| j != index && syms[j].object == me.object)
                        .collect();
                }
                near.sort();
                near
            }
        };
        let mut matched: Vec<String> = Vec::new();
        for &j in &near {
            let n = syms[j].name.as_str();
            if others.contains(n) && !matched.iter().any(|m| m == n) {
                matched.push(n.to_string());
            }
        }
        let score = matched.len();
        let neighbours = if matched.is_empty() {
            // Nothing matched: show the closest few symbols so the user can tell the places apart.
            let mut by_distance = near.clone();
            by_distance.sort_by_key(|&j| j.abs_diff(index));
            by_distance.truncate(4);
            by_distance.sort();
            by_distance
                .into_iter()
                .map(|j| syms[j].name.clone())
                .collect()
        } else {
            matched
        };
        Candidate {
            position,
            address: me.address,
            kind: me.kind,
            file: me.file.clone(),
            neighbours,
            score,
        }
    }
}

/// The indices of the unit's block around `index` in kallsyms order: walk out from the candidate
/// over the unit's names (`others`), crossing at most [`MAX_GAP`] foreign symbols in a row (a
/// unit's code is contiguous in the image, and so are its data of one kind). A unit defines each
/// name once, so meeting a name again, or the candidate's own, means the walk has entered a
/// neighbouring unit that shares the unit's names: the block ends there.
fn unit_block(syms: &[KernelSymbol], index: usize, others: &HashSet<&str>) -> Vec<usize> {
    let mut seen: HashSet<&str> = HashSet::from([syms[index].name.as_str()]);
    let mut near = Vec::new();
    walk((0..index).rev(), syms, index, others, &mut seen, &mut near);
    walk(
        index + 1..syms.len(),
        syms,
        index,
        others,
        &mut seen,
        &mut near,
    );
    near
}

fn walk<'s>(
    indices: impl Iterator<Item = usize>,
    syms: &'s [KernelSymbol],
    index: usize,
    others: &HashSet<&str>,
    seen: &mut HashSet<&'s str>,
    near: &mut Vec<usize>,
) {
    let me = &syms[index];
    let mut gap = 0;
    for j in indices {
        let s = &syms[j];
        if s.object != me.object || s.name == me.name {
            break;
        }
        if s.name.starts_with(".L") {
            // Local labels (kept in a module's symbol table) belong to no one.
            continue;
        }
        if others.contains(s.name.as_str()) {
            if !seen.insert(s.name.as_str()) {
                break;
            }
            near.push(j);
            gap = 0;
        } else {
            gap += 1;
            if gap > MAX_GAP {
                break;
            }
        }
    }
}

/// How many symbols that the unit does not define may separate two of its symbols in kallsyms
/// order before its block is taken to end.
const MAX_GAP: usize = 2;

/// Whether a FILE symbol's name denotes the source path `source`.
fn file_matches(file: &str, source: &str) -> bool {
    file == source
        || source.rsplit('/').next() == Some(file)
        || source.ends_with(&format!("/{file}"))
}
