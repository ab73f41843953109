//! Original objects kept between builds.
//!
//! For one prepared Debian tree (one kernel ABI, config, compiler and make flags) the original
//! object of a unit never changes, so a second patch to the same file compiles only the patched
//! side. An entry is one file, `<dir>/<key>.entry`, written atomically (beside, then renamed):
//! a manifest (the object's kbuild command file and the SHA-256 of every file the compiler's
//! dependency list names, the unit itself included) followed by the object's bytes. The key is
//! the SHA-256 of the tree's context (ABI, config, compiler, flags, prepare recipe) and the
//! object's name. An entry is served only while every dependency still hashes as recorded, so
//! an object is never served for sources other than the ones it was compiled from: a patched
//! file (or a hand-edited one) misses. Only the original compile stores entries, and it runs
//! with the tree unpatched and locked.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{io_err, BuildError, Result};

/// Bumped when the entry format changes: older entries are then never read.
const FORMAT: &str = "kpatch-rs object cache 1";
const MAGIC: &[u8; 8] = b"KRSOBJ1\n";

/// The cache of one tree's original objects.
#[derive(Debug, Clone)]
pub struct ObjectCache {
    dir: PathBuf,
    /// Everything besides the sources that determines an object.
    context: String,
}

/// What an entry records besides the object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Manifest {
    object: String,
    /// The object's `.o.cmd` file as kbuild wrote it.
    cmd: String,
    /// `(path relative to the tree, or absolute; lowercase hex SHA-256)`.
    deps: Vec<(String, String)>,
}

/// A cached original object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub object: Vec<u8>,
    /// Its `.o.cmd` text (command line and dependency list).
    pub cmd: String,
}

/// The files a kbuild `.o.cmd` names as the object's inputs: its `source_` and the entries of
/// its `deps_` list (the compiler's dependency list), without the `$(wildcard ...)` entries
/// for config options (the config is part of the cache's context).
pub fn dependencies(cmd_text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_deps = false;
    for line in cmd_text.lines() {
        if let Some((k, v)) = line.split_once(" := ") {
            in_deps = k.starts_with("deps_");
            if k.starts_with("source_") {
                out.push(v.trim().to_string());
            }
            if !in_deps {
                continue;
            }
            out.extend(dep_words(v));
        } else if in_deps {
            if line.trim().is_empty() {
                in_deps = false;
                continue;
            }
            out.extend(dep_words(line));
        }
    }
    out.sort();
    out.dedup();
    out
}

fn dep_words(line: &str) -> Vec<String> {
    let line = line.trim();
    if line.starts_with("$(wildcard") {
        return Vec::new();
    }
    line.split_whitespace()
        .filter(|w| *w != "\\" && !w.starts_with("$("))
        .map(String::from)
        .collect()
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

impl ObjectCache {
    /// The cache in `dir` for a tree whose objects are determined by `context` (with the
    /// sources): the ABI, config, compiler and flags, as the prepared tree's marker records.
    pub fn new(dir: impl Into<PathBuf>, context: &str) -> Self {
        ObjectCache {
            dir: dir.into(),
            context: format!("{FORMAT}\n{context}"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, object: &str) -> PathBuf {
        let mut h = Sha256::new();
        h.update(self.context.as_bytes());
        h.update([0]);
        h.update(object.as_bytes());
        let key = format!("{:x}", h.finalize());
        self.dir.join(format!("{}.entry", &key[..40]))
    }

    /// The original object of `object` for the sources now in `tree`, if one is cached and
    /// every file it was compiled from is unchanged. A damaged entry is a miss.
    pub fn lookup(&self, tree: &Path, object: &str) -> Option<Hit> {
        let bytes = fs::read(self.entry_path(object)).ok()?;
        let rest = bytes.strip_prefix(MAGIC.as_slice())?;
        let len = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?) as usize;
        let manifest: Manifest = serde_json::from_slice(rest.get(8..8 + len)?).ok()?;
        if manifest.object != object || manifest.deps.is_empty() {
            return None;
        }
        let current = manifest
            .deps
            .iter()
            .all(|(p, sum)| sha256_file(&tree.join(p)).is_ok_and(|s| &s == sum));
        current.then(|| Hit {
            object: rest[8 + len..].to_vec(),
            cmd: manifest.cmd,
        })
    }

    /// Keeps `tree/object`, just compiled from the unpatched sources of `tree`, with its
    /// command file `cmd_text`. Written atomically (not synced: an entry a machine crash
    /// truncated is a miss); a concurrent writer of the same entry leaves one whole entry or
    /// the other.
    pub fn store(&self, tree: &Path, object: &str, cmd_text: &str) -> Result<()> {
        let mut deps = Vec::new();
        for p in dependencies(cmd_text) {
            let path = tree.join(&p);
            deps.push((p, sha256_file(&path).map_err(io_err(&path))?));
        }
        if deps.is_empty() {
            // Nothing to check a later lookup against: not cacheable.
            return Ok(());
        }
        let src = tree.join(object);
        let data = fs::read(&src).map_err(io_err(&src))?;
        let manifest = Manifest {
            object: object.to_string(),
            cmd: cmd_text.to_string(),
            deps,
        };
        let json = serde_json::to_vec(&manifest).map_err(|e| BuildError::Io {
            path: src.clone(),
            source: e.into(),
        })?;
        let mut entry = Vec::with_capacity(MAGIC.len() + 8 + json.len() + data.len());
        entry.extend_from_slice(MAGIC);
        entry.extend_from_slice(&(json.len() as u64).to_le_bytes());
        entry.extend_from_slice(&json);
        entry.extend_from_slice(&data);
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let path = self.entry_path(object);
        kpatch_common::fs::replace_atomic(&path, &entry).map_err(io_err(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMD: &str = "cmd_fs/proc/cmdline.o := gcc-12 -Wp,-MMD,fs/proc/.cmdline.o.d -c -o fs/proc/cmdline.o fs/proc/cmdline.c\n\nsource_fs/proc/cmdline.o := fs/proc/cmdline.c\n\ndeps_fs/proc/cmdline.o := \\\n  include/linux/kconfig.h \\\n    $(wildcard include/config/CPU_BIG_ENDIAN) \\\n  include/linux/seq_file.h \\\n\nfs/proc/cmdline.o: $(deps_fs/proc/cmdline.o)\n\n$(deps_fs/proc/cmdline.o):\n";

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let w = |p: &str, s: &str| {
            let f = t.path().join(p);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, s).unwrap();
        };
        w("fs/proc/cmdline.c", "int f(void) { return 1; }\n");
        w("include/linux/kconfig.h", "\n");
        w("include/linux/seq_file.h", "struct seq_file;\n");
        w("fs/proc/cmdline.o", "ELF original");
        t
    }

    #[test]
    fn dependency_list_is_read_without_config_wildcards() {
        assert_eq!(
            dependencies(CMD),
            vec![
                "fs/proc/cmdline.c",
                "include/linux/kconfig.h",
                "include/linux/seq_file.h"
            ]
        );
    }

    #[test]
    fn an_unchanged_unit_is_served_and_a_second_context_is_not() {
        let t = tree();
        let cache = ObjectCache::new(t.path().join("cache"), "6.1.0-57-amd64 gcc-12 config=1");
        assert_eq!(cache.lookup(t.path(), "fs/proc/cmdline.o"), None);
        cache.store(t.path(), "fs/proc/cmdline.o", CMD).unwrap();
        let hit = cache.lookup(t.path(), "fs/proc/cmdline.o").unwrap();
        assert_eq!(
            (hit.object.as_slice(), hit.cmd.as_str()),
            (&b"ELF original"[..], CMD)
        );
        let other = ObjectCache::new(t.path().join("cache"), "6.1.0-57-amd64 gcc-12 config=2");
        assert_eq!(other.lookup(t.path(), "fs/proc/cmdline.o"), None);
    }

    #[test]
    fn a_patched_unit_or_header_is_never_served_the_original() {
        let t = tree();
        let cache = ObjectCache::new(t.path().join("cache"), "ctx");
        cache.store(t.path(), "fs/proc/cmdline.o", CMD).unwrap();
        for (file, patched) in [
            ("fs/proc/cmdline.c", "#line 1\nint f(void) { return 2; }\n"),
            ("include/linux/seq_file.h", "struct seq_file; int x;\n"),
        ] {
            let p = t.path().join(file);
            let before = fs::read(&p).unwrap();
            fs::write(&p, patched).unwrap();
            assert_eq!(cache.lookup(t.path(), "fs/proc/cmdline.o"), None, "{file}");
            fs::write(&p, before).unwrap();
            assert!(cache.lookup(t.path(), "fs/proc/cmdline.o").is_some());
        }
        // A dependency that disappeared is a miss too.
        fs::remove_file(t.path().join("include/linux/kconfig.h")).unwrap();
        assert_eq!(cache.lookup(t.path(), "fs/proc/cmdline.o"), None);
    }

    #[test]
    fn a_damaged_entry_is_a_miss() {
        let t = tree();
        let cache = ObjectCache::new(t.path().join("cache"), "ctx");
        cache.store(t.path(), "fs/proc/cmdline.o", CMD).unwrap();
        let entry = cache.entry_path("fs/proc/cmdline.o");
        let bytes = fs::read(&entry).unwrap();
        fs::write(&entry, &bytes[..20]).unwrap();
        assert_eq!(cache.lookup(t.path(), "fs/proc/cmdline.o"), None);
        // A command file without a dependency list stores nothing.
        let cache = ObjectCache::new(t.path().join("cache2"), "ctx");
        cache
            .store(t.path(), "fs/proc/cmdline.o", "cmd_x := gcc\n")
            .unwrap();
        assert!(!cache.dir().exists());
    }
}
