//! A crash-safe record of the files a patch is about to change in a source tree.
//!
//! Before GNU patch touches the tree, every file the patch names is copied into
//! `<tree>/.kpatch-rs-journal/files/` and a manifest lists which paths existed (`M`) and which
//! did not (`A`). The journal is built in `.kpatch-rs-journal.tmp` and renamed into place, so it
//! either exists completely or not at all. Restoring copies the saved files back, removes the
//! created ones and only then deletes the journal: it can be repeated after any interruption,
//! including SIGKILL, and every build restores a left-over journal before it starts.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{io_err, BuildError, Result};

pub const JOURNAL_DIR: &str = ".kpatch-rs-journal";
const JOURNAL_TMP: &str = ".kpatch-rs-journal.tmp";
const MANIFEST: &str = "manifest";

/// One journalled path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Existed before; its content is saved.
    Saved(PathBuf),
    /// Did not exist before; restoring removes it.
    Absent(PathBuf),
}

/// Where the journal of `tree` lives.
pub fn journal_path(tree: &Path) -> PathBuf {
    tree.join(JOURNAL_DIR)
}

/// Records `paths` (relative to `tree`) before they are changed.
/// Fails with [`BuildError::AlreadyPatched`] when a journal already exists.
pub fn begin(tree: &Path, paths: &[PathBuf]) -> Result<Vec<Entry>> {
    let journal = journal_path(tree);
    if journal.exists() {
        return Err(BuildError::AlreadyPatched {
            tree: tree.to_path_buf(),
            journal,
        });
    }
    let tmp = tree.join(JOURNAL_TMP);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    let files = tmp.join("files");
    fs::create_dir_all(&files).map_err(io_err(&files))?;
    let mut entries = Vec::new();
    let mut manifest = String::new();
    for rel in paths {
        let src = tree.join(rel);
        let name = rel.to_str().ok_or_else(|| BuildError::CorruptJournal {
            journal: journal.clone(),
            reason: format!("{} is not UTF-8", rel.display()),
        })?;
        if name.contains('\n') {
            return Err(BuildError::CorruptJournal {
                journal,
                reason: format!("{name:?} contains a newline"),
            });
        }
        match fs::symlink_metadata(&src) {
            Ok(m) if m.is_file() => {
                let dst = files.join(rel);
                if let Some(parent) = dst.parent() {
                    fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                fs::copy(&src, &dst).map_err(io_err(&src))?;
                sync_file(&dst)?;
                manifest.push_str(&format!("M {name}\n"));
                entries.push(Entry::Saved(rel.clone()));
            }
            Ok(_) => {
                return Err(BuildError::Io {
                    path: src,
                    source: std::io::Error::other("not a regular file; refusing to patch it"),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                manifest.push_str(&format!("A {name}\n"));
                entries.push(Entry::Absent(rel.clone()));
            }
            Err(e) => {
                return Err(BuildError::Io {
                    path: src,
                    source: e,
                })
            }
        }
    }
    let mpath = tmp.join(MANIFEST);
    {
        let mut f = fs::File::create(&mpath).map_err(io_err(&mpath))?;
        f.write_all(manifest.as_bytes()).map_err(io_err(&mpath))?;
        f.sync_all().map_err(io_err(&mpath))?;
    }
    sync_dir(&tmp)?;
    fs::rename(&tmp, &journal).map_err(io_err(&journal))?;
    sync_dir(tree)?;
    Ok(entries)
}

/// Puts back every journalled file and deletes the journal. Returns the restored entries,
/// or `None` when there was no journal. Safe to call again after an interruption.
pub fn restore(tree: &Path) -> Result<Option<Vec<Entry>>> {
    let tmp = tree.join(JOURNAL_TMP);
    if tmp.exists() {
        // A journal that never completed: the tree was not touched yet.
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    let journal = journal_path(tree);
    if !journal.exists() {
        return Ok(None);
    }
    let entries = read_manifest(&journal)?;
    for e in &entries {
        match e {
            Entry::Saved(rel) => {
                let saved = journal.join("files").join(rel);
                let dst = tree.join(rel);
                if let Some(parent) = dst.parent() {
                    fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                // Copy next to the target, then rename: the file is never half-written.
                // The new mtime makes kbuild rebuild anything compiled from the patched text.
                let staged = dst.with_file_name(format!(
                    ".{}.kpatch-rs-restore",
                    dst.file_name().and_then(|n| n.to_str()).unwrap_or("file")
                ));
                fs::copy(&saved, &staged).map_err(io_err(&saved))?;
                fs::rename(&staged, &dst).map_err(io_err(&dst))?;
            }
            Entry::Absent(rel) => {
                let dst = tree.join(rel);
                match fs::remove_file(&dst) {
                    Ok(()) => remove_empty_parents(tree, &dst),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(BuildError::Io {
                            path: dst,
                            source: e,
                        })
                    }
                }
            }
        }
    }
    sync_dir(tree)?;
    fs::remove_dir_all(&journal).map_err(io_err(&journal))?;
    Ok(Some(entries))
}

fn read_manifest(journal: &Path) -> Result<Vec<Entry>> {
    let mpath = journal.join(MANIFEST);
    let text = fs::read_to_string(&mpath).map_err(io_err(&mpath))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |reason: String| BuildError::CorruptJournal {
            journal: journal.to_path_buf(),
            reason,
        };
        let (kind, name) = line
            .split_once(' ')
            .ok_or_else(|| bad(format!("line {}: `{line}`", n + 1)))?;
        let rel = PathBuf::from(name);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(bad(format!("line {}: `{name}` leaves the tree", n + 1)));
        }
        match kind {
            "M" => {
                let saved = journal.join("files").join(&rel);
                if !saved.is_file() {
                    return Err(bad(format!("saved copy of {name} is missing")));
                }
                out.push(Entry::Saved(rel));
            }
            "A" => out.push(Entry::Absent(rel)),
            _ => return Err(bad(format!("line {}: unknown kind `{kind}`", n + 1))),
        }
    }
    Ok(out)
}

/// Removes directories the patch created, up to (not including) the tree root.
fn remove_empty_parents(tree: &Path, file: &Path) {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == tree || !d.starts_with(tree) || fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

fn sync_file(p: &Path) -> Result<()> {
    fs::File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(io_err(p))
}

fn sync_dir(p: &Path) -> Result<()> {
    fs::File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(io_err(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("fs/proc")).unwrap();
        fs::write(t.path().join("fs/proc/cmdline.c"), "int a;\n").unwrap();
        fs::write(t.path().join("Makefile"), "obj-y += fs/\n").unwrap();
        t
    }

    #[test]
    fn restore_undoes_changes_creations_and_deletions() {
        let t = tree();
        let root = t.path();
        let paths = vec![
            PathBuf::from("fs/proc/cmdline.c"),
            PathBuf::from("fs/new/dir/new.c"),
            PathBuf::from("Makefile"),
        ];
        let entries = begin(root, &paths).unwrap();
        assert_eq!(entries[1], Entry::Absent(PathBuf::from("fs/new/dir/new.c")));
        // Simulate a patch: modify, create, delete.
        fs::write(root.join("fs/proc/cmdline.c"), "int b;\n").unwrap();
        fs::create_dir_all(root.join("fs/new/dir")).unwrap();
        fs::write(root.join("fs/new/dir/new.c"), "new\n").unwrap();
        fs::remove_file(root.join("Makefile")).unwrap();

        let restored = restore(root).unwrap().unwrap();
        assert_eq!(restored.len(), 3);
        assert_eq!(
            fs::read_to_string(root.join("fs/proc/cmdline.c")).unwrap(),
            "int a;\n"
        );
        assert_eq!(
            fs::read_to_string(root.join("Makefile")).unwrap(),
            "obj-y += fs/\n"
        );
        assert!(
            !root.join("fs/new").exists(),
            "created directories are removed"
        );
        assert!(!journal_path(root).exists());
        assert!(
            restore(root).unwrap().is_none(),
            "second restore finds nothing"
        );
    }

    #[test]
    fn a_second_begin_is_refused_until_restored() {
        let t = tree();
        begin(t.path(), &[PathBuf::from("fs/proc/cmdline.c")]).unwrap();
        assert!(matches!(
            begin(t.path(), &[PathBuf::from("Makefile")]),
            Err(BuildError::AlreadyPatched { .. })
        ));
        restore(t.path()).unwrap();
        begin(t.path(), &[PathBuf::from("Makefile")]).unwrap();
    }

    #[test]
    fn interrupted_restore_can_be_repeated() {
        let t = tree();
        let root = t.path();
        begin(
            root,
            &[PathBuf::from("fs/proc/cmdline.c"), PathBuf::from("x.c")],
        )
        .unwrap();
        fs::write(root.join("fs/proc/cmdline.c"), "patched\n").unwrap();
        fs::write(root.join("x.c"), "new\n").unwrap();
        // A restore killed half-way: the first file is back, the journal still exists.
        fs::write(root.join("fs/proc/cmdline.c"), "int a;\n").unwrap();
        restore(root).unwrap().unwrap();
        assert_eq!(
            fs::read_to_string(root.join("fs/proc/cmdline.c")).unwrap(),
            "int a;\n"
        );
        assert!(!root.join("x.c").exists());
    }

    #[test]
    fn incomplete_journal_is_discarded() {
        let t = tree();
        let root = t.path();
        fs::create_dir_all(root.join(JOURNAL_TMP).join("files")).unwrap();
        assert!(restore(root).unwrap().is_none());
        assert!(!root.join(JOURNAL_TMP).exists());
        assert_eq!(
            fs::read_to_string(root.join("fs/proc/cmdline.c")).unwrap(),
            "int a;\n"
        );
    }

    #[test]
    fn corrupt_manifest_is_reported() {
        let t = tree();
        let root = t.path();
        fs::create_dir_all(journal_path(root)).unwrap();
        fs::write(journal_path(root).join(MANIFEST), "M ../../etc/passwd\n").unwrap();
        assert!(matches!(
            restore(root),
            Err(BuildError::CorruptJournal { .. })
        ));
    }
}
