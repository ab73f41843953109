//! Opening an ELF file given as bytes, refusing a compressed one by name: Debian's 6.12 modules
//! are `.ko.xz`, and the reader of a module must decompress it first.

use crate::Error;

/// The compression whose magic `data` starts with, if any.
fn compression(data: &[u8]) -> Option<&'static str> {
    if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if data.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else {
        None
    }
}

/// `data` parsed as an object file; `file` names it in errors.
pub(crate) fn parse<'a>(data: &'a [u8], file: &str) -> Result<object::File<'a>, Error> {
    object::File::parse(data).map_err(|e| match compression(data) {
        Some(format) => Error::Compressed {
            file: file.to_string(),
            format,
        },
        None => Error::Elf {
            file: file.to_string(),
            reason: e.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_modules_are_refused_by_name() {
        let xz = [
            0xfd, b'7', b'z', b'X', b'Z', 0, 0, 4, 0xe6, 0xd6, 0xb4, 0x46,
        ];
        let err = crate::parse_module(&xz, "ext4.ko.xz", "ext4").unwrap_err();
        assert!(
            matches!(err, Error::Compressed { format: "xz", .. }),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("ext4.ko.xz: xz-compressed"),
            "{err}"
        );
        let err = crate::modversions_of_elf(&[0x28, 0xb5, 0x2f, 0xfd, 0], "m.ko.zst").unwrap_err();
        assert!(
            matches!(err, Error::Compressed { format: "zstd", .. }),
            "{err}"
        );
        // Anything else that is not ELF is still an ELF error.
        let err = crate::parse_module(b"not an elf file", "m.ko", "m").unwrap_err();
        assert!(matches!(err, Error::Elf { .. }), "{err}");
    }
}
