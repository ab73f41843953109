//! Which translation units a patch affects: the changed `.c`/`.S` files, and for each changed
//! header every unit that includes it and that the configuration builds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{BuildError, Result};
use crate::exec::Runner;
use crate::includes::IncludeIndex;
use crate::kbuild::{object_of, Kbuild};
use crate::patchfile::{FileChange, PatchFile};
use crate::probe::{self, Placement};
use crate::timing::Timings;

/// One translation unit to compile twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedUnit {
    /// `fs/proc/cmdline.c`
    pub unit: PathBuf,
    /// `fs/proc/cmdline.o`
    pub object: String,
    pub placement: Placement,
    /// The changed headers (or `#include`d `.c` files) it was selected for; empty when the
    /// patch changes the unit itself.
    pub via_headers: Vec<PathBuf>,
}

/// A candidate that was dropped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedUnit {
    pub unit: PathBuf,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub units: Vec<SelectedUnit>,
    /// Changed headers.
    pub headers: Vec<PathBuf>,
    /// Changed files that are neither units nor headers (Makefiles, documentation, ...).
    pub ignored: Vec<PathBuf>,
    pub skipped: Vec<SkippedUnit>,
    pub timings: Timings,
}

fn ext(p: &Path) -> &str {
    p.extension().and_then(|e| e.to_str()).unwrap_or("")
}

/// Splits the patch's changes into changed units, changed headers and other files.
pub fn classify_changes(patch: &PatchFile) -> Result<(Vec<PathBuf>, Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut units, mut headers, mut ignored) = (Vec::new(), Vec::new(), Vec::new());
    for c in &patch.changes {
        let kind = ext(c.path());
        let is_code = matches!(kind, "c" | "S");
        match c {
            FileChange::Modified(p) if is_code => units.push(p.clone()),
            FileChange::Modified(p) if kind == "h" => headers.push(p.clone()),
            // A new header is included only by files the patch also changes.
            FileChange::Added(p) if kind == "h" => ignored.push(p.clone()),
            FileChange::Added(p) | FileChange::Deleted(p) if is_code || kind == "h" => {
                return Err(BuildError::Unsupported {
                    path: p.clone(),
                    reason: "a live patch cannot add or remove a source file".into(),
                })
            }
            FileChange::Renamed { from, to }
                if is_code || kind == "h" || matches!(ext(from), "c" | "S" | "h") =>
            {
                return Err(BuildError::Unsupported {
                    path: from.clone(),
                    reason: format!(
                        "a live patch cannot rename a source file (to {})",
                        to.display()
                    ),
                })
            }
            other => ignored.push(other.path().to_path_buf()),
        }
    }
    Ok((units, headers, ignored))
}

/// Selects the units of `patch` in the tree of `kbuild`. `scratch` is an empty directory.
/// `index_cache`: where the tree's include index is kept between builds (`None`: scan each time).
pub fn select(
    runner: &dyn Runner,
    kbuild: &Kbuild,
    patch: &PatchFile,
    scratch: &Path,
    index_cache: Option<&Path>,
) -> Result<Selection> {
    let tree = &kbuild.tree;
    let (units, headers, ignored) = classify_changes(patch)?;
    let mut sel = Selection {
        headers: headers.clone(),
        ignored,
        ..Default::default()
    };
    for u in &units {
        if !tree.join(u).is_file() {
            return Err(BuildError::MissingUnit {
                tree: tree.clone(),
                unit: u.clone(),
            });
        }
    }
    let mut index: Option<IncludeIndex> = None;
    let mut includers_of = |file: &Path, sel: &mut Selection| -> Result<Vec<PathBuf>> {
        if index.is_none() {
            let t = Instant::now();
            index = Some(match index_cache {
                Some(c) => IncludeIndex::load_or_build(tree, "x86", c)?,
                None => IncludeIndex::build(tree, "x86")?,
            });
            sel.timings.push("include-scan", t.elapsed());
        }
        let idx = index.as_ref().expect("index was just built");
        Ok(idx
            .units_including(file)
            .into_iter()
            .filter(|u| u != file)
            .collect())
    };
    // Candidates: unit → changed files it was found through (empty: changed itself).
    let mut candidates: BTreeMap<PathBuf, BTreeSet<PathBuf>> =
        units.iter().map(|u| (u.clone(), BTreeSet::new())).collect();
    for h in &headers {
        for u in includers_of(h, &mut sel)? {
            if !units.contains(&u) {
                candidates.entry(u).or_default().insert(h.clone());
            }
        }
    }
    if candidates.is_empty() {
        return Err(nothing_to_compile(patch));
    }
    let t = Instant::now();
    let mut placed = place(runner, kbuild, candidates, scratch)?;
    // A changed .c that is no object of its own is #included by one (6.1's
    // kernel/sched/build_policy.c includes rt.c): its includers are the units.
    let mut second: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (unit, via, object, placement) in std::mem::take(&mut placed) {
        match placement {
            Some(p) => sel.units.push(SelectedUnit {
                unit,
                object,
                placement: p,
                via_headers: via,
            }),
            None if via.is_empty() => {
                let includers = includers_of(&unit, &mut sel)?;
                if includers.is_empty() {
                    return Err(BuildError::UnitNotBuilt { unit, object });
                }
                for i in includers {
                    if !units.contains(&i) {
                        second.entry(i).or_default().insert(unit.clone());
                    }
                }
            }
            None => sel.skipped.push(SkippedUnit {
                unit,
                reason: "not built in this configuration".into(),
            }),
        }
    }
    second.retain(|u, _| !sel.units.iter().any(|s| &s.unit == u));
    if !second.is_empty() {
        placed = place(runner, kbuild, second, scratch)?;
        for (unit, via, object, placement) in placed {
            match placement {
                Some(p) => match sel.units.iter_mut().find(|s| s.unit == unit) {
                    Some(s) => s.via_headers.extend(via),
                    None => sel.units.push(SelectedUnit {
                        unit,
                        object,
                        placement: p,
                        via_headers: via,
                    }),
                },
                None => sel.skipped.push(SkippedUnit {
                    unit,
                    reason: "not built in this configuration".into(),
                }),
            }
        }
    }
    sel.timings.push("probe", t.elapsed());
    sel.units.sort_by(|a, b| a.unit.cmp(&b.unit));
    if sel.units.is_empty() {
        return Err(nothing_to_compile(patch));
    }
    Ok(sel)
}

type Placed = (PathBuf, Vec<PathBuf>, String, Option<Placement>);

/// Probes where each candidate's object goes.
fn place(
    runner: &dyn Runner,
    kbuild: &Kbuild,
    candidates: BTreeMap<PathBuf, BTreeSet<PathBuf>>,
    scratch: &Path,
) -> Result<Vec<Placed>> {
    let objects: Vec<String> = candidates
        .keys()
        .map(|u| {
            object_of(u).ok_or_else(|| BuildError::Unsupported {
                path: u.clone(),
                reason: "not a .c or .S file".into(),
            })
        })
        .collect::<Result<_>>()?;
    let placements = probe::probe(runner, kbuild, &objects, scratch)?;
    Ok(candidates
        .into_iter()
        .zip(objects)
        .map(|((unit, via), object)| {
            let (object, p) = match placements.get(&object) {
                Some(probed) => (probed.target.clone(), probed.placement.clone()),
                None => (object, None),
            };
            (unit, via.into_iter().collect(), object, p)
        })
        .collect())
}

fn nothing_to_compile(patch: &PatchFile) -> BuildError {
    BuildError::NothingToCompile {
        patch: patch.path.clone(),
        files: patch
            .touched_paths()
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(changes: Vec<FileChange>) -> PatchFile {
        PatchFile {
            path: "fix.patch".into(),
            strip: 1,
            changes,
        }
    }

    #[test]
    fn changes_are_split_by_kind() {
        let p = patch(vec![
            FileChange::Modified("fs/proc/cmdline.c".into()),
            FileChange::Modified("include/linux/x.h".into()),
            FileChange::Modified("fs/proc/Makefile".into()),
            FileChange::Added("include/linux/new.h".into()),
            FileChange::Modified("arch/x86/entry/entry_64.S".into()),
        ]);
        let (u, h, i) = classify_changes(&p).unwrap();
        assert_eq!(
            u,
            vec![
                PathBuf::from("fs/proc/cmdline.c"),
                PathBuf::from("arch/x86/entry/entry_64.S")
            ]
        );
        assert_eq!(h, vec![PathBuf::from("include/linux/x.h")]);
        assert_eq!(
            i,
            vec![
                PathBuf::from("fs/proc/Makefile"),
                PathBuf::from("include/linux/new.h")
            ]
        );
    }

    #[test]
    fn new_or_renamed_units_are_refused() {
        for c in [
            FileChange::Added("fs/new.c".into()),
            FileChange::Deleted("fs/old.c".into()),
            FileChange::Renamed {
                from: "a.c".into(),
                to: "b.c".into(),
            },
        ] {
            assert!(matches!(
                classify_changes(&patch(vec![c])),
                Err(BuildError::Unsupported { .. })
            ));
        }
    }
}
