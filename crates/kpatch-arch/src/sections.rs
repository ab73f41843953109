//! Section names of kernel objects, as gcc, kbuild and the kernel's headers make them, and the
//! records of `include/kpatch-macros.h`: the one place for the name rules that the differ and the
//! module generator share. They hold for every architecture; what belongs to one architecture
//! (its special sections, its relocations) is in its module.

use kpatch_elf::consts::{STT_FUNC, STT_OBJECT};

/// The name of the section a relocation section applies to (`.rela.text.foo` → `.text.foo`);
/// other names are returned as they are.
pub fn base_name(name: &str) -> &str {
    name.strip_prefix(".rela").unwrap_or(name)
}

// ---------------------------------------------------------------------------------------------
// The records of kpatch-macros.h. Each is one pointer (to a function or to a section's name) in
// a section of its own; the differ reads them and the module leaves the sections out.

/// `KPATCH_IGNORE_SECTION(".name")`: pointers to the names of sections whose changes are ignored.
pub const IGNORE_SECTIONS: &str = ".kpatch.ignore.sections";
/// `KPATCH_IGNORE_FUNCTION(f)`: pointers to functions whose changes are ignored.
pub const IGNORE_FUNCTIONS: &str = ".kpatch.ignore.functions";
/// `KPATCH_FORCE_UNSAFE(f)`: pointers to functions patched although they cannot be proven safe.
pub const FORCE: &str = ".kpatch.force";
/// Prefix of the ignore records' sections.
const IGNORE_PREFIX: &str = ".kpatch.ignore.";
/// Symbols of the records as kpatch's own kpatch-macros.h names them (the records of
/// kpatch-rs's header are static, named `__kpatch_ignore_function_<f>` and so on): never part of
/// a change.
pub const IGNORE_SECTION_SYMBOL_PREFIX: &str = "__UNIQUE_ID_kpatch_ignore_section_";
pub const IGNORE_FUNCTION_SYMBOL_PREFIX: &str = "__kpatch_ignore_func_";
pub const FORCE_SYMBOL_PREFIX: &str = "__kpatch_force_func_";
/// `KPATCH_PRE_PATCH_CALLBACK(f)` and the others: a record in `.kpatch.callbacks.<kind>`.
pub const CALLBACKS_PREFIX: &str = ".kpatch.callbacks.";
/// The callback kinds, in `struct klp_callbacks` order (the fields of that struct).
pub const CALLBACK_KINDS: [&str; 4] = ["pre_patch", "post_patch", "pre_unpatch", "post_unpatch"];

/// A section of patch callback records (`.kpatch.callbacks.pre_patch`, ...).
pub fn is_callbacks(name: &str) -> bool {
    name.strip_prefix(CALLBACKS_PREFIX)
        .is_some_and(|kind| CALLBACK_KINDS.contains(&kind))
}

/// A section of ignore or force records: read by the differ, never part of the patch module.
pub fn is_differ_marker(name: &str) -> bool {
    name.starts_with(IGNORE_PREFIX) || name == FORCE
}

// ---------------------------------------------------------------------------------------------
// Sections of one function or object each (-ffunction-sections -fdata-sections).

/// Prefixes of the sections that hold one function or object each under -ffunction-sections
/// and -fdata-sections, with the symbol type that owns them. Longer prefixes first.
const BUNDLE_PREFIXES: &[(&str, u8)] = &[
    (".text.unlikely.", STT_FUNC),
    (".text.hot.", STT_FUNC),
    (".text.", STT_FUNC),
    (".data.rel.ro.", STT_OBJECT),
    (".data.rel.", STT_OBJECT),
    (".data.", STT_OBJECT),
    (".rodata.", STT_OBJECT),
    (".bss.", STT_OBJECT),
];

/// Whether section `sec_name` is the own section of symbol `sym_name` of type `st_type`
/// (`.text.foo` of function `foo`, `.rodata.tbl` of object `tbl`, `.text.unlikely.foo` of
/// `foo.cold`).
pub fn is_bundleable(sec_name: &str, sym_name: &str, st_type: u8) -> bool {
    for &(prefix, ty) in BUNDLE_PREFIXES {
        if let Some(rest) = sec_name.strip_prefix(prefix) {
            if ty != st_type {
                return false;
            }
            if rest == sym_name {
                return true;
            }
            // gcc puts `foo.cold` into `.text.unlikely.foo`.
            if prefix == ".text.unlikely."
                && sym_name.contains(".cold")
                && sym_name.starts_with(rest)
            {
                return true;
            }
            // Keep trying shorter prefixes only for the nested data prefixes.
            if !prefix.starts_with(".data.") {
                return false;
            }
        }
    }
    false
}

/// Which text subsection a function's section is in: 2 for `.text.unlikely.*`, 1 for
/// `.text.hot.*`, 0 otherwise. gcc moves a function between them on its own.
pub fn text_subsection(name: &str) -> u8 {
    if name.starts_with(".text.unlikely.") {
        2
    } else if name.starts_with(".text.hot.") {
        1
    } else {
        0
    }
}

// ---------------------------------------------------------------------------------------------
// Classes of sections.

/// The sections every differ output holds: the object's tables, `.rodata` (switch tables), and
/// ppc64's TOC.
pub fn is_always_carried(name: &str) -> bool {
    matches!(
        name,
        ".shstrtab" | ".strtab" | ".symtab" | ".toc" | ".rodata"
    )
}

/// A section of merged string literals (`.rodata.str1.1`, `.rodata.foo.str1.8`).
pub fn is_string_literals(name: &str) -> bool {
    name.starts_with(".rodata.") && name.contains(".str1.")
}

/// A pool of merged constants (`.rodata.cst2`, `.rodata.cst16`): the unit's literal constants,
/// reached only through the section, never by a name other code could use.
pub fn is_constant_pool(name: &str) -> bool {
    name.strip_prefix(".rodata.cst")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The unit's literals, which a patch carries its own copy of: merged strings and constant
/// pools.
pub fn is_literal_pool(name: &str) -> bool {
    is_string_literals(name) || is_constant_pool(name)
}

/// clang's sections of `__func__` strings (`.rodata.__func__.foo`), strings without
/// `SHF_STRINGS`.
pub fn is_func_name_strings(name: &str) -> bool {
    name.starts_with(".rodata.__func__.")
}

/// Read-only data (`.rodata`, `.rodata.*`).
pub fn is_rodata(name: &str) -> bool {
    name.starts_with(".rodata")
}

/// Debug information and its relocations (`.debug_*`, `.rela.debug_*`).
pub fn is_debug(name: &str) -> bool {
    base_name(name).starts_with(".debug_")
}

/// `.discard*` and its relocations: dropped by the linker scripts, never part of a change.
pub fn is_discard(name: &str) -> bool {
    base_name(name).starts_with(".discard")
}

/// The dynamic-debug descriptors of `pr_debug` (`__dyndbg`; `__verbose` before 4.13).
pub fn is_dynamic_debug(name: &str) -> bool {
    matches!(name, "__dyndbg" | "__verbose")
}

/// `WARN_ONCE`'s flags (`__warned`, `__already_done`): `.data.once` up to 6.1, `.data..once`
/// from 6.2 on (Debian's 6.12).
pub fn is_warn_once_data(name: &str) -> bool {
    matches!(name, ".data.once" | ".data..once")
}

/// Module information (`MODULE_*`, `MODULE_IMPORT_NS`).
pub const MODINFO: &str = ".modinfo";

/// Code and data of `__init`, `__exit`, `__meminit` and the initcall tables (and their
/// relocations): run at boot and freed.
pub fn is_init(name: &str) -> bool {
    let n = base_name(name);
    n.starts_with(".init.")
        || n.starts_with(".exit.")
        || n.starts_with(".meminit.")
        || n.starts_with(".initcall")
        || n == ".init.setup"
        || n.starts_with(".con_initcall")
}

/// Data of any kind (and its relocations): `.data*` (`.data..read_mostly` included), `.bss*`,
/// `.rodata*`, thread-local `.tdata*`/`.tbss*`.
pub fn is_data(name: &str) -> bool {
    let n = base_name(name);
    n.starts_with(".data")
        || n.starts_with(".bss")
        || n.starts_with(".rodata")
        || n.starts_with(".tbss")
        || n.starts_with(".tdata")
}

/// Writable data (`.data*`, `.bss*`; not relocation sections).
pub fn is_writable_data(name: &str) -> bool {
    name.starts_with(".data") || name.starts_with(".bss")
}

/// Data sections that may be carried though they exist in the original: WARN_ONCE flags and
/// UBSAN's per-call-site records (they only hold source locations).
pub fn is_carryable_data(name: &str) -> bool {
    let n = base_name(name);
    n == ".data.unlikely"
        || is_warn_once_data(n)
        || n.starts_with(".data..Lubsan")
        || n.starts_with(".data..L__unnamed")
}

/// Sections read once, at boot or module load, that a livepatch module neither needs nor can
/// update: module information, notes, and the syscall trace tables a `KPATCH_SYSCALL_DEFINEn`
/// leaves out (the running kernel keeps its own entries for the system call).
pub fn is_metadata(name: &str) -> bool {
    let n = base_name(name);
    matches!(
        n,
        MODINFO | ".comment" | "__syscalls_metadata" | "_ftrace_events"
    ) || n.starts_with(".note")
}

/// Shared text sections whose code ftrace cannot hook (`noinstr`, entry code).
pub fn is_noinstr_text(name: &str) -> bool {
    name.starts_with(".noinstr") || name.starts_with(".entry")
}

/// The section of the `EXPORT_SYMBOL` records of 6.5 and later kernels (Debian's 6.12): one
/// section per object, each record the license and namespace strings, then the symbol's address
/// (its one relocation); modpost makes the ksymtab from it. Before 6.5, each export has a section
/// of its own (see [`exported_by`]).
pub const EXPORT_SYMBOL_RECORDS: &str = ".export_symbol";

/// The symbol an `EXPORT_SYMBOL` record section of kernels before 6.5 exports (`___ksymtab+foo`,
/// `___ksymtab_gpl+foo`).
pub fn exported_by(name: &str) -> Option<&str> {
    name.strip_prefix("___ksymtab_gpl+")
        .or_else(|| name.strip_prefix("___ksymtab+"))
}

/// Whether the module loader or the kernel reads `section` of a patch module at load time,
/// before module-specific livepatch relocations are applied: anything but code, data, read-only
/// data, bss and the callback records. `.altinstr_replacement` is copied into code at load time,
/// so it counts as read at load.
pub fn is_read_at_load(name: &str) -> bool {
    let ordinary = name == ".text"
        || name.starts_with(".text.")
        || name.starts_with(".data")
        || name.starts_with(".rodata")
        || name.starts_with(".bss")
        || is_callbacks(name);
    !ordinary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_pools_and_string_literals_are_literal_pools() {
        assert!(is_constant_pool(".rodata.cst2") && is_constant_pool(".rodata.cst16"));
        assert!(!is_constant_pool(".rodata.cst") && !is_constant_pool(".rodata.cstate_table"));
        assert!(is_literal_pool(".rodata.str1.1") && is_literal_pool(".rodata.cst8"));
        assert!(!is_literal_pool(".rodata") && !is_literal_pool(".rodata.my_table"));
    }

    #[test]
    fn relocation_sections_are_classed_by_their_base() {
        assert_eq!(base_name(".rela.text.foo"), ".text.foo");
        assert_eq!(base_name(".rela__jump_table"), "__jump_table");
        assert_eq!(base_name(".text"), ".text");
        assert!(is_debug(".debug_info") && is_debug(".rela.debug_line"));
        assert!(!is_debug(".text.debug_me"));
        assert!(is_discard(".discard.addressable") && is_discard(".rela.discard.retpoline_safe"));
        assert!(is_init(".init.text") && is_init(".rela.init.data") && is_init(".initcall6.init"));
        assert!(!is_init(".text.init_foo"));
        assert!(is_data(".data..read_mostly") && is_data(".rela.rodata.tbl") && is_data(".bss.x"));
        assert!(!is_data(".text.data"));
        assert!(is_carryable_data(".data.once") && is_carryable_data(".rela.data..Lubsan_data1"));
        assert!(
            is_warn_once_data(".data..once")
                && is_carryable_data(".data..once")
                && !is_warn_once_data(".data")
        );
        assert!(is_metadata(".modinfo") && is_metadata(".note.GNU-stack"));
    }

    #[test]
    fn kpatch_macros_records_are_recognised() {
        for kind in CALLBACK_KINDS {
            assert!(is_callbacks(&format!("{CALLBACKS_PREFIX}{kind}")));
        }
        assert!(!is_callbacks(".kpatch.callbacks.other"));
        assert!(is_differ_marker(IGNORE_SECTIONS) && is_differ_marker(IGNORE_FUNCTIONS));
        assert!(is_differ_marker(FORCE) && !is_differ_marker(".kpatch.callbacks.pre_patch"));
    }

    /// The marker sections are those of the repository's `include/kpatch-macros.h`.
    #[test]
    fn markers_are_those_of_kpatch_macros_h() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../include/kpatch-macros.h");
        let Ok(h) = std::fs::read_to_string(path) else {
            panic!("{path} cannot be read");
        };
        for name in [IGNORE_SECTIONS, IGNORE_FUNCTIONS, FORCE, CALLBACKS_PREFIX] {
            assert!(h.contains(&format!("\"{name}")), "{name} is not in {path}");
        }
    }

    #[test]
    fn own_sections_of_functions_and_objects() {
        assert!(is_bundleable(".text.foo", "foo", STT_FUNC));
        assert!(is_bundleable(".text.unlikely.foo", "foo.cold", STT_FUNC));
        assert!(is_bundleable(".data.rel.ro.ops", "ops", STT_OBJECT));
        assert!(is_bundleable(
            ".data.rel.local.x",
            "rel.local.x",
            STT_OBJECT
        ));
        assert!(!is_bundleable(".text.foo", "foo", STT_OBJECT));
        assert!(!is_bundleable(".text.foo", "bar", STT_FUNC));
        assert_eq!(
            [".text.unlikely.a", ".text.hot.a", ".text.a"].map(text_subsection),
            [2, 1, 0]
        );
    }

    #[test]
    fn sections_read_at_load_are_all_but_code_data_and_callbacks() {
        for s in [
            "__jump_table",
            ".altinstr_replacement",
            ".static_call_sites",
            "__ex_table",
        ] {
            assert!(is_read_at_load(s), "{s}");
        }
        for s in [
            ".text",
            ".text.foo",
            ".data..read_mostly",
            ".rodata.str1.1",
            ".bss.x",
            ".kpatch.callbacks.post_patch",
        ] {
            assert!(!is_read_at_load(s), "{s}");
        }
    }
}
