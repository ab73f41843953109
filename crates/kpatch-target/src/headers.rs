//! Making Debian's split kernel headers usable from inside the cache.
//!
//! Debian ships the headers for one kernel in three packages, meant to live in `/usr`:
//! - `linux-headers-<abi>` (`/usr/src/linux-headers-<abi>`: `.config`, `Module.symvers`,
//!   generated headers, and a one-line `Makefile` that says
//!   `include /usr/src/linux-headers-<base>-common/Makefile`),
//! - `linux-headers-<base>-common` (`/usr/src/linux-headers-<base>-common`: the source
//!   headers and the real top-level Makefile),
//! - `linux-kbuild-<major.minor>` (`/usr/lib/linux-kbuild-<major.minor>`: prebuilt
//!   fixdep/modpost/objtool and the kbuild scripts; the headers dirs point at it through
//!   relative `scripts` and `tools` symlinks).
//!
//! kpatch-rs unpacks the three into one root. Fixes applied there:
//! 1. absolute symlinks are made relative ([`crate::store::relink_absolute_symlinks`]);
//! 2. every `include /abs/path` line in a `Makefile` directly under `usr/src/*/` is rewritten
//!    to `include $(dir $(realpath $(lastword $(MAKEFILE_LIST))))<relative path>`, i.e. a
//!    path relative to that Makefile's own directory, so the root can live (and be renamed)
//!    anywhere. The top-level Makefile derives `srctree` from its own location already.

use crate::store::relative_target;
use crate::TargetError;
use std::path::Path;

/// Rewrites absolute `include` lines of a Makefile that lives at `dir_in_root` (relative to
/// the unpacked root) into includes relative to the Makefile itself. `None` when nothing
/// changes.
pub fn rewrite_makefile_includes(text: &str, dir_in_root: &Path) -> Option<String> {
    let mut changed = false;
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let rest = body
            .strip_prefix("include ")
            .or_else(|| body.strip_prefix("-include "))
            .map(str::trim);
        match rest {
            Some(target) if target.starts_with('/') && !target.contains(char::is_whitespace) => {
                let kw = if body.starts_with('-') {
                    "-include"
                } else {
                    "include"
                };
                let rel = relative_target(dir_in_root, Path::new(target));
                out.push_str(&format!(
                    "{kw} $(dir $(realpath $(lastword $(MAKEFILE_LIST)))){}",
                    rel.display()
                ));
                if line.ends_with('\n') {
                    out.push('\n');
                }
                changed = true;
            }
            _ => out.push_str(line),
        }
    }
    changed.then_some(out)
}

/// Applies the Makefile fix to every `usr/src/*/Makefile` under `root`.
pub fn fix_makefiles(root: &Path) -> Result<(), TargetError> {
    let src = root.join("usr/src");
    let Ok(entries) = std::fs::read_dir(&src) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(|e| TargetError::io(&src, e))?;
        let mk = entry.path().join("Makefile");
        if entry.path().is_symlink() || !mk.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&mk).map_err(|e| TargetError::io(&mk, e))?;
        let dir_in_root = entry
            .path()
            .strip_prefix(root)
            .unwrap_or(Path::new(""))
            .to_path_buf();
        if let Some(new) = rewrite_makefile_includes(&text, &dir_in_root) {
            std::fs::write(&mk, new).map_err(|e| TargetError::io(&mk, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_debian_flavour_makefile() {
        let text = "include /usr/src/linux-headers-6.1.0-56-common/Makefile\n";
        let new =
            rewrite_makefile_includes(text, Path::new("usr/src/linux-headers-6.1.0-56-amd64"))
                .unwrap();
        assert_eq!(
            new,
            "include $(dir $(realpath $(lastword $(MAKEFILE_LIST))))../../../usr/src/linux-headers-6.1.0-56-common/Makefile\n"
        );
    }

    #[test]
    fn leaves_relative_and_variable_includes() {
        let text = "include scripts/Kbuild.include\n-include $(objtree)/x\nobj-m := a.o\n";
        assert_eq!(
            rewrite_makefile_includes(text, Path::new("usr/src/x")),
            None
        );
    }

    #[test]
    fn rewrites_optional_includes_and_keeps_other_lines() {
        let text = "# hdr\n-include /usr/lib/linux-kbuild-6.1/x.mk\nfoo := 1";
        let new = rewrite_makefile_includes(text, Path::new("usr/src/h")).unwrap();
        assert_eq!(
            new,
            "# hdr\n-include $(dir $(realpath $(lastword $(MAKEFILE_LIST))))../../../usr/lib/linux-kbuild-6.1/x.mk\nfoo := 1"
        );
    }

    #[test]
    fn fixes_makefiles_on_disk() {
        let d = tempfile::tempdir().unwrap();
        let h = d.path().join("usr/src/linux-headers-1.2.3-4-amd64");
        std::fs::create_dir_all(&h).unwrap();
        std::fs::write(h.join("Makefile"), "include /usr/src/c/Makefile\n").unwrap();
        fix_makefiles(d.path()).unwrap();
        let t = std::fs::read_to_string(h.join("Makefile")).unwrap();
        assert!(t.contains("../../../usr/src/c/Makefile"), "{t}");
    }
}
