//! The checks of the names the livepatch core parses (the formats themselves are
//! `kpatch_common::klp`'s), the patch module's names, and the placeholder symbols kpatch-rs uses
//! between the diff objects and the final `.ko`.

use crate::ModuleError;
use kpatch_common::canonical_module_name;

pub use kpatch_common::VMLINUX;

/// The kernel's `MODULE_NAME_LEN - 1` on 64-bit, and the field width the livepatch core uses when
/// it parses object names out of `.klp.*` names.
pub const MAX_OBJECT_NAME: usize = 55;

/// `KSYM_NAME_LEN - 1`: the longest symbol name kallsyms (and the livepatch core's parser) takes.
pub const MAX_SYMBOL_NAME: usize = 511;

/// Prefix of the undefined symbols that stand for livepatch symbols until the final `.ko`.
pub const KLP_PLACEHOLDER_PREFIX: &str = "__kpatch_rs_klp_";
/// Prefix of the global aliases the glue uses to reach the new version of a changed function.
pub const FUNC_ALIAS_PREFIX: &str = "__kpatch_rs_func_";
/// Prefix of the global symbols the glue uses to reach a callback record.
pub const CALLBACK_PREFIX: &str = "__kpatch_rs_cb_";

/// The file stem of the patch module: `livepatch-<patch>`.
pub fn module_file_stem(patch: &str) -> String {
    format!("livepatch-{patch}")
}

/// Checks a patch name: it becomes part of a module name and a C identifier-free string.
pub fn check_patch_name(name: &str) -> Result<(), ModuleError> {
    let bad = |reason: &str| ModuleError::BadPatchName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad("only ASCII letters, digits, `-` and `_` are allowed"));
    }
    let full = module_file_stem(name);
    if full.len() > MAX_OBJECT_NAME {
        return Err(bad(&format!(
            "the module name `{full}` is longer than {MAX_OBJECT_NAME} characters"
        )));
    }
    Ok(())
}

/// The livepatch object name of a module as the kernel spells it (`-` becomes `_`), checked
/// against what the livepatch core can parse.
pub fn normalize_object(tu: &str, object: &str) -> Result<String, ModuleError> {
    let bad = |reason: &str| ModuleError::BadObjectName {
        tu: tu.to_string(),
        object: object.to_string(),
        reason: reason.to_string(),
    };
    let o = canonical_module_name(object);
    if o.is_empty() {
        return Err(bad("empty"));
    }
    if o.len() > MAX_OBJECT_NAME {
        return Err(bad(&format!("longer than {MAX_OBJECT_NAME} characters")));
    }
    if o.contains(['.', ',', '/', '"', '\\']) || o.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(bad(
            "contains `.`, `,`, `/`, a quote, a backslash or a non-printable character",
        ));
    }
    Ok(o)
}

/// Checks that a symbol name survives `.klp.sym.<object>.<name>,<pos>` parsing and C string
/// quoting in the glue.
pub fn check_symbol_name(tu: &str, symbol: &str) -> Result<(), ModuleError> {
    let bad = |reason: &str| ModuleError::BadSymbolName {
        tu: tu.to_string(),
        symbol: symbol.to_string(),
        reason: reason.to_string(),
    };
    if symbol.is_empty() {
        return Err(bad("empty"));
    }
    if symbol.len() > MAX_SYMBOL_NAME {
        return Err(bad(&format!("longer than {MAX_SYMBOL_NAME} characters")));
    }
    if symbol.contains([',', '"', '\\']) || symbol.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(bad(
            "contains `,`, a quote, a backslash or a non-printable character",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        assert_eq!(module_file_stem("fix-cmdline"), "livepatch-fix-cmdline");
        assert!(check_patch_name("fix-cmdline_2").is_ok());
        assert!(check_patch_name("a b").is_err());
        assert!(check_patch_name("").is_err());
        assert!(check_patch_name(&"x".repeat(50)).is_err());
    }

    #[test]
    fn object_and_symbol_checks() {
        assert_eq!(
            normalize_object("t.o", "nf-conntrack").unwrap(),
            "nf_conntrack"
        );
        let e = normalize_object("t.o", "ext4.ko").unwrap_err().to_string();
        assert!(e.contains("t.o") && e.contains("ext4.ko"), "{e}");
        assert!(check_symbol_name("t.o", "foo.cold").is_ok());
        let e = check_symbol_name("t.o", "a,b").unwrap_err().to_string();
        assert!(e.contains("a,b"), "{e}");
    }
}
