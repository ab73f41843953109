//! A tree for a featureset flavour (`rt-amd64`): Debian's series applied to the unpacked
//! `linux-source`, then the result checked against the kernel's own featureset headers. See
//! `kpatch_target::featureset` for where the series comes from.

use std::fs;
use std::path::{Path, PathBuf};

use kpatch_target::FeaturesetSeries;

use crate::error::{io_err, BuildError, Result};
use crate::exec::{Cmd, Runner};

/// Where the notes of the featureset applied to a tree are kept, inside the tree.
pub const NOTES_FILE: &str = ".kpatch-rs-featureset";

/// What a tree needs from a featureset kernel's packages.
#[derive(Debug, Clone)]
pub struct FeaturesetSource {
    pub series: FeaturesetSeries,
    /// The kernel's own `usr/src/linux-headers-<base>-common-<featureset>`.
    pub headers: PathBuf,
    /// The series' changelog entries between the version it came from and the kernel's.
    pub changes: Vec<String>,
}

/// The series applied to a tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub applied: usize,
    /// Patches whose change the source already has (the stable update took them in).
    pub already: Vec<String>,
    /// Header files compared with the kernel's own.
    pub headers_compared: usize,
}

fn patch_cmd(tree: &Path, patch: &Path) -> Cmd {
    Cmd::new("patch")
        .args([
            "-p1",
            "--batch",
            "--silent",
            "--fuzz=0",
            "--no-backup-if-mismatch",
            "-i",
        ])
        .arg(patch)
        .dir(tree)
}

/// Applies the series to `tree` (an unpacked source that no one uses yet). Each patch must
/// apply cleanly with no fuzz, or be already in the source (its reverse applies cleanly);
/// anything else is an error naming the patch, the tree then being thrown away by the caller.
pub fn apply_series(runner: &dyn Runner, tree: &Path, fs: &FeaturesetSource) -> Result<Applied> {
    let mut out = Applied::default();
    for patch in &fs.series.patches {
        let name = patch
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let forward = runner.run(&patch_cmd(tree, patch).arg("--dry-run").arg("--forward"))?;
        if forward.success() {
            runner.run_ok(&patch_cmd(tree, patch).arg("--forward"))?;
            out.applied += 1;
            continue;
        }
        let reverse =
            runner.run(&patch_cmd(tree, patch).args(["--dry-run", "--reverse", "--force"]))?;
        if reverse.success() {
            out.already.push(name);
            continue;
        }
        return Err(BuildError::FeaturesetPatch {
            patch: patch.clone(),
            series: fs.series.describe(),
            exact: fs.series.exact,
            skipped: fs.series.skipped.clone(),
            output: forward.combined(),
        });
    }
    Ok(out)
}

/// Compares every header the kernel's own featureset headers hold (`include/`,
/// `arch/x86/include/`) with the tree's file of the same path; returns how many were compared.
/// A difference means the tree is not the source the kernel was built from.
pub fn check_headers(tree: &Path, headers: &Path) -> Result<usize> {
    let mut compared = 0;
    let mut differing = Vec::new();
    let mut stack: Vec<PathBuf> = ["include", "arch/x86/include"]
        .iter()
        .map(|d| headers.join(d))
        .filter(|d| d.is_dir())
        .collect();
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let path = e.path();
            let ft = e.file_type().map_err(io_err(&path))?;
            if ft.is_dir() {
                stack.push(path);
                continue;
            }
            if !ft.is_file() {
                continue;
            }
            let rel = path.strip_prefix(headers).unwrap_or(&path).to_path_buf();
            compared += 1;
            let theirs = fs::read(&path).map_err(io_err(&path))?;
            match fs::read(tree.join(&rel)) {
                Ok(ours) if ours == theirs => {}
                _ => differing.push(rel),
            }
        }
    }
    if differing.is_empty() {
        return Ok(compared);
    }
    differing.sort();
    Err(BuildError::FeaturesetHeaders {
        tree: tree.to_path_buf(),
        headers: headers.to_path_buf(),
        count: differing.len(),
        files: differing.into_iter().take(8).collect(),
    })
}

/// The lines a build shows about the featureset of its tree.
pub fn notes(fs: &FeaturesetSource, applied: &Applied) -> Vec<String> {
    let mut out = vec![format!(
        "{}: {} patches applied, {} already in the source; {} headers equal to the kernel's own",
        fs.series.describe(),
        applied.applied,
        applied.already.len(),
        applied.headers_compared
    )];
    if !fs.series.exact {
        out.push(format!(
            "the archive has not kept the packaging of this kernel's version: the {} series was taken from {} {} ({})",
            fs.series.featureset,
            fs.series.source,
            fs.series.version,
            fs.series.skipped.join("; ")
        ));
        for c in &fs.changes {
            out.push(format!("changed in the series since: {c}"));
        }
    }
    for a in &applied.already {
        out.push(format!("already in the source: {a}"));
    }
    out
}

/// Applies and checks the featureset on a freshly unpacked `tree`, and records the notes in
/// it ([`NOTES_FILE`]).
pub fn prepare_tree(runner: &dyn Runner, tree: &Path, fs: &FeaturesetSource) -> Result<()> {
    let mut applied = apply_series(runner, tree, fs)?;
    applied.headers_compared = check_headers(tree, &fs.headers)?;
    let path = tree.join(NOTES_FILE);
    let text = notes(fs, &applied).join("\n") + "\n";
    fs::write(&path, text).map_err(io_err(&path))
}

/// The notes recorded in a prepared tree (empty for a tree without a featureset).
pub fn read_notes(tree: &Path) -> Vec<String> {
    fs::read_to_string(tree.join(NOTES_FILE))
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::SystemRunner;

    fn series(dir: &Path, patches: &[(&str, &str)]) -> FeaturesetSource {
        let mut paths = Vec::new();
        for (name, text) in patches {
            let p = dir.join(name);
            fs::write(&p, text).unwrap();
            paths.push(p);
        }
        FeaturesetSource {
            series: FeaturesetSeries {
                featureset: "rt",
                source: "linux".into(),
                version: "6.1.176-1".into(),
                exact: false,
                patches: paths,
                skipped: vec!["linux 6.1.192-3: 404  Not Found".into()],
            },
            headers: dir.join("headers"),
            changes: vec!["6.1.177-1: [rt] Drop \"b\"".into()],
        }
    }

    const ADD_RT: &str = "--- a/include/linux/preempt.h\n+++ b/include/linux/preempt.h\n@@ -1,2 +1,3 @@\n a\n+rt\n b\n";
    const MERGED: &str = "--- a/kernel/x.c\n+++ b/kernel/x.c\n@@ -1,2 +1,3 @@\n x\n+fix\n y\n";
    const FOREIGN: &str = "--- a/kernel/x.c\n+++ b/kernel/x.c\n@@ -1,2 +1,3 @@\n q\n+w\n z\n";

    fn tree(dir: &Path) -> PathBuf {
        let t = dir.join("tree");
        fs::create_dir_all(t.join("include/linux")).unwrap();
        fs::create_dir_all(t.join("kernel")).unwrap();
        fs::write(t.join("include/linux/preempt.h"), "a\nb\n").unwrap();
        // the stable update already took the second patch in
        fs::write(t.join("kernel/x.c"), "x\nfix\ny\n").unwrap();
        t
    }

    #[test]
    fn series_applies_skipping_what_the_source_already_has_and_headers_must_match() {
        let d = tempfile::tempdir().unwrap();
        let t = tree(d.path());
        let fs_src = series(
            d.path(),
            &[("0001-rt.patch", ADD_RT), ("0002-merged.patch", MERGED)],
        );
        let h = d.path().join("headers/include/linux");
        fs::create_dir_all(&h).unwrap();
        fs::write(h.join("preempt.h"), "a\nrt\nb\n").unwrap();

        prepare_tree(&SystemRunner, &t, &fs_src).unwrap();
        assert_eq!(
            fs::read_to_string(t.join("include/linux/preempt.h")).unwrap(),
            "a\nrt\nb\n"
        );
        assert_eq!(
            fs::read_to_string(t.join("kernel/x.c")).unwrap(),
            "x\nfix\ny\n"
        );
        let notes = read_notes(&t);
        assert!(notes[0].contains("rt series of linux 6.1.176-1: 1 patches applied, 1 already in the source; 1 headers"), "{notes:?}");
        assert!(
            notes
                .iter()
                .any(|n| n.contains("taken from linux 6.1.176-1")),
            "{notes:?}"
        );
        assert!(
            notes
                .iter()
                .any(|n| n == "already in the source: 0002-merged.patch"),
            "{notes:?}"
        );
        assert!(notes.iter().any(|n| n.contains("[rt] Drop")), "{notes:?}");
    }

    #[test]
    fn a_patch_that_neither_applies_nor_is_in_the_source_is_named() {
        let d = tempfile::tempdir().unwrap();
        let t = tree(d.path());
        let fs_src = series(
            d.path(),
            &[("0001-rt.patch", ADD_RT), ("0007-foreign.patch", FOREIGN)],
        );
        let err = apply_series(&SystemRunner, &t, &fs_src).unwrap_err();
        assert!(
            matches!(&err, BuildError::FeaturesetPatch { patch, .. } if patch.ends_with("0007-foreign.patch")),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("rt series of linux 6.1.176-1"),
            "{err}"
        );
        // The newer packaging that could not be fetched is named, with why: a mirror that
        // lists a version but does not serve it is told from an archive that dropped it.
        assert!(
            err.to_string()
                .contains("the newest that could be fetched for this kernel; not fetched: linux 6.1.192-3: 404"),
            "{err}"
        );
    }

    #[test]
    fn headers_that_differ_from_the_kernels_own_are_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        let t = tree(d.path());
        let h = d.path().join("headers");
        fs::create_dir_all(h.join("include/linux")).unwrap();
        fs::create_dir_all(h.join("arch/x86/include/asm")).unwrap();
        fs::write(h.join("include/linux/preempt.h"), "a\nrt\nb\n").unwrap();
        fs::write(h.join("arch/x86/include/asm/only-theirs.h"), "x").unwrap();
        let err = check_headers(&t, &h).unwrap_err();
        match &err {
            BuildError::FeaturesetHeaders { count, files, .. } => {
                assert_eq!(*count, 2);
                assert_eq!(
                    files,
                    &vec![
                        PathBuf::from("arch/x86/include/asm/only-theirs.h"),
                        PathBuf::from("include/linux/preempt.h")
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
