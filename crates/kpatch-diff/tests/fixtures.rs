//! The differ's rules, each pinned by a small C fixture (`tests/fixtures/*.c`) compiled with
//! gcc at test time, as original and `-DPATCHED`, with kernel-like flags. `kernel.h` lays out
//! the kernel's special-section records as x86_64 6.1 does. Each test first checks that gcc
//! produced the shape it is about (a `.cold` symbol, a `__bug_table`, ...), so a compiler that
//! stops producing it fails the test instead of testing nothing.
//!
//! Run: `cargo test -p kpatch-diff --test fixtures`.

#[path = "fixtures/harness.rs"]
mod harness;

use harness::*;

/// Takes the fixture pair, or returns from the test (after saying why) without a compiler.
macro_rules! fixture {
    ($name:expr) => {
        match build($name) {
            Some(p) => p,
            None => return,
        }
    };
    ($name:expr, $orig:expr, $patched:expr) => {
        match build_with($name, $orig, $patched) {
            Some(p) => p,
            None => return,
        }
    };
}

// ---------------------------------------------------------------------------------------------
// The fixtures have the kernel's shape.

#[test]
fn fixtures_are_built_like_kernel_objects() {
    let p = fixture!("no_change");
    for obj in [&p.orig, &p.patched] {
        assert_eq!(obj.header.e_machine, kpatch_elf::consts::EM_X86_64);
        assert_ftrace_shape(obj, &[]);
        assert!(section(obj, ".text.foo").is_some() && section(obj, ".text.bar").is_some(), "one section per function");
    }
}

#[test]
fn identical_code_is_no_change() {
    let p = fixture!("no_change");
    let report = p.no_change();
    assert!(report.changed_functions.is_empty() && report.new_functions.is_empty(), "{report:?}");
}

// ---------------------------------------------------------------------------------------------
// Correlation.

#[test]
fn renamed_static_locals_are_paired_through_the_functions_that_use_them() {
    let p = fixture!("static_local");
    // Shape: gcc numbered the three "count"s so that the numbers moved.
    let names = |o| {
        let mut v: Vec<String> = symbol_names(o).into_iter().filter(|n| n.starts_with("count.")).collect();
        v.sort();
        v
    };
    assert_eq!(names(&p.orig), strs(&["count.0", "count.1"]));
    assert_eq!(names(&p.patched), strs(&["count.0", "count.1", "count.2"]));
    // The count second() uses in the original.
    let orig_count = relas_of(&p.orig, ".text.second")
        .unwrap()
        .relas
        .iter()
        .map(|r| target_name(&p.orig, r))
        .find(|n| n.starts_with(".bss.count.") || n.starts_with("count."))
        .expect("second() references its count");
    let orig_count = orig_count.trim_start_matches(".bss.").to_string();

    let (out, report) = p.changed();
    assert_eq!(report.changed_functions, strs(&["second"]));
    assert_eq!(report.new_functions, strs(&["early"]));
    // second() refers to the running kernel's variable, by its original name, undefined.
    let refs: Vec<String> =
        relas_of(&out, ".text.second").unwrap().relas.iter().map(|r| target_name(&out, r)).collect();
    assert!(refs.contains(&orig_count), "second() should reference {orig_count}: {refs:?}");
    let s = symbol(&out, &orig_count);
    assert!(s.section.is_none(), "{orig_count} must not be copied into the patch");
    // first() did not change.
    assert!(!defined_functions(&out).contains(&"first".to_string()));
}

#[test]
fn constprop_clone_correlates_and_keeps_its_original_name() {
    let p = fixture!("constprop");
    assert!(has_symbol(&p.orig, "scale.constprop.0"), "gcc made no constprop clone");
    let (out, report) = p.changed();
    assert_eq!(report.changed_functions, strs(&["scale.constprop.0"]));
    assert!(report.new_functions.is_empty(), "{report:?}");
    assert_eq!(defined_functions(&out), strs(&["scale.constprop.0"]));
}

#[test]
fn isra_clone_correlates_and_keeps_its_original_name() {
    let p = fixture!("isra");
    assert!(has_symbol(&p.orig, "get_c.isra.0"), "gcc made no isra clone");
    let (out, report) = p.changed();
    assert_eq!(report.changed_functions, strs(&["get_c.isra.0"]));
    assert!(report.new_functions.is_empty(), "{report:?}");
    assert_eq!(defined_functions(&out), strs(&["get_c.isra.0"]));
}

#[test]
fn change_in_cold_part_patches_the_parent_and_carries_the_cold_child() {
    let p = fixture!("cold");
    assert!(has_symbol(&p.orig, "with_cold.cold") && section(&p.orig, ".text.unlikely.with_cold").is_some(), "no .cold part");
    let (out, report) = p.changed();
    // The .cold part has no ftrace entry: its parent is what gets patched.
    assert_eq!(report.changed_functions, strs(&["with_cold"]));
    assert_eq!(defined_functions(&out), strs(&["with_cold", "with_cold.cold"]));
    assert!(!defined_functions(&out).contains(&"plain".to_string()));
}

#[test]
fn part_clone_change_is_patched_in_the_part_function() {
    let p = fixture!("part");
    assert!(has_symbol(&p.orig, "big.part.0"), "gcc made no .part clone");
    let (out, report) = p.changed();
    assert_eq!(report.changed_functions, strs(&["big.part.0"]));
    assert_eq!(defined_functions(&out), strs(&["big.part.0"]));
}

// ---------------------------------------------------------------------------------------------
// Change detection.

#[test]
fn line_number_only_change_in_warn_is_not_a_change() {
    let p = fixture!("warn_line");
    // Shape: the WARNs are in __bug_table, whose line fields differ.
    let (o, n) = (section(&p.orig, "__bug_table").unwrap(), section(&p.patched, "__bug_table").unwrap());
    assert_eq!(o.sh_size, 36, "three 12-byte bug entries");
    assert_ne!(o.data, n.data, "the bug entries' lines should differ");
    assert_eq!(section(&p.orig, ".text.check").unwrap().data, section(&p.patched, ".text.check").unwrap().data);
    p.no_change();
}

#[test]
fn real_change_next_to_a_moved_warn_is_a_change() {
    let p = fixture!("warn_line", &[], &["REAL_CHANGE"]);
    let (out, report) = p.changed();
    assert_eq!(report.changed_functions, strs(&["check"]));
    // Both WARNs of check() come along, with the patched lines; other()'s stays behind.
    assert_eq!(entry_targets(&out, "__bug_table", 12, 0), strs(&["check", "check"]));
    let bug = section(&out, "__bug_table").unwrap();
    let lines: Vec<u16> = bug.data.chunks(12).map(|e| u16::from_le_bytes([e[8], e[9]])).collect();
    assert_eq!(lines, vec![101, 102], "the patched build's lines (#line 100 before them)");
}

#[test]
fn line_number_only_change_in_might_sleep_is_not_a_change() {
    let p = fixture!("might_sleep_line");
    let (o, n) = (section(&p.orig, ".text.sleeper").unwrap(), section(&p.patched, ".text.sleeper").unwrap());
    assert_ne!(o.data, n.data, "the line passed to __might_sleep should differ");
    p.no_change();
}

#[test]
fn real_change_next_to_a_moved_might_sleep_is_a_change() {
    let p = fixture!("might_sleep_line", &[], &["REAL_CHANGE"]);
    let (_, report) = p.changed();
    assert_eq!(report.changed_functions, strs(&["sleeper"]));
}

#[test]
fn line_number_only_change_in_printk_is_not_a_change() {
    let p = fixture!("printk_line");
    // Shape: printk is __cold, so gcc moved the call to talker.cold; the line moved with it.
    assert!(has_symbol(&p.orig, "talker.cold"));
    let sec = ".text.unlikely.talker";
    assert_ne!(section(&p.orig, sec).unwrap().data, section(&p.patched, sec).unwrap().data);
    p.no_change();
}

#[test]
fn relocations_compare_by_target_symbol_not_bytes() {
    let p = fixture!("reloc_target");
    // Shape: calls() and points() have the same bytes in both builds.
    for f in [".text.calls", ".text.points"] {
        assert_eq!(section(&p.orig, f).unwrap().data, section(&p.patched, f).unwrap().data, "{f}");
    }
    let (out, report) = p.changed();
    // calls() calls another function; points() points to another element (another addend).
    assert_eq!(report.changed_functions, strs(&["calls", "points"]));
    assert_eq!(defined_functions(&out), strs(&["calls", "points"]));
    let refs: Vec<String> = relas_of(&out, ".text.calls").unwrap().relas.iter().map(|r| target_name(&out, r)).collect();
    assert!(refs.contains(&"ext_b".to_string()), "{refs:?}");
    let r = relas_of(&out, ".text.points").unwrap().relas.iter().find(|r| target_name(&out, r) == "table").unwrap();
    assert_eq!(r.r_addend, 8);
}

#[test]
fn shifted_symbol_indexes_and_new_neighbours_are_not_changes() {
    let p = fixture!("reloc_shift");
    // Shape: foo()'s relocations reference other symbol indexes in the patched build.
    let idx = |o: &kpatch_elf::Object| relas_of(o, ".text.foo").unwrap().relas.iter().map(|r| r.r_sym.0).collect::<Vec<_>>();
    assert_ne!(idx(&p.orig), idx(&p.patched));
    let (out, report) = p.changed();
    assert!(report.changed_functions.is_empty(), "{report:?}");
    assert_eq!(report.new_functions, strs(&["added"]));
    assert_eq!(defined_functions(&out), strs(&["added"]));
}

// ---------------------------------------------------------------------------------------------
// Inclusion.

#[test]
fn new_functions_data_and_strings_are_carried_with_the_changed_function() {
    let p = fixture!("new_things");
    let (out, report) = p.changed();
    assert_eq!(report.changed_functions, strs(&["foo"]));
    assert_eq!(sorted(&report.new_functions), strs(&["new_exported", "new_helper"]));
    for g in ["new_global", "new_exported"] {
        assert!(report.new_globals.contains(&g.to_string()), "{g} not in new_globals: {report:?}");
    }
    assert_eq!(defined_functions(&out), strs(&["foo", "new_exported", "new_helper"]));
    // New data is defined in the patch; existing data stays the kernel's.
    assert!(symbol(&out, "new_global").section.is_some());
    let new_static = out.symbols.iter().find(|s| s.name.starts_with("new_static")).expect("new_static carried");
    assert!(new_static.section.is_some());
    assert!(symbol(&out, "existing").section.is_none(), "existing data must stay undefined");
    // The new helper's string literal is in the output.
    let strings: Vec<u8> =
        out.sections.iter().filter(|s| s.is_strings() && s.name.starts_with(".rodata")).flat_map(|s| s.data.clone()).collect();
    assert!(
        strings.windows(b"new helper string".len()).any(|w| w == b"new helper string"),
        "the new string is not in the output"
    );
    assert!(!defined_functions(&out).contains(&"bar".to_string()));
}

#[test]
fn patch_callbacks_are_found_and_carried() {
    let p = fixture!("callbacks");
    let (out, report) = p.changed();
    assert_eq!(report.changed_functions, strs(&["foo"]));
    assert_eq!(sorted(&report.callbacks), strs(&["post_patch_cb", "post_unpatch_cb", "pre_patch_cb", "pre_unpatch_cb"]));
    for kind in ["pre_patch", "post_patch", "pre_unpatch", "post_unpatch"] {
        let sec = format!(".kpatch.callbacks.{kind}");
        let targets: Vec<String> = relas_of(&out, &sec)
            .unwrap_or_else(|| panic!("{sec} not in the output"))
            .relas
            .iter()
            .map(|r| target_name(&out, r))
            .collect();
        assert_eq!(targets, vec![format!("{kind}_cb")], "{sec}");
        assert!(symbol(&out, &format!("{kind}_cb")).section.is_some(), "{kind}_cb defined in the patch");
    }
}
