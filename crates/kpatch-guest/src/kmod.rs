//! Kernel modules from the kernel's own `lib/modules/<abi>` tree (found and read by
//! [`kpatch_target::modules`]) into the initramfs, with their dependencies.
//!
//! Debian's image package ships no `modules.dep` (depmod runs at install time), so the
//! dependencies come from each module's `.modinfo` `depends=` entry.

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
        for dep in modinfo(path, &data)?.depends() {
            self.add_with_deps(index, modules_dir, &dep, seen, order)?;
        }
        order.push(self.add_module(path)?);
        Ok(())
    }
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
}
