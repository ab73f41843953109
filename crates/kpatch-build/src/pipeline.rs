//! The front half of `kpatch-rs build`: select the affected units, compile them, apply the
//! patch, compile them again, restore the tree. The result is one original/patched object
//! pair per unit, for the differ.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::apply::{self, PatchReport};
use crate::compile;
use crate::error::{io_err, BuildError, Result};
use crate::exec::Runner;
use crate::interrupt;
use crate::patchfile::PatchFile;
use crate::reach::{self, FilterCounts};
use crate::select::{self, SelectedUnit, SkippedUnit};
use crate::timing::Timings;
use crate::tree::PreparedTree;

/// The original and patched object compiled from one translation unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectPair {
    /// `fs/proc/cmdline.c`
    pub unit: PathBuf,
    /// `fs/proc/cmdline.o`
    pub object: String,
    /// `vmlinux`, or the module the object is linked into (`ext4`).
    pub klp_object: String,
    /// `<work>/orig/fs/proc/cmdline.o`
    pub orig: PathBuf,
    /// `<work>/patched/fs/proc/cmdline.o`
    pub patched: PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct BuildOutput {
    pub pairs: Vec<ObjectPair>,
    /// GNU patch's account (hunks applied with offset or fuzz).
    pub patch: PatchReport,
    /// Changed files that are neither source nor header.
    pub ignored: Vec<PathBuf>,
    /// What the compiler said about the patched sources (warnings and their context).
    pub patched_warnings: Vec<String>,
    /// Header includers that were dropped (not built, not including it in this config, or
    /// out of the change's reach).
    pub skipped: Vec<SkippedUnit>,
    /// What the header filters removed.
    pub filter: FilterCounts,
    /// Original objects taken from the cache, and compiled.
    pub orig_cached: usize,
    pub orig_compiled: usize,
    pub timings: Timings,
}

/// Where the pipeline reports what it starts and how far a long step has got.
pub trait Progress {
    fn stage(&self, what: &str);
    /// `done` of `total` (`what`: `units preprocessed`, `patched objects compiled`).
    fn count(&self, _what: &str, _done: usize, _total: usize) {}
}

impl<F: Fn(&str)> Progress for F {
    fn stage(&self, what: &str) {
        self(what)
    }
}

/// Builds every affected object of `patch` twice in `tree`. `work` receives `orig/`,
/// `patched/` and scratch files. The tree is restored before this returns, whatever happens.
pub fn build_object_pairs(
    runner: &dyn Runner,
    tree: &PreparedTree,
    patch: &PatchFile,
    work: &Path,
) -> Result<BuildOutput> {
    build_object_pairs_with_progress(runner, tree, patch, work, &|_: &str| {})
}

/// [`build_object_pairs`], telling `progress` what it starts: `selecting units`,
/// `preprocessing 40 header includers`, `compiling 4 original objects`, `applying the patch`,
/// `compiling 4 patched objects`, `restoring the tree`; and how far the long steps are.
pub fn build_object_pairs_with_progress(
    runner: &dyn Runner,
    tree: &PreparedTree,
    patch: &PatchFile,
    work: &Path,
    progress: &dyn Progress,
) -> Result<BuildOutput> {
    let kbuild = &tree.kbuild;
    let root = tree.root();
    let mut out = BuildOutput::default();
    fs::create_dir_all(work).map_err(io_err(work))?;

    // Refuse a patch that does not apply before spending time on compiling.
    let t = Instant::now();
    apply::check(runner, root, patch)?;
    out.timings.push("check-patch", t.elapsed());
    interrupt::check()?;

    progress.stage("selecting units");
    let scratch = work.join("probe");
    let _ = fs::remove_dir_all(&scratch);
    let sel = select::select(
        runner,
        kbuild,
        patch,
        &scratch,
        tree.include_index_cache.as_deref(),
    )?;
    out.timings.extend(&sel.timings);
    out.ignored = sel.ignored.clone();
    out.skipped = sel.skipped.clone();
    interrupt::check()?;

    let units = filter_header_units(runner, kbuild, patch, sel.units, work, progress, &mut out)?;
    interrupt::check()?;

    let orig_dir = work.join("orig");
    let patched_dir = work.join("patched");
    for d in [&orig_dir, &patched_dir] {
        let _ = fs::remove_dir_all(d);
    }
    let objects: Vec<String> = units.iter().map(|u| u.object.clone()).collect();
    // A user's built tree gets its own objects back, whatever happens below.
    let saved_dir = work.join("saved");
    let _ = fs::remove_dir_all(&saved_dir);
    let _saved = if tree.is_user_tree {
        Some(compile::SavedObjects::save(root, &objects, &saved_dir)?)
    } else {
        None
    };
    let t = Instant::now();
    let cmds = original_objects(runner, tree, &objects, &orig_dir, progress, &mut out)?;
    out.timings.push("compile-orig", t.elapsed());
    interrupt::check()?;

    // Units found through a header stay only if the compiler really read that header.
    let mut kept = Vec::new();
    for (u, text) in units.into_iter().zip(cmds) {
        // kbuild's own command line confirms the vmlinux/module placement.
        let compiled =
            compile::compiled_for_module(&text).unwrap_or_else(|| kpatch_common::VMLINUX.into());
        if compiled != u.placement.klp_object() {
            return Err(BuildError::PlacementMismatch {
                object: u.object.clone(),
                expected: u.placement.klp_object().to_string(),
                compiled,
            });
        }
        let keep = u.via_headers.is_empty()
            || u.via_headers
                .iter()
                .any(|h| compile::deps_mention(&text, h));
        if keep {
            kept.push(u);
        } else {
            out.skipped.push(SkippedUnit {
                unit: u.unit.clone(),
                reason: "does not include the changed header in this configuration".into(),
            });
            let _ = fs::remove_file(orig_dir.join(&u.object));
        }
    }
    let units = kept;
    let objects: Vec<String> = units.iter().map(|u| u.object.clone()).collect();

    progress.stage("applying the patch");
    let t = Instant::now();
    let applied = apply::apply(runner, root, patch)?;
    out.timings.push("apply", t.elapsed());
    out.patch = applied.report.clone();
    progress.stage(&format!(
        "compiling {} patched object{}",
        objects.len(),
        plural(objects.len())
    ));
    let t = Instant::now();
    let total = objects.len();
    let built = interrupt::check().and_then(|_| {
        compile::compile_in_order(runner, kbuild, &objects, &patched_dir, &mut |n| {
            progress.count("patched objects compiled", n, total)
        })
    });
    out.timings.push("compile-patched", t.elapsed());
    progress.stage("restoring the tree");
    let t = Instant::now();
    let reverted = applied.revert();
    // Never leave objects compiled from the patched text in the tree.
    let removed = compile::remove_objects(root, &objects);
    out.patched_warnings = built?;
    reverted?;
    removed?;
    if !sel.headers.is_empty() && !kbuild.prepared {
        // Without `-o prepare`, generated headers (asm-offsets.h, bounds.h) may have been
        // regenerated from the patched headers; bring them back in line with the sources.
        runner.run_ok(&kbuild.make(["prepare"]))?;
    }
    out.timings.push("revert", t.elapsed());

    out.pairs = units
        .into_iter()
        .map(|u| ObjectPair {
            orig: orig_dir.join(&u.object),
            patched: patched_dir.join(&u.object),
            klp_object: u.placement.klp_object().to_string(),
            unit: u.unit,
            object: u.object,
        })
        .collect();
    Ok(out)
}

/// Only the selection and the header filters of [`build_object_pairs_with_progress`], nothing
/// compiled: what a header patch would compile (for measuring the filters on big headers).
pub fn select_and_filter(
    runner: &dyn Runner,
    tree: &PreparedTree,
    patch: &PatchFile,
    work: &Path,
    progress: &dyn Progress,
) -> Result<(Vec<SelectedUnit>, BuildOutput)> {
    let mut out = BuildOutput::default();
    fs::create_dir_all(work).map_err(io_err(work))?;
    apply::check(runner, tree.root(), patch)?;
    let scratch = work.join("probe");
    let _ = fs::remove_dir_all(&scratch);
    let sel = select::select(
        runner,
        &tree.kbuild,
        patch,
        &scratch,
        tree.include_index_cache.as_deref(),
    )?;
    out.timings.extend(&sel.timings);
    out.skipped = sel.skipped.clone();
    let units = filter_header_units(
        runner,
        &tree.kbuild,
        patch,
        sel.units,
        work,
        progress,
        &mut out,
    )?;
    Ok((units, out))
}

/// The header filters ([`reach::filter`]) over the selected units: what is left to compile, the
/// likeliest to change first.
fn filter_header_units(
    runner: &dyn Runner,
    kbuild: &crate::Kbuild,
    patch: &PatchFile,
    units: Vec<SelectedUnit>,
    work: &Path,
    progress: &dyn Progress,
    out: &mut BuildOutput,
) -> Result<Vec<SelectedUnit>> {
    let headed = units.iter().filter(|u| !u.via_headers.is_empty()).count();
    // KPATCH_RS_HEADER_FILTER=0 compiles every includer: to check the filters against the
    // differ, and to measure what they save.
    if headed == 0 || std::env::var_os("KPATCH_RS_HEADER_FILTER").is_some_and(|v| v == "0") {
        return Ok(units);
    }
    progress.stage(&format!(
        "preprocessing {headed} header includer{} without and with the patch",
        plural(headed)
    ));
    let t = Instant::now();
    let (ranked, skipped, counts) = reach::filter(
        runner,
        kbuild,
        patch,
        units,
        &work.join("preprocessed"),
        &mut |n, m| progress.count("units preprocessed", n, m),
    )?;
    out.timings.push("preprocess", t.elapsed());
    progress.stage(&format!(
        "header includers: {} identical after preprocessing, {} changed only in definitions they never use, {} to compile",
        counts.identical, counts.unused_only, counts.kept
    ));
    out.skipped.extend(skipped);
    out.filter = counts;
    Ok(ranked.into_iter().map(|(u, _)| u).collect())
}

/// Puts the original object of each of `objects` in `dest`: from the tree's object cache where
/// it has it, else compiled (and then cached). Returns each object's kbuild command file text.
fn original_objects(
    runner: &dyn Runner,
    tree: &PreparedTree,
    objects: &[String],
    dest: &Path,
    progress: &dyn Progress,
    out: &mut BuildOutput,
) -> Result<Vec<String>> {
    let root = tree.root();
    let mut cmds: Vec<Option<String>> = vec![None; objects.len()];
    if let Some(cache) = &tree.object_cache {
        for (k, o) in objects.iter().enumerate() {
            if let Some(hit) = cache.lookup(root, o) {
                let dst = dest.join(o);
                if let Some(parent) = dst.parent() {
                    fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                fs::write(&dst, &hit.object).map_err(io_err(&dst))?;
                cmds[k] = Some(hit.cmd);
            }
        }
    }
    let missing: Vec<String> = objects
        .iter()
        .zip(&cmds)
        .filter(|(_, c)| c.is_none())
        .map(|(o, _)| o.clone())
        .collect();
    out.orig_cached = objects.len() - missing.len();
    out.orig_compiled = missing.len();
    if out.orig_cached > 0 {
        progress.stage(&format!(
            "{} original object{} from the cache",
            out.orig_cached,
            plural(out.orig_cached)
        ));
    }
    if !missing.is_empty() {
        progress.stage(&format!(
            "compiling {} original object{}",
            missing.len(),
            plural(missing.len())
        ));
        let total = missing.len();
        compile::compile_in_order(runner, &tree.kbuild, &missing, dest, &mut |n| {
            progress.count("original objects compiled", n, total)
        })?;
    }
    for (k, o) in objects.iter().enumerate() {
        if cmds[k].is_some() {
            continue;
        }
        let cmd = compile::cmd_file(root, o);
        let text = fs::read_to_string(&cmd).map_err(io_err(&cmd))?;
        if let Some(cache) = &tree.object_cache {
            // The tree is unpatched and locked: this object is the original.
            cache.store(root, o, &text)?;
        }
        cmds[k] = Some(text);
    }
    Ok(cmds.into_iter().flatten().collect())
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
