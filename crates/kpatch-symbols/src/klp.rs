//! Livepatch symbol names: a relocation against a symbol the patch module does not define goes
//! through a symbol named `.klp.sym.<object>.<name>,<sympos>` with `st_shndx` = `SHN_LIVEPATCH`,
//! which the kernel resolves when the patch (or the patched module) loads.

use crate::resolve::Resolved;

/// `st_shndx` of livepatch symbols.
pub const SHN_LIVEPATCH: u16 = 0xff20;

/// Prefix of livepatch symbol names.
pub const KLP_SYM_PREFIX: &str = ".klp.sym.";

/// `.klp.sym.<object>.<name>,<sympos>`.
pub fn klp_symbol_name(object: &str, name: &str, sympos: usize) -> String {
    format!("{KLP_SYM_PREFIX}{object}.{name},{sympos}")
}

/// `(object, name, sympos)` of a livepatch symbol name, split as the kernel does: the object
/// ends at the first `.`, the name at the last `,`.
pub fn parse_klp_symbol_name(s: &str) -> Option<(&str, &str, usize)> {
    let rest = s.strip_prefix(KLP_SYM_PREFIX)?;
    let (object, rest) = rest.split_once('.')?;
    let (name, pos) = rest.rsplit_once(',')?;
    if object.is_empty() || name.is_empty() {
        return None;
    }
    Some((object, name, pos.parse().ok()?))
}

impl Resolved {
    /// The livepatch symbol name that refers to this symbol.
    pub fn klp_symbol_name(&self) -> String {
        klp_symbol_name(&self.object, &self.name, self.sympos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let n = klp_symbol_name("vmlinux", "c_start", 2);
        assert_eq!(n, ".klp.sym.vmlinux.c_start,2");
        assert_eq!(parse_klp_symbol_name(&n), Some(("vmlinux", "c_start", 2)));
        let n = klp_symbol_name("ext4", "ext4_fill_super.cold", 0);
        assert_eq!(
            parse_klp_symbol_name(&n),
            Some(("ext4", "ext4_fill_super.cold", 0))
        );
        for bad in [
            ".klp.sym.vmlinux.foo",
            ".klp.sym.vmlinux.foo,x",
            ".klp.sym..foo,1",
            "foo",
            ".klp.sym.vmlinux.,1",
        ] {
            assert_eq!(parse_klp_symbol_name(bad), None, "{bad}");
        }
    }
}
