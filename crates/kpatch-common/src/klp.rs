//! What the livepatch core parses in a patch module: a relocation against a symbol the module
//! does not define goes through a symbol named `.klp.sym.<object>.<name>,<sympos>` with
//! `st_shndx` [`SHN_LIVEPATCH`], and lives in a section `.klp.rela.<object>.<section>` flagged
//! [`SHF_RELA_LIVEPATCH`], which the core applies when `<object>` is present.

/// `st_shndx` of a livepatch symbol (`.klp.sym.*`), resolved by the livepatch core.
pub const SHN_LIVEPATCH: u16 = 0xff20;

/// `sh_flags` bit of a `.klp.rela.*` section.
pub const SHF_RELA_LIVEPATCH: u64 = 0x0010_0000;

/// Prefix of livepatch symbol names.
pub const KLP_SYM_PREFIX: &str = ".klp.sym.";

/// Prefix of livepatch relocation section names.
pub const KLP_RELA_PREFIX: &str = ".klp.rela.";

/// `.klp.sym.<object>.<name>,<sympos>`: a symbol the livepatch core resolves (the object ends
/// at the first `.`, the position starts after the last `,`).
pub fn klp_sym_name(object: &str, name: &str, sympos: u64) -> String {
    format!("{KLP_SYM_PREFIX}{object}.{name},{sympos}")
}

/// `.klp.rela.<object>.<section>`: relocations of `section` that the livepatch core applies when
/// `object` is present (`vmlinux`: when the patch module loads).
pub fn klp_rela_name(object: &str, section: &str) -> String {
    format!("{KLP_RELA_PREFIX}{object}.{section}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn klp_names_follow_the_livepatch_format() {
        assert_eq!(
            klp_sym_name("vmlinux", "saved_command_line", 0),
            ".klp.sym.vmlinux.saved_command_line,0"
        );
        assert_eq!(
            klp_sym_name("ext4", "foo.isra.0", 2),
            ".klp.sym.ext4.foo.isra.0,2"
        );
        assert_eq!(
            klp_rela_name("vmlinux", ".text.cmdline_proc_show"),
            ".klp.rela.vmlinux..text.cmdline_proc_show"
        );
    }
}
