//! The core kernel's object name, and module names as the kernel spells them.

use std::path::Path;

/// The livepatch object name of the core kernel, also its name in `Module.symvers`.
pub const VMLINUX: &str = "vmlinux";

/// A module name as the kernel compares and records it: kbuild turns `-` into `_`
/// (`nf-conntrack` is `nf_conntrack`), so the two are the same name. Also the directory name
/// under `/sys/kernel/livepatch/` of a patch module.
pub fn canonical_module_name(name: &str) -> String {
    name.replace('-', "_")
}

/// The file name suffixes of kernel modules: `.ko`, and compressed by xz, zstd or gzip.
pub const MODULE_SUFFIXES: [&str; 4] = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

/// A module file name without its suffix (`nf-conntrack.ko.xz` → `nf-conntrack`); `None` for
/// another file name or an empty stem.
pub fn module_file_stem(file_name: &str) -> Option<&str> {
    MODULE_SUFFIXES
        .iter()
        .find_map(|suffix| file_name.strip_suffix(suffix))
        .filter(|stem| !stem.is_empty())
}

/// The module name a file path implies: its file name without the module suffix, canonical.
pub fn module_name_from_path(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    module_file_stem(file).map(canonical_module_name)
}

/// The module a command-line argument names: a module file's name ([`module_name_from_path`]),
/// else the argument itself, canonical.
pub fn module_name_from_arg(arg: &str) -> String {
    module_name_from_path(Path::new(arg)).unwrap_or_else(|| canonical_module_name(arg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_are_canonical() {
        assert_eq!(canonical_module_name("nf-conntrack"), "nf_conntrack");
        assert_eq!(
            module_name_from_path(Path::new("/a/kpatch-fix.ko")).as_deref(),
            Some("kpatch_fix")
        );
        assert_eq!(
            module_name_from_path(Path::new("b.ko.zst")).as_deref(),
            Some("b")
        );
        assert_eq!(
            module_name_from_path(Path::new("c-d.ko.xz")).as_deref(),
            Some("c_d")
        );
        assert_eq!(module_name_from_path(Path::new("b.txt")), None);
        assert_eq!(module_name_from_path(Path::new(".ko")), None);
        assert_eq!(module_name_from_arg("fix-a"), "fix_a");
        assert_eq!(module_name_from_arg("/x/fix-b.ko"), "fix_b");
    }
}
