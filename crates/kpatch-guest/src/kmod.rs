//! Kernel modules from the kernel's own `lib/modules/<abi>` tree (found and read by
//! [`kpatch_target::modules`]) into the initramfs, with their dependencies.
//!
//! Debian's image package ships no `modules.dep` or `modules.alias` (depmod runs at install
//! time), so the dependencies come from each module's `.modinfo`: `depends=`, and the modules
//! a `softdep=pre:` names (libcrc32c's `crc32c`, an alias, found among the modules of that
//! name or of that name and a suffix, by their own `alias=`; none when it is built in).

use crate::{GuestError, Initramfs};
use kpatch_common::canonical_module_name;
use kpatch_common::modinfo::ModInfo;
use kpatch_target::modules::{index_modules, read_module};
use object::{Object, ObjectSection};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A module's `.modinfo` (empty when it has none).
pub fn modinfo(path: &Path, data: &[u8]) -> Result<ModInfo, GuestError> {
    let file = object::File::parse(data).map_err(|e| GuestError::BadInput {
        path: path.into(),
        what: format!("not an ELF module: {e}"),
    })?;
    let Some(section) = file.section_by_name(kpatch_common::modinfo::SECTION) else {
        return Ok(ModInfo::default());
    };
    let bytes = section.data().map_err(|e| GuestError::BadInput {
        path: path.into(),
        what: format!(".modinfo: {e}"),
    })?;
    Ok(ModInfo::from_section(bytes))
}

impl Initramfs {
    /// Adds the module `name` from a kernel's modules tree (`DebianKernel::modules_dir()`)
    /// and, first, every module it depends on. Returns the guest paths in load order, ready
    /// for `insmod` one after the other.
    pub fn add_kernel_module(
        &mut self,
        modules_dir: &Path,
        name: &str,
    ) -> Result<Vec<String>, GuestError> {
        let index = index_modules(modules_dir)?;
        let mut order = Vec::new();
        let mut seen = Vec::new();
        self.add_with_deps(
            &index,
            modules_dir,
            &canonical_module_name(name),
            &mut seen,
            &mut order,
        )?;
        Ok(order)
    }

    fn add_with_deps(
        &mut self,
        index: &HashMap<String, PathBuf>,
        modules_dir: &Path,
        name: &str,
        seen: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<(), GuestError> {
        if seen.iter().any(|s| s == name) {
            return Ok(());
        }
        seen.push(name.to_string());
        let path = index.get(name).ok_or_else(|| GuestError::BadInput {
            path: modules_dir.into(),
            what: format!("no module named {name}"),
        })?;
        let (_, data) = read_module(path)?;
        let info = modinfo(path, &data)?;
        for dep in info.depends() {
            self.add_with_deps(index, modules_dir, &dep, seen, order)?;
        }
        for soft in info.softdeps_pre() {
            if let Some(m) = provider(index, modules_dir, &soft) {
                self.add_with_deps(index, modules_dir, &m, seen, order)?;
            }
        }
        order.push(self.add_module(path)?);
        Ok(())
    }
}

/// The module that provides `name` for a soft dependency: the module of that name, else one
/// whose `alias=` is `name` (or `crypto-<name>`) among `<name>_generic` and the modules named
/// `<name>_*` (a generic implementation first: it loads on any CPU); `None` when `name` is
/// built into the kernel (`modules.builtin`) or nothing provides it (a soft dependency may be
/// missing).
fn provider(index: &HashMap<String, PathBuf>, modules_dir: &Path, name: &str) -> Option<String> {
    let want = canonical_module_name(name);
    if index.contains_key(&want) {
        return Some(want);
    }
    let builtin = std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let generic = format!("{want}_generic");
    if builtin.lines().any(|l| {
        let stem = l.rsplit('/').next().unwrap_or("").trim_end_matches(".ko");
        let stem = canonical_module_name(stem);
        stem == want || stem == generic
    }) {
        return None;
    }
    let mut candidates: Vec<&String> = index
        .keys()
        .filter(|k| **k == generic || k.starts_with(&format!("{want}_")))
        .collect();
    candidates.sort_by_key(|k| (**k != generic, k.as_str()));
    let aliases = [name.to_string(), format!("crypto-{name}")];
    candidates.into_iter().find_map(|k| {
        let path = &index[k];
        let (_, data) = read_module(path).ok()?;
        let info = modinfo(path, &data).ok()?;
        let provides = info.all("alias").any(|a| aliases.iter().any(|w| w == a));
        provides.then(|| k.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::write::{Object as WObject, StandardSection};
    use object::{Architecture, BinaryFormat, Endianness};

    /// A relocatable ELF with a .modinfo section holding `entries`.
    fn fake_ko(entries: &[&str]) -> Vec<u8> {
        let mut o = WObject::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let id = o.add_section(
            vec![],
            b".modinfo".to_vec(),
            object::SectionKind::ReadOnlyString,
        );
        let mut data = Vec::new();
        for e in entries {
            data.extend_from_slice(e.as_bytes());
            data.push(0);
        }
        o.append_section_data(id, &data, 1);
        let t = o.section_id(StandardSection::Text);
        o.append_section_data(t, &[0xc3], 1);
        o.write().unwrap()
    }

    #[test]
    fn parses_modinfo_depends() {
        let ko = fake_ko(&["license=GPL", "depends=mbcache,jbd2,crc16", "name=ext4"]);
        let info = modinfo(Path::new("ext4.ko"), &ko).unwrap();
        assert_eq!(info.name(), Some("ext4"));
        assert_eq!(info.depends(), ["mbcache", "jbd2", "crc16"]);
        let none = fake_ko(&["depends=", "name=crc16"]);
        assert!(modinfo(Path::new("x"), &none).unwrap().depends().is_empty());
    }

    #[test]
    fn adds_dependencies_first_once() {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("kernel/fs");
        std::fs::create_dir_all(k.join("ext4")).unwrap();
        std::fs::create_dir_all(k.join("jbd2")).unwrap();
        std::fs::write(
            k.join("ext4/ext4.ko"),
            fake_ko(&["depends=mbcache,jbd2", "name=ext4"]),
        )
        .unwrap();
        std::fs::write(
            k.join("jbd2/jbd2.ko"),
            fake_ko(&["depends=crc-16", "name=jbd2"]),
        )
        .unwrap();
        std::fs::write(k.join("mbcache.ko"), fake_ko(&["depends=", "name=mbcache"])).unwrap();
        std::fs::write(k.join("crc_16.ko"), fake_ko(&["depends=", "name=crc_16"])).unwrap();
        let mut i = Initramfs::new();
        let order = i.add_kernel_module(d.path(), "ext4").unwrap();
        assert_eq!(
            order,
            [
                "/lib/modules/mbcache.ko",
                "/lib/modules/crc_16.ko",
                "/lib/modules/jbd2.ko",
                "/lib/modules/ext4.ko"
            ]
        );
        assert!(i.contains("/lib/modules/ext4.ko"));
        let err = i
            .add_kernel_module(d.path(), "btrfs")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no module named btrfs"), "{err}");
    }

    /// btrfs, sctp and batman-adv could not be loaded in the guest: libcrc32c's
    /// `softdep=pre: crc32c` was not followed, and insmod failed on the missing crc32c.
    #[test]
    fn regression_soft_dependencies_are_loaded_first_through_their_alias() {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("kernel");
        std::fs::create_dir_all(k.join("crypto")).unwrap();
        std::fs::create_dir_all(k.join("arch")).unwrap();
        std::fs::write(
            k.join("libcrc32c.ko"),
            fake_ko(&["softdep=pre: crc32c", "depends=", "name=libcrc32c"]),
        )
        .unwrap();
        std::fs::write(
            k.join("crypto/crc32c_generic.ko"),
            fake_ko(&[
                "alias=crypto-crc32c",
                "alias=crc32c",
                "depends=",
                "name=crc32c_generic",
            ]),
        )
        .unwrap();
        std::fs::write(
            k.join("arch/crc32c-intel.ko"),
            fake_ko(&["alias=crc32c", "depends=", "name=crc32c_intel"]),
        )
        .unwrap();
        std::fs::write(
            k.join("btrfs.ko"),
            fake_ko(&["depends=libcrc32c", "name=btrfs"]),
        )
        .unwrap();
        let mut i = Initramfs::new();
        let order = i.add_kernel_module(d.path(), "btrfs").unwrap();
        assert_eq!(
            order,
            [
                "/lib/modules/crc32c_generic.ko",
                "/lib/modules/libcrc32c.ko",
                "/lib/modules/btrfs.ko"
            ]
        );
        // built in: nothing to load
        std::fs::write(
            d.path().join("modules.builtin"),
            "kernel/crypto/crc32c_generic.ko\n",
        )
        .unwrap();
        let mut i = Initramfs::new();
        let order = i.add_kernel_module(d.path(), "libcrc32c").unwrap();
        assert_eq!(order, ["/lib/modules/libcrc32c.ko"]);
    }
}
