//! Getting whole files out of the guest over the serial console.
//!
//! The script prints `KPATCH-RS-FILE-BEGIN <name>`, the file gzip-compressed and base64
//! encoded (busybox `gzip -c | base64`, 76 characters a line), then
//! `KPATCH-RS-FILE-END <name>`. The host collects the lines between the markers, decodes
//! and gunzips them; gzip's CRC catches a console line that kernel output broke into.

use std::io::Read;

pub const FILE_BEGIN: &str = "KPATCH-RS-FILE-BEGIN";
pub const FILE_END: &str = "KPATCH-RS-FILE-END";

/// The shell that sends `guest_path` as `name`.
pub fn emit_command(name: &str, guest_path: &str) -> String {
    format!("echo {FILE_BEGIN} {name}\ngzip -c {guest_path} | base64\necho {FILE_END} {name}\n")
}

fn b64_value(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    } as u32)
}

/// Decodes standard base64 (padding optional, whitespace ignored).
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == b'=' {
            break;
        }
        let v = b64_value(c).ok_or_else(|| format!("byte {c:#04x} is not base64"))?;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// The file `name` sent in `lines`, decoded; `Err` when its markers are missing or the
/// data is damaged.
pub fn extract_file(lines: &[String], name: &str) -> Result<Vec<u8>, String> {
    let begin = format!("{FILE_BEGIN} {name}");
    let end = format!("{FILE_END} {name}");
    let start = lines
        .iter()
        .position(|l| l.trim_end() == begin)
        .ok_or_else(|| format!("no {begin} line"))?;
    let len = lines[start + 1..]
        .iter()
        .position(|l| l.trim_end() == end)
        .ok_or_else(|| format!("no {end} line"))?;
    let text: String = lines[start + 1..start + 1 + len].concat();
    let gz = base64_decode(&text)?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut out)
        .map_err(|e| format!("gzip: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn base64_known_vectors() {
        for (enc, dec) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9v\nYmFy", "foobar"),
        ] {
            assert_eq!(base64_decode(enc).unwrap(), dec.as_bytes(), "{enc}");
        }
        assert!(base64_decode("Zm9v[").is_err());
    }

    #[test]
    fn round_trip_through_host_tools() {
        // the same pipeline as in the guest, run on the host's gzip and base64
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("data");
        let data: Vec<u8> = (0..50_000u32)
            .flat_map(|i| (i * 7919).to_le_bytes())
            .collect();
        std::fs::write(&f, &data).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(emit_command("blob", &f.display().to_string()))
            .output()
            .unwrap();
        let mut lines: Vec<String> = vec!["[ 1.0] noise".into()];
        lines.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(String::from),
        );
        assert_eq!(extract_file(&lines, "blob").unwrap(), data);
        assert!(extract_file(&lines, "other")
            .unwrap_err()
            .contains("no KPATCH-RS-FILE-BEGIN other"));
    }

    #[test]
    fn damaged_data_is_detected() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&[7u8; 3000]).unwrap();
        let gz = enc.finish().unwrap();
        // encode by hand, then drop one quartet from the middle
        let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in gz.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |a, (i, &b)| a | (b as u32) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                b64.push(table[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        let lines = |body: &str| {
            vec![
                format!("{FILE_BEGIN} x"),
                body.to_string(),
                format!("{FILE_END} x"),
            ]
        };
        assert_eq!(extract_file(&lines(&b64), "x").unwrap(), vec![7u8; 3000]);
        let broken = format!("{}{}", &b64[..8], &b64[12..]);
        assert!(extract_file(&lines(&broken), "x").is_err());
    }
}
