//! Applying a patch to a source tree with GNU patch: dry run first, journal, then for real.
//! The returned guard restores the tree when reverted or dropped.

use std::path::{Path, PathBuf};

use crate::error::{io_err, BuildError, Result};
use crate::exec::{Cmd, Runner};
use crate::journal;
use crate::patchfile::PatchFile;

/// What GNU patch said about an application that succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchReport {
    /// Files patch reported patching, in order.
    pub files: Vec<PathBuf>,
    /// Hunks that needed an offset or fuzz, as `file: Hunk #n succeeded at L (offset k lines).`
    pub inexact: Vec<String>,
}

impl PatchReport {
    /// Reads GNU patch's stdout.
    pub fn parse(output: &str) -> Self {
        let mut r = PatchReport::default();
        let mut current = String::new();
        for line in output.lines() {
            if let Some(f) = line
                .strip_prefix("patching file ")
                .or_else(|| line.strip_prefix("checking file "))
            {
                current = f.trim_matches(|c| c == '\'' || c == '`').to_string();
                r.files.push(PathBuf::from(&current));
            } else if line.starts_with("Hunk #")
                && (line.contains("offset") || line.contains("fuzz"))
            {
                r.inexact.push(format!("{current}: {line}"));
            }
        }
        r
    }
}

fn patch_cmd(tree: &Path, patch: &PatchFile, dry_run: bool) -> Cmd {
    let mut c = Cmd::new("patch")
        .arg("-d")
        .arg(tree)
        .arg(format!("-p{}", patch.strip))
        .args([
            "--forward",
            "--force",
            "--no-backup-if-mismatch",
            "--reject-file=-",
            "-i",
        ])
        .arg(&patch.path);
    if dry_run {
        c = c.arg("--dry-run");
    }
    c
}

/// A patch applied to a tree. Reverting (or dropping) restores every file it touched.
#[derive(Debug)]
pub struct AppliedPatch {
    tree: PathBuf,
    reverted: bool,
    pub report: PatchReport,
    /// `#line` directives added to the patched sources (see [`crate::lines`]).
    pub line_directives: usize,
}

impl AppliedPatch {
    pub fn tree(&self) -> &Path {
        &self.tree
    }
    /// Restores the tree to its state before the patch.
    pub fn revert(mut self) -> Result<()> {
        self.reverted = true;
        journal::restore(&self.tree).map(|_| ())
    }
}

impl Drop for AppliedPatch {
    fn drop(&mut self) {
        if !self.reverted {
            // Errors cannot be returned from drop; the journal stays and the next build
            // restores the tree before it starts.
            let _ = journal::restore(&self.tree);
        }
    }
}

/// Checks that `patch` applies to `tree` without touching it.
pub fn check(runner: &dyn Runner, tree: &Path, patch: &PatchFile) -> Result<PatchReport> {
    patch.check_inside(tree)?;
    let out = runner.run(&patch_cmd(tree, patch, true))?;
    if !out.success() {
        return Err(BuildError::PatchDoesNotApply {
            patch: patch.path.clone(),
            tree: tree.to_path_buf(),
            output: out.combined(),
        });
    }
    Ok(PatchReport::parse(&out.stdout))
}

/// The C sources and headers a patch modifies (where `#line` keeps line numbers).
fn c_files(patch: &PatchFile) -> Vec<PathBuf> {
    patch
        .changes
        .iter()
        .filter_map(|c| match c {
            crate::patchfile::FileChange::Modified(p) => Some(p.clone()),
            _ => None,
        })
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("c" | "h")))
        .collect()
}

/// Applies `patch` to `tree`: dry run, journal of every touched file, real run, then `#line`
/// directives so that the lines the patch did not change keep their numbers ([`crate::lines`]).
/// On any failure the tree is restored before the error is returned.
pub fn apply(runner: &dyn Runner, tree: &Path, patch: &PatchFile) -> Result<AppliedPatch> {
    check(runner, tree, patch)?;
    journal::begin(tree, &patch.touched_paths())?;
    let applied = AppliedPatch {
        tree: tree.to_path_buf(),
        reverted: false,
        report: PatchReport::default(),
        line_directives: 0,
    };
    let mut originals = Vec::new();
    for rel in c_files(patch) {
        let p = tree.join(&rel);
        match std::fs::read_to_string(&p) {
            Ok(text) => originals.push((p, text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&p)(e)),
        }
    }
    let out = runner.run(&patch_cmd(tree, patch, false))?;
    if !out.success() {
        applied.revert()?;
        return Err(BuildError::PatchDoesNotApply {
            patch: patch.path.clone(),
            tree: tree.to_path_buf(),
            output: out.combined(),
        });
    }
    let mut applied = applied;
    applied.report = PatchReport::parse(&out.stdout);
    for (p, original) in originals {
        let patched = std::fs::read_to_string(&p).map_err(io_err(&p))?;
        let (text, n) = crate::lines::keep_line_numbers(&original, &patched);
        if n > 0 {
            std::fs::write(&p, text).map_err(io_err(&p))?;
            applied.line_directives += n;
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::SystemRunner;
    use std::fs;

    fn have_patch() -> bool {
        std::process::Command::new("patch")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn fake_tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("fs/proc")).unwrap();
        let body: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        fs::write(t.path().join("fs/proc/cmdline.c"), body).unwrap();
        t
    }

    fn write_patch(dir: &Path, text: &str) -> PatchFile {
        let p = dir.join("fix.patch");
        fs::write(&p, text).unwrap();
        PatchFile::read(&p, 1).unwrap()
    }

    #[test]
    fn report_parses_offsets_and_fuzz() {
        let out = "patching file fs/proc/cmdline.c\nHunk #1 succeeded at 12 (offset 2 lines).\nHunk #2 succeeded at 40 with fuzz 1.\npatching file a.c\n";
        let r = PatchReport::parse(out);
        assert_eq!(
            r.files,
            vec![PathBuf::from("fs/proc/cmdline.c"), PathBuf::from("a.c")]
        );
        assert_eq!(
            r.inexact,
            vec![
                "fs/proc/cmdline.c: Hunk #1 succeeded at 12 (offset 2 lines).".to_string(),
                "fs/proc/cmdline.c: Hunk #2 succeeded at 40 with fuzz 1.".to_string(),
            ]
        );
    }

    #[test]
    fn applies_reports_offset_and_reverts() {
        if !have_patch() {
            eprintln!("skipped: GNU patch is not installed");
            return;
        }
        let t = fake_tree();
        let work = tempfile::tempdir().unwrap();
        // The hunk says line 3 but its context starts at line 5: an offset of 2.
        let p = write_patch(work.path(), "--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -3,3 +3,3 @@\n line 5\n-line 6\n+line six\n line 7\n--- /dev/null\n+++ b/fs/proc/new.c\n@@ -0,0 +1 @@\n+new\n");
        let before = fs::read(t.path().join("fs/proc/cmdline.c")).unwrap();
        let applied = apply(&SystemRunner, t.path(), &p).unwrap();
        assert_eq!(applied.report.inexact.len(), 1, "{:?}", applied.report);
        assert!(
            applied.report.inexact[0].contains("offset 2 lines"),
            "{:?}",
            applied.report
        );
        assert!(fs::read_to_string(t.path().join("fs/proc/cmdline.c"))
            .unwrap()
            .contains("line six"));
        assert!(t.path().join("fs/proc/new.c").exists());
        assert!(journal::journal_path(t.path()).exists());
        applied.revert().unwrap();
        assert_eq!(
            fs::read(t.path().join("fs/proc/cmdline.c")).unwrap(),
            before
        );
        assert!(!t.path().join("fs/proc/new.c").exists());
        assert!(!journal::journal_path(t.path()).exists());
    }

    #[test]
    fn drop_reverts() {
        if !have_patch() {
            eprintln!("skipped: GNU patch is not installed");
            return;
        }
        let t = fake_tree();
        let work = tempfile::tempdir().unwrap();
        let p = write_patch(
            work.path(),
            "--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -1 +1 @@\n-line 1\n+line one\n",
        );
        let before = fs::read(t.path().join("fs/proc/cmdline.c")).unwrap();
        {
            let _applied = apply(&SystemRunner, t.path(), &p).unwrap();
            assert_ne!(
                fs::read(t.path().join("fs/proc/cmdline.c")).unwrap(),
                before
            );
        }
        assert_eq!(
            fs::read(t.path().join("fs/proc/cmdline.c")).unwrap(),
            before
        );
    }

    #[test]
    fn failing_patch_is_refused_with_patchs_message_and_tree_untouched() {
        if !have_patch() {
            eprintln!("skipped: GNU patch is not installed");
            return;
        }
        let t = fake_tree();
        let work = tempfile::tempdir().unwrap();
        // First file applies, second does not: nothing may change.
        let p = write_patch(work.path(), "--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -1 +1 @@\n-line 1\n+line one\n--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -10 +10 @@\n-no such line\n+x\n");
        let before = fs::read(t.path().join("fs/proc/cmdline.c")).unwrap();
        let err = apply(&SystemRunner, t.path(), &p).unwrap_err();
        match &err {
            BuildError::PatchDoesNotApply { output, .. } => {
                assert!(output.contains("FAILED"), "{output}")
            }
            other => panic!("unexpected {other}"),
        }
        assert_eq!(
            fs::read(t.path().join("fs/proc/cmdline.c")).unwrap(),
            before
        );
        assert!(!journal::journal_path(t.path()).exists());
        let names: Vec<_> = fs::read_dir(t.path().join("fs/proc"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no .rej or .orig files: {names:?}");
    }

    #[test]
    fn already_applied_patch_is_refused() {
        if !have_patch() {
            eprintln!("skipped: GNU patch is not installed");
            return;
        }
        let t = fake_tree();
        let work = tempfile::tempdir().unwrap();
        let p = write_patch(
            work.path(),
            "--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -1 +1 @@\n-line 0\n+line 1\n",
        );
        let err = apply(&SystemRunner, t.path(), &p).unwrap_err();
        assert!(matches!(err, BuildError::PatchDoesNotApply { .. }), "{err}");
    }
}
