//! The differ's rules, each pinned by a small C fixture (`tests/fixtures/*.c`) compiled with
//! gcc at test time, as original and `-DPATCHED`, with kernel-like flags. `kernel.h` lays out
//! the kernel's special-section records as x86_64 6.1 does. Each test first checks that gcc
//! produced the shape it is about (a `.cold` symbol, a `__bug_table`, ...), so a compiler that
//! stops producing it fails the test instead of testing nothing.
//!
//! Run: `cargo test -p kpatch-diff --test fixtures`.

#[path = "fixtures/harness.rs"]
#[macro_use]
mod harness;

use harness::*;
use kpatch_diff::{Change, CodeDifference, Differs, Why};

// ---------------------------------------------------------------------------------------------
// The fixtures have the kernel's shape; what is no change; what cannot be compared.

#[test]
fn fixtures_are_built_like_kernel_objects() {
    let p = fixture!("no_change");
    for obj in [&p.orig, &p.patched] {
        assert_eq!(obj.header.e_machine, kpatch_elf::consts::EM_X86_64);
        assert_ftrace_shape(obj, &[]);
        assert!(
            section(obj, ".text.foo").is_some() && section(obj, ".text.bar").is_some(),
            "one section per function"
        );
    }
}

#[test]
fn identical_code_is_no_change() {
    let p = fixture!("no_change");
    let report = p.no_change();
    assert!(
        report.changed_functions.is_empty() && report.new_functions.is_empty(),
        "{report:?}"
    );
}

#[test]
fn removed_function_is_no_change() {
    let p = fixture!("removed");
    assert!(has_symbol(&p.orig, "old_fn") && !has_symbol(&p.patched, "old_fn"));
    let report = p.no_change();
    assert!(report.changed_functions.is_empty(), "{report:?}");
}

#[test]
fn reordered_functions_and_data_are_no_change() {
    let p = fixture!("reordered");
    // Shape: the sections come in another order (other indexes) in the patched build.
    let index = |o: &kpatch_elf::Object, n: &str| o.section_by_name(n).unwrap().0;
    assert!(index(&p.orig, ".text.alpha") < index(&p.orig, ".text.beta"));
    assert!(index(&p.patched, ".text.alpha") > index(&p.patched, ".text.beta"));
    let report = p.no_change();
    assert!(report.changed_functions.is_empty(), "{report:?}");
}

#[test]
fn objects_of_different_sources_are_invalid() {
    let (Some(a), Some(b)) = (build("no_change"), build("warn_line")) else {
        return;
    };
    match kpatch_diff::diff(
        a.orig,
        "a.o",
        b.orig,
        "b.o",
        &kpatch_diff::Options::default(),
    ) {
        Err(e @ kpatch_diff::DiffError::Invalid { .. }) => {
            assert_eq!(e.exit_code(), 1);
            let t = e.to_string();
            assert!(
                t.contains("no_change.c") && t.contains("warn_line.c"),
                "{t}"
            );
        }
        other => panic!("expected Invalid, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn the_same_pair_always_gives_the_same_output_bytes() {
    for name in [
        "new_things",
        "alt_extable",
        "printk_index",
        "ex_table_fixup",
    ] {
        let p = fixture!(name);
        let bytes = || match p.diff() {
            Ok(kpatch_diff::Outcome::Changed { output, .. }) => output.write().unwrap(),
            other => panic!("{name}: expected a change, got {:?}", other.map(|_| ())),
        };
        let first = bytes();
        for _ in 0..3 {
            assert!(bytes() == first, "{name}: two runs gave different objects");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Correlation: sections and symbols of the two objects, gcc's numbered names, clones, static
// locals (paired through the functions that use them), section groups.

#[test]
fn renamed_static_locals_are_paired_through_the_functions_that_use_them() {
    let p = fixture!("static_local");
    // Shape: gcc numbered the three "count"s so that the numbers moved.
    let names = |o| {
        let mut v: Vec<String> = symbol_names(o)
            .into_iter()
            .filter(|n| n.starts_with("count."))
            .collect();
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
    assert_eq!(sorted(&report.changed_functions), strs(&["second"]));
    assert_eq!(sorted(&report.new_functions), strs(&["early"]));
    // second() refers to the running kernel's variable, by its original name, undefined.
    let refs: Vec<String> = relas_of(&out, ".text.second")
        .unwrap()
        .relas
        .iter()
        .map(|r| target_name(&out, r))
        .collect();
    assert!(
        refs.contains(&orig_count),
        "second() should reference {orig_count}: {refs:?}"
    );
    let s = symbol(&out, &orig_count);
    assert!(
        s.section.is_none(),
        "{orig_count} must not be copied into the patch"
    );
    // first() did not change.
    assert!(!defined_functions(&out).contains(&"first".to_string()));
}

#[test]
fn static_local_used_only_in_a_cold_child_is_paired_through_it() {
    let p = fixture!("static_local_cold");
    let var_of = |o: &kpatch_elf::Object| {
        relas_of(o, ".text.unlikely.foo")
            .expect("foo has a .cold part")
            .relas
            .iter()
            .map(|r| target_name(o, r).trim_start_matches(".bss.").to_string())
            .find(|n| n.starts_with("errors."))
            .expect("foo.cold references its static local")
    };
    let (orig_var, patched_var) = (var_of(&p.orig), var_of(&p.patched));
    assert_ne!(
        orig_var, patched_var,
        "the fixture should renumber foo's static local"
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert!(defined_functions(&out).contains(&"foo.cold".to_string()));
    let refs: Vec<String> = relas_of(&out, ".text.unlikely.foo")
        .unwrap()
        .relas
        .iter()
        .map(|r| target_name(&out, r))
        .collect();
    assert!(
        refs.contains(&orig_var),
        "foo.cold should reference the original {orig_var}: {refs:?}"
    );
    assert!(
        symbol(&out, &orig_var).section.is_none(),
        "{orig_var} is the kernel's"
    );
}

#[test]
fn unique_id_static_locals_correlate_despite_their_counter() {
    let p = fixture!("unique_id");
    // Shape: foo()'s static local is __UNIQUE_ID_calls0.N in the original and
    // __UNIQUE_ID_calls1.N in the patched build, where calls1 was bar()'s name.
    assert!(symbol_names(&p.orig)
        .iter()
        .any(|n| n.starts_with("__UNIQUE_ID_calls0.")));
    assert!(symbol_names(&p.patched)
        .iter()
        .any(|n| n.starts_with("__UNIQUE_ID_calls2.")));
    let orig_foo_var = relas_of(&p.orig, ".text.foo")
        .unwrap()
        .relas
        .iter()
        .map(|r| target_name(&p.orig, r))
        .find(|n| n.contains("__UNIQUE_ID_calls"))
        .expect("foo() references its static local");
    let orig_foo_var = orig_foo_var.trim_start_matches(".bss.").to_string();

    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    let refs: Vec<String> = relas_of(&out, ".text.foo")
        .unwrap()
        .relas
        .iter()
        .map(|r| target_name(&out, r))
        .collect();
    assert!(
        refs.contains(&orig_foo_var),
        "foo() should reference the original {orig_foo_var}: {refs:?}"
    );
    assert!(
        symbol(&out, &orig_foo_var).section.is_none(),
        "{orig_foo_var} is the kernel's, not copied"
    );
    assert!(!defined_functions(&out).contains(&"bar".to_string()));
}

#[test]
fn file_scope_unique_id_variables_correlate_by_position_not_by_a_shared_counter() {
    let p = fixture!("unique_id_file");
    // Shape: foo's variable is __UNIQUE_ID_cnt0 in the original and __UNIQUE_ID_cnt1 in the
    // patched build, where __UNIQUE_ID_cnt1 was bar's.
    let var_of = |o: &kpatch_elf::Object, f: &str| {
        relas_of(o, f)
            .unwrap()
            .relas
            .iter()
            .map(|r| target_name(o, r).trim_start_matches(".data.").to_string())
            .find(|n| n.starts_with("__UNIQUE_ID_cnt"))
            .unwrap()
    };
    assert_eq!(var_of(&p.orig, ".text.foo"), "__UNIQUE_ID_cnt0");
    assert_eq!(var_of(&p.patched, ".text.foo"), "__UNIQUE_ID_cnt1");
    assert_eq!(var_of(&p.orig, ".text.bar"), "__UNIQUE_ID_cnt1");
    let (out, report) = p.changed();
    // bar() did not change; foo() did, and must use the kernel's foo counter (cnt0), not bar's.
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    let refs: Vec<String> = relas_of(&out, ".text.foo")
        .unwrap()
        .relas
        .iter()
        .map(|r| target_name(&out, r))
        .collect();
    assert!(refs.contains(&"__UNIQUE_ID_cnt0".to_string()), "{refs:?}");
    assert!(
        symbol(&out, "__UNIQUE_ID_cnt0").section.is_none(),
        "the kernel's counter"
    );
}

#[test]
fn static_local_of_a_removed_cold_child_is_paired_through_its_parent() {
    let p = fixture!("static_local_cold", &[], &["NO_COLD"]);
    // Shape: in the original only foo.cold uses foo's "errors"; the patched foo has no .cold
    // part and uses it itself, under another number.
    assert!(has_symbol(&p.orig, "foo.cold") && !has_symbol(&p.patched, "foo.cold"));
    let orig_var = relas_of(&p.orig, ".text.unlikely.foo")
        .unwrap()
        .relas
        .iter()
        .map(|r| {
            target_name(&p.orig, r)
                .trim_start_matches(".bss.")
                .to_string()
        })
        .find(|n| n.starts_with("errors."))
        .unwrap();
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    let refs: Vec<String> = relas_of(&out, ".text.foo")
        .unwrap()
        .relas
        .iter()
        .map(|r| target_name(&out, r))
        .collect();
    assert!(
        refs.contains(&orig_var),
        "foo should reference the original {orig_var}: {refs:?}"
    );
    assert!(
        symbol(&out, &orig_var).section.is_none(),
        "{orig_var} is the kernel's"
    );
    // Only first()'s own (new) "errors" may be reported as new.
    assert!(
        report.warnings.iter().all(|w| w.contains("used by first")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn constprop_clone_correlates_and_keeps_its_original_name() {
    let p = fixture!("constprop");
    assert!(
        has_symbol(&p.orig, "scale.constprop.0"),
        "gcc made no constprop clone"
    );
    let (out, report) = p.changed();
    assert_eq!(
        sorted(&report.changed_functions),
        strs(&["scale.constprop.0"])
    );
    assert!(report.new_functions.is_empty(), "{report:?}");
    assert_eq!(defined_functions(&out), strs(&["scale.constprop.0"]));
}

#[test]
fn isra_clone_correlates_and_keeps_its_original_name() {
    let p = fixture!("isra");
    assert!(
        has_symbol(&p.orig, "get_c.isra.0"),
        "gcc made no isra clone"
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["get_c.isra.0"]));
    assert!(report.new_functions.is_empty(), "{report:?}");
    assert_eq!(defined_functions(&out), strs(&["get_c.isra.0"]));
}

#[test]
fn cold_child_of_an_isra_clone_goes_with_its_clone() {
    let p = fixture!("isra_cold");
    assert!(
        has_symbol(&p.orig, "get_c.isra.0") && has_symbol(&p.orig, "get_c.isra.0.cold"),
        "no isra clone with a .cold part"
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["get_c.isra.0"]));
    assert_eq!(
        defined_functions(&out),
        strs(&["get_c.isra.0", "get_c.isra.0.cold"])
    );
    let sites: Vec<String> = relas_of(&out, "__mcount_loc")
        .unwrap()
        .relas
        .iter()
        .map(|r| target_name(&out, r))
        .collect();
    assert_eq!(
        sites,
        strs(&["get_c.isra.0"]),
        "the .cold part has no ftrace entry of its own"
    );
}

#[test]
fn change_in_cold_part_patches_the_parent_and_carries_the_cold_child() {
    let p = fixture!("cold");
    assert!(
        has_symbol(&p.orig, "with_cold.cold")
            && section(&p.orig, ".text.unlikely.with_cold").is_some(),
        "no .cold part"
    );
    let (out, report) = p.changed();
    // The .cold part has no ftrace entry: its parent is what gets patched.
    assert_eq!(sorted(&report.changed_functions), strs(&["with_cold"]));
    assert_eq!(
        defined_functions(&out),
        strs(&["with_cold", "with_cold.cold"])
    );
    assert!(!defined_functions(&out).contains(&"plain".to_string()));
}

#[test]
fn unchanged_cold_child_of_a_changed_parent_is_carried_so_it_rejoins_the_new_parent() {
    let p = fixture!("cold_rejoin");
    // Shape: foo.cold is byte-for-byte and relocation-for-relocation the same, and jumps back
    // into foo (after which the patched code differs).
    let cold = ".text.unlikely.foo";
    assert_eq!(
        section(&p.orig, cold).unwrap().data,
        section(&p.patched, cold).unwrap().data
    );
    let back = |o: &kpatch_elf::Object| {
        relas_of(o, cold)
            .unwrap()
            .relas
            .iter()
            .map(|r| (target_name(o, r), r.r_addend))
            .collect::<Vec<_>>()
    };
    assert_eq!(back(&p.orig), back(&p.patched));
    assert!(
        back(&p.orig).iter().any(|(n, _)| n == ".text.foo"),
        "foo.cold jumps back into foo"
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    // Left out, the kernel's foo.cold would return into the kernel's old foo and run old code.
    assert_eq!(defined_functions(&out), strs(&["foo", "foo.cold"]));
    let rejoin = relas_of(&out, cold)
        .unwrap()
        .relas
        .iter()
        .find(|r| target_name(&out, r) == "foo")
        .expect("foo.cold jumps back to foo");
    assert!(
        out.symbols[rejoin.r_sym.0].section.is_some(),
        "to the patched foo in the patch"
    );
}

#[test]
fn new_cold_child_is_carried_with_its_parent() {
    let p = fixture!("cold_new");
    assert!(!has_symbol(&p.orig, "foo.cold") && has_symbol(&p.patched, "foo.cold"));
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert!(
        report.new_functions.is_empty(),
        "a child is not a new function of its own: {report:?}"
    );
    assert_eq!(defined_functions(&out), strs(&["foo", "foo.cold"]));
}

#[test]
fn part_clone_change_is_patched_in_the_part_function() {
    let p = fixture!("part");
    assert!(has_symbol(&p.orig, "big.part.0"), "gcc made no .part clone");
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["big.part.0"]));
    assert_eq!(defined_functions(&out), strs(&["big.part.0"]));
}

#[test]
fn new_function_with_a_cold_part_is_carried_whole() {
    let p = fixture!("new_cold_fn");
    assert!(
        has_symbol(&p.patched, "added.cold"),
        "shape: the new function has a .cold part"
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(
        sorted(&report.new_functions),
        strs(&["added"]),
        "the .cold part is not a function of its own"
    );
    assert_eq!(
        defined_functions(&out),
        strs(&["added", "added.cold", "foo"])
    );
    let sites: Vec<String> = relas_of(&out, "__mcount_loc")
        .unwrap()
        .relas
        .iter()
        .map(|r| target_name(&out, r))
        .collect();
    assert_eq!(sorted(&sites), strs(&["added", "foo"]));
}

#[test]
fn warn_once_flags_are_carried_not_correlated() {
    let p = fixture!("warn_once");
    assert!(section(&p.orig, ".data.once").is_some() && has_symbol(&p.orig, "__already_done.0"));
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    // foo()'s flag is the patch's own (the patched function may warn once more).
    let flags: Vec<&kpatch_elf::Symbol> = out
        .symbols
        .iter()
        .filter(|s| s.name.starts_with("__already_done."))
        .collect();
    assert!(
        !flags.is_empty() && flags.iter().all(|s| s.section.is_some()),
        "{flags:?}"
    );
    assert!(!defined_functions(&out).contains(&"bar".to_string()));
}

#[test]
fn ratelimit_states_are_carried_not_correlated() {
    let p = fixture!("ratelimit");
    assert!(
        symbol_names(&p.orig)
            .iter()
            .filter(|n| n.starts_with("_rs."))
            .count()
            == 2,
        "two _rs states"
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    // foo() gets a fresh state of its own; bar()'s stays the kernel's business.
    let states: Vec<&kpatch_elf::Symbol> = out
        .symbols
        .iter()
        .filter(|s| s.name.starts_with("_rs."))
        .collect();
    assert_eq!(states.len(), 1, "{states:?}");
    assert!(states[0].section.is_some());
    let data = &out.sections[states[0].section.unwrap().0].data;
    assert_eq!(
        &data[..8],
        &[5, 0, 0, 0, 10, 0, 0, 0],
        "interval 5, burst 10"
    );
}

#[test]
fn lockdep_keys_are_carried_not_correlated() {
    let p = fixture!("lockdep_key");
    assert!(
        symbol_names(&p.orig)
            .iter()
            .filter(|n| n.starts_with("__key."))
            .count()
            == 2,
        "two __key statics"
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    let keys: Vec<&kpatch_elf::Symbol> = out
        .symbols
        .iter()
        .filter(|s| s.name.starts_with("__key."))
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].section.is_some(),
        "the patched mutex_init site has a key of its own"
    );
    assert!(
        report.warnings.is_empty(),
        "a lockdep key is not a static local to warn about: {:?}",
        report.warnings
    );
}

/// Found by the upstream-fixes corpus (net/sched/cls_api.c): a changed function's
/// NL_SET_ERR_MSG string `__msg.38` was referenced in the kernel, which has five `__msg.38`
/// among hundreds of `__msg.N` and no way to tell them apart; the build failed. Like `__func__`,
/// the string is the call site's own and is carried with the function.
#[test]
fn extack_msg_strings_are_carried_not_looked_up() {
    let p = fixture!("extack_msg");
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    let msgs: Vec<&kpatch_elf::Symbol> = out
        .symbols
        .iter()
        .filter(|s| s.name.starts_with("__msg"))
        .collect();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].section.is_some(),
        "foo's message is carried, not left for the module to find in the kernel"
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

/// Found by the upstream-fixes corpus (drivers/acpi/acpica/psargs.c and two more): a changed
/// ACPICA function names its file through `_acpi_module_name`, which 107 files of vmlinux
/// define and kallsyms cannot tell apart; the build failed. The string is carried instead.
#[test]
fn acpica_module_names_are_carried_not_looked_up() {
    let p = fixture!("acpi_module_name");
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    let names: Vec<&kpatch_elf::Symbol> = out
        .symbols
        .iter()
        .filter(|s| s.name == "_acpi_module_name")
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].section.is_some(), "carried with foo");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

/// Found by the upstream-fixes corpus (drivers/usb/atm/usbatm.c, CVE-2026-90055): a changed
/// constant in gcc's 2-byte constant pool was refused as "existing data changed: .rodata.cst2".
/// A constant pool is the unit's literals, reached only through its section: the patch carries
/// its own copy, as it does string literals.
#[test]
fn a_changed_constant_pool_is_carried_not_refused() {
    let p = fixture!("constant_pool");
    assert!(
        p.orig.sections.iter().any(|s| s.name == ".rodata.cst2"),
        "gcc put the constant in .rodata.cst2"
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert!(
        out.sections.iter().any(|s| s.name == ".rodata.cst2"),
        "the new constant goes with foo"
    );
}

#[test]
fn new_static_local_is_carried_with_a_warning() {
    let p = fixture!("new_static_local");
    assert!(has_symbol(&p.patched, "calls.0") && !has_symbol(&p.orig, "calls.0"));
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("calls.0") && w.contains("new")),
        "expected a warning about calls.0: {:?}",
        report.warnings
    );
    assert!(
        symbol(&out, "calls.0").section.is_some(),
        "the new static local is defined in the patch"
    );
}

#[test]
fn cold_and_hot_subsection_functions_correlate_and_moving_between_them_is_a_change() {
    let p = fixture!("subsections");
    for s in [
        ".text.unlikely.slow_path",
        ".text.hot.fast_path",
        ".text.mover",
    ] {
        assert!(section(&p.orig, s).is_some(), "shape: {s} in the original");
    }
    assert!(
        section(&p.patched, ".text.unlikely.mover").is_some(),
        "shape: mover moved to .text.unlikely"
    );
    let (out, report) = p.changed();
    assert_eq!(
        sorted(&report.changed_functions),
        strs(&["fast_path", "mover", "slow_path"])
    );
    assert!(report.new_functions.is_empty(), "{report:?}");
    let mover = symbol(&out, "mover");
    assert_eq!(
        out.sections[mover.section.unwrap().0].name,
        ".text.unlikely.mover"
    );
    let sites: Vec<String> = relas_of(&out, "__mcount_loc")
        .unwrap()
        .relas
        .iter()
        .map(|r| target_name(&out, r))
        .collect();
    assert_eq!(sorted(&sites), strs(&["fast_path", "mover", "slow_path"]));
}

#[test]
fn section_relative_references_resolve_to_the_variable_at_the_accessed_address() {
    let p = fixture!("shared_section");
    // Shape: foo() reaches both variables through the .data..read_mostly section symbol, one
    // of them with an immediate after the displacement (addend -8).
    let addends: Vec<i64> = relas_of(&p.orig, ".text.foo")
        .unwrap()
        .relas
        .iter()
        .filter(|r| target_name(&p.orig, r) == ".data..read_mostly")
        .map(|r| r.r_addend)
        .collect();
    assert!(addends.contains(&-8), "{addends:?}");
    let (a, b) = (
        symbol(&p.orig, "a").st_value as i64,
        symbol(&p.orig, "b").st_value as i64,
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    let refs: Vec<(String, i64)> = relas_of(&out, ".text.foo")
        .unwrap()
        .relas
        .iter()
        .map(|r| (target_name(&out, r), r.r_addend))
        .filter(|(n, _)| n == "a" || n == "b")
        .collect();
    // Each reference now names the variable it reaches, its addend made relative to it: the
    // load of a ends 4 bytes after its displacement, the store of $7 to b 8 bytes after.
    let mut expect = vec![("a".to_string(), -4), ("b".to_string(), -8)];
    expect.sort();
    let mut got = refs.clone();
    got.sort();
    assert_eq!(got, expect, "a at {a}, b at {b}");
    assert!(
        symbol(&out, "a").section.is_none() && symbol(&out, "b").section.is_none(),
        "the kernel's variables"
    );
}

#[test]
fn a_pointer_just_past_an_array_refers_to_that_array() {
    let p = fixture!("end_pointer");
    // Shape: sum() uses .bss.arr + 0 and .bss.arr + 32 (one past the end).
    let addends: Vec<i64> = relas_of(&p.orig, ".text.sum")
        .unwrap()
        .relas
        .iter()
        .filter(|r| target_name(&p.orig, r) == ".bss.arr")
        .map(|r| r.r_addend)
        .collect();
    assert_eq!(addends, vec![0, 32]);
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["sum"]));
    let refs: Vec<(String, i64)> = relas_of(&out, ".text.sum")
        .unwrap()
        .relas
        .iter()
        .map(|r| (target_name(&out, r), r.r_addend))
        .filter(|(n, _)| n.contains("arr"))
        .collect();
    assert_eq!(refs, vec![("arr".to_string(), 0), ("arr".to_string(), 32)]);
    assert!(symbol(&out, "arr").section.is_none(), "the kernel's array");
    assert!(section(&out, ".bss.arr").is_none());
}

#[test]
fn percpu_references_resolve_to_the_kernels_percpu_variables() {
    let p = fixture!("percpu");
    assert!(section(&p.orig, ".data..percpu").is_some());
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    let refs: Vec<(String, i64)> = relas_of(&out, ".text.foo")
        .unwrap()
        .relas
        .iter()
        .map(|r| (target_name(&out, r), r.r_addend))
        .filter(|(n, _)| n.starts_with("pcpu_") || n.contains("percpu"))
        .collect();
    // The %gs store of $7 ends 8 bytes after its displacement, the load 4 bytes after: both
    // reach pcpu_second.
    assert_eq!(
        sorted(
            &refs
                .iter()
                .map(|(n, a)| format!("{n}{a:+}"))
                .collect::<Vec<_>>()
        ),
        strs(&["pcpu_second-4", "pcpu_second-8"])
    );
    assert!(
        symbol(&out, "pcpu_second").section.is_none(),
        "the kernel's per-CPU variable"
    );
    assert!(
        section(&out, ".data..percpu").is_none(),
        "no per-CPU data is copied"
    );
}

#[test]
fn unchanged_section_group_does_not_stop_a_patch() {
    let p = fixture!("group_unchanged");
    assert!(
        p.orig.sections.iter().any(|s| s.is_group()),
        "no COMDAT group"
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert!(!has_symbol(&out, "grp_fn"));
}

#[test]
fn unchanged_section_group_with_shifted_member_indexes_does_not_stop_a_patch() {
    let p = fixture!("group_unchanged", &[], &["SHIFT"]);
    // Shape: the group's member list names other section indexes in the patched build.
    let members = |o: &kpatch_elf::Object| {
        o.sections
            .iter()
            .find(|s| s.is_group())
            .unwrap()
            .data
            .clone()
    };
    assert_ne!(members(&p.orig), members(&p.patched));
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(sorted(&report.new_functions), strs(&["added"]));
    assert!(!has_symbol(&out, "grp_fn"));
}

// ---------------------------------------------------------------------------------------------
// Change detection: relocations by target and addend, strings by content, __LINE__-only moves
// are no change, a change in a function's special entries or tables is a change.

#[test]
fn line_number_only_change_in_warn_is_not_a_change() {
    let p = fixture!("warn_line");
    // Shape: the WARNs are in __bug_table, whose line fields differ.
    let (o, n) = (
        section(&p.orig, "__bug_table").unwrap(),
        section(&p.patched, "__bug_table").unwrap(),
    );
    assert_eq!(o.sh_size, 36, "three 12-byte bug entries");
    assert_ne!(o.data, n.data, "the bug entries' lines should differ");
    assert_eq!(
        section(&p.orig, ".text.check").unwrap().data,
        section(&p.patched, ".text.check").unwrap().data
    );
    p.no_change();
}

#[test]
fn line_number_only_change_in_bug_is_not_a_change() {
    let p = fixture!("bug_line");
    let (o, n) = (
        section(&p.orig, "__bug_table").unwrap(),
        section(&p.patched, "__bug_table").unwrap(),
    );
    assert_eq!(o.sh_size, 24, "two 12-byte bug entries");
    assert_ne!(o.data, n.data, "the bug entries' lines should differ");
    let flags: Vec<u16> = o
        .data
        .chunks(12)
        .map(|e| u16::from_le_bytes([e[10], e[11]]))
        .collect();
    assert_eq!(flags, vec![0, 0], "BUG, not WARN");
    p.no_change();
}

#[test]
fn real_change_next_to_a_moved_warn_is_a_change() {
    let p = fixture!("warn_line", &[], &["REAL_CHANGE"]);
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["check"]));
    // Both WARNs of check() come along, with the patched lines; other()'s stays behind.
    assert_eq!(
        entry_targets(&out, "__bug_table", 12, 0),
        strs(&["check", "check"])
    );
    let bug = section(&out, "__bug_table").unwrap();
    let lines: Vec<u16> = bug
        .data
        .chunks(12)
        .map(|e| u16::from_le_bytes([e[8], e[9]]))
        .collect();
    assert_eq!(
        lines,
        vec![101, 102],
        "the patched build's lines (#line 100 before them)"
    );
}

#[test]
fn line_number_only_change_in_might_sleep_is_not_a_change() {
    let p = fixture!("might_sleep_line");
    let (o, n) = (
        section(&p.orig, ".text.sleeper").unwrap(),
        section(&p.patched, ".text.sleeper").unwrap(),
    );
    assert_ne!(
        o.data, n.data,
        "the line passed to __might_sleep should differ"
    );
    p.no_change();
}

#[test]
fn real_change_next_to_a_moved_might_sleep_is_a_change() {
    let p = fixture!("might_sleep_line", &[], &["REAL_CHANGE"]);
    let (_, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["sleeper"]));
    // The report names the real change, the call to ext() gcc no longer makes a tail call,
    // not the earlier `mov $__LINE__, %esi` (101, patched) that only moved.
    let line = offset_of_bytes(&p.patched, "sleeper", &[0xbe, 101, 0, 0, 0]);
    let call = relas_of(&p.patched, ".text.sleeper")
        .unwrap()
        .relas
        .iter()
        .find(|r| target_name(&p.patched, r) == "ext")
        .unwrap()
        .r_offset as i64
        - 1
        - symbol(&p.patched, "sleeper").st_value as i64;
    assert!(line < call, "shape: the line load comes first");
    let d = code_change(&report, "sleeper");
    assert_eq!(d.at, format!("sleeper+{call:#x}"), "{d:?}");
}

#[test]
fn line_number_only_change_in_printk_is_not_a_change() {
    let p = fixture!("printk_line");
    // Shape: printk is __cold, so gcc moved the call to talker.cold; the line moved with it.
    assert!(has_symbol(&p.orig, "talker.cold"));
    let sec = ".text.unlikely.talker";
    assert_ne!(
        section(&p.orig, sec).unwrap().data,
        section(&p.patched, sec).unwrap().data
    );
    p.no_change();
}

#[test]
fn line_number_only_change_in_an_indexed_printk_is_not_a_change() {
    let p = fixture!("printk_line", &["INDEXED"], &["INDEXED"]);
    // Shape: the printk index record (pi_entry) holds the line too.
    assert!(section(&p.orig, ".printk_index").is_some());
    let entry = |o: &kpatch_elf::Object| {
        o.sections
            .iter()
            .find(|s| s.name.starts_with(".rodata._entry"))
            .expect("a pi_entry section")
            .data
            .clone()
    };
    assert_ne!(
        entry(&p.orig),
        entry(&p.patched),
        "the pi_entry's line should differ"
    );
    p.no_change();
}

#[test]
fn lines_moved_by_an_edit_above_change_only_the_edited_function() {
    let p = fixture!("lines_shift");
    // Shape: the later functions' code or bug entries carry other line numbers.
    for sec in [".text.second", ".text.unlikely.fourth", "__bug_table"] {
        assert_ne!(
            section(&p.orig, sec).unwrap().data,
            section(&p.patched, sec).unwrap().data,
            "{sec}"
        );
    }
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["first"]));
    assert_eq!(defined_functions(&out), strs(&["first"]));
    assert!(
        section(&out, "__bug_table").is_none(),
        "third()'s WARN entry stays behind"
    );
}

#[test]
fn initcall_record_renamed_by_a_line_shift_is_not_a_change() {
    let p = fixture!("initcall");
    // Shape: the initcall record's name carries the line of device_initcall().
    let record = |o: &kpatch_elf::Object| {
        symbol_names(o)
            .into_iter()
            .find(|n| n.starts_with("__initcall__kmod_"))
            .unwrap()
    };
    assert_ne!(record(&p.orig), record(&p.patched));
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(defined_functions(&out), strs(&["foo"]));
    assert!(
        !out.sections.iter().any(|s| s.name.contains("init")),
        "no init code or initcall in the patch"
    );
}

#[test]
fn relocations_compare_by_target_symbol_not_bytes() {
    let p = fixture!("reloc_target");
    // Shape: calls() and points() have the same bytes in both builds.
    for f in [".text.calls", ".text.points"] {
        assert_eq!(
            section(&p.orig, f).unwrap().data,
            section(&p.patched, f).unwrap().data,
            "{f}"
        );
    }
    let (out, report) = p.changed();
    // calls() calls another function; points() points to another element (another addend).
    assert_eq!(
        sorted(&report.changed_functions),
        strs(&["calls", "points"])
    );
    assert_eq!(defined_functions(&out), strs(&["calls", "points"]));
    let refs: Vec<String> = relas_of(&out, ".text.calls")
        .unwrap()
        .relas
        .iter()
        .map(|r| target_name(&out, r))
        .collect();
    assert!(refs.contains(&"ext_b".to_string()), "{refs:?}");
    let r = relas_of(&out, ".text.points")
        .unwrap()
        .relas
        .iter()
        .find(|r| target_name(&out, r) == "table")
        .unwrap();
    assert_eq!(r.r_addend, 8);
}

#[test]
fn shifted_symbol_indexes_and_new_neighbours_are_not_changes() {
    let p = fixture!("reloc_shift");
    // Shape: foo()'s relocations reference other symbol indexes in the patched build.
    let idx = |o: &kpatch_elf::Object| {
        relas_of(o, ".text.foo")
            .unwrap()
            .relas
            .iter()
            .map(|r| r.r_sym.0)
            .collect::<Vec<_>>()
    };
    assert_ne!(idx(&p.orig), idx(&p.patched));
    let (out, report) = p.changed();
    assert!(report.changed_functions.is_empty(), "{report:?}");
    assert_eq!(sorted(&report.new_functions), strs(&["added"]));
    assert_eq!(defined_functions(&out), strs(&["added"]));
}

#[test]
fn string_references_compare_by_content_not_by_section_or_offset() {
    let p = fixture!("strings");
    // Shape: bar()'s __func__ string is .rodata.__func__.0 in the original and .1 in the
    // patched build, where .0 is early()'s.
    let func_of = |o: &kpatch_elf::Object| {
        relas_of(o, ".text.bar")
            .unwrap()
            .relas
            .iter()
            .map(|r| target_name(o, r))
            .find(|n| n.starts_with(".rodata.__func__."))
            .unwrap()
    };
    assert_eq!(
        (func_of(&p.orig).as_str(), func_of(&p.patched).as_str()),
        (".rodata.__func__.0", ".rodata.__func__.1")
    );
    let (out, report) = p.changed();
    // foo()'s message changed (same offsets, other bytes); bar() did not.
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(sorted(&report.new_functions), strs(&["early"]));
    assert!(!defined_functions(&out).contains(&"bar".to_string()));
    let strings: Vec<u8> = out
        .sections
        .iter()
        .filter(|s| s.is_strings())
        .flat_map(|s| s.data.clone())
        .collect();
    let needle = b"foo: hello, world!\n";
    assert!(
        strings.windows(needle.len()).any(|w| w == needle),
        "foo's new message is in the output"
    );
}

#[test]
fn change_in_an_inlined_helper_changes_every_caller() {
    let p = fixture!("inlined");
    assert!(
        !has_symbol(&p.orig, "helper"),
        "shape: helper is inlined everywhere"
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["user1", "user2"]));
    assert_eq!(defined_functions(&out), strs(&["user1", "user2"]));
}

#[test]
fn moved_special_entries_of_unchanged_functions_are_not_a_change() {
    let p = fixture!("special_shift");
    // Shape: first() gains one more site of each kind, so foo's and bar's entries move.
    for (sec, size) in [
        ("__bug_table", 12),
        ("__jump_table", 16),
        (".altinstructions", 12),
        ("__ex_table", 12),
        (".smp_locks", 4),
    ] {
        let n = |o| section(o, sec).unwrap().sh_size / size;
        assert_eq!((n(&p.orig), n(&p.patched)), (3, 4), "{sec}");
    }
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["first"]));
    assert_eq!(defined_functions(&out), strs(&["first"]));
    for (sec, size) in [
        ("__bug_table", 12),
        ("__jump_table", 16),
        (".altinstructions", 12),
        ("__ex_table", 12),
        (".smp_locks", 4),
    ] {
        assert_eq!(
            entry_targets(&out, sec, size, 0),
            strs(&["first", "first"]),
            "{sec}"
        );
    }
}

/// The key of each jump entry of `name` (16 bytes: the key's R_X86_64_PC64 at 8) whose code is
/// in `func`, as (target, addend), in entry order.
fn jump_keys_of(obj: &kpatch_elf::Object, func: &str) -> Vec<(String, i64)> {
    let relas = &relas_of(obj, "__jump_table").expect("__jump_table").relas;
    let text = format!(".text.{func}");
    relas
        .iter()
        .filter(|r| r.r_offset % 16 == 0 && target_name(obj, r) == text)
        .map(|code| {
            let key = relas
                .iter()
                .find(|k| k.r_offset == code.r_offset + 8)
                .expect("the entry's key");
            assert_eq!(key.r_type, 24, "R_X86_64_PC64");
            (target_name(obj, key), key.r_addend)
        })
        .collect()
}

/// Issue 10: functions whose code and relocations were the same were reported changed because
/// the keys of their 16-byte jump entries, R_X86_64_PC64 references to `__dyndbg + offset`,
/// moved when the patch added a pr_debug elsewhere (kpatch-rs resolved such references to the
/// key's symbol for every relocation type but PC64).
#[test]
fn regression_unchanged_function_reported_changed_for_its_moved_pc64_jump_key() {
    let p = fixture!("jump_key_shift");
    // Shape: foo's and bar's code is the same, and their jump keys point into __dyndbg at
    // other offsets in the patched build.
    for f in ["foo", "bar"] {
        let text = format!(".text.{f}");
        assert_eq!(
            section(&p.orig, &text).unwrap().data,
            section(&p.patched, &text).unwrap().data
        );
        let (o, n) = (jump_keys_of(&p.orig, f), jump_keys_of(&p.patched, f));
        assert_eq!(o.len(), 1, "{f}: one pr_debug");
        assert_eq!((o[0].0.as_str(), n[0].0.as_str()), ("__dyndbg", "__dyndbg"));
        assert_ne!(o[0].1, n[0].1, "{f}: the key moved");
    }
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["last"]));
    assert_eq!(defined_functions(&out), strs(&["last"]));
}

/// A jump-entry size given wrong (24 for 16-byte entries) cut the entries across functions and
/// paired their fields wrongly, so unchanged functions were reported changed: the size the
/// entries show is used instead, with a warning naming the given one.
#[test]
fn given_entry_size_that_the_entries_contradict_is_replaced_by_theirs() {
    let p = fixture!("jump_key_shift", &["SHARED_KEYS"], &["SHARED_KEYS"]);
    // Shape: two 16-byte jump entries for each of foo, bar and last.
    assert_eq!(section(&p.patched, "__jump_table").unwrap().sh_size, 6 * 16);
    let options = kpatch_diff::Options {
        entry_sizes: vec![("__jump_table".into(), 24)],
        ..Default::default()
    };
    let r = kpatch_diff::diff(
        p.orig.clone(),
        "orig.o",
        p.patched.clone(),
        "patched.o",
        &options,
    );
    let Ok(kpatch_diff::Outcome::Changed { report, .. }) = r else {
        panic!("expected a change: {r:?}");
    };
    assert_eq!(sorted(&report.changed_functions), strs(&["last"]));
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("__jump_table") && w.contains("16 bytes") && w.contains("24")),
        "{:?}",
        report.warnings
    );
}

/// The same rule for a static key that shares its section with others (`__read_mostly`): the
/// entry references the key, the kernel's copy, and the section is not copied into the patch
/// (kpatch-rs refused the patch: ".data..read_mostly would be copied").
#[test]
fn jump_keys_in_a_shared_data_section_reference_the_kernels_key() {
    let p = fixture!("jump_key_shift", &["SHARED_KEYS"], &["SHARED_KEYS"]);
    assert!(jump_keys_of(&p.patched, "last")
        .iter()
        .any(|(t, _)| t == ".data..read_mostly"));
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["last"]));
    assert_eq!(
        sorted(&entry_targets(&out, "__jump_table", 16, 8)),
        strs(&["key_last"]),
        "last's pr_debug entry is dropped, its key's kept"
    );
    assert!(
        symbol(&out, "key_last").section.is_none(),
        "the kernel's key"
    );
    assert!(section(&out, ".data..read_mostly").is_none());
}

#[test]
fn changed_switch_table_changes_its_function() {
    let p = fixture!("switch_table");
    // Shape: pick()'s code and relocations are the same; only its CSWTCH table differs.
    assert!(has_symbol(&p.orig, "CSWTCH.3"));
    assert_eq!(
        section(&p.orig, ".text.pick").unwrap().data,
        section(&p.patched, ".text.pick").unwrap().data
    );
    assert_ne!(
        section(&p.orig, ".rodata.CSWTCH.3").unwrap().data,
        section(&p.patched, ".rodata.CSWTCH.3").unwrap().data
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["pick"]));
    // pick() uses the patch's own table, with the new value.
    let t = out
        .symbols
        .iter()
        .find(|s| s.name.starts_with("CSWTCH"))
        .expect("the table is in the output");
    let data = &out.sections[t.section.expect("the table is defined in the patch").0].data;
    assert_eq!(&data[20..24], &61i32.to_le_bytes());
    assert!(!defined_functions(&out).contains(&"other".to_string()));
}

#[test]
fn changed_bug_entry_flags_change_the_function() {
    let p = fixture!("bug_flags");
    // Shape: same code, the first bug entry's flags differ (WARNING vs WARNING|ONCE).
    assert_eq!(
        section(&p.orig, ".text.foo").unwrap().data,
        section(&p.patched, ".text.foo").unwrap().data
    );
    let flags = |o| {
        let d = &section(o, "__bug_table").unwrap().data;
        d.chunks(12)
            .map(|e| u16::from_le_bytes([e[10], e[11]]))
            .collect::<Vec<_>>()
    };
    assert_ne!(flags(&p.orig), flags(&p.patched));
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(entry_targets(&out, "__bug_table", 12, 0), strs(&["foo"]));
    assert_eq!(flags(&out), vec![3], "the patched entry is WARNING|ONCE");
}

#[test]
fn changed_alternative_feature_changes_the_function() {
    let p = fixture!("alternatives", &[], &["FEATURE_ONLY"]);
    assert_eq!(
        section(&p.orig, ".text.foo").unwrap().data,
        section(&p.patched, ".text.foo").unwrap().data
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    let alt = &section(&out, ".altinstructions").unwrap().data;
    assert_eq!(
        u16::from_le_bytes([alt[8], alt[9]]),
        26,
        "the patched feature bit (X86_FEATURE_XMM2)"
    );
}

#[test]
fn changed_alternative_replacement_changes_the_function() {
    let p = fixture!("alternatives", &[], &["REPLACEMENT_ONLY"]);
    assert_eq!(
        section(&p.orig, ".text.foo").unwrap().data,
        section(&p.patched, ".text.foo").unwrap().data
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    let repl = &section(&out, ".altinstr_replacement").unwrap().data;
    assert!(
        repl.windows(3).any(|w| w == [0x0f, 0xae, 0xf8]),
        "the patched replacement (sfence) is in the output"
    );
}

#[test]
fn changed_ex_table_type_changes_the_function() {
    let p = fixture!("ex_table", &[], &["TYPE_ONLY"]);
    assert_eq!(
        section(&p.orig, ".text.foo").unwrap().data,
        section(&p.patched, ".text.foo").unwrap().data
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(entry_targets(&out, "__ex_table", 12, 0), strs(&["foo"]));
    let e = &section(&out, "__ex_table").unwrap().data;
    assert_eq!(
        u32::from_le_bytes([e[8], e[9], e[10], e[11]]),
        1,
        "the patched type, EX_TYPE_DEFAULT"
    );
}

#[test]
fn changed_jump_label_key_changes_the_function() {
    let p = fixture!("jump_table", &[], &["KEY_ONLY"]);
    assert_eq!(
        section(&p.orig, ".text.foo").unwrap().data,
        section(&p.patched, ".text.foo").unwrap().data
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(
        sorted(&entry_targets(&out, "__jump_table", 16, 8)),
        strs(&["key_bar", "key_local"])
    );
}

#[test]
fn changed_fixup_stub_changes_its_function() {
    let p = fixture!("ex_table_fixup", &[], &["STUB_ONLY"]);
    // Shape: foo's code is the same; only its .fixup stub returns another error.
    assert_eq!(
        section(&p.orig, ".text.foo").unwrap().data,
        section(&p.patched, ".text.foo").unwrap().data
    );
    assert_ne!(
        section(&p.orig, ".fixup").unwrap().data,
        section(&p.patched, ".fixup").unwrap().data
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    let fixup = &section(&out, ".fixup").expect(".fixup in the output").data;
    assert!(
        fixup
            .windows(5)
            .any(|w| w == [0xb8, 0xea, 0xff, 0xff, 0xff]),
        "the patched stub (mov $-22) is in the output"
    );
}

// ---------------------------------------------------------------------------------------------
// Inclusion: changed and new functions with their children, new data and strings, callbacks,
// ftrace entries.

#[test]
fn new_functions_data_and_strings_are_carried_with_the_changed_function() {
    let p = fixture!("new_things");
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(
        sorted(&report.new_functions),
        strs(&["new_exported", "new_helper"])
    );
    for g in ["new_global", "new_exported"] {
        assert!(
            report.new_globals.contains(&g.to_string()),
            "{g} not in new_globals: {report:?}"
        );
    }
    assert_eq!(
        defined_functions(&out),
        strs(&["foo", "new_exported", "new_helper"])
    );
    // New data is defined in the patch; existing data stays the kernel's.
    assert!(symbol(&out, "new_global").section.is_some());
    let new_static = out
        .symbols
        .iter()
        .find(|s| s.name.starts_with("new_static"))
        .expect("new_static carried");
    assert!(new_static.section.is_some());
    assert!(
        symbol(&out, "existing").section.is_none(),
        "existing data must stay undefined"
    );
    // The new helper's string literal is in the output.
    let strings: Vec<u8> = out
        .sections
        .iter()
        .filter(|s| s.is_strings() && s.name.starts_with(".rodata"))
        .flat_map(|s| s.data.clone())
        .collect();
    assert!(
        strings
            .windows(b"new helper string".len())
            .any(|w| w == b"new helper string"),
        "the new string is not in the output"
    );
    assert!(!defined_functions(&out).contains(&"bar".to_string()));
    // The new helper's WARN_ON comes along, bar()'s does not.
    assert_eq!(
        entry_targets(&out, "__bug_table", 12, 0),
        strs(&["new_helper"])
    );
}

#[test]
fn new_function_reached_only_through_new_data_is_carried() {
    let p = fixture!("new_ops");
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(sorted(&report.new_functions), strs(&["new_callback"]));
    assert_eq!(defined_functions(&out), strs(&["foo", "new_callback"]));
    let ops = symbol(&out, "new_ops");
    let osec = ops.section.expect("new_ops is defined in the patch");
    let orelas = out
        .sections
        .iter()
        .find(|s| s.is_rela() && s.rela_target() == Some(osec))
        .unwrap();
    assert_eq!(
        orelas
            .relas
            .iter()
            .map(|r| target_name(&out, r))
            .collect::<Vec<_>>(),
        vec!["new_callback".to_string()]
    );
    let sites: Vec<String> = relas_of(&out, "__mcount_loc")
        .unwrap()
        .relas
        .iter()
        .map(|r| target_name(&out, r))
        .collect();
    assert_eq!(sorted(&sites), strs(&["foo", "new_callback"]));
}

#[test]
fn changed_functions_become_local_and_new_globals_stay_global() {
    let p = fixture!("new_things");
    let (out, _) = p.changed();
    // A patched function must not be linked to by name: the kernel's foo stays the global one.
    assert!(
        symbol(&out, "foo").is_local(),
        "changed foo must be local in the patch"
    );
    assert!(
        !symbol(&out, "new_exported").is_local(),
        "a new global function stays global"
    );
    assert!(
        !symbol(&out, "new_global").is_local(),
        "a new global variable stays global"
    );
}

#[test]
fn part_child_change_with_unchanged_parent_is_patched() {
    let p = fixture!("part_parent");
    // Shape: big() stays a function and big.part.0 is its child, with its own ftrace entry.
    assert!(has_symbol(&p.orig, "big") && has_symbol(&p.orig, "big.part.0"));
    assert_ftrace_shape(&p.orig, &[]);
    assert_eq!(
        section(&p.orig, ".text.big").unwrap().data,
        section(&p.patched, ".text.big").unwrap().data
    );
    let (out, report) = p.changed();
    assert!(
        defined_functions(&out).contains(&"big.part.0".to_string()),
        "{report:?}"
    );
    // The changed code is only in big.part.0: the report must say something changed.
    assert!(!report.changed_functions.is_empty(), "{report:?}");
}

#[test]
fn bug_entries_of_an_included_cold_child_are_kept() {
    let p = fixture!("warn_cold");
    // Shape: each function's WARN (ud2 and its __bug_table entry) is in its .cold part.
    assert!(has_symbol(&p.orig, "check.cold") && has_symbol(&p.orig, "other.cold"));
    assert_eq!(
        sorted(&entry_targets(&p.orig, "__bug_table", 12, 0)),
        strs(&[".text.unlikely.check", ".text.unlikely.other"])
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["check"]));
    assert!(defined_functions(&out).contains(&"check.cold".to_string()));
    assert_eq!(
        entry_targets(&out, "__bug_table", 12, 0),
        strs(&["check.cold"])
    );
}

#[test]
fn changed_const_data_is_carried_with_its_changed_user() {
    let p = fixture!("const_data");
    assert!(section(&p.orig, ".rodata.weights").is_some());
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    // foo() reads the patch's own copy of the new table; other_weights stays the kernel's.
    let w = symbol(&out, "weights");
    let data = &out.sections[w.section.expect("weights is copied into the patch").0].data;
    assert_eq!(&data[12..16], &5i32.to_le_bytes());
    assert!(!has_symbol(&out, "other_weights"));
}

#[test]
fn changed_const_table_alone_patches_its_users() {
    let p = fixture!("const_data", &[], &["TABLE_ONLY"]);
    assert_eq!(
        section(&p.orig, ".text.foo").unwrap().data,
        section(&p.patched, ".text.foo").unwrap().data
    );
    let (out, report) = p.changed();
    // Read-only data cannot be changed in place, but its readers can be patched to read a new copy.
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    let w = symbol(&out, "weights");
    let data = &out.sections[w.section.expect("weights is copied into the patch").0].data;
    assert_eq!(&data[12..16], &5i32.to_le_bytes());
}

#[test]
fn changed_const_data_reached_through_a_const_pointer_table_patches_its_readers() {
    let p = fixture!("const_ops");
    // Shape: select() reads weights_a only through tables[], which does not change.
    let refs = |o: &kpatch_elf::Object| {
        relas_of(o, ".text.select")
            .unwrap()
            .relas
            .iter()
            .map(|r| target_name(o, r))
            .collect::<Vec<_>>()
    };
    assert!(
        refs(&p.orig).iter().any(|n| n.contains("tables"))
            && !refs(&p.orig).iter().any(|n| n.contains("weights"))
    );
    let (out, report) = p.changed();
    // The kernel's tables[] points to the kernel's weights_a: select() must read a new tables[]
    // that points to the new weights_a.
    assert_eq!(sorted(&report.changed_functions), strs(&["select"]));
    let t = symbol(&out, "tables");
    let tsec = t.section.expect("tables is copied into the patch");
    let trelas = out
        .sections
        .iter()
        .find(|s| s.is_rela() && s.rela_target() == Some(tsec))
        .unwrap();
    let targets: Vec<String> = trelas.relas.iter().map(|r| target_name(&out, r)).collect();
    assert!(targets.contains(&"weights_a".to_string()), "{targets:?}");
    let w = symbol(&out, "weights_a");
    assert_eq!(
        &out.sections[w.section.expect("weights_a is copied").0].data[12..16],
        &5i32.to_le_bytes()
    );
    assert!(
        symbol(&out, "weights_b").section.is_none(),
        "weights_b stays the kernel's"
    );
}

#[test]
fn changed_string_in_a_const_string_table_patches_its_readers() {
    let p = fixture!("string_table");
    // Shape: the table's bytes are the same (pointers are relocations); a string it points to
    // is not.
    assert_eq!(
        section(&p.orig, ".rodata.names").unwrap().data,
        section(&p.patched, ".rodata.names").unwrap().data
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["name_of"]));
    let names = symbol(&out, "names");
    let nsec = names.section.expect("names is copied into the patch");
    let nrelas = out
        .sections
        .iter()
        .find(|s| s.is_rela() && s.rela_target() == Some(nsec))
        .unwrap();
    let second = nrelas.relas.iter().find(|r| r.r_offset == 8).unwrap();
    let t = &out.symbols[second.r_sym.0];
    let ssec = &out.sections[t.section.expect("the strings are carried").0];
    assert_eq!(
        ssec.string_at((t.st_value as i64 + second.r_addend) as u64),
        Some(&b"uno"[..])
    );
}

#[test]
fn changed_static_local_const_table_patches_its_reader() {
    let p = fixture!("local_const");
    assert!(
        symbol_names(&p.orig)
            .iter()
            .filter(|n| n.starts_with("factors."))
            .count()
            == 2,
        "two static local tables"
    );
    assert_eq!(
        section(&p.orig, ".text.lookup").unwrap().data,
        section(&p.patched, ".text.lookup").unwrap().data
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["lookup"]));
    let t = out
        .symbols
        .iter()
        .find(|s| s.name.starts_with("factors."))
        .expect("a table in the output");
    let data = &out.sections[t.section.expect("lookup's new table is in the patch").0].data;
    assert_eq!(&data[16..20], &17i32.to_le_bytes());
}

#[test]
fn patch_callbacks_are_found_and_carried() {
    let p = fixture!("callbacks");
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(
        sorted(&report.callbacks),
        strs(&[
            "post_patch_cb",
            "post_unpatch_cb",
            "pre_patch_cb",
            "pre_unpatch_cb"
        ])
    );
    for kind in ["pre_patch", "post_patch", "pre_unpatch", "post_unpatch"] {
        let sec = format!(".kpatch.callbacks.{kind}");
        let targets: Vec<String> = relas_of(&out, &sec)
            .unwrap_or_else(|| panic!("{sec} not in the output"))
            .relas
            .iter()
            .map(|r| target_name(&out, r))
            .collect();
        assert_eq!(targets, vec![format!("{kind}_cb")], "{sec}");
        assert!(
            symbol(&out, &format!("{kind}_cb")).section.is_some(),
            "{kind}_cb defined in the patch"
        );
    }
}

/// kernel.h copies the record layout of include/kpatch-macros.h (which needs the kernel's
/// headers to compile): a change there must be made in kernel.h too.
#[test]
fn kernel_h_markers_follow_include_kpatch_macros_h() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let macros = std::fs::read_to_string(root.join("include/kpatch-macros.h"))
        .expect("include/kpatch-macros.h");
    let ours =
        std::fs::read_to_string(root.join("crates/kpatch-diff/tests/fixtures/kernel.h")).unwrap();
    // Compare the macros' tokens: no line continuations, single spaces.
    let squash = |s: &str| {
        s.replace("\\\n", " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (macros, ours) = (squash(&macros), squash(&ours));
    for needle in [
        "__section(\".kpatch.callbacks.\" #_kind)",
        "int (*fn)(patch_object *obj); const char *objname;",
        "void (*fn)(patch_object *obj); const char *objname;",
        ".fn = _fn, .objname = NULL,",
        "__section(\".kpatch.ignore.sections\")",
        "__section(\".kpatch.ignore.functions\")",
        "__section(\".kpatch.force\")",
    ] {
        assert!(
            macros.contains(needle),
            "include/kpatch-macros.h no longer has `{needle}`: update kernel.h"
        );
        assert!(ours.contains(needle), "kernel.h lacks `{needle}`");
    }
}

#[test]
fn callbacks_alone_are_a_change() {
    let p = fixture!("callbacks", &[], &["CALLBACKS_ONLY"]);
    let (out, report) = p.changed();
    assert!(report.changed_functions.is_empty(), "{report:?}");
    assert_eq!(report.callbacks.len(), 4, "{report:?}");
    assert!(symbol(&out, "pre_patch_cb").section.is_some());
    assert!(!has_symbol(&out, "foo"));
}

#[test]
fn ignored_function_is_not_patched() {
    let p = fixture!("ignore");
    assert!(section(&p.patched, ".kpatch.ignore.functions").is_some());
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["bar"]));
    assert_eq!(report.ignored, strs(&["foo"]));
    assert_eq!(defined_functions(&out), strs(&["bar"]));
    assert!(
        !out.sections
            .iter()
            .any(|s| s.name.contains(".kpatch.ignore")),
        "the marker section is not part of the patch"
    );
}

#[test]
fn changed_exported_function_is_patched_without_its_export_record() {
    let p = fixture!("exported");
    assert!(
        section(&p.orig, "___ksymtab+foo").is_some(),
        "shape: foo is exported"
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert!(report.new_globals.is_empty(), "{report:?}");
    // The kernel keeps exporting its foo; the patch redirects it through ftrace.
    let names: Vec<&str> = out
        .sections
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| n.contains("ksymtab") || n.contains("discard"))
        .collect();
    assert!(names.is_empty(), "export records in the output: {names:?}");
    assert!(symbol(&out, "foo").is_local());
}

#[test]
fn ignored_section_change_is_not_refused() {
    let p = fixture!("read_mostly", &[], &["IGNORE"]);
    assert!(section(&p.patched, ".kpatch.ignore.sections").is_some());
    let report = p.no_change();
    assert_eq!(report.ignored, strs(&[".data..read_mostly"]));
}

#[test]
fn forced_function_is_reported_and_its_marker_kept() {
    let p = fixture!("ignore", &[], &["FORCE"]);
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["bar"]));
    assert_eq!(report.forced, strs(&["bar"]));
    // The module generator reads the marker from the output.
    let targets: Vec<String> = relas_of(&out, ".kpatch.force")
        .expect(".kpatch.force in the output")
        .relas
        .iter()
        .map(|r| target_name(&out, r))
        .collect();
    assert_eq!(targets, strs(&["bar"]));
}

#[test]
fn mcount_loc_lists_each_changed_and_new_function_once() {
    let p = fixture!("new_things");
    let (out, _) = p.changed();
    let relas = relas_of(&out, "__mcount_loc").expect("__mcount_loc in the output");
    let mut sites: Vec<String> = relas
        .relas
        .iter()
        .map(|r| {
            assert_eq!(r.r_type, kpatch_arch::x86_64::R_X86_64_64);
            assert_eq!(
                r.r_addend, 0,
                "the ftrace call is the function's first instruction"
            );
            target_name(&out, r)
        })
        .collect();
    sites.sort();
    assert_eq!(sites, strs(&["foo", "new_exported", "new_helper"]));
    assert_eq!(section(&out, "__mcount_loc").unwrap().sh_size, 8 * 3);
}

/// objtool `--mcount --mnop` (6.x kernels) turns each `call __fentry__` into a 5-byte NOP and
/// its relocation into R_X86_64_NONE, keeping `__mcount_loc`. Done here on the model, as objtool
/// would on the file.
fn objtool_nop_mcount(obj: &mut kpatch_elf::Object) {
    let fentry: Vec<usize> = obj
        .symbols
        .iter()
        .enumerate()
        .filter(|(_, s)| s.name == "__fentry__")
        .map(|(i, _)| i)
        .collect();
    for i in 0..obj.sections.len() {
        if !obj.sections[i].is_rela() {
            continue;
        }
        let base = obj.sections[i].rela_target().unwrap().0;
        let mut sites = Vec::new();
        for r in obj.sections[i]
            .relas
            .iter_mut()
            .filter(|r| fentry.contains(&r.r_sym.0))
        {
            r.r_type = kpatch_arch::x86_64::R_X86_64_NONE;
            sites.push(r.r_offset as usize - 1);
        }
        for at in sites {
            obj.sections[base].data[at..at + 5].copy_from_slice(&[0x0f, 0x1f, 0x44, 0x00, 0x00]);
        }
    }
}

#[test]
fn ftrace_nops_written_by_objtool_are_found_and_made_calls_in_the_output() {
    let Some(mut p) = build("constprop") else {
        return;
    };
    objtool_nop_mcount(&mut p.orig);
    objtool_nop_mcount(&mut p.patched);
    assert_eq!(
        &section(&p.orig, ".text.use_scale").unwrap().data[..5],
        &[0x0f, 0x1f, 0x44, 0x00, 0x00]
    );
    let (out, report) = p.changed();
    assert_eq!(
        sorted(&report.changed_functions),
        strs(&["scale.constprop.0"])
    );
    // The patched function starts with the call ftrace expects, relocated to __fentry__.
    let text = section(&out, ".text.scale.constprop.0").unwrap();
    assert_eq!(&text.data[..5], &[0xe8, 0, 0, 0, 0]);
    let first = relas_of(&out, ".text.scale.constprop.0")
        .unwrap()
        .relas
        .iter()
        .find(|r| r.r_offset == 1)
        .unwrap();
    assert_eq!(
        (target_name(&out, first).as_str(), first.r_type),
        ("__fentry__", kpatch_arch::x86_64::R_X86_64_PC32)
    );
    let sites: Vec<(String, i64)> = relas_of(&out, "__mcount_loc")
        .unwrap()
        .relas
        .iter()
        .map(|r| (target_name(&out, r), r.r_addend))
        .collect();
    assert_eq!(sites, vec![("scale.constprop.0".to_string(), 0)]);
}

#[test]
fn padded_functions_get_mcount_loc_and_no_patchable_entries_of_others() {
    let p = match build_with_flags("padded", &[], &[], &["-fpatchable-function-entry=16,16"]) {
        Some(p) => p,
        None => return,
    };
    // Shape: foo starts after 16 bytes of padding, listed in __patchable_function_entries.
    assert_eq!(symbol(&p.orig, "foo").st_value, 16);
    assert!(section(&p.orig, "__patchable_function_entries").is_some());
    assert_ftrace_shape(&p.orig, &[]);
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(
        symbol(&out, "foo").st_value,
        16,
        "the padding stays in front of foo"
    );
    let mcount = relas_of(&out, "__mcount_loc").expect("__mcount_loc in the output");
    let sites: Vec<(String, i64)> = mcount
        .relas
        .iter()
        .map(|r| (target_name(&out, r), r.r_addend))
        .collect();
    assert_eq!(sites, vec![("foo".to_string(), 0)]);
    for s in out
        .sections
        .iter()
        .filter(|s| s.name == "__patchable_function_entries")
    {
        let relas = out.sections.iter().find(|r| {
            r.is_rela()
                && r.rela_target()
                    .is_some_and(|t| out.sections[t.0].name == s.name)
        });
        for r in relas.map(|r| r.relas.as_slice()).unwrap_or(&[]) {
            assert_eq!(
                target_name(&out, r),
                "foo",
                "a __patchable_function_entries entry of another function"
            );
        }
    }
    assert!(!has_symbol(&out, "bar"));
}

/// Debian 6.12's unit objects (IBT, CALL_PADDING, objtool not run on them): 16 bytes of padding,
/// then `endbr64`, then `call __fentry__` at +4. The ftrace site is found past the ENDBR and the
/// output's `__mcount_loc` points at it.
#[test]
fn ibt_functions_with_endbr_before_the_ftrace_call_are_patched_at_the_call() {
    let Some(p) = build_with_flags(
        "padded",
        &[],
        &[],
        &["-fpatchable-function-entry=16,16", "-fcf-protection=branch"],
    ) else {
        return;
    };
    // Shape: foo at 16, endbr64 first, the __fentry__ call's relocation one byte into +4.
    let foo = symbol(&p.orig, "foo");
    assert_eq!(foo.st_value, 16);
    let text = &p.orig.sections[foo.section.unwrap().0];
    assert_eq!(
        &text.data[16..20],
        &[0xf3, 0x0f, 0x1e, 0xfa],
        "endbr64 at foo"
    );
    let first = relas_of(&p.orig, &text.name)
        .unwrap()
        .relas
        .iter()
        .filter(|r| r.r_offset >= 16)
        .min_by_key(|r| r.r_offset)
        .copied()
        .unwrap();
    assert_eq!(
        (first.r_offset, p.orig.symbol_name(first.r_sym)),
        (16 + 5, "__fentry__")
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    let sites: Vec<(String, i64)> = relas_of(&out, "__mcount_loc")
        .expect("__mcount_loc in the output")
        .relas
        .iter()
        .map(|r| (target_name(&out, r), r.r_addend))
        .collect();
    assert_eq!(
        sites,
        vec![("foo".to_string(), 4)],
        "the call after the ENDBR"
    );
    assert!(!has_symbol(&out, "bar"));
}

#[test]
fn pfx_padding_symbols_travel_with_their_function() {
    let Some(p) = build_with_flags(
        "padded",
        &["PFX"],
        &["PFX"],
        &["-fpatchable-function-entry=16,16"],
    ) else {
        return;
    };
    // Shape: objtool's layout, __pfx_foo over the 16 bytes before foo.
    assert_eq!(
        (
            symbol(&p.orig, "__pfx_foo").st_value,
            symbol(&p.orig, "foo").st_value
        ),
        (0, 16)
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert!(report.new_functions.is_empty(), "{report:?}");
    assert_eq!(defined_functions(&out), strs(&["__pfx_foo", "foo"]));
    let (pfx, foo) = (symbol(&out, "__pfx_foo"), symbol(&out, "foo"));
    assert_eq!((pfx.st_value, pfx.st_size, foo.st_value), (0, 16, 16));
    assert_eq!(pfx.section, foo.section);
    let sites: Vec<(String, i64)> = relas_of(&out, "__mcount_loc")
        .unwrap()
        .relas
        .iter()
        .map(|r| (target_name(&out, r), r.r_addend))
        .collect();
    assert_eq!(sites, vec![("foo".to_string(), 0)]);
}

// ---------------------------------------------------------------------------------------------
// Special sections: split into entries, kept only for the functions in the patch. Each fixture
// has the construct in foo() (changed) and bar() (unchanged).

#[test]
fn ex_table_keeps_only_entries_of_included_functions() {
    let p = fixture!("ex_table");
    assert_eq!(
        sorted(&entry_targets(&p.patched, "__ex_table", 12, 0)),
        strs(&[".text.bar", ".text.foo"])
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(entry_targets(&out, "__ex_table", 12, 0), strs(&["foo"]));
    assert_eq!(
        entry_targets(&out, "__ex_table", 12, 4),
        strs(&["foo"]),
        "the resume address is in foo too"
    );
    // The type word travels unchanged.
    let e = &section(&out, "__ex_table").unwrap().data;
    assert_eq!(u32::from_le_bytes([e[8], e[9], e[10], e[11]]), 3);
}

#[test]
fn ex_table_fixup_code_goes_with_its_function_only() {
    let p = fixture!("ex_table_fixup");
    // Shape: two 12-byte __ex_table entries whose fixups are in .fixup, one stub per function,
    // each jumping back into its function.
    assert_eq!(section(&p.patched, "__ex_table").unwrap().sh_size, 24);
    let back: Vec<String> = relas_of(&p.patched, ".fixup")
        .unwrap()
        .relas
        .iter()
        .map(|r| target_name(&p.patched, r))
        .collect();
    assert_eq!(sorted(&back), strs(&[".text.bar", ".text.foo"]));
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(entry_targets(&out, "__ex_table", 12, 0), strs(&["foo"]));
    // foo's stub, and only foo's, comes along: bar is not in the patch and its stub is not
    // foo's business.
    let back: Vec<String> = relas_of(&out, ".fixup")
        .expect(".fixup in the output")
        .relas
        .iter()
        .map(|r| target_name(&out, r))
        .collect();
    assert_eq!(
        back,
        strs(&["foo"]),
        "the output's .fixup jumps back into {back:?}"
    );
    assert!(!has_symbol(&out, "bar"), "bar is referenced by the output");
}

#[test]
fn ex_table_entry_in_a_kept_alternative_replacement_is_kept() {
    let p = fixture!("alt_extable");
    // Shape: both __ex_table entries point into .altinstr_replacement, at the replacements
    // that foo's and bar's .altinstructions entries name.
    assert_eq!(
        entry_targets(&p.patched, "__ex_table", 12, 0),
        strs(&[".altinstr_replacement", ".altinstr_replacement"])
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(
        entry_targets(&out, ".altinstructions", 12, 0),
        strs(&["foo"])
    );
    let foo_repl = relas_of(&out, ".altinstructions")
        .unwrap()
        .relas
        .iter()
        .find(|r| r.r_offset == 4)
        .unwrap()
        .r_addend;
    // The replacement that foo's alternative installs may fault: its fixup must be in the patch.
    let ex = relas_of(&out, "__ex_table").expect("__ex_table in the output");
    assert!(
        ex.relas.iter().any(|r| r.r_offset % 12 == 0
            && target_name(&out, r) == ".altinstr_replacement"
            && r.r_addend == foo_repl),
        "no __ex_table entry for foo's replacement at .altinstr_replacement+{foo_repl}"
    );
}

#[test]
fn jump_table_keeps_only_entries_of_included_functions() {
    let p = fixture!("jump_table");
    assert_eq!(
        section(&p.patched, "__jump_table").unwrap().sh_size,
        48,
        "three 16-byte jump entries"
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(
        entry_targets(&out, "__jump_table", 16, 0),
        strs(&["foo", "foo"])
    );
    assert_eq!(
        entry_targets(&out, "__jump_table", 16, 4),
        strs(&["foo", "foo"])
    );
    assert_eq!(
        sorted(&entry_targets(&out, "__jump_table", 16, 8)),
        strs(&["key_foo", "key_local"])
    );
    // The keys are the kernel's, this object's own one too: never copies.
    assert!(
        symbol(&out, "key_foo").section.is_none(),
        "key_foo is the kernel's"
    );
    assert!(
        symbol(&out, "key_local").section.is_none(),
        "key_local must not be copied into the patch"
    );
    assert!(!has_symbol(&out, "key_bar"));
}

#[test]
fn jump_entry_keys_inside_a_struct_keep_their_offset_and_branch() {
    let p = fixture!("jump_likely");
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    let relas = relas_of(&out, "__jump_table").expect("__jump_table in the output");
    let key = relas
        .relas
        .iter()
        .find(|r| r.r_offset == 8)
        .expect("the entry's key");
    assert_eq!(
        (target_name(&out, key).as_str(), key.r_addend),
        ("tp_foo", 9),
        "tp_foo.key (+8), likely (+1)"
    );
    assert_eq!(key.r_type, 24, "R_X86_64_PC64");
    assert!(symbol(&out, "tp_foo").section.is_none());
}

#[test]
fn dynamic_debug_jump_entries_are_dropped() {
    let p = fixture!("dyndbg");
    // Shape: each pr_debug has a __jump_table entry whose key is in its __dyndbg descriptor.
    assert_eq!(section(&p.patched, "__jump_table").unwrap().sh_size, 48);
    assert!(section(&p.patched, "__dyndbg").is_some());
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    // The patched pr_debug stays off (as kpatch does): of foo's two jump entries only the
    // ordinary key's is kept.
    assert_eq!(entry_targets(&out, "__jump_table", 16, 0), strs(&["foo"]));
    assert_eq!(
        entry_targets(&out, "__jump_table", 16, 8),
        strs(&["key_foo"])
    );
    for s in &out.symbols {
        assert!(
            !(s.is_section() && s.section.is_none()),
            "an undefined section symbol in the output"
        );
    }
}

#[test]
fn altinstructions_keep_only_entries_of_included_functions() {
    let p = fixture!("alternatives");
    assert_eq!(
        section(&p.patched, ".altinstructions").unwrap().sh_size,
        24,
        "two 12-byte alt_instr entries"
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(
        entry_targets(&out, ".altinstructions", 12, 0),
        strs(&["foo"])
    );
    assert_eq!(
        entry_targets(&out, ".altinstructions", 12, 4),
        strs(&[".altinstr_replacement"])
    );
    let alt = &section(&out, ".altinstructions").unwrap().data;
    assert_eq!(
        u16::from_le_bytes([alt[8], alt[9]]),
        3 * 32 + 18,
        "foo's feature bit"
    );
    assert!(
        section(&out, ".altinstr_replacement").is_some(),
        "the replacement code comes along"
    );
}

#[test]
fn both_entries_of_an_alternative_2_site_are_kept() {
    let p = fixture!("alt2");
    assert_eq!(
        section(&p.patched, ".altinstructions").unwrap().sh_size,
        48,
        "two sites of two entries"
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(
        entry_targets(&out, ".altinstructions", 12, 0),
        strs(&["foo", "foo"])
    );
    let alt = &section(&out, ".altinstructions").unwrap().data;
    let features: Vec<u16> = alt
        .chunks(12)
        .map(|e| u16::from_le_bytes([e[8], e[9]]))
        .collect();
    assert_eq!(features, vec![7 * 32 + 1, 7 * 32 + 2]);
    // Each entry still points at its own replacement (mfence, then sfence).
    let relas = relas_of(&out, ".altinstructions").unwrap();
    let repl = section(&out, ".altinstr_replacement").unwrap();
    let code: Vec<Vec<u8>> = [4u64, 16]
        .iter()
        .map(|&at| {
            let r = relas.relas.iter().find(|r| r.r_offset == at).unwrap();
            let start = (out.symbols[r.r_sym.0].st_value as i64 + r.r_addend) as usize;
            repl.data[start..start + 3].to_vec()
        })
        .collect();
    assert_eq!(code, vec![vec![0x0f, 0xae, 0xf0], vec![0x0f, 0xae, 0xf8]]);
}

#[test]
fn altinstr_replacement_is_dropped_when_no_alternative_is_kept() {
    // Only plain(), which has no alternative, changes.
    let p = fixture!("alternatives", &[], &["PLAIN_ONLY"]);
    assert!(section(&p.patched, ".altinstr_replacement").is_some());
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["plain"]));
    assert!(section(&out, ".altinstructions").is_none());
    assert!(section(&out, ".altinstr_replacement").is_none());
}

#[test]
fn smp_locks_keep_only_entries_of_included_functions() {
    let p = fixture!("smp_locks");
    assert_eq!(
        section(&p.patched, ".smp_locks").unwrap().sh_size,
        12,
        "three lock sites"
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(entry_targets(&out, ".smp_locks", 4, 0), strs(&["foo"]));
}

#[test]
fn parainstructions_keep_only_entries_of_included_functions() {
    let p = fixture!("parainstructions");
    // Three 16-byte entries, the last without its tail padding.
    assert_eq!(
        section(&p.patched, ".parainstructions").unwrap().sh_size,
        42
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(
        entry_targets(&out, ".parainstructions", 16, 0),
        strs(&["foo"])
    );
    let e = &section(&out, ".parainstructions").unwrap().data;
    assert_eq!(
        (e[8], e[9]),
        (26, 1),
        "type PARAVIRT_IRQ_DISABLE, a 1-byte cli"
    );
}

#[test]
fn static_call_sites_keep_only_entries_of_included_functions() {
    let p = fixture!("static_call");
    assert_eq!(
        section(&p.patched, ".static_call_sites").unwrap().sh_size,
        16,
        "two 8-byte sites"
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(
        entry_targets(&out, ".static_call_sites", 8, 0),
        strs(&["foo"])
    );
    assert_eq!(
        entry_targets(&out, ".static_call_sites", 8, 4),
        strs(&["__SCK__foo_hook"])
    );
}

#[test]
fn retpoline_return_and_call_sites_keep_only_entries_of_included_functions() {
    let p = fixture!("objtool_sites");
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    for sec in [".retpoline_sites", ".return_sites", ".call_sites"] {
        assert_eq!(
            section(&p.patched, sec).unwrap().sh_size,
            8,
            "{sec}: two sites in the patched object"
        );
        assert_eq!(entry_targets(&out, sec, 4, 0), strs(&["foo"]), "{sec}");
    }
}

#[test]
fn printk_index_keeps_the_entries_of_included_functions() {
    let p = fixture!("printk_index");
    // Shape: .printk_index holds one pointer per printk site, to a pi_entry (_entry.N) whose
    // func field points to the function's __func__ string.
    assert_eq!(section(&p.patched, ".printk_index").unwrap().sh_size, 16);
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    let idx = relas_of(&out, ".printk_index").expect(".printk_index in the output");
    assert_eq!(idx.relas.len(), 1, "one entry: foo's printk");
    // The entry's pi_entry is in the output and names foo as its function.
    let entry = &out.symbols[idx.relas[0].r_sym.0];
    let entry_sec = entry.section.expect("the pi_entry is carried");
    let erelas = out
        .sections
        .iter()
        .find(|s| s.is_rela() && s.rela_target() == Some(entry_sec))
        .unwrap();
    let func = erelas
        .relas
        .iter()
        .find(|r| r.r_offset == entry.st_value + 8)
        .expect("pi_entry.func relocated");
    let fsym = &out.symbols[func.r_sym.0];
    let fsec = &out.sections[fsym.section.expect("__func__ string carried").0];
    let at = (fsym.st_value as i64 + func.r_addend) as usize;
    assert_eq!(&fsec.data[at..at + 3], b"foo");
}

#[test]
fn orc_entries_keep_only_those_of_included_functions_in_step() {
    let p = fixture!("orc");
    assert_eq!(section(&p.patched, ".orc_unwind_ip").unwrap().sh_size, 12);
    assert_eq!(section(&p.patched, ".orc_unwind").unwrap().sh_size, 18);
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert_eq!(
        entry_targets(&out, ".orc_unwind_ip", 4, 0),
        strs(&["foo", "foo"])
    );
    // The kept 6-byte entries are foo's (sp offsets 8 and 16), not bar's (24).
    let orc = &section(&out, ".orc_unwind").unwrap().data;
    let sp: Vec<u16> = orc
        .chunks(6)
        .map(|e| u16::from_le_bytes([e[0], e[1]]))
        .collect();
    assert_eq!(sp, vec![8, 16]);
}

#[test]
fn discard_sections_are_ignored_and_not_carried() {
    let p = fixture!("discard");
    // Shape: the patched build has one more .discard.retpoline_safe entry, for bar().
    let n = |o| section(o, ".discard.retpoline_safe").unwrap().sh_size;
    assert_eq!((n(&p.orig), n(&p.patched)), (4, 8));
    let (out, report) = p.changed();
    assert_eq!(
        sorted(&report.changed_functions),
        strs(&["foo"]),
        "an annotation alone is no change"
    );
    let discards: Vec<&str> = out
        .sections
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| n.contains(".discard"))
        .collect();
    assert!(
        discards.is_empty(),
        "discarded sections in the output: {discards:?}"
    );
}

#[test]
fn modinfo_import_namespaces_are_carried_and_nothing_else() {
    let p = fixture!("import_ns");
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    let m = section(&out, ".modinfo").expect(".modinfo in the output");
    let entries: Vec<String> = m
        .data
        .split(|&b| b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect();
    assert_eq!(
        sorted(&entries),
        strs(&[
            "fixture.import_ns=CRYPTO_INTERNAL",
            "fixture.import_ns=DMA_BUF"
        ])
    );
}

#[test]
fn modinfo_import_namespaces_of_a_module_object_are_carried() {
    let p = fixture!("import_ns", &["MODULE"], &["MODULE"]);
    let (out, _) = p.changed();
    let m = section(&out, ".modinfo").expect(".modinfo in the output");
    let entries: Vec<String> = m
        .data
        .split(|&b| b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect();
    assert_eq!(
        sorted(&entries),
        strs(&["import_ns=CRYPTO_INTERNAL", "import_ns=DMA_BUF"])
    );
}

#[test]
fn modinfo_import_namespace_added_by_the_patch_is_carried() {
    let p = fixture!("import_ns", &[], &["NEW_NS"]);
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    let m = section(&out, ".modinfo").expect(".modinfo in the output");
    let entries: Vec<String> = m
        .data
        .split(|&b| b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect();
    assert_eq!(
        sorted(&entries),
        strs(&[
            "fixture.import_ns=CRYPTO_INTERNAL",
            "fixture.import_ns=DMA_BUF",
            "fixture.import_ns=USB_STORAGE"
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// Why each function is in the output: the report's reasons, with the first instruction that
// differs at its real offset.

/// The reason the report gives for function `name`.
fn why_of(report: &kpatch_diff::Report, name: &str) -> kpatch_diff::FunctionReason {
    report
        .functions
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no reason for {name}: {:?}", report.functions))
        .clone()
}

/// The changed function's first difference in its own code.
fn code_change(report: &kpatch_diff::Report, name: &str) -> CodeDifference {
    match why_of(report, name).why {
        Why::Changed {
            change: Change::Code(d),
        } => d,
        other => panic!("{name}: expected a change in its code, got {other:?}"),
    }
}

/// Where `bytes` occur in function `name`'s section, from the function's start (once only).
fn offset_of_bytes(obj: &kpatch_elf::Object, name: &str, bytes: &[u8]) -> i64 {
    let f = symbol(obj, name);
    let data = &obj.sections[f.section.unwrap().0].data;
    let at: Vec<usize> = data
        .windows(bytes.len())
        .enumerate()
        .filter(|(_, w)| *w == bytes)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "{name}: {bytes:02x?} once");
    at[0] as i64 - f.st_value as i64
}

#[test]
fn changed_instruction_bytes_are_reported_at_the_instructions_start() {
    let p = fixture!("why");
    // Shape: loads() holds `movl $1, %eax` (b8 01 00 00 00), patched `movl $2` at the same place:
    // the first byte that differs is the immediate's, one past the instruction's start.
    let at = offset_of_bytes(&p.patched, "loads", &[0xb8, 2, 0, 0, 0]);
    assert_eq!(offset_of_bytes(&p.orig, "loads", &[0xb8, 1, 0, 0, 0]), at);
    let (_, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["calls", "loads"]));
    let d = code_change(&report, "loads");
    assert_eq!(
        (d.at.as_str(), d.offset, d.differs),
        (format!("loads+{at:#x}").as_str(), at, Differs::Bytes)
    );
    assert_eq!(
        (d.was.as_str(), d.now.as_str()),
        ("b8 01 00 00 00", "b8 02 00 00 00")
    );
    assert!(report.functions.iter().all(|f| f.name != "same"));
}

#[test]
fn changed_call_target_is_reported_as_a_reference_at_the_call() {
    let p = fixture!("why");
    // Shape: calls() has the same bytes in both builds; the call's relocation names ext2.
    let text = |o| &section(o, ".text.calls").unwrap().data;
    assert_eq!(text(&p.orig), text(&p.patched));
    let call = relas_of(&p.patched, ".text.calls")
        .unwrap()
        .relas
        .iter()
        .find(|r| target_name(&p.patched, r) == "ext2")
        .expect("the call to ext2")
        .r_offset;
    assert_eq!(text(&p.patched)[call as usize - 1], 0xe8, "call rel32");
    let at = call as i64 - 1 - symbol(&p.patched, "calls").st_value as i64;
    let (_, report) = p.changed();
    let d = code_change(&report, "calls");
    assert_eq!(
        (d.at.as_str(), d.differs, d.was.as_str(), d.now.as_str()),
        (
            format!("calls+{at:#x}").as_str(),
            Differs::Relocation,
            "ext-0x4",
            "ext2-0x4"
        )
    );
    // The text form: one line per function, as `kpatch-rs diff` and `build` print it.
    assert_eq!(
        why_of(&report, "calls").to_string(),
        format!("changed function: calls (at calls+{at:#x}: reference ext-0x4 -> ext2-0x4)")
    );
}

#[test]
fn changed_special_entry_is_reported_at_its_site() {
    let p = fixture!("jump_table", &[], &["KEY_ONLY"]);
    // Shape: foo's code is the same; the key of its first jump entry is key_bar, at the site
    // the entry's code field names.
    let relas = &relas_of(&p.patched, "__jump_table").unwrap().relas;
    let key = relas
        .iter()
        .find(|r| target_name(&p.patched, r) == "key_bar" && r.r_offset % 16 == 8)
        .unwrap();
    let code = relas
        .iter()
        .find(|r| r.r_offset == key.r_offset - 8)
        .unwrap();
    assert_eq!(target_name(&p.patched, code), ".text.foo");
    let site = code.r_addend - symbol(&p.patched, "foo").st_value as i64;
    assert_eq!(
        &section(&p.patched, ".text.foo").unwrap().data[site as usize..site as usize + 5],
        &[0x0f, 0x1f, 0x44, 0, 0],
        "the jump site's NOP"
    );
    let (_, report) = p.changed();
    assert_eq!(
        why_of(&report, "foo").why,
        Why::Changed {
            change: Change::SpecialEntries {
                section: "__jump_table".into(),
                at: Some(format!("foo+{site:#x}")),
            }
        }
    );
}

#[test]
fn reasons_name_children_moves_read_only_data_callbacks_new_and_forced_functions() {
    // A change in a .cold part patches the parent; the part is carried as a piece of it.
    let p = fixture!("cold");
    let (_, report) = p.changed();
    match why_of(&report, "with_cold").why {
        Why::Changed {
            change: Change::Child { child, difference },
        } => {
            assert_eq!(child, "with_cold.cold");
            let d = difference.expect("where the part differs");
            assert!(d.at.starts_with("with_cold.cold+0x"), "{d:?}");
        }
        other => panic!("with_cold: {other:?}"),
    }
    assert_eq!(
        why_of(&report, "with_cold.cold").why,
        Why::Child {
            parent: "with_cold".into()
        }
    );

    let p = fixture!("subsections");
    let (_, report) = p.changed();
    assert_eq!(
        why_of(&report, "mover").why,
        Why::Changed {
            change: Change::Moved {
                from: ".text.mover".into(),
                to: ".text.unlikely.mover".into()
            }
        }
    );

    let p = fixture!("const_data", &[], &["TABLE_ONLY"]);
    let (_, report) = p.changed();
    assert_eq!(
        why_of(&report, "foo").why,
        Why::Changed {
            change: Change::ReadOnlyData {
                object: "weights".into()
            }
        }
    );

    let p = fixture!("callbacks");
    let (_, report) = p.changed();
    assert_eq!(
        why_of(&report, "pre_patch_cb").why,
        Why::Callback {
            kind: "pre_patch".into()
        }
    );
    assert_eq!(
        why_of(&report, "post_unpatch_cb").why,
        Why::Callback {
            kind: "post_unpatch".into()
        }
    );

    let p = fixture!("new_things");
    let (_, report) = p.changed();
    assert_eq!(why_of(&report, "new_helper").why, Why::New);
    assert!(matches!(
        why_of(&report, "foo").why,
        Why::Changed {
            change: Change::Code(CodeDifference {
                differs: Differs::Relocation,
                ..
            })
        }
    ));

    let p = fixture!("ignore", &[], &["FORCE"]);
    let (_, report) = p.changed();
    let bar = why_of(&report, "bar");
    assert!(
        bar.forced && matches!(bar.why, Why::Changed { .. }),
        "{bar:?}"
    );
    // Every function of the output has its reason, and only those.
    let mut named: Vec<String> = report.functions.iter().map(|f| f.name.clone()).collect();
    named.sort();
    assert_eq!(named, sorted(&report.output_functions));
}

#[test]
fn reasons_serialize_with_their_kind_and_place() {
    let p = fixture!("why");
    let (_, report) = p.changed();
    let v = serde_json::to_value(&report).unwrap();
    let loads = v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "loads")
        .unwrap();
    assert_eq!(loads["reason"], "changed");
    assert_eq!(loads["change"]["cause"], "code");
    assert_eq!(loads["change"]["differs"], "bytes");
    let at = offset_of_bytes(&p.patched, "loads", &[0xb8, 2, 0, 0, 0]);
    assert_eq!(loads["change"]["offset"], at);
    assert_eq!(loads["change"]["at"], format!("loads+{at:#x}"));
    assert!(loads.get("forced").is_none(), "forced only when it is");
}

// ---------------------------------------------------------------------------------------------
// Refusals: what cannot be live-patched is refused with the reason named.

#[test]
fn changed_existing_data_is_refused_naming_it() {
    let p = fixture!("data_changed");
    let e = p.unpatchable();
    assert!(e.contains("limits") && e.contains(".data.limits"), "{e}");
}

#[test]
fn changed_existing_data_used_by_a_changed_function_is_refused_naming_it() {
    let p = fixture!("data_changed", &[], &["FOO_TOO"]);
    let e = p.unpatchable();
    assert!(e.contains("limits"), "{e}");
}

#[test]
fn changed_const_ops_whose_address_is_handed_out_is_refused() {
    let p = fixture!("const_ops", &[], &["OPS"]);
    // probe() passes &my_ops to the kernel: the kernel keeps using its copy whatever the patch
    // does to probe(), so the change cannot take effect by patching functions.
    let e = p.unpatchable();
    assert!(e.contains("my_ops"), "{e}");
}

#[test]
fn changed_value_in_a_const_ops_whose_address_is_handed_out_is_refused() {
    let p = fixture!("const_ops", &[], &["OPS_WEIGHT"]);
    // Shape: only my_ops' bytes change (no relocation does).
    assert_ne!(
        section(&p.orig, ".rodata.my_ops").unwrap().data,
        section(&p.patched, ".rodata.my_ops").unwrap().data
    );
    let e = p.unpatchable();
    assert!(e.contains("my_ops"), "{e}");
}

#[test]
fn changed_const_table_whose_address_is_stored_in_writable_data_is_refused() {
    let p = fixture!("const_escape_data");
    // Shape: direct() loads from limits; cur (writable) holds its address.
    assert!(relas_of(&p.orig, ".data.cur")
        .unwrap()
        .relas
        .iter()
        .any(|r| target_name(&p.orig, r).contains("limits")));
    // through() reads the kernel's table via cur whatever the patch does to direct(): patching
    // direct() alone would leave two different tables in use.
    let e = p.unpatchable();
    assert!(e.contains("limits"), "{e}");
}

#[test]
fn new_exported_function_is_carried_with_its_export_or_refused_naming_it() {
    let p = fixture!("exported", &[], &["NEW_EXPORT"]);
    assert!(section(&p.patched, "___ksymtab+added").is_some());
    match p.diff() {
        // Supported: the patch module exports the new function.
        Ok(kpatch_diff::Outcome::Changed { output, report }) => {
            assert!(
                report.new_functions.contains(&"added".to_string()),
                "{report:?}"
            );
            assert!(
                output.section_by_name("___ksymtab+added").is_some(),
                "the new export record is carried"
            );
        }
        // Or refused, but then naming the new export, not an internal section.
        Err(e @ kpatch_diff::DiffError::Unpatchable { .. }) => {
            let t = e.to_string();
            assert!(
                t.contains("added"),
                "the refusal should name the new export `added`: {t}"
            );
        }
        other => panic!("unexpected: {:?}", other.map(|_| ())),
    }
}

/// A new export is refused naming it, in both record layouts (6.1's `___ksymtab+added` section,
/// 6.5+'s record in `.export_symbol`), whether the object exported something before or not (the
/// `.export_symbol` section is then changed, or new): a livepatch module cannot add to the
/// kernel's symbol table, and dropping the record would leave callers of the export unresolved.
#[test]
fn new_export_is_refused_naming_it_in_both_layouts() {
    for layout in [&[][..], &["EXPORT_6_12"][..]] {
        for old_exports in [true, false] {
            let mut orig = layout.to_vec();
            if !old_exports {
                orig.push("NO_OLD_EXPORTS");
            }
            let mut patched = orig.clone();
            patched.push("NEW_EXPORT");
            let p = fixture!("exported", &orig, &patched);
            let case = format!("{layout:?}, exports before: {old_exports}");
            // Shape: where each layout puts the new export's record.
            if layout.is_empty() {
                assert!(section(&p.patched, "___ksymtab+added").is_some(), "{case}");
            } else {
                assert!(has_symbol(&p.patched, "__export_symbol_added"), "{case}");
                let records = relas_of(&p.patched, ".export_symbol").expect(".rela.export_symbol");
                assert!(
                    records
                        .relas
                        .iter()
                        .any(|r| target_name(&p.patched, r) == "added"),
                    "{case}"
                );
                assert_eq!(
                    section(&p.orig, ".export_symbol").is_some(),
                    old_exports,
                    "{case}"
                );
            }
            let e = p.unpatchable();
            assert!(e.contains("new exported symbol added"), "{case}: {e}");
            assert!(
                !e.contains("foo") && !e.contains("bar"),
                "only the new export is named ({case}): {e}"
            );
        }
    }
}

/// A changed exported function is patched under 6.5+'s `.export_symbol` records too: the
/// records do not change, and none goes into the output.
#[test]
fn changed_exported_function_is_patched_with_export_symbol_records() {
    let p = fixture!("exported", &["EXPORT_6_12"], &["EXPORT_6_12"]);
    assert!(
        section(&p.orig, ".export_symbol").is_some(),
        "shape: the 6.12 export records"
    );
    assert!(
        section(&p.orig, "___ksymtab+foo").is_none(),
        "shape: no 6.1 export records"
    );
    let (out, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
    assert!(report.new_globals.is_empty(), "{report:?}");
    assert!(
        section(&out, ".export_symbol").is_none(),
        "export records in the output"
    );
    assert!(symbol(&out, "foo").is_local());
}

#[test]
fn resized_bss_object_is_refused_naming_it() {
    let p = fixture!("bss_resized");
    assert_eq!(section(&p.orig, ".bss.slots").unwrap().sh_size, 32);
    let e = p.unpatchable();
    assert!(e.contains("slots") && e.contains("size"), "{e}");
}

#[test]
fn changed_read_mostly_data_is_refused_naming_the_section() {
    let p = fixture!("read_mostly");
    let e = p.unpatchable();
    assert!(e.contains(".data..read_mostly"), "{e}");
}

#[test]
fn changed_init_code_is_refused_naming_the_section_and_function() {
    let p = fixture!("init_changed");
    assert!(section(&p.orig, ".init.text").is_some());
    let e = p.unpatchable();
    assert!(
        e.contains(".init.text") && e.contains("__init") && e.contains("setup_thing"),
        "{e}"
    );
}

#[test]
fn changed_section_group_is_refused_naming_it() {
    let p = fixture!("group_changed");
    assert!(
        p.orig.sections.iter().any(|s| s.is_group()),
        "no COMDAT group"
    );
    let e = p.unpatchable();
    assert!(e.contains("grp_fn") && e.contains("group"), "{e}");
}

#[test]
fn changed_function_without_ftrace_entry_is_refused_naming_it() {
    let p = fixture!("notrace_changed");
    // Shape: quiet() is notrace, foo() is not.
    assert_ftrace_shape(&p.orig, &["quiet"]);
    let first = relas_of(&p.orig, ".text.quiet")
        .unwrap()
        .relas
        .iter()
        .map(|r| target_name(&p.orig, r))
        .collect::<Vec<_>>();
    assert!(!first.contains(&"__fentry__".to_string()));
    let e = p.unpatchable();
    assert!(e.contains("quiet") && e.contains("ftrace"), "{e}");
}

#[test]
fn changed_function_in_a_shared_text_section_is_refused_naming_it() {
    let p = fixture!("sched_text");
    // Shape: sleepy and drowsy share .sched.text (an explicit section beats -ffunction-sections).
    assert_eq!(
        symbol(&p.orig, "sleepy").section,
        symbol(&p.orig, "drowsy").section
    );
    // The differ patches functions one section each; it refuses, naming the function and why.
    let e = p.unpatchable();
    assert!(e.contains("sleepy") && e.contains(".sched.text"), "{e}");
    assert!(!e.contains("drowsy"), "drowsy did not change: {e}");
}

#[test]
fn changed_noinstr_function_is_refused_naming_it() {
    let p = fixture!("sched_text", &[], &["NOINSTR"]);
    let e = p.unpatchable();
    assert!(
        e.contains("entry_work"),
        "the refusal should name the function: {e}"
    );
}

#[test]
fn changed_assembly_function_is_refused_naming_it() {
    let p = fixture!("asm_func");
    assert_eq!(
        p.orig.sections[symbol(&p.orig, "asm_helper").section.unwrap().0].name,
        ".text"
    );
    let e = p.unpatchable();
    assert!(e.contains("asm_helper"), "{e}");
}

#[test]
fn unchanged_notrace_function_does_not_stop_a_patch() {
    let p = fixture!("notrace_changed", &[], &["FOO_ONLY"]);
    let (_, report) = p.changed();
    assert_eq!(sorted(&report.changed_functions), strs(&["foo"]));
}

#[test]
fn regression_compound_literals_that_point_at_each_other_pair_in_any_section_order() {
    // sound/usb/card.c (quirks-table.h) could not be built at all: "reference to static local
    // variable __compound_literal.508 in __compound_literal.509 was removed", because a
    // literal referenced only from another literal was looked for before that one was paired.
    // -fno-toplevel-reorder emits in source order, so that each outer literal's relocations
    // come before the table's, as card.o's do.
    let Some(p) = build_with_flags("compound_literal", &[], &[], &["-fno-toplevel-reorder"]) else {
        return;
    };
    let literals = symbol_names(&p.orig)
        .into_iter()
        .filter(|n| n.starts_with("__compound_literal."))
        .count();
    assert!(literals >= 6, "gcc made {literals} compound literals");
    let rela_order: Vec<String> = p
        .orig
        .sections
        .iter()
        .filter(|s| s.name.starts_with(".rela.rodata."))
        .map(|s| s.name.clone())
        .collect();
    let first_literal = rela_order
        .iter()
        .position(|n| n.contains("__compound_literal."));
    let table = rela_order.iter().position(|n| n == ".rela.rodata.ids");
    assert!(
        first_literal < table,
        "a literal's relocations come before the table's: {rela_order:?}"
    );
    let (_, report) = p.changed();
    assert_eq!(report.changed_functions, strs(&["lookup"]), "{report:?}");
}
