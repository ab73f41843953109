//! Fixture tests that fail because of differ bugs (listed in /work/notes/differ-bugs.md).
//! Each moves to `fixtures.rs` once the differ passes it. Run:
//! `cargo test -p kpatch-diff --test fixtures_pending`.

#[path = "fixtures/harness.rs"]
#[macro_use]
mod harness;

use harness::*;

#[test]
fn changed_string_in_a_const_string_table_patches_its_readers() {
    let p = fixture!("string_table");
    // Shape: the table's bytes are the same (pointers are relocations); a string it points to
    // is not.
    assert_eq!(section(&p.orig, ".rodata.names").unwrap().data, section(&p.patched, ".rodata.names").unwrap().data);
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["name_of"]));
    let names = symbol(&out, "names");
    let nsec = names.section.expect("names is copied into the patch");
    let nrelas = out.sections.iter().find(|s| s.is_rela() && s.rela_target() == Some(nsec)).unwrap();
    let second = nrelas.relas.iter().find(|r| r.r_offset == 8).unwrap();
    let t = &out.symbols[second.r_sym.0];
    let ssec = &out.sections[t.section.expect("the strings are carried").0];
    assert_eq!(ssec.string_at((t.st_value as i64 + second.r_addend) as u64), Some(&b"uno"[..]));
}

#[test]
fn unchanged_cold_child_of_a_changed_parent_is_carried_so_it_rejoins_the_new_parent() {
    let p = fixture!("cold_rejoin");
    // Shape: foo.cold is byte-for-byte and relocation-for-relocation the same, and jumps back
    // into foo (after which the patched code differs).
    let cold = ".text.unlikely.foo";
    assert_eq!(section(&p.orig, cold).unwrap().data, section(&p.patched, cold).unwrap().data);
    let back = |o: &kpatch_elf::Object| relas_of(o, cold).unwrap().relas.iter().map(|r| (target_name(o, r), r.r_addend)).collect::<Vec<_>>();
    assert_eq!(back(&p.orig), back(&p.patched));
    assert!(back(&p.orig).iter().any(|(n, _)| n == ".text.foo"), "foo.cold jumps back into foo");
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    // Left out, the kernel's foo.cold would return into the kernel's old foo and run old code.
    assert_eq!(defined_functions(&out), strs(&["foo", "foo.cold"]));
    let rejoin = relas_of(&out, cold).unwrap().relas.iter().find(|r| target_name(&out, r) == "foo").expect("foo.cold jumps back to foo");
    assert!(out.symbols[rejoin.r_sym.0].section.is_some(), "to the patched foo in the patch");
}

#[test]
fn new_exported_function_is_carried_with_its_export_or_refused_naming_it() {
    let p = fixture!("exported", &[], &["NEW_EXPORT"]);
    assert!(section(&p.patched, "___ksymtab+added").is_some());
    match p.diff() {
        // Supported: the patch module exports the new function.
        Ok(kpatch_diff::Outcome::Changed { output, report }) => {
            assert!(report.new_functions.contains(&"added".to_string()), "{report:?}");
            assert!(output.section_by_name("___ksymtab+added").is_some(), "the new export record is carried");
        }
        // Or refused, but then naming the new export, not an internal section.
        Err(e @ kpatch_diff::DiffError::Unpatchable { .. }) => {
            let t = e.to_string();
            assert!(t.contains("added"), "the refusal should name the new export `added`: {t}");
        }
        other => panic!("unexpected: {:?}", other.map(|_| ())),
    }
}
