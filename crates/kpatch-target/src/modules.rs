//! A kernel's modules on the host (`lib/modules/<abi>` of its unpacked image package): found by
//! their canonical name, read decompressed. The build reads the patched modules' symbols from
//! them; the guest harness copies them into an initramfs.

use crate::TargetError;
use kpatch_common::canonical_module_name;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The module file suffixes this module reads, with their compression.
const READABLE: [(&str, Option<&str>); 3] = [
    (".ko", None),
    (".ko.xz", Some("xz")),
    (".ko.gz", Some("gzip")),
];

fn readable_stem(file_name: &str) -> Option<(&str, Option<&'static str>)> {
    READABLE
        .iter()
        .find_map(|&(suffix, format)| Some((file_name.strip_suffix(suffix)?, format)))
}

/// Every `*.ko`, `*.ko.xz`, `*.ko.gz` under `dir`, by canonical module name.
pub fn index_modules(dir: &Path) -> Result<HashMap<String, PathBuf>, TargetError> {
    let mut out = HashMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| TargetError::io(&d, e))?;
        for e in entries {
            let e = e.map_err(|e| TargetError::io(&d, e))?;
            let p = e.path();
            let ft = e.file_type().map_err(|err| TargetError::io(&p, err))?;
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if let Some((stem, _)) = readable_stem(name) {
                    out.insert(canonical_module_name(stem), p);
                }
            }
        }
    }
    Ok(out)
}

/// A module file's name without its `.ko[.xz|.gz]` suffix, and its ELF content (decompressed).
pub fn read_module(path: &Path) -> Result<(String, Vec<u8>), TargetError> {
    let bad = |what: String| TargetError::BadModule {
        path: path.into(),
        what,
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let Some((stem, format)) = readable_stem(name) else {
        return Err(bad(
            "a kernel module must be named *.ko, *.ko.xz or *.ko.gz".into(),
        ));
    };
    let raw = std::fs::read(path).map_err(|e| TargetError::io(path, e))?;
    let data = match format {
        None => raw,
        Some(format) => {
            let mut out = Vec::new();
            let read = match format {
                "xz" => xz2::read::XzDecoder::new(&raw[..]).read_to_end(&mut out),
                _ => flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out),
            };
            read.map_err(|e| bad(format!("cannot decompress {format} module: {e}")))?;
            out
        }
    };
    if !data.starts_with(b"\x7fELF") {
        return Err(bad("not an ELF kernel module".into()));
    }
    Ok((stem.to_string(), data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_and_reads_modules_by_canonical_name() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("kernel/net")).unwrap();
        let elf = b"\x7fELF\x02\x01\x01 module body".to_vec();
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
        std::io::Write::write_all(&mut xz, &elf).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &elf).unwrap();
        std::fs::write(
            d.path().join("kernel/net/nf-conntrack.ko.xz"),
            xz.finish().unwrap(),
        )
        .unwrap();
        std::fs::write(d.path().join("kernel/crc16.ko.gz"), gz.finish().unwrap()).unwrap();
        std::fs::write(d.path().join("ext4.ko"), &elf).unwrap();
        std::fs::write(d.path().join("modules.order"), "x").unwrap();
        let index = index_modules(d.path()).unwrap();
        let mut names: Vec<&str> = index.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["crc16", "ext4", "nf_conntrack"]);
        for (name, stem) in [
            ("nf_conntrack", "nf-conntrack"),
            ("crc16", "crc16"),
            ("ext4", "ext4"),
        ] {
            assert_eq!(
                read_module(&index[name]).unwrap(),
                (stem.to_string(), elf.clone())
            );
        }

        let bad = d.path().join("notes.txt");
        std::fs::write(&bad, "x").unwrap();
        let e = read_module(&bad).unwrap_err().to_string();
        assert!(
            e.contains("notes.txt") && e.contains("must be named"),
            "{e}"
        );
        let fake = d.path().join("fake.ko");
        std::fs::write(&fake, "not elf").unwrap();
        assert!(read_module(&fake)
            .unwrap_err()
            .to_string()
            .contains("not an ELF"));
        let broken = d.path().join("broken.ko.xz");
        std::fs::write(&broken, "not xz").unwrap();
        assert!(read_module(&broken)
            .unwrap_err()
            .to_string()
            .contains("cannot decompress xz module"));
    }
}
