//! A module's `__versions` section: the CRC it was built against for every symbol it imports.
//!
//! On 64-bit kernels each entry is `struct modversion_info { unsigned long crc; char name[56]; }`,
//! 64 bytes, little-endian on x86_64.

use object::{Object, ObjectSection};

use crate::Error;

const ENTRY_SIZE: usize = 64;

/// `(symbol, crc)` pairs of a raw `__versions` section; `file` names the module in errors.
pub fn parse_modversions(section: &[u8], file: &str) -> Result<Vec<(String, u32)>, Error> {
    let partial = section.len() % ENTRY_SIZE;
    if partial != 0 {
        return Err(Error::Modversions {
            file: file.to_string(),
            reason: format!("size {} is not a multiple of {ENTRY_SIZE}", section.len()),
        });
    }
    let mut out = Vec::with_capacity(section.len() / ENTRY_SIZE);
    for (i, entry) in section.chunks_exact(ENTRY_SIZE).enumerate() {
        let mut crc_bytes = [0u8; 8];
        crc_bytes.copy_from_slice(&entry[..8]);
        let crc = u64::from_le_bytes(crc_bytes);
        let name_field = &entry[8..];
        let len = name_field
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| Error::Modversions {
                file: file.to_string(),
                reason: format!("entry {i}: name is not NUL-terminated"),
            })?;
        let name = std::str::from_utf8(&name_field[..len]).map_err(|_| Error::Modversions {
            file: file.to_string(),
            reason: format!("entry {i}: name is not UTF-8"),
        })?;
        if name.is_empty() {
            return Err(Error::Modversions {
                file: file.to_string(),
                reason: format!("entry {i}: empty name"),
            });
        }
        let crc = u32::try_from(crc).map_err(|_| Error::Modversions {
            file: file.to_string(),
            reason: format!("entry {i} (`{name}`): CRC {crc:#x} does not fit 32 bits"),
        })?;
        out.push((name.to_string(), crc));
    }
    Ok(out)
}

/// The `__versions` of a module ELF file; empty when the module has none.
pub fn modversions_of_elf(data: &[u8], file: &str) -> Result<Vec<(String, u32)>, Error> {
    let elf = crate::elf_file::parse(data, file)?;
    let Some(section) = elf.section_by_name("__versions") else {
        return Ok(Vec::new());
    };
    let bytes = section.data().map_err(|e| Error::Elf {
        file: file.to_string(),
        reason: format!("__versions: {e}"),
    })?;
    parse_modversions(bytes, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(crc: u64, name: &str) -> Vec<u8> {
        let mut v = crc.to_le_bytes().to_vec();
        let mut n = name.as_bytes().to_vec();
        n.resize(56, 0);
        v.extend(n);
        v
    }

    #[test]
    fn parses_entries() {
        let mut s = entry(0x1234_5678, "module_layout");
        s.extend(entry(0x9abc_def0, "printk"));
        let v = parse_modversions(&s, "m.ko").unwrap();
        assert_eq!(
            v,
            vec![
                ("module_layout".into(), 0x1234_5678),
                ("printk".into(), 0x9abc_def0)
            ]
        );
    }

    #[test]
    fn refuses_truncated_and_unterminated() {
        let s = entry(1, "x");
        assert!(parse_modversions(&s[..63], "m.ko")
            .unwrap_err()
            .to_string()
            .contains("m.ko"));
        let mut bad = 1u64.to_le_bytes().to_vec();
        bad.extend([b'a'; 56]);
        assert!(parse_modversions(&bad, "m.ko")
            .unwrap_err()
            .to_string()
            .contains("NUL"));
    }
}
