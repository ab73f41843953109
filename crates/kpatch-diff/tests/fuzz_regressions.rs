//! Inputs the fuzzer (`scripts/fuzz.sh`, target `differ`) crashed on, kept as tests. Each file is
//! a fuzz input: its first byte picks an original object from the shared corpus (the sorted
//! `*.ORIG.o` files), the rest is the patched object. The differ must return, never panic, and
//! whatever it outputs must write and read back.

use kpatch_elf::Object;
use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    std::env::var_os("KPATCH_RS_UNIT_OBJS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/kpatch-unit-objs/x86_64")
        })
}

/// The sorted `*.ORIG.o` files of the corpus; `None` (the test skips) where there is no corpus,
/// except under CI (`CI` set), where that is a failure.
fn orig_paths() -> Option<Vec<PathBuf>> {
    let dir = corpus_dir();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "the shared object corpus is not at {} (set KPATCH_RS_UNIT_OBJS)",
                dir.display()
            );
        }
        eprintln!(
            "SKIP: the shared object corpus is not at {} (set KPATCH_RS_UNIT_OBJS)",
            dir.display()
        );
        return None;
    };
    let mut paths: Vec<PathBuf> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".ORIG.o"))
        .collect();
    paths.sort();
    Some(paths)
}

fn crash(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/regressions")
            .join(name),
    )
    .unwrap()
}

/// The differ on `o` and `p` returns; what it outputs writes and reads back.
fn differ_returns(o: Object, p: Object) {
    if let Ok(kpatch_diff::Outcome::Changed { output, .. }) =
        kpatch_diff::diff(o, "ORIG.o", p, "PATCHED.o", &Default::default())
    {
        let bytes = output.write().expect("the output writes");
        Object::parse(&bytes, "out.o").expect("the output reads back");
    }
}

/// Runs crash input `name` through the differ: its patched object must be readable, so that the
/// test reaches the differ.
fn run(name: &str) {
    let Some(origs) = orig_paths() else { return };
    let data = crash(name);
    let (&pick, patched) = data.split_first().unwrap();
    let orig = std::fs::read(&origs[pick as usize % origs.len()]).unwrap();
    let o = Object::parse(&orig, "ORIG.o").unwrap();
    let p = Object::parse(patched, "PATCHED.o")
        .unwrap_or_else(|e| panic!("{name} no longer reaches the differ: {e}"));
    differ_returns(o, p);
}

/// The patched object's `.strtab` was renamed: read, then an output that could not be written.
/// The reader refuses such a file now; the differ must still refuse such an object, built in
/// memory from the case the input picks.
#[test]
fn fuzz_differ_renamed_strtab() {
    let Some(origs) = orig_paths() else { return };
    let data = crash("differ-renamed-strtab.crash");
    let (&pick, patched) = data.split_first().unwrap();
    let e = Object::parse(patched, "PATCHED.o").expect_err("the reader refuses a renamed .strtab");
    assert!(e.to_string().contains(".strtab"), "{e}");
    let (o, mut p) = case(&origs[pick as usize % origs.len()]);
    let strtab = p.section_by_name(".strtab").expect("a .strtab");
    p.sections[strtab.0].name = "hstrtab".into();
    // Refused as malformed (it could not be written), not a panic nor an unwritable output.
    match kpatch_diff::diff(o, "ORIG.o", p, "PATCHED.o", &Default::default()) {
        Err(e @ kpatch_diff::DiffError::Invalid { .. }) => {
            assert!(e.to_string().contains(".strtab"), "{e}")
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("an object without .strtab was diffed"),
    }
}

fn patched_path(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(format!("{name}.PATCHED.o"));
    if p.exists() {
        p
    } else {
        dir.join(format!("{name}.PATCHED.FAIL.o"))
    }
}

/// An `.orc_unwind_ip` relocation far past its section: an overflow computing the ORC entry.
/// The reader refuses such a file now; the differ must still cope with such an object, built in
/// memory from the case the input picks: the ORC address of a changed function moved past the
/// end.
#[test]
fn fuzz_differ_orc_offset_overflow() {
    let Some(origs) = orig_paths() else { return };
    let data = crash("differ-orc-offset-overflow.crash");
    let (&pick, patched) = data.split_first().unwrap();
    let e = Object::parse(patched, "PATCHED.o")
        .expect_err("the reader refuses a relocation past its section");
    assert!(
        e.to_string().contains("past the end of .orc_unwind_ip"),
        "{e}"
    );
    let (o, mut p) = case(&origs[pick as usize % origs.len()]);
    let Ok(kpatch_diff::Outcome::Changed { report, .. }) = kpatch_diff::diff(
        o.clone(),
        "ORIG.o",
        p.clone(),
        "PATCHED.o",
        &Default::default(),
    ) else {
        panic!("the case the input picks has no change");
    };
    let ip = p
        .section_by_name(".orc_unwind_ip")
        .expect("the case has ORC");
    let rela = p
        .sections
        .iter()
        .position(|s| s.rela_target() == Some(ip))
        .unwrap();
    // A section of a changed function (ORC addresses are relative to the section symbol).
    let changed: Vec<kpatch_elf::SectionIndex> = p
        .symbols_iter()
        .filter(|(_, s)| s.is_func() && report.changed_functions.contains(&s.name))
        .filter_map(|(_, s)| s.section)
        .collect();
    let at = p.sections[rela]
        .relas
        .iter()
        .position(|r| {
            p.symbols[r.r_sym.0]
                .section
                .is_some_and(|s| changed.contains(&s))
        })
        .expect("an ORC entry of a changed function");
    p.sections[rela].relas[at].r_offset = 0xff00_ffff_ffff_ffff;
    differ_returns(o, p);
}

/// The pair of corpus objects of original `orig_path`.
fn case(orig_path: &Path) -> (Object, Object) {
    let name = orig_path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace(".ORIG.o", "");
    let dir = orig_path.parent().unwrap();
    (
        Object::read(orig_path).unwrap(),
        Object::read(&patched_path(dir, &name)).unwrap(),
    )
}

/// An ftrace relocation at offset 0 of a function: an underflow finding the call instruction.
#[test]
fn fuzz_differ_fentry_at_offset_0() {
    run("differ-fentry-at-offset-0.crash");
}
