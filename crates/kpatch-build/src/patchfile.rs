//! The list of files a unified diff touches, as GNU patch with `-p<strip>` sees it.

use std::path::{Component, Path, PathBuf};

use crate::error::{io_err, BuildError, Result};

/// How a patch changes one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    Modified(PathBuf),
    Added(PathBuf),
    Deleted(PathBuf),
    Renamed { from: PathBuf, to: PathBuf },
}

impl FileChange {
    /// The path the file has after the patch (the old one for deletions).
    pub fn path(&self) -> &Path {
        match self {
            FileChange::Modified(p) | FileChange::Added(p) | FileChange::Deleted(p) => p,
            FileChange::Renamed { to, .. } => to,
        }
    }
    /// Every tree path the change writes, creates or removes.
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            FileChange::Renamed { from, to } => vec![from, to],
            other => vec![other.path()],
        }
    }
}

/// A parsed patch file.
#[derive(Debug, Clone)]
pub struct PatchFile {
    pub path: PathBuf,
    pub strip: usize,
    pub changes: Vec<FileChange>,
}

impl PatchFile {
    pub fn read(path: &Path, strip: usize) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        if let Some(at) = bytes.iter().position(|&b| b == 0) {
            return Err(BuildError::PatchSyntax {
                patch: path.to_path_buf(),
                line: 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count(),
                reason: "a NUL byte: this is a binary file, not a unified diff".into(),
            });
        }
        let text = String::from_utf8_lossy(&bytes);
        let changes = parse(&text, strip).map_err(|(line, reason)| BuildError::PatchSyntax {
            patch: path.to_path_buf(),
            line,
            reason,
        })?;
        if changes.is_empty() {
            return Err(BuildError::EmptyPatch {
                patch: path.to_path_buf(),
            });
        }
        Ok(PatchFile {
            path: path.to_path_buf(),
            strip,
            changes,
        })
    }

    /// Refuses a patch that would write outside `tree` through a symlink: every directory on the
    /// way to a touched path, and the file itself, must resolve to a place inside the tree.
    /// (Paths with `..` or a leading `/` are refused by the parser already.)
    pub fn check_inside(&self, tree: &Path) -> Result<()> {
        let root = tree.canonicalize().map_err(io_err(tree))?;
        for rel in self.touched_paths() {
            let mut at = tree.to_path_buf();
            for c in rel.components() {
                at.push(c);
                let Ok(meta) = std::fs::symlink_metadata(&at) else {
                    break; // created by the patch from here on
                };
                if !meta.file_type().is_symlink() {
                    continue;
                }
                let target = std::fs::canonicalize(&at)
                    .unwrap_or_else(|_| std::fs::read_link(&at).unwrap_or_default());
                if !target.starts_with(&root) {
                    return Err(BuildError::PatchLeavesTree {
                        patch: self.path.clone(),
                        path: rel.clone(),
                        symlink: at,
                        target,
                    });
                }
            }
        }
        Ok(())
    }

    /// Every tree path the patch may write, create or remove (deduplicated, in patch order).
    pub fn touched_paths(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for c in &self.changes {
            for p in c.paths() {
                if !out.iter().any(|o| o == p) {
                    out.push(p.to_path_buf());
                }
            }
        }
        out
    }
}

/// Parses the file headers of a unified diff (plain or git style), skipping hunk bodies by
/// their line counts so that a removed line starting with `--` is never taken for a header.
/// Errors carry the 1-based line number.
pub fn parse(text: &str, strip: usize) -> std::result::Result<Vec<FileChange>, (usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<FileChange> = Vec::new();
    let mut git_rename: Option<(PathBuf, PathBuf)> = None;
    let mut git_rename_from: Option<String> = None;
    // The file of the current `diff --git` section, for messages.
    let mut git_file = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(rest) = line.strip_prefix("diff --git ") {
            git_rename = None;
            git_rename_from = None;
            git_file = rest.rsplit(' ').next().unwrap_or(rest).to_string();
        } else if line == "GIT binary patch"
            || (line.starts_with("Binary files ") && line.ends_with(" differ"))
        {
            let what = if git_file.is_empty() {
                line.to_string()
            } else {
                format!("`{git_file}`")
            };
            return Err((
                i + 1,
                format!("a binary hunk for {what}: only text (source) changes can be patched"),
            ));
        } else if let Some(mode) = [
            "new file mode ",
            "new mode ",
            "deleted file mode ",
            "old mode ",
        ]
        .iter()
        .find_map(|p| line.strip_prefix(p))
        {
            if mode.trim() == "120000" {
                return Err((
                    i + 1,
                    format!("`{git_file}` is a symlink (mode 120000): patches may change regular files only"),
                ));
            }
        } else if let Some(f) = line.strip_prefix("rename from ") {
            git_rename_from = Some(f.to_string());
        } else if let Some(t) = line.strip_prefix("rename to ") {
            if let Some(f) = git_rename_from.take() {
                let from = clean(&f, i + 1)?;
                let to = clean(t, i + 1)?;
                git_rename = Some((from.clone(), to.clone()));
                // A pure rename has no ---/+++ lines; record it now, merge below if it has.
                push_unique(&mut out, FileChange::Renamed { from, to });
            }
        } else if line.starts_with("--- ")
            && i + 1 < lines.len()
            && lines[i + 1].starts_with("+++ ")
        {
            let old = header_path(&line[4..], strip, i + 1)?;
            let new = header_path(&lines[i + 1][4..], strip, i + 2)?;
            let change = match (old, new) {
                (None, None) => return Err((i + 1, "both sides are /dev/null".into())),
                (None, Some(n)) => FileChange::Added(n),
                (Some(o), None) => FileChange::Deleted(o),
                (Some(o), Some(n)) if o == n => FileChange::Modified(n),
                // GNU patch patches the old name when both exist; a git rename moves it.
                (Some(o), Some(n)) => match &git_rename {
                    Some(_) => FileChange::Renamed { from: o, to: n },
                    None => FileChange::Modified(pick_existing_name(o, n)),
                },
            };
            push_unique(&mut out, change);
            i += 2;
            // Skip hunks by their counts.
            while i < lines.len() && lines[i].starts_with("@@ ") {
                let (mut old_n, mut new_n) = hunk_counts(lines[i])
                    .ok_or((i + 1, format!("malformed hunk header `{}`", lines[i])))?;
                i += 1;
                while (old_n > 0 || new_n > 0) && i < lines.len() {
                    let l = lines[i];
                    match l.as_bytes().first() {
                        Some(b' ') | None => {
                            old_n = old_n.saturating_sub(1);
                            new_n = new_n.saturating_sub(1);
                        }
                        Some(b'-') => old_n = old_n.saturating_sub(1),
                        Some(b'+') => new_n = new_n.saturating_sub(1),
                        Some(b'\\') => {}
                        _ => {
                            return Err((
                                i + 1,
                                format!(
                                    "hunk ends early (expected {old_n} old and {new_n} new lines)"
                                ),
                            ))
                        }
                    }
                    i += 1;
                }
                if i < lines.len() && lines[i].starts_with('\\') {
                    i += 1;
                }
            }
            continue;
        }
        i += 1;
    }
    Ok(out)
}

fn push_unique(out: &mut Vec<FileChange>, c: FileChange) {
    if let FileChange::Renamed { from, to } = &c {
        out.retain(
            |o| !matches!(o, FileChange::Renamed { from: f, to: t } if f == from && t == to),
        );
    }
    if !out.contains(&c) {
        out.push(c);
    }
}

/// Without a git rename header GNU patch prefers the old name; we do the same.
fn pick_existing_name(old: PathBuf, _new: PathBuf) -> PathBuf {
    old
}

fn hunk_counts(h: &str) -> Option<(usize, usize)> {
    // @@ -a[,b] +c[,d] @@
    let rest = h.strip_prefix("@@ -")?;
    let (old, rest) = rest.split_once(" +")?;
    let (new, _) = rest.split_once(" @@")?;
    let count = |s: &str| -> Option<usize> {
        match s.split_once(',') {
            Some((_, n)) => n.parse().ok(),
            None => s.parse::<usize>().ok().map(|_| 1),
        }
    };
    Some((count(old)?, count(new)?))
}

/// The path in a `---`/`+++` header after stripping `strip` leading components;
/// `None` for /dev/null.
fn header_path(
    raw: &str,
    strip: usize,
    line: usize,
) -> std::result::Result<Option<PathBuf>, (usize, String)> {
    // The name ends at a tab (timestamp follows); quoted names are rare in kernel patches.
    let name = raw.split('\t').next().unwrap_or("").trim_end();
    let name = name.trim_matches('"');
    if name == "/dev/null" {
        return Ok(None);
    }
    if name.starts_with('/') {
        return Err((
            line,
            format!("`{name}` is an absolute path: it leaves the source tree"),
        ));
    }
    let comps: Vec<&str> = name.split('/').filter(|c| !c.is_empty()).collect();
    if comps.len() <= strip {
        return Err((
            line,
            format!("`{name}` has fewer than {} path components", strip + 1),
        ));
    }
    clean(&comps[strip..].join("/"), line).map(Some)
}

/// A relative path without `..` or absolute components, so it stays inside the tree.
fn clean(p: &str, line: usize) -> std::result::Result<PathBuf, (usize, String)> {
    let path = Path::new(p);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return Err((line, format!("`{p}` leaves the source tree"))),
        }
    }
    if out.as_os_str().is_empty() {
        return Err((line, "empty file name".into()));
    }
    Ok(out)
}

/// What a patch's header says about it: the text before its first file header, which in a
/// `git format-patch` mail holds the mail headers and the commit message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchHeader {
    /// The `Subject:` line, unfolded, without its leading `[PATCH ...]` tags.
    pub subject: Option<String>,
    /// The CVE numbers the header names, sorted, each once.
    pub cves: Vec<String>,
}

/// Reads the header of a patch's text (see [`PatchHeader`]).
pub fn header(text: &str) -> PatchHeader {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .iter()
        .enumerate()
        .position(|(i, l)| {
            l.starts_with("diff ")
                || l.starts_with("Index: ")
                || (l.starts_with("--- ")
                    && lines.get(i + 1).is_some_and(|n| n.starts_with("+++ ")))
        })
        .unwrap_or(lines.len());
    let head = &lines[..end];
    let subject = head
        .iter()
        .position(|l| l.starts_with("Subject:"))
        .map(|at| {
            let mut s = head[at]["Subject:".len()..].trim().to_string();
            for cont in head[at + 1..]
                .iter()
                .take_while(|l| l.starts_with([' ', '\t']))
            {
                s.push(' ');
                s.push_str(cont.trim());
            }
            strip_subject_tags(&s).to_string()
        })
        .filter(|s| !s.is_empty());
    PatchHeader {
        subject,
        cves: kpatch_common::cve::find_cves(&head.join("\n")),
    }
}

/// `[PATCH v2 1/3] [stable] fix` -> `fix`.
fn strip_subject_tags(s: &str) -> &str {
    let mut s = s.trim_start();
    while let Some(rest) = s.strip_prefix('[') {
        match rest.split_once(']') {
            Some((_, after)) => s = after.trim_start(),
            None => break,
        }
    }
    s.trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_gives_the_subject_and_the_cves() {
        let text = "From 1234 Mon Sep 17 00:00:00 2001\nFrom: A Dev <a@example.org>\n\
Subject: [PATCH v2 1/2] proc: say live in\n /proc/cmdline\n\nFixes CVE-2099-1002 (and cve-2099-1001).\n\
---\n fs/proc/cmdline.c | 3 +--\n\ndiff --git a/fs/proc/cmdline.c b/fs/proc/cmdline.c\n\
--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -1 +1 @@\n-a CVE-2099-7777\n+b\n";
        let h = header(text);
        assert_eq!(
            h.subject.as_deref(),
            Some("proc: say live in /proc/cmdline")
        );
        assert_eq!(h.cves, ["CVE-2099-1001", "CVE-2099-1002"]);
        // A plain diff has no header.
        let plain = "--- a/x.c\n+++ b/x.c\n@@ -1 +1 @@\n-CVE-2099-1\n+Subject: x\n";
        assert_eq!(header(plain), PatchHeader::default());
        assert_eq!(strip_subject_tags("[PATCH] [stable] fix it "), "fix it");
        assert_eq!(strip_subject_tags("[unclosed fix"), "[unclosed fix");
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn modified_added_deleted_with_prefixes() {
        let text = "\
diff --git a/fs/proc/cmdline.c b/fs/proc/cmdline.c
index 1..2 100644
--- a/fs/proc/cmdline.c
+++ b/fs/proc/cmdline.c
@@ -1,3 +1,3 @@
 a
--- not a header, a removed line
+++ not a header, an added line
 c
--- /dev/null
+++ b/include/linux/new.h\t2024-01-01 00:00:00
@@ -0,0 +1 @@
+x
--- a/old.c
+++ /dev/null
@@ -1 +0,0 @@
-gone
";
        let c = parse(text, 1).unwrap();
        assert_eq!(
            c,
            vec![
                FileChange::Modified(p("fs/proc/cmdline.c")),
                FileChange::Added(p("include/linux/new.h")),
                FileChange::Deleted(p("old.c")),
            ]
        );
    }

    #[test]
    fn strip_levels() {
        let text =
            "--- linux-6.1.orig/kernel/fork.c\n+++ linux-6.1/kernel/fork.c\n@@ -1 +1 @@\n-a\n+b\n";
        assert_eq!(
            parse(text, 1).unwrap(),
            vec![FileChange::Modified(p("kernel/fork.c"))]
        );
        assert_eq!(
            parse(text, 0).unwrap(),
            vec![FileChange::Modified(p("linux-6.1.orig/kernel/fork.c"))]
        );
        assert!(parse(text, 3).is_err());
    }

    #[test]
    fn git_rename() {
        let text = "\
diff --git a/a.c b/b.c
similarity index 90%
rename from a.c
rename to b.c
--- a/a.c
+++ b/b.c
@@ -1 +1 @@
-x
+y
";
        assert_eq!(
            parse(text, 1).unwrap(),
            vec![FileChange::Renamed {
                from: p("a.c"),
                to: p("b.c")
            }]
        );
    }

    #[test]
    fn refuses_paths_leaving_the_tree() {
        let text = "--- a/../etc/passwd\n+++ b/../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n";
        let (line, reason) = parse(text, 1).unwrap_err();
        assert_eq!(line, 1);
        assert!(reason.contains("leaves the source tree"), "{reason}");
    }

    #[test]
    fn truncated_hunk_is_an_error() {
        let text = "--- a/x.c\n+++ b/x.c\n@@ -1,3 +1,3 @@\n a\nnot a hunk line\n";
        let (line, _) = parse(text, 1).unwrap_err();
        assert_eq!(line, 5);
    }

    #[test]
    fn empty_patch_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("empty.patch");
        std::fs::write(&f, "just a description\n").unwrap();
        assert!(matches!(
            PatchFile::read(&f, 1),
            Err(BuildError::EmptyPatch { .. })
        ));
    }

    #[test]
    fn refuses_absolute_paths_whatever_the_strip_level() {
        for strip in [0, 1] {
            let text = "--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-a\n+b\n";
            let (line, reason) = parse(text, strip).unwrap_err();
            assert_eq!(line, 1);
            assert!(
                reason.contains("`/etc/passwd` is an absolute path"),
                "{reason}"
            );
        }
        let text = "diff --git a/x b/y\nrename from /etc/x\nrename to y\n";
        let (line, reason) = parse(text, 1).unwrap_err();
        assert_eq!(line, 3);
        assert!(reason.contains("leaves the source tree"), "{reason}");
    }

    #[test]
    fn refuses_binary_hunks() {
        let git = "diff --git a/fw/blob.bin b/fw/blob.bin\nindex 1..2 100644\nGIT binary patch\nliteral 3\nKcmZQz00961\n\n";
        let (line, reason) = parse(git, 1).unwrap_err();
        assert_eq!(line, 3);
        assert!(
            reason.contains("binary hunk for `b/fw/blob.bin`"),
            "{reason}"
        );
        let plain = "--- a/x.c\n+++ b/x.c\n@@ -1 +1 @@\n-a\n+b\nBinary files a/img.png and b/img.png differ\n";
        let (line, reason) = parse(plain, 1).unwrap_err();
        assert_eq!(line, 6);
        assert!(reason.contains("binary hunk"), "{reason}");
    }

    #[test]
    fn refuses_symlinks_made_by_a_git_patch() {
        let text = "diff --git a/evil b/evil\nnew file mode 120000\n--- /dev/null\n+++ b/evil\n@@ -0,0 +1 @@\n+/etc\n\\ No newline at end of file\n";
        let (line, reason) = parse(text, 1).unwrap_err();
        assert_eq!(line, 2);
        assert!(reason.contains("symlink (mode 120000)"), "{reason}");
    }

    #[test]
    fn a_binary_file_is_not_a_diff() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("fix.patch");
        std::fs::write(&f, b"\x7fELF\x02\x01\x01\0\0\0").unwrap();
        let e = PatchFile::read(&f, 1).unwrap_err();
        assert!(
            matches!(&e, BuildError::PatchSyntax { patch, line: 1, .. } if *patch == f),
            "{e}"
        );
        assert!(
            e.to_string().contains("binary file, not a unified diff"),
            "{e}"
        );
        std::fs::write(&f, "Subject: a mail without a diff\n\nthanks\n").unwrap();
        let e = PatchFile::read(&f, 1).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}: not a unified diff", f.display())),
            "{e}"
        );
    }

    #[test]
    fn refuses_to_patch_through_a_symlink_out_of_the_tree() {
        let tree = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim.c"), "x\n").unwrap();
        std::fs::create_dir_all(tree.path().join("include")).unwrap();
        std::os::unix::fs::symlink(outside.path(), tree.path().join("include/out")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("victim.c"),
            tree.path().join("include/file.c"),
        )
        .unwrap();
        // A symlink that stays in the tree is fine.
        std::fs::create_dir_all(tree.path().join("arch/x86")).unwrap();
        std::os::unix::fs::symlink("../../include", tree.path().join("arch/x86/inc")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let patch_for = |path: &str| {
            let f = dir.path().join("fix.patch");
            std::fs::write(
                &f,
                format!("--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n-x\n+y\n"),
            )
            .unwrap();
            PatchFile::read(&f, 1).unwrap()
        };
        for bad in ["include/out/victim.c", "include/file.c"] {
            let e = patch_for(bad).check_inside(tree.path()).unwrap_err();
            assert!(matches!(e, BuildError::PatchLeavesTree { .. }), "{e}");
            let msg = e.to_string();
            assert!(msg.contains("fix.patch") && msg.contains(bad), "{msg}");
        }
        patch_for("arch/x86/inc/new.h")
            .check_inside(tree.path())
            .unwrap();
        patch_for("kernel/not-yet/there.c")
            .check_inside(tree.path())
            .unwrap();
        assert_eq!(
            std::fs::read(outside.path().join("victim.c")).unwrap(),
            b"x\n"
        );
    }
}
