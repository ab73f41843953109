//! Which of a changed header's includers the change can reach, before anything is compiled:
//! each is preprocessed without and with the patch (the patch applied as for the patched
//! compile, `#line` directives included) and the two compared ([`crate::preprocessed`]). A unit
//! whose tokens are the same, or differ only inside definitions it never uses, is not compiled.
//! Units are handled in batches, so the disk holds at most one batch of preprocessed output and
//! memory one pair per thread, whatever the number of units.

use std::fs;
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use crate::apply;
use crate::compile;
use crate::error::{io_err, Result};
use crate::exec::Runner;
use crate::interrupt;
use crate::kbuild::Kbuild;
use crate::patchfile::PatchFile;
use crate::preprocessed::{self, Change};
use crate::select::{SelectedUnit, SkippedUnit};

/// What the filters did, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilterCounts {
    /// Units found through a changed header (or `#include`d `.c`) and built in this config.
    pub header_units: usize,
    /// Same tokens with and without the patch (the header is not included, or the change is
    /// in a part the configuration leaves out).
    pub identical: usize,
    /// Differences only inside definitions the unit never uses.
    pub unused_only: usize,
    /// Could not be preprocessed: compiled, to be safe.
    pub not_preprocessed: usize,
    /// Left to compile.
    pub kept: usize,
}

/// Units preprocessed per batch.
const BATCH: usize = 64;

/// A unit that stays, with how likely it is to change (lower first: 0 for a unit the patch
/// changes itself, else 1 + the [`Change::Reaches`] distance).
pub type Ranked = (SelectedUnit, usize);

/// Splits `units` into those to compile (ranked, most likely first) and those the change
/// cannot reach. The tree is unpatched again when this returns, whatever happens.
/// `done(n, total)` is told how many header units have been looked at.
pub fn filter(
    runner: &dyn Runner,
    kbuild: &Kbuild,
    patch: &PatchFile,
    units: Vec<SelectedUnit>,
    work: &Path,
    done: &mut dyn FnMut(usize, usize),
) -> Result<(Vec<Ranked>, Vec<SkippedUnit>, FilterCounts)> {
    let root = &kbuild.tree;
    let (headed, direct): (Vec<_>, Vec<_>) = units
        .into_iter()
        .partition(|u| !u.via_headers.is_empty() && u.unit.extension().is_some_and(|e| e == "c"));
    let mut keep: Vec<Ranked> = direct.into_iter().map(|u| (u, 0)).collect();
    let mut skipped = Vec::new();
    let mut counts = FilterCounts {
        header_units: headed.len(),
        ..Default::default()
    };
    let (orig_dir, patched_dir) = (work.join("orig"), work.join("patched"));
    let total = headed.len();
    let mut seen = 0;
    for batch in headed.chunks(BATCH) {
        interrupt::check()?;
        let objects: Vec<String> = batch.iter().map(|u| u.object.clone()).collect();
        let orig = compile::preprocess(runner, kbuild, &objects, &orig_dir)?;
        let applied = apply::apply(runner, root, patch)?;
        let patched = compile::preprocess(runner, kbuild, &objects, &patched_dir);
        applied.revert()?;
        let patched = patched?;
        let verdicts: Vec<Option<Change>> = batch
            .par_iter()
            .map(|u| {
                let have = orig.contains(&u.object) && patched.contains(&u.object);
                let name = format!("{}.i", u.object);
                let (a, b) = (orig_dir.join(&name), patched_dir.join(&name));
                let verdict = if have {
                    let read = |p: &Path| fs::read(p).map_err(io_err(p));
                    let (ta, tb) = (read(&a)?, read(&b)?);
                    Some(preprocessed::compare(
                        &String::from_utf8_lossy(&ta),
                        &String::from_utf8_lossy(&tb),
                    ))
                } else {
                    None
                };
                let _ = fs::remove_file(&a);
                let _ = fs::remove_file(&b);
                Ok(verdict)
            })
            .collect::<Result<_>>()?;
        for (u, v) in batch.iter().zip(verdicts) {
            match v {
                Some(Change::Identical) => {
                    counts.identical += 1;
                    skipped.push(SkippedUnit {
                        unit: u.unit.clone(),
                        reason: "the same tokens with and without the patch".into(),
                    });
                }
                Some(Change::UnusedOnly(names)) => {
                    counts.unused_only += 1;
                    skipped.push(SkippedUnit {
                        unit: u.unit.clone(),
                        reason: format!(
                            "the change is only in definitions it never uses ({})",
                            abbreviate(&names)
                        ),
                    });
                }
                Some(Change::Reaches { distance }) => keep.push((u.clone(), 1 + distance)),
                None => {
                    counts.not_preprocessed += 1;
                    keep.push((u.clone(), 1));
                }
            }
        }
        seen += batch.len();
        done(seen, total);
    }
    counts.kept = keep.len();
    // Stable: units of equal rank keep their (sorted) order.
    keep.sort_by_key(|(_, rank)| *rank);
    Ok((keep, skipped, counts))
}

/// At most a few names, then how many more.
fn abbreviate(names: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut s = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_name_lists_are_abbreviated() {
        let n: Vec<String> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(abbreviate(&n[..2]), "a, b");
        assert_eq!(abbreviate(&n), "a, b, c and 2 more");
    }
}
