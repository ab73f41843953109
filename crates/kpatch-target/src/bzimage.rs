//! Locating and decompressing the kernel payload of an x86 bzImage (`vmlinuz`).
//!
//! The real-mode setup header (Documentation/x86/boot.rst) says where the protected-mode
//! part starts (`(setup_sects + 1) * 512`) and, from boot protocol 2.08 on, where the
//! compressed payload lies inside it (`payload_offset`, `payload_length`). The payload is
//! the compressed ELF `vmlinux` (no symbol table; sections are present).

use crate::TargetError;
use std::io::Read;
use std::ops::Range;
use std::path::Path;

const HDR_SETUP_SECTS: usize = 0x1f1;
const HDR_MAGIC: usize = 0x202;
const HDR_VERSION: usize = 0x206;
const HDR_PAYLOAD_OFFSET: usize = 0x248;
const HDR_PAYLOAD_LENGTH: usize = 0x24c;

/// The compression of a bzImage payload, recognised by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Xz,
    Gzip,
    Zstd,
    /// The lz4 legacy frame (`lz4 -l`), which Debian's cloud kernels use.
    Lz4,
}

impl Compression {
    pub fn detect(payload: &[u8]) -> Option<Self> {
        if payload.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(Compression::Xz)
        } else if payload.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else if payload.starts_with(&LZ4_LEGACY_MAGIC) {
            Some(Compression::Lz4)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Xz => "xz",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
        }
    }
}

fn u32_at(data: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(off..off + 4)?.try_into().ok()?))
}

/// The byte range of the compressed payload inside `data`, or why it cannot be found.
pub fn payload_range(data: &[u8]) -> Result<Range<usize>, String> {
    if data.get(HDR_MAGIC..HDR_MAGIC + 4) != Some(b"HdrS") {
        return Err("no \"HdrS\" setup header magic at 0x202".into());
    }
    let version = u16::from_le_bytes([data[HDR_VERSION], data[HDR_VERSION + 1]]);
    if version < 0x208 {
        return Err(format!(
            "boot protocol {}.{:02} predates payload_offset (2.08)",
            version >> 8,
            version & 0xff
        ));
    }
    let setup_sects = match data[HDR_SETUP_SECTS] {
        0 => 4,
        n => n as usize,
    };
    let off = u32_at(data, HDR_PAYLOAD_OFFSET).ok_or("header truncated")? as usize;
    let len = u32_at(data, HDR_PAYLOAD_LENGTH).ok_or("header truncated")? as usize;
    let start = (setup_sects + 1) * 512 + off;
    let end = start
        .checked_add(len)
        .filter(|&e| e <= data.len())
        .ok_or_else(|| {
            format!(
                "payload {start:#x}+{len:#x} runs past the end ({:#x})",
                data.len()
            )
        })?;
    Ok(start..end)
}

/// Decompresses the payload of the bzImage `data` (read from `path`, named in errors) and
/// checks the result is an ELF file.
pub fn extract_vmlinux(path: &Path, data: &[u8]) -> Result<Vec<u8>, TargetError> {
    let range = payload_range(data).map_err(|reason| TargetError::BzImage {
        path: path.into(),
        reason,
    })?;
    let payload = &data[range];
    let comp = Compression::detect(payload).ok_or_else(|| TargetError::BzImage {
        path: path.into(),
        reason: format!(
            "unknown payload compression (first bytes {:02x?})",
            &payload[..payload.len().min(6)]
        ),
    })?;
    let fail = |message: String| TargetError::Decompress {
        path: path.into(),
        format: comp.name(),
        message,
    };
    let mut out = Vec::with_capacity(payload.len() * 4);
    match comp {
        // Both decoders stop at the end of the first stream/member: the kernel appends the
        // uncompressed size (4 bytes) after it, which must be ignored.
        Compression::Xz => {
            out = xz_first_stream(payload).map_err(fail)?;
            out.len()
        }
        Compression::Gzip => flate2::read::GzDecoder::new(payload)
            .read_to_end(&mut out)
            .map_err(|e| fail(e.to_string()))?,
        Compression::Zstd => {
            out = zstd_cli(payload).map_err(fail)?;
            out.len()
        }
        Compression::Lz4 => {
            out = lz4_legacy(payload).map_err(fail)?;
            out.len()
        }
    };
    if !out.starts_with(b"\x7fELF") {
        return Err(fail("decompressed data is not an ELF file".into()));
    }
    Ok(out)
}

/// Decodes the first xz stream of `data` and stops at its end (xz2's reader would go on and
/// reject the size bytes the kernel build appends).
fn xz_first_stream(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut stream =
        xz2::stream::Stream::new_stream_decoder(u64::MAX, 0).map_err(|e| e.to_string())?;
    let mut out: Vec<u8> = Vec::with_capacity(data.len() * 4);
    loop {
        if out.capacity() - out.len() < 1 << 20 {
            out.reserve(out.capacity().max(1 << 20));
        }
        let consumed = stream.total_in() as usize;
        let status = stream
            .process_vec(&data[consumed..], &mut out, xz2::stream::Action::Run)
            .map_err(|e| e.to_string())?;
        match status {
            xz2::stream::Status::StreamEnd => return Ok(out),
            _ if stream.total_in() as usize >= data.len() && out.len() < out.capacity() => {
                return Err("truncated xz stream".into())
            }
            _ => {}
        }
    }
}

/// `0x184c2102`, little-endian.
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
/// Every block of the legacy frame but the last decompresses to exactly this.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// Decodes an lz4 legacy frame: the magic, then blocks of `<u32 compressed size><lz4 block>`.
/// It ends at the end of the data or at anything that is no block: the kernel build appends
/// the uncompressed size (4 bytes), and the lz4 tool may start a new frame with the magic.
fn lz4_legacy(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut at = LZ4_LEGACY_MAGIC.len();
    let mut out = Vec::with_capacity(data.len() * 3);
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    while let Some(size) = data
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    {
        let Some(compressed) = data
            .get(at + 4..at + 4 + size)
            .filter(|_| size > 0 && data[at..].len() > 4)
        else {
            break;
        };
        if data[at..at + 4] == LZ4_LEGACY_MAGIC {
            break;
        }
        let n = lz4_flex::block::decompress_into(compressed, &mut block)
            .map_err(|e| format!("block at {at:#x} ({size} bytes): {e}"))?;
        out.extend_from_slice(&block[..n]);
        at += 4 + size;
    }
    if out.is_empty() {
        return Err("no lz4 block after the legacy-frame magic".into());
    }
    Ok(out)
}

/// zstd payloads go through the `zstd` tool (xz is Debian's choice and is handled in-process).
fn zstd_cli(payload: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("zstd")
        .args(["-dcq"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run zstd: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let data = payload.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let _ = writer.join();
    // zstd complains about the trailing size bytes but has written the frame by then.
    if out.stdout.is_empty() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A synthetic bzImage: setup header with `setup_sects` sectors, some protected-mode
    /// bytes, then `payload` at `pad` bytes into the protected-mode part, then the size.
    fn bzimage(setup_sects: u8, pad: usize, payload: &[u8], version: u16) -> Vec<u8> {
        let sects = if setup_sects == 0 {
            4
        } else {
            setup_sects as usize
        };
        let pm = (sects + 1) * 512;
        let mut d = vec![0u8; pm + pad];
        d[HDR_SETUP_SECTS] = setup_sects;
        d[HDR_MAGIC..HDR_MAGIC + 4].copy_from_slice(b"HdrS");
        d[HDR_VERSION..HDR_VERSION + 2].copy_from_slice(&version.to_le_bytes());
        d[HDR_PAYLOAD_OFFSET..HDR_PAYLOAD_OFFSET + 4].copy_from_slice(&(pad as u32).to_le_bytes());
        d[HDR_PAYLOAD_LENGTH..HDR_PAYLOAD_LENGTH + 4]
            .copy_from_slice(&(payload.len() as u32 + 4).to_le_bytes());
        d.extend_from_slice(payload);
        d.extend_from_slice(&1234u32.to_le_bytes());
        d.extend_from_slice(&[0xcc; 64]); // trailing code after the payload
        d
    }

    fn fake_elf() -> Vec<u8> {
        let mut e = b"\x7fELF\x02\x01\x01".to_vec();
        e.extend((0..5000u32).flat_map(|i| i.to_le_bytes()));
        e
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut enc = xz2::write::XzEncoder::new(Vec::new(), 6);
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn locates_payload_from_setup_header() {
        let img = bzimage(27, 0x2cc, b"\xfd7zXZ\0rest", 0x20f);
        let r = payload_range(&img).unwrap();
        assert_eq!(r.start, 28 * 512 + 0x2cc);
        assert_eq!(&img[r.start..r.start + 6], b"\xfd7zXZ\0");
        assert_eq!(r.len(), 10 + 4);
    }

    #[test]
    fn zero_setup_sects_means_four() {
        let img = bzimage(0, 16, b"\x1f\x8bxx", 0x20f);
        assert_eq!(payload_range(&img).unwrap().start, 5 * 512 + 16);
    }

    #[test]
    fn rejects_bad_headers() {
        assert!(payload_range(&[0u8; 100]).unwrap_err().contains("HdrS"));
        let old = bzimage(4, 0, b"x", 0x207);
        assert!(payload_range(&old).unwrap_err().contains("2.08"));
        let mut short = bzimage(4, 0, b"xxxx", 0x20f);
        short[HDR_PAYLOAD_LENGTH..HDR_PAYLOAD_LENGTH + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(payload_range(&short).unwrap_err().contains("past the end"));
    }

    #[test]
    fn decompresses_xz_payload_ignoring_trailing_size() {
        let elf = fake_elf();
        let img = bzimage(30, 100, &xz(&elf), 0x20f);
        let out = extract_vmlinux(Path::new("vmlinuz-test"), &img).unwrap();
        assert_eq!(out, elf);
    }

    #[test]
    fn decompresses_gzip_payload() {
        let elf = fake_elf();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&elf).unwrap();
        let img = bzimage(30, 8, &enc.finish().unwrap(), 0x20f);
        assert_eq!(extract_vmlinux(Path::new("v"), &img).unwrap(), elf);
    }

    /// An lz4 legacy frame of `data`, in blocks of at most `block` bytes.
    fn lz4_legacy_frame(data: &[u8], block: usize) -> Vec<u8> {
        let mut out = LZ4_LEGACY_MAGIC.to_vec();
        for chunk in data.chunks(block) {
            let c = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&(c.len() as u32).to_le_bytes());
            out.extend_from_slice(&c);
        }
        out
    }

    #[test]
    fn decompresses_lz4_legacy_payload_of_several_blocks_ignoring_trailing_size() {
        let mut elf = fake_elf();
        elf.extend((0..3 * LZ4_LEGACY_BLOCK / 2).map(|i| (i % 251) as u8));
        let img = bzimage(30, 8, &lz4_legacy_frame(&elf, LZ4_LEGACY_BLOCK), 0x20f);
        assert_eq!(extract_vmlinux(Path::new("v"), &img).unwrap(), elf);
        let mut truncated = lz4_legacy_frame(&elf, LZ4_LEGACY_BLOCK);
        truncated.truncate(40);
        let err = extract_vmlinux(
            Path::new("vmlinuz-cloud"),
            &bzimage(30, 8, &truncated, 0x20f),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("vmlinuz-cloud") && err.contains("lz4"),
            "{err}"
        );
    }

    #[test]
    fn non_elf_payload_is_an_error() {
        let img = bzimage(30, 8, &xz(b"not an elf at all"), 0x20f);
        let err = extract_vmlinux(Path::new("vmlinuz-x"), &img)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("vmlinuz-x") && err.contains("not an ELF"),
            "{err}"
        );
    }

    #[test]
    fn unknown_compression_is_named() {
        let img = bzimage(30, 8, b"LZ4Xjunk", 0x20f);
        let err = extract_vmlinux(Path::new("v"), &img)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown payload compression"), "{err}");
    }
}
