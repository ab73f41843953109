//! Reading a module file: decompressed if needed, its `.modinfo` parsed by
//! [`kpatch_common::modinfo`] (whose types and keys this module re-exports).

use crate::error::KernelError;
use kpatch_common::names::module_name_from_path;
use std::path::Path;

pub use kpatch_common::modinfo::{
    ModInfo, PatchedFunction, MODINFO_FUNCTIONS, MODINFO_KERNEL, MODINFO_PATCH_SHA256,
};

/// The `.modinfo` of a module image (an uncompressed ELF relocatable). Without modpost's
/// `name=` field (older kernels), the name comes from `.gnu.linkonce.this_module`.
pub fn modinfo_of_elf(path: &Path, data: &[u8]) -> Result<ModInfo, KernelError> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(data).map_err(|e| KernelError::NotElf {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let section = file
        .section_by_name(kpatch_common::modinfo::SECTION)
        .ok_or_else(|| KernelError::NoModinfo {
            path: path.to_path_buf(),
        })?;
    let bytes = section.data().map_err(|e| KernelError::NotElf {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut info = ModInfo::from_section(bytes);
    if info.get("name").is_none() {
        // Kernels before modpost's `name=` field: read struct module's name from
        // .gnu.linkonce.this_module (x86_64: after `state` and `list`, at offset 24).
        if let Some(name) = file
            .section_by_name(".gnu.linkonce.this_module")
            .and_then(|s| s.data().ok())
            .and_then(|d| d.get(24..))
            .and_then(|d| d.split(|&b| b == 0).next())
            .filter(|n| !n.is_empty())
        {
            let name = String::from_utf8_lossy(name).into_owned();
            info.fields.push(("name".into(), name));
        }
    }
    Ok(info)
}

/// A module file read from disk, decompressed if needed.
#[derive(Debug, Clone)]
pub struct ModuleFile {
    pub path: std::path::PathBuf,
    /// The uncompressed ELF image.
    pub image: Vec<u8>,
    /// Whether the file on disk is compressed (`image` is then not the file's content).
    pub compressed: bool,
    pub info: ModInfo,
}

impl ModuleFile {
    /// Read `path` (`.ko`, `.ko.xz`, `.ko.zst`, `.ko.gz`) and parse its `.modinfo`.
    pub fn read(path: &Path) -> Result<Self, KernelError> {
        let raw = std::fs::read(path).map_err(|e| KernelError::io(path, e))?;
        Self::from_bytes(path, raw)
    }

    /// Parse an already read file; compression is detected from the magic bytes.
    pub fn from_bytes(path: &Path, raw: Vec<u8>) -> Result<Self, KernelError> {
        let compressed = is_compressed(&raw);
        let image = decompress(path, raw)?;
        let info = modinfo_of_elf(path, &image)?;
        Ok(ModuleFile {
            path: path.to_path_buf(),
            compressed,
            image,
            info,
        })
    }

    /// The module name: `name=` from .modinfo, else the file name without `.ko*`, `-` → `_`.
    pub fn name(&self) -> String {
        match self.info.name() {
            Some(n) => n.to_string(),
            None => module_name_from_path(&self.path).unwrap_or_default(),
        }
    }
}

fn is_compressed(data: &[u8]) -> bool {
    data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || data.starts_with(&[0x1f, 0x8b])
}

fn decompress(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, KernelError> {
    use std::io::Read;
    let err = |source| KernelError::Decompress {
        path: path.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    if raw.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        xz2::read::XzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(err)?;
    } else if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        out = zstd::stream::decode_all(&raw[..]).map_err(err)?;
    } else if raw.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(err)?;
    } else {
        return Ok(raw);
    }
    Ok(out)
}

/// Build a minimal relocatable ELF that carries `.modinfo` (and nothing a kernel could load).
/// For tests of code that reads module files.
pub fn build_test_module(fields: &[(&str, &str)]) -> Vec<u8> {
    use object::write::Object;
    use object::{Architecture, BinaryFormat, Endianness, SectionKind};
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let id = obj.add_section(
        Vec::new(),
        b".modinfo".to_vec(),
        SectionKind::ReadOnlyString,
    );
    let mut data = Vec::new();
    for (k, v) in fields {
        data.extend_from_slice(format!("{k}={v}").as_bytes());
        data.push(0);
    }
    obj.append_section_data(id, &data, 1);
    obj.write().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modinfo_fields_and_functions() {
        let ko = build_test_module(&[
            ("license", "GPL"),
            ("livepatch", "Y"),
            ("name", "livepatch_fix"),
            (
                "vermagic",
                "6.1.0-50-amd64 SMP preempt mod_unload modversions ",
            ),
            (MODINFO_KERNEL, "6.1.0-50-amd64"),
            (MODINFO_PATCH_SHA256, "ab12"),
            (
                MODINFO_FUNCTIONS,
                "vmlinux:cmdline_proc_show,0,ext4:ext4_sync_fs,2",
            ),
        ]);
        let m = ModuleFile::from_bytes(Path::new("x.ko"), ko).unwrap();
        assert_eq!(m.name(), "livepatch_fix");
        assert!(m.info.is_livepatch());
        assert_eq!(m.info.vermagic_release(), Some("6.1.0-50-amd64"));
        assert_eq!(m.info.patch_sha256(), Some("ab12"));
        let f = m.info.functions();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].encode(), "vmlinux:cmdline_proc_show,0");
        assert_eq!(f[1].object, "ext4");
        assert_eq!(f[1].sympos, 2);
    }

    #[test]
    fn decompresses_xz_and_zstd() {
        use std::io::Write;
        let ko = build_test_module(&[("name", "z"), ("livepatch", "Y")]);
        let mut enc = xz2::write::XzEncoder::new(Vec::new(), 1);
        enc.write_all(&ko).unwrap();
        let xz = enc.finish().unwrap();
        let m = ModuleFile::from_bytes(Path::new("z.ko.xz"), xz).unwrap();
        assert_eq!(m.image, ko);
        let zst = zstd::stream::encode_all(&ko[..], 1).unwrap();
        let m = ModuleFile::from_bytes(Path::new("z.ko.zst"), zst).unwrap();
        assert_eq!(m.name(), "z");
    }

    #[test]
    fn rejects_non_elf_and_missing_modinfo() {
        let e = ModuleFile::from_bytes(Path::new("bad.ko"), b"hello".to_vec()).unwrap_err();
        assert!(matches!(e, KernelError::NotElf { .. }), "{e}");
        let mut obj = object::write::Object::new(
            object::BinaryFormat::Elf,
            object::Architecture::X86_64,
            object::Endianness::Little,
        );
        obj.add_section(Vec::new(), b".text".to_vec(), object::SectionKind::Text);
        let e = ModuleFile::from_bytes(Path::new("n.ko"), obj.write().unwrap()).unwrap_err();
        assert!(matches!(e, KernelError::NoModinfo { .. }), "{e}");
    }
}
