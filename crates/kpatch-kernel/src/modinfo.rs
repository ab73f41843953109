//! Reading a module file: decompressed if needed, its `.modinfo` parsed by
//! [`kpatch_common::modinfo`] (whose types and keys this module re-exports).

use crate::error::KernelError;
use kpatch_common::names::module_name_from_path;
use std::path::Path;

pub use kpatch_common::modinfo::{
    ModInfo, PatchedFunction, MODINFO_FUNCTIONS, MODINFO_KERNEL, MODINFO_PATCH_SHA256,
};

/// The most a compressed module may decompress to. The largest modules of a distribution
/// kernel are a few tens of MiB; this bounds what a hostile `.ko.xz` can make kpatch-rs allocate.
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;

/// `e_type` of a relocatable object: what every kernel module is.
const ET_REL: u16 = 1;

/// Checks that `data` is a module the kernel of this machine could take: a 64-bit
/// little-endian relocatable ELF for a machine kpatch-rs supports, whose section table and
/// every section's contents lie inside the file (a truncated file fails here, naming the first
/// section cut off).
fn check_module_elf(path: &Path, data: &[u8]) -> Result<(), KernelError> {
    use object::read::elf::{ElfFile64, FileHeader};
    use object::{Object, ObjectSection, SectionKind};
    let malformed = |reason: String| KernelError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    if !data.starts_with(b"\x7fELF") {
        return Err(KernelError::NotElf {
            path: path.to_path_buf(),
            reason: "no ELF magic at the start of the file".into(),
        });
    }
    let file = ElfFile64::<object::LittleEndian>::parse(data).map_err(|e| {
        let class = data.get(4).copied().unwrap_or(0);
        let endian = data.get(5).copied().unwrap_or(0);
        if class != 2 || endian != 1 {
            KernelError::Foreign {
                path: path.to_path_buf(),
                reason: format!(
                    "a {} {} ELF file; kernel modules here are 64-bit little-endian",
                    if class == 1 { "32-bit" } else { "64-bit" },
                    if endian == 2 {
                        "big-endian"
                    } else {
                        "little-endian"
                    }
                ),
            }
        } else {
            malformed(e.to_string())
        }
    })?;
    let header = file.elf_header();
    let e = file.endian();
    let machine = header.e_machine(e).0;
    if kpatch_arch::for_machine(machine).is_none() {
        return Err(KernelError::Foreign {
            path: path.to_path_buf(),
            reason: format!(
                "built for ELF machine {machine}, which kpatch-rs does not support (x86_64 is {})",
                kpatch_arch::x86_64::EM_X86_64
            ),
        });
    }
    let e_type = header.e_type(e).0;
    if e_type != ET_REL {
        return Err(KernelError::Foreign {
            path: path.to_path_buf(),
            reason: format!(
                "ELF type {e_type}, not a relocatable object (kernel modules are ET_REL, 1)"
            ),
        });
    }
    for section in file.sections() {
        if section.kind() == SectionKind::UninitializedData {
            continue;
        }
        if let Err(err) = section.data() {
            let name = section.name().unwrap_or("?");
            return Err(malformed(format!(
                "section {name} (index {}): {err} (the file is truncated or corrupted)",
                section.index().0
            )));
        }
    }
    Ok(())
}

/// The `.modinfo` of a module image (an uncompressed ELF relocatable). Without modpost's
/// `name=` field (older kernels), the name comes from `.gnu.linkonce.this_module`.
pub fn modinfo_of_elf(path: &Path, data: &[u8]) -> Result<ModInfo, KernelError> {
    use object::{Object, ObjectSection};
    check_module_elf(path, data)?;
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
    let reader: Box<dyn Read + '_> = if raw.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(xz2::read::XzDecoder::new(&raw[..]))
    } else if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(&raw[..]).map_err(err)?)
    } else if raw.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(&raw[..]))
    } else {
        return Ok(raw);
    };
    let mut out = Vec::new();
    reader
        .take(MAX_IMAGE_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(err)?;
    if out.len() as u64 > MAX_IMAGE_BYTES {
        return Err(KernelError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_IMAGE_BYTES,
        });
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
