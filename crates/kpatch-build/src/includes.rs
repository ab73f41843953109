//! Which translation units include a header, directly or through other headers.
//!
//! A scan of every `#include` line in the tree, resolved the way the kernel's compiler command
//! line resolves them (the file's own directory for `"..."`, then the arch and generic include
//! directories). Includes that do not resolve (per-directory `-I` flags) fall back to every file
//! whose path ends with the included name. The answer over-approximates (includes inside
//! `#if` count); the compiler's dependency list confirms it after the original build.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{io_err, Result};
use crate::kbuild::normalize;

/// Top-level directories that hold no kernel translation units.
const SKIP_DIRS: &[&str] = &[
    ".git",
    "Documentation",
    "tools",
    "scripts",
    "usr",
    ".kpatch-rs-journal",
];

/// Headers the kernel's command line forces into every C translation unit (`-include`).
const FORCED_C: &[&str] = &[
    "include/linux/compiler-version.h",
    "include/linux/kconfig.h",
    "include/linux/compiler_types.h",
];
const FORCED_ASM: &[&str] = &["include/linux/kconfig.h"];

/// The reverse include graph of a tree.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct IncludeIndex {
    files: Vec<String>,
    #[serde(skip)]
    ids: HashMap<String, usize>,
    /// For each file, the files that include it.
    includers: Vec<Vec<usize>>,
}

fn is_source(name: &str) -> bool {
    name.ends_with(".c") || name.ends_with(".h") || name.ends_with(".S") || name.ends_with(".inc")
}

fn is_unit(name: &str) -> bool {
    name.ends_with(".c") || name.ends_with(".S")
}

fn walk(root: &Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
        let e = e.map_err(io_err(&dir))?;
        let name = e.file_name();
        let name = match name.to_str() {
            Some(n) => n,
            None => continue,
        };
        let path = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let ft = e.file_type().map_err(io_err(e.path()))?;
        if ft.is_dir() {
            if rel.is_empty() && SKIP_DIRS.contains(&name) {
                continue;
            }
            walk(root, &path, out)?;
        } else if ft.is_file() && is_source(name) {
            out.push(path);
        }
    }
    Ok(())
}

/// The `#include` targets of one file: (name, quoted).
pub fn parse_includes(text: &[u8]) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let l = trim_start(line);
        let Some(l) = l.strip_prefix(b"#") else {
            continue;
        };
        let l = trim_start(l);
        let Some(l) = l.strip_prefix(b"include") else {
            continue;
        };
        let l = trim_start(l);
        let (close, quoted) = match l.first() {
            Some(b'"') => (b'"', true),
            Some(b'<') => (b'>', false),
            _ => continue,
        };
        let rest = &l[1..];
        if let Some(end) = rest.iter().position(|&b| b == close) {
            if let Ok(name) = std::str::from_utf8(&rest[..end]) {
                out.push((name.to_string(), quoted));
            }
        }
    }
    out
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| **b == b' ' || **b == b'\t').count();
    &s[n..]
}

impl IncludeIndex {
    /// Scans `tree` (arch `x86`, …) and builds the reverse include graph.
    pub fn build(tree: &Path, arch: &str) -> Result<Self> {
        let mut files = Vec::new();
        walk(tree, "", &mut files)?;
        files.sort();
        let ids: HashMap<String, usize> = files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.clone(), i))
            .collect();
        let mut by_suffix: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            let base = f.rsplit('/').next().unwrap_or(f);
            by_suffix.entry(base).or_default().push(i);
        }
        let search: Vec<String> = vec![
            format!("arch/{arch}/include"),
            format!("arch/{arch}/include/generated"),
            "include".into(),
            format!("arch/{arch}/include/uapi"),
            format!("arch/{arch}/include/generated/uapi"),
            "include/uapi".into(),
            "include/generated/uapi".into(),
        ];
        let forced_c: Vec<usize> = FORCED_C
            .iter()
            .filter_map(|f| ids.get(*f).copied())
            .collect();
        let forced_asm: Vec<usize> = FORCED_ASM
            .iter()
            .filter_map(|f| ids.get(*f).copied())
            .collect();
        let edges: Vec<Vec<usize>> = files
            .par_iter()
            .map(|f| {
                let text = fs::read(tree.join(f)).unwrap_or_default();
                let dir = f.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                let mut out: Vec<usize> = Vec::new();
                for (name, quoted) in parse_includes(&text) {
                    let mut found = None;
                    if quoted {
                        let cand = normalize(&format!("{dir}/{name}"));
                        found = ids.get(&cand).copied();
                    }
                    if found.is_none() {
                        found = search
                            .iter()
                            .find_map(|s| ids.get(&normalize(&format!("{s}/{name}"))).copied());
                    }
                    match found {
                        Some(id) => out.push(id),
                        None => {
                            // Unresolved: any file whose path ends with the name.
                            let norm = normalize(&name);
                            let base = norm.rsplit('/').next().unwrap_or(&norm);
                            if let Some(c) = by_suffix.get(base) {
                                out.extend(c.iter().copied().filter(|&i| {
                                    files[i] == norm || files[i].ends_with(&format!("/{norm}"))
                                }));
                            }
                        }
                    }
                }
                if f.ends_with(".c") {
                    out.extend(&forced_c);
                } else if f.ends_with(".S") {
                    out.extend(&forced_asm);
                }
                out
            })
            .collect();
        let mut includers = vec![Vec::new(); files.len()];
        for (from, tos) in edges.iter().enumerate() {
            for &to in tos {
                if to != from {
                    includers[to].push(from);
                }
            }
        }
        Ok(IncludeIndex {
            files,
            ids,
            includers,
        })
    }

    /// The index saved at `cache` if there is one, else a fresh scan saved there.
    /// Only for trees whose sources do not change between builds (the prepared Debian trees).
    pub fn load_or_build(tree: &Path, arch: &str, cache: &Path) -> Result<Self> {
        if let Ok(bytes) = fs::read(cache) {
            if let Ok(mut idx) = serde_json::from_slice::<IncludeIndex>(&bytes) {
                if idx.includers.len() == idx.files.len() {
                    idx.ids = idx
                        .files
                        .iter()
                        .enumerate()
                        .map(|(i, f)| (f.clone(), i))
                        .collect();
                    return Ok(idx);
                }
            }
        }
        let idx = Self::build(tree, arch)?;
        let bytes = serde_json::to_vec(&idx).map_err(|e| crate::error::BuildError::Io {
            path: cache.to_path_buf(),
            source: e.into(),
        })?;
        kpatch_common::fs::write_atomic(cache, &bytes).map_err(io_err(cache))?;
        Ok(idx)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Every `.c`/`.S` file that includes `header` (a tree-relative path), directly or not,
    /// sorted. Empty when the header is unknown or nobody includes it.
    pub fn units_including(&self, header: &Path) -> Vec<PathBuf> {
        let Some(start) = header.to_str().and_then(|h| self.ids.get(&normalize(h))) else {
            return Vec::new();
        };
        let mut seen: HashSet<usize> = HashSet::from([*start]);
        let mut queue = VecDeque::from([*start]);
        while let Some(n) = queue.pop_front() {
            for &m in &self.includers[n] {
                if seen.insert(m) {
                    queue.push_back(m);
                }
            }
        }
        let mut out: Vec<PathBuf> = seen
            .into_iter()
            .filter(|&i| is_unit(&self.files[i]))
            .map(|i| PathBuf::from(&self.files[i]))
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_index_answers_like_a_fresh_one() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("include/linux")).unwrap();
        fs::create_dir_all(root.join("fs")).unwrap();
        fs::write(root.join("include/linux/a.h"), "\n").unwrap();
        fs::write(root.join("fs/x.c"), "#include <linux/a.h>\n").unwrap();
        let cache = root.join("index.json");
        let first = IncludeIndex::load_or_build(root, "x86", &cache).unwrap();
        assert!(cache.is_file());
        // A change after caching is not seen: the cache is what answers.
        fs::write(root.join("fs/y.c"), "#include <linux/a.h>\n").unwrap();
        let second = IncludeIndex::load_or_build(root, "x86", &cache).unwrap();
        assert_eq!(
            first.units_including(Path::new("include/linux/a.h")),
            vec![PathBuf::from("fs/x.c")]
        );
        assert_eq!(
            second.units_including(Path::new("include/linux/a.h")),
            vec![PathBuf::from("fs/x.c")]
        );
        fs::remove_file(&cache).unwrap();
        let third = IncludeIndex::load_or_build(root, "x86", &cache).unwrap();
        assert_eq!(
            third.units_including(Path::new("include/linux/a.h")).len(),
            2
        );
    }

    #[test]
    fn parses_include_forms() {
        let src = b"#include <linux/fs.h>\n  #  include \"local.h\" // c\n#include_next <x.h>\n#define X 1\n#include MACRO\n";
        assert_eq!(
            parse_includes(src),
            vec![
                ("linux/fs.h".to_string(), false),
                ("local.h".to_string(), true)
            ]
        );
    }

    #[test]
    fn transitive_units_with_local_and_unresolved_includes() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let w = |p: &str, s: &str| {
            let f = root.join(p);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, s).unwrap();
        };
        w("include/linux/small.h", "int small;\n");
        w("include/linux/mid.h", "#include <linux/small.h>\n");
        w("arch/x86/include/asm/a.h", "#include <linux/mid.h>\n");
        w("fs/x/one.c", "#include <asm/a.h>\n");
        w("fs/x/local.h", "#include <linux/small.h>\n");
        w("fs/x/two.c", "#include \"local.h\"\n");
        w("fs/x/three.c", "#include <linux/other.h>\n");
        w("include/linux/other.h", "\n");
        w("drivers/y/deep/priv.h", "#include <linux/small.h>\n");
        // Resolved by a per-directory -I in the real build: falls back to the suffix match.
        w(
            "drivers/y/four.c",
            "#include \"priv.h\"\n#include \"deep/priv.h\"\n",
        );
        w("arch/x86/entry/e.S", "#include <linux/mid.h>\n");
        w("tools/ignored.c", "#include <linux/small.h>\n");
        w("include/linux/kconfig.h", "\n");
        let idx = IncludeIndex::build(root, "x86").unwrap();
        let units: Vec<String> = idx
            .units_including(Path::new("include/linux/small.h"))
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            units,
            vec![
                "arch/x86/entry/e.S",
                "drivers/y/four.c",
                "fs/x/one.c",
                "fs/x/two.c"
            ]
        );
        assert_eq!(
            idx.units_including(Path::new("include/linux/other.h")),
            vec![PathBuf::from("fs/x/three.c")]
        );
        // kconfig.h is forced into every unit.
        assert_eq!(
            idx.units_including(Path::new("include/linux/kconfig.h"))
                .len(),
            5
        );
        assert!(idx
            .units_including(Path::new("include/linux/none.h"))
            .is_empty());
    }
}
