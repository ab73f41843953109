//! The differ on a real original object and a fuzzed patched one: it returns an outcome or an
//! error, never panics, and any output it builds can be written.
//!
//! The first input byte picks the original from the corpus named by `KPATCH_RS_FUZZ_ORIG_DIR`
//! (the `*.ORIG.o` files, sorted; default `../../shared/kpatch-unit-objs/x86_64`); the rest is the
//! patched object. `scripts/fuzz.sh` seeds it with the corpus's PATCHED objects.
#![no_main]

use kpatch_elf::Object;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static ORIGS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let dir = std::env::var("KPATCH_RS_FUZZ_ORIG_DIR").unwrap_or_else(|_| "../../shared/kpatch-unit-objs/x86_64".into());
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e} (set KPATCH_RS_FUZZ_ORIG_DIR)"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".ORIG.o"))
        .collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
});

fuzz_target!(|data: &[u8]| {
    let Some((&pick, patched)) = data.split_first() else { return };
    let origs = &*ORIGS;
    if origs.is_empty() {
        return;
    }
    let orig = &origs[pick as usize % origs.len()];
    let (Ok(o), Ok(p)) = (Object::parse(orig, "ORIG.o"), Object::parse(patched, "PATCHED.o")) else { return };
    if let Ok(kpatch_diff::Outcome::Changed { output, .. }) = kpatch_diff::diff(o, "ORIG.o", p, "PATCHED.o", &Default::default()) {
        let bytes = output.write().expect("the differ's output must be writable");
        Object::parse(&bytes, "out.o").expect("the differ's output must read back");
    }
});
