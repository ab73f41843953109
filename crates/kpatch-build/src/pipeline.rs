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
use crate::select::{self, SkippedUnit};
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
    /// Header includers that were dropped (not built, or not including it in this config).
    pub skipped: Vec<SkippedUnit>,
    pub timings: Timings,
}

/// Builds every affected object of `patch` twice in `tree`. `work` receives `orig/`,
/// `patched/` and scratch files. The tree is restored before this returns, whatever happens.
pub fn build_object_pairs(
    runner: &dyn Runner,
    tree: &PreparedTree,
    patch: &PatchFile,
    work: &Path,
) -> Result<BuildOutput> {
    build_object_pairs_with_progress(runner, tree, patch, work, &|_| {})
}

/// [`build_object_pairs`], telling `progress` what it starts: `selecting units`,
/// `compiling 4 original objects`, `applying the patch`, `compiling 4 patched objects`,
/// `restoring the tree`.
pub fn build_object_pairs_with_progress(
    runner: &dyn Runner,
    tree: &PreparedTree,
    patch: &PatchFile,
    work: &Path,
    progress: &dyn Fn(&str),
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

    progress("selecting units");
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

    let orig_dir = work.join("orig");
    let patched_dir = work.join("patched");
    for d in [&orig_dir, &patched_dir] {
        let _ = fs::remove_dir_all(d);
    }
    let objects: Vec<String> = sel.units.iter().map(|u| u.object.clone()).collect();
    // A user's built tree gets its own objects back, whatever happens below.
    let saved_dir = work.join("saved");
    let _ = fs::remove_dir_all(&saved_dir);
    let _saved = if tree.is_user_tree {
        Some(compile::SavedObjects::save(root, &objects, &saved_dir)?)
    } else {
        None
    };
    progress(&format!(
        "compiling {} original object{}",
        objects.len(),
        plural(objects.len())
    ));
    let t = Instant::now();
    compile::compile(runner, kbuild, &objects, &orig_dir)?;
    out.timings.push("compile-orig", t.elapsed());
    interrupt::check()?;

    // Units found through a header stay only if the compiler really read that header.
    let mut units = Vec::new();
    for u in sel.units {
        // kbuild's own command line confirms the vmlinux/module placement.
        let cmd = compile::cmd_file(root, &u.object);
        let text = fs::read_to_string(&cmd).map_err(io_err(&cmd))?;
        let compiled =
            compile::compiled_for_module(&text).unwrap_or_else(|| kpatch_common::VMLINUX.into());
        if compiled != u.placement.klp_object() {
            return Err(BuildError::PlacementMismatch {
                object: u.object.clone(),
                expected: u.placement.klp_object().to_string(),
                compiled,
            });
        }
        let mut keep = u.via_headers.is_empty();
        for h in &u.via_headers {
            keep |= compile::object_depends_on(root, &u.object, h)?;
        }
        if keep {
            units.push(u);
        } else {
            out.skipped.push(SkippedUnit {
                unit: u.unit.clone(),
                reason: "does not include the changed header in this configuration".into(),
            });
            let _ = fs::remove_file(orig_dir.join(&u.object));
        }
    }
    let objects: Vec<String> = units.iter().map(|u| u.object.clone()).collect();

    progress("applying the patch");
    let t = Instant::now();
    let applied = apply::apply(runner, root, patch)?;
    out.timings.push("apply", t.elapsed());
    out.patch = applied.report.clone();
    progress(&format!(
        "compiling {} patched object{}",
        objects.len(),
        plural(objects.len())
    ));
    let t = Instant::now();
    let built =
        interrupt::check().and_then(|_| compile::compile(runner, kbuild, &objects, &patched_dir));
    out.timings.push("compile-patched", t.elapsed());
    progress("restoring the tree");
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

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
