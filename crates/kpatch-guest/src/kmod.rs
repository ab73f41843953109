//! Kernel modules from the kernel's own `lib/modules/<abi>` tree, with their dependencies.
//!
//! Debian's image package ships no `modules.dep` (depmod runs at install time), so the
//! dependencies come from each module's `.modinfo` `depends=` entry.

pub use crate::cpio::read_module;
use crate::{GuestError, Initramfs};
use kpatch_common::canonical_module_name;
use kpatch_common::modinfo::ModInfo;
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

/// Every `*.ko`, `*.ko.xz`, `*.ko.gz` under `dir`, by canonical module name.
pub fn index_modules(dir: &Path) -> Result<HashMap<String, PathBuf>, GuestError> {
    let mut out = HashMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| GuestError::io(&d, e))?;
        for e in entries {
            let e = e.map_err(|e| GuestError::io(&d, e))?;
            let p = e.path();
            let ft = e.file_type().map_err(|err| GuestError::io(&p, err))?;
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let stem = [".ko", ".ko.xz", ".ko.gz"].iter().find_map(|s| name.strip_suffix(s));
                if let Some(stem) = stem {
                    out.insert(canonical_module_name(stem), p);
                }
            }
        }
    }
    Ok(out)
}

impl Initramfs {
    /// Adds the module `name` from a kernel's modules tree (`DebianKernel::modules_dir()`)
    /// and, first, every module it depends on. Returns the guest paths in load order, ready
    /// for `insmod` one after the other.
    pub fn add_kernel_module(&mut self, modules_dir: &Path, name: &str) -> Result<Vec<String>, GuestError> {
        let index = index_modules(modules_dir)?;
        let mut order = Vec::new();
        let mut seen = Vec::new();
        self.add_with_deps(&index, modules_dir, &canonical_module_name(name), &mut seen, &mut order)?;
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
        let id = o.add_section(vec![], b".modinfo".to_vec(), object::SectionKind::ReadOnlyString);
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
        std::fs::write(k.join("ext4/ext4.ko"), fake_ko(&["depends=mbcache,jbd2", "name=ext4"])).unwrap();
        std::fs::write(k.join("jbd2/jbd2.ko"), fake_ko(&["depends=crc-16", "name=jbd2"])).unwrap();
        std::fs::write(k.join("mbcache.ko"), fake_ko(&["depends=", "name=mbcache"])).unwrap();
        std::fs::write(k.join("crc_16.ko"), fake_ko(&["depends=", "name=crc_16"])).unwrap();
        let mut i = Initramfs::new();
        let order = i.add_kernel_module(d.path(), "ext4").unwrap();
        assert_eq!(
            order,
            ["/lib/modules/mbcache.ko", "/lib/modules/crc_16.ko", "/lib/modules/jbd2.ko", "/lib/modules/ext4.ko"]
        );
        assert!(i.contains("/lib/modules/ext4.ko"));
        let err = i.add_kernel_module(d.path(), "btrfs").unwrap_err().to_string();
        assert!(err.contains("no module named btrfs"), "{err}");
    }
}
