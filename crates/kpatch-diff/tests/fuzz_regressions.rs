//! Inputs the fuzzer (`scripts/fuzz.sh`, target `differ`) crashed on, kept as tests. Each file is
//! a fuzz input: its first byte picks an original object from the shared corpus (the sorted
//! `*.ORIG.o` files), the rest is the patched object. The differ must return, never panic, and
//! whatever it outputs must write and read back.

use kpatch_elf::Object;
use std::path::PathBuf;

fn origs() -> Option<Vec<Vec<u8>>> {
    let dir = std::env::var_os("KPATCH_RS_UNIT_OBJS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/kpatch-unit-objs/x86_64")
        });
    let Ok(rd) = std::fs::read_dir(&dir) else {
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
    Some(paths.iter().map(|p| std::fs::read(p).unwrap()).collect())
}

fn run(name: &str) {
    let Some(origs) = origs() else { return };
    let data = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/regressions")
            .join(name),
    )
    .unwrap();
    let (&pick, patched) = data.split_first().unwrap();
    let orig = &origs[pick as usize % origs.len()];
    let o = Object::parse(orig, "ORIG.o").unwrap();
    let Ok(p) = Object::parse(patched, "PATCHED.o") else {
        return;
    };
    if let Ok(kpatch_diff::Outcome::Changed { output, .. }) =
        kpatch_diff::diff(o, "ORIG.o", p, "PATCHED.o", &Default::default())
    {
        let bytes = output.write().expect("the output writes");
        Object::parse(&bytes, "out.o").expect("the output reads back");
    }
}

/// The patched object's `.strtab` was renamed: read, then an output that could not be written.
#[test]
fn fuzz_differ_renamed_strtab() {
    run("differ-renamed-strtab.crash");
}

/// An `.orc_unwind_ip` relocation far past its section: an overflow computing the ORC entry.
#[test]
fn fuzz_differ_orc_offset_overflow() {
    run("differ-orc-offset-overflow.crash");
}

/// An ftrace relocation at offset 0 of a function: an underflow finding the call instruction.
#[test]
fn fuzz_differ_fentry_at_offset_0() {
    run("differ-fentry-at-offset-0.crash");
}
