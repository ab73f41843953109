//! The patch-file parser behind `kpatch-rs build`: any text gives the files a patch touches or
//! an error with a line number inside the text, never a panic; every path it returns is a
//! relative path that stays inside the tree.
//!
//! The first byte is the `-p` strip level (0 to 3); the rest is the patch.
#![no_main]

use kpatch_build::patchfile::parse;
use libfuzzer_sys::fuzz_target;
use std::path::Component;

fuzz_target!(|data: &[u8]| {
    let Some((&strip, text)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(text);
    match parse(&text, usize::from(strip % 4)) {
        Ok(changes) => {
            for c in &changes {
                for p in c.paths() {
                    assert!(
                        p.components().all(|c| matches!(c, Component::Normal(_))),
                        "{p:?} leaves the tree"
                    );
                    assert!(!p.as_os_str().is_empty());
                }
            }
        }
        Err((line, reason)) => {
            assert!(line >= 1 && line <= text.lines().count().max(1) + 1, "line {line}: {reason}");
            assert!(!reason.is_empty());
        }
    }
});
