//! The table-free instruction lengths (`x86_64_len`) against iced-x86 on every instruction of
//! the kpatch corpus's code sections: where it answers, it answers as iced does.

use iced_x86::{Decoder, DecoderOptions};
use kpatch_elf::Object;
use std::path::PathBuf;

fn corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("KPATCH_RS_UNIT_OBJS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/kpatch-unit-objs/x86_64")
        });
    dir.is_dir().then_some(dir)
}

#[test]
fn table_free_lengths_agree_with_iced_on_the_corpus() {
    let Some(dir) = corpus() else {
        eprintln!("skipped: the kpatch corpus (../shared/kpatch-unit-objs/x86_64) is absent");
        return;
    };
    let (mut answered, mut total) = (0usize, 0usize);
    let mut left: std::collections::BTreeMap<Vec<u8>, usize> = Default::default();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "o") {
            continue;
        }
        let obj = Object::read(&path).unwrap();
        for sec in obj.sections.iter().filter(|s| s.name.starts_with(".text")) {
            let code = &sec.data;
            let mut at = 0;
            while at < code.len() {
                let window = &code[at..code.len().min(at + 15)];
                let insn = Decoder::new(64, window, DecoderOptions::NONE).decode();
                let iced = (!insn.is_invalid()).then(|| insn.len());
                total += 1;
                if let Some(n) = kpatch_arch::x86_64_len::length(window) {
                    answered += 1;
                    assert_eq!(
                        Some(n),
                        iced,
                        "{}: {} +{at:#x}: {window:02x?}",
                        path.display(),
                        sec.name
                    );
                } else {
                    *left
                        .entry(window[..window.len().min(3)].to_vec())
                        .or_default() += 1;
                }
                match iced {
                    Some(n) => at += n,
                    None => break,
                }
            }
        }
    }
    assert!(total > 100_000, "only {total} instructions in the corpus");
    // Most kernel instructions need no table: otherwise this module is pointless.
    assert!(answered * 10 > total * 9, "answered {answered} of {total}");
    let mut left: Vec<_> = left.into_iter().collect();
    left.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    eprintln!(
        "answered {answered} of {total} instructions; left to iced, most often: {:02x?}",
        &left[..left.len().min(12)]
    );
}
