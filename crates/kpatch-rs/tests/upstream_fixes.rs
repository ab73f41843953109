//! The corpus of real upstream fixes (tests/upstream-fixes/): the cheap part that CI runs. The
//! index and the patches agree, each patch is one that `kpatch-rs build` can read, and the
//! sample is what the README says (half vmlinux, half modules). Building every fix and proving
//! them in a guest is `scripts/upstream-fixes.sh` (about an hour; not run by CI).

use kpatch_build::patchfile::FileChange;
use kpatch_build::PatchFile;
use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/upstream-fixes")
}

struct Entry {
    name: String,
    files: Vec<String>,
    placement: String,
    cve: String,
    subject: String,
}

fn index() -> Vec<Entry> {
    let text = std::fs::read_to_string(corpus_dir().join("index.tsv")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 7, "index.tsv: 7 columns expected: {l}");
            Entry {
                name: f[0].into(),
                files: f[1].split(',').map(String::from).collect(),
                placement: f[2].into(),
                cve: f[3].into(),
                subject: f[4].into(),
            }
        })
        .collect()
}

#[test]
fn every_indexed_fix_is_a_patch_of_exactly_its_files_and_every_patch_is_indexed() {
    let entries = index();
    let dir = corpus_dir();
    for e in &entries {
        let path = dir.join(format!("{}.patch", e.name));
        let patch = PatchFile::read(&path, 1).unwrap_or_else(|err| panic!("{err}"));
        let mut touched: Vec<String> = patch
            .changes
            .iter()
            .map(|c| {
                assert!(
                    matches!(c, FileChange::Modified(_)),
                    "{}: a single fix only modifies files: {c:?}",
                    e.name
                );
                c.path().display().to_string()
            })
            .collect();
        touched.sort();
        let mut listed = e.files.clone();
        listed.sort();
        assert_eq!(touched, listed, "{}: the index lists other files", e.name);
        assert!(
            touched.iter().all(|f| !f.starts_with("include/")),
            "{}: a change under include/ is no single fix",
            e.name
        );
        let text = std::fs::read_to_string(&path).unwrap();
        for l in text
            .lines()
            .filter(|l| l.starts_with("--- ") || l.starts_with("+++ "))
        {
            assert!(!l.contains('\t'), "{}: timestamps in '{l}'", e.name);
        }
    }
    let patches: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|d| {
            let n = d.ok()?.file_name().into_string().ok()?;
            n.strip_suffix(".patch").map(String::from)
        })
        .collect();
    for p in &patches {
        assert!(
            entries.iter().any(|e| &e.name == p),
            "{p}.patch is not in index.tsv"
        );
    }
}

#[test]
fn the_sample_is_half_vmlinux_half_modules_and_each_fix_is_named() {
    let entries = index();
    assert!(entries.len() >= 60, "only {} fixes", entries.len());
    let vmlinux = entries.iter().filter(|e| e.placement == "vmlinux").count();
    let modules = entries
        .iter()
        .filter(|e| e.placement.starts_with("module:"))
        .count();
    assert_eq!(vmlinux + modules, entries.len());
    assert_eq!(vmlinux, modules);
    for e in &entries {
        assert!(
            e.cve == "-" || e.cve.split(',').all(|c| c.starts_with("CVE-")),
            "{}: CVE column '{}'",
            e.name,
            e.cve
        );
        assert!(
            e.subject != "-" || e.cve == "-",
            "{}: a CVE without a subject",
            e.name
        );
    }
    assert!(Path::new(&corpus_dir().join("README.md")).is_file());
}
