//! `Module.symvers`: the exported symbols of a kernel build and their CRCs.
//!
//! Each line is `0xCRC<TAB>symbol<TAB>module<TAB>EXPORT_SYMBOL[_GPL]<TAB>namespace`; the namespace field
//! may be empty (and is absent in files written by old kernels).

use std::collections::HashMap;
use std::path::Path;

use crate::Error;

/// Which export macro exported a symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportKind {
    /// `EXPORT_SYMBOL`
    Plain,
    /// `EXPORT_SYMBOL_GPL`
    Gpl,
}

/// One exported symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymversEntry {
    pub crc: u32,
    pub symbol: String,
    /// `vmlinux`, or the module's path without `.ko` (e.g. `fs/ext4/ext4`).
    pub module: String,
    pub export: ExportKind,
    /// Symbol namespace (`EXPORT_SYMBOL_NS`); empty when none.
    pub namespace: String,
}

impl SymversEntry {
    /// The livepatch object name of the exporter: `vmlinux`, or the module name (basename,
    /// with `-` replaced by `_` as the kernel does).
    pub fn object(&self) -> String {
        if self.module == kpatch_common::VMLINUX {
            return self.module.clone();
        }
        let base = self.module.rsplit('/').next().unwrap_or(&self.module);
        kpatch_common::canonical_module_name(base)
    }
}

/// A parsed `Module.symvers`.
#[derive(Debug, Clone, Default)]
pub struct Symvers {
    /// Where it was read from, for messages.
    pub file: String,
    entries: Vec<SymversEntry>,
    index: HashMap<String, usize>,
}

impl Symvers {
    /// Read and parse a `Module.symvers` file.
    pub fn from_path(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse the text of a `Module.symvers`; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, Error> {
        let mut symvers = Symvers {
            file: file.to_string(),
            ..Default::default()
        };
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let entry = parse_line(line).map_err(|reason| Error::SymversLine {
                file: file.to_string(),
                line: n + 1,
                reason,
            })?;
            // A later duplicate wins, as in modpost.
            match symvers.index.get(&entry.symbol) {
                Some(&i) => symvers.entries[i] = entry,
                None => {
                    symvers
                        .index
                        .insert(entry.symbol.clone(), symvers.entries.len());
                    symvers.entries.push(entry);
                }
            }
        }
        Ok(symvers)
    }

    pub fn entries(&self) -> &[SymversEntry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for an exported symbol, if it is exported.
    pub fn get(&self, symbol: &str) -> Option<&SymversEntry> {
        self.index.get(symbol).map(|&i| &self.entries[i])
    }

    /// The entry for `symbol`, or an error naming it when the target does not export it.
    pub fn exported(&self, symbol: &str) -> Result<&SymversEntry, Error> {
        self.get(symbol).ok_or_else(|| Error::NotExported {
            symbol: symbol.to_string(),
            file: self.file.clone(),
        })
    }

    /// Check a CRC that `user` (a module file, say) recorded for `symbol` against the target's.
    pub fn check_crc(&self, symbol: &str, crc: u32, user: &str) -> Result<(), Error> {
        let entry = self.exported(symbol)?;
        if entry.crc != crc {
            return Err(Error::CrcMismatch {
                symbol: symbol.to_string(),
                user: user.to_string(),
                found: crc,
                expected: entry.crc,
                module: entry.module.clone(),
                file: self.file.clone(),
            });
        }
        Ok(())
    }

    /// Check every `(symbol, crc)` pair, e.g. a module's `__versions`; the first disagreement or
    /// unknown symbol is the error.
    pub fn check_versions<'a>(
        &self,
        versions: impl IntoIterator<Item = (&'a str, u32)>,
        user: &str,
    ) -> Result<(), Error> {
        for (symbol, crc) in versions {
            self.check_crc(symbol, crc, user)?;
        }
        Ok(())
    }
}

fn parse_line(line: &str) -> Result<SymversEntry, String> {
    let fields: Vec<&str> = line.split('\t').collect();
    if fields.len() < 4 || fields.len() > 5 {
        return Err(format!(
            "expected 4 or 5 tab-separated fields, found {}",
            fields.len()
        ));
    }
    let crc_text = fields[0];
    let hex = crc_text
        .strip_prefix("0x")
        .ok_or_else(|| format!("CRC `{crc_text}` does not start with 0x"))?;
    let crc = u32::from_str_radix(hex, 16).map_err(|e| format!("CRC `{crc_text}`: {e}"))?;
    let symbol = fields[1];
    if symbol.is_empty() {
        return Err("empty symbol name".to_string());
    }
    if fields[2].is_empty() {
        return Err(format!("empty module field for `{symbol}`"));
    }
    let export = match fields[3] {
        "EXPORT_SYMBOL" => ExportKind::Plain,
        "EXPORT_SYMBOL_GPL" => ExportKind::Gpl,
        other => return Err(format!("unknown export kind `{other}` for `{symbol}`")),
    };
    Ok(SymversEntry {
        crc,
        symbol: symbol.to_string(),
        module: fields[2].to_string(),
        export,
        namespace: fields.get(4).copied().unwrap_or("").to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "0x1a2b3c4d\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n\
                        0x0000beef\tusb_register_driver\tdrivers/usb/core/usbcore\tEXPORT_SYMBOL_GPL\t\n\
                        0xdeadbeef\tdma_buf_get\tdrivers/dma-buf/dma-buf\tEXPORT_SYMBOL_GPL\tDMA_BUF\n";

    #[test]
    fn parses_fields() {
        let s = Symvers::parse(TEXT, "Module.symvers").unwrap();
        assert_eq!(s.len(), 3);
        let e = s.get("usb_register_driver").unwrap();
        assert_eq!(e.crc, 0xbeef);
        assert_eq!(e.module, "drivers/usb/core/usbcore");
        assert_eq!(e.object(), "usbcore");
        assert_eq!(e.export, ExportKind::Gpl);
        assert_eq!(e.namespace, "");
        let d = s.get("dma_buf_get").unwrap();
        assert_eq!(d.namespace, "DMA_BUF");
        assert_eq!(d.object(), "dma_buf");
        assert_eq!(s.get("printk").unwrap().object(), "vmlinux");
        assert!(s.get("nonexistent").is_none());
    }

    #[test]
    fn crc_check_names_symbol_and_both_crcs() {
        let s = Symvers::parse(TEXT, "Module.symvers").unwrap();
        s.check_crc("printk", 0x1a2b3c4d, "patch.ko").unwrap();
        let err = s.check_crc("printk", 0x11111111, "patch.ko").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`printk`") && msg.contains("0x11111111") && msg.contains("0x1a2b3c4d"),
            "{msg}"
        );
        let err = s
            .check_versions([("printk", 0x1a2b3c4d), ("missing_sym", 1)], "patch.ko")
            .unwrap_err();
        assert!(
            matches!(err, Error::NotExported { ref symbol, .. } if symbol == "missing_sym"),
            "{err}"
        );
    }

    #[test]
    fn malformed_lines_are_refused_with_line_number() {
        for bad in [
            "1234\tfoo\tvmlinux\tEXPORT_SYMBOL\t",
            "0xzz\tfoo\tvmlinux\tEXPORT_SYMBOL\t",
            "0x1\tfoo\tvmlinux",
            "0x1\tfoo\tvmlinux\tEXPORT_WHATEVER\t",
        ] {
            let text = format!("0x1\tok\tvmlinux\tEXPORT_SYMBOL\t\n{bad}\n");
            let err = Symvers::parse(&text, "x/Module.symvers").unwrap_err();
            assert!(err.to_string().starts_with("x/Module.symvers:2:"), "{err}");
        }
    }

    /// Lines of Debian's 6.12.117+deb12-amd64 `Module.symvers` (linux-headers package), where
    /// every line has the fifth field, empty or a namespace.
    const DEBIAN_6_12: &str = "0x122c3a7e\t_printk\tvmlinux\tEXPORT_SYMBOL\t\n\
        0xbea5ff1e\tstatic_key_initialized\tvmlinux\tEXPORT_SYMBOL_GPL\t\n\
        0xf9801334\tdma_buf_get\tvmlinux\tEXPORT_SYMBOL_GPL\tDMA_BUF\n\
        0xd6551b9c\tcpu_cache_has_invalidate_memregion\tvmlinux\tEXPORT_SYMBOL_GPL\tDEVMEM\n\
        0x72b1660c\tusb_register_driver\tdrivers/usb/core/usbcore\tEXPORT_SYMBOL_GPL\t\n\
        0x0a6884f3\tiwl_opmode_register\tdrivers/net/wireless/intel/iwlwifi/iwlwifi\tEXPORT_SYMBOL_GPL\tIWLWIFI\n\
        0x7c7bf6e0\ttwofish_enc_blk\tarch/x86/crypto/twofish-x86_64\tEXPORT_SYMBOL_GPL\t\n";

    #[test]
    fn parses_debian_6_12_lines_with_namespaces() {
        let s = Symvers::parse(DEBIAN_6_12, "Module.symvers").unwrap();
        assert_eq!(s.len(), 7);
        let p = s.get("_printk").unwrap();
        assert_eq!(
            (p.crc, p.module.as_str(), p.export, p.namespace.as_str()),
            (0x122c3a7e, "vmlinux", ExportKind::Plain, "")
        );
        let d = s.get("dma_buf_get").unwrap();
        assert_eq!((d.crc, d.namespace.as_str()), (0xf9801334, "DMA_BUF"));
        assert_eq!(d.object(), "vmlinux");
        let i = s.get("iwl_opmode_register").unwrap();
        assert_eq!(
            (i.export, i.namespace.as_str(), i.object().as_str()),
            (ExportKind::Gpl, "IWLWIFI", "iwlwifi")
        );
        let t = s.get("twofish_enc_blk").unwrap();
        assert_eq!((t.object().as_str(), t.crc), ("twofish_x86_64", 0x7c7bf6e0));
        s.check_crc("cpu_cache_has_invalidate_memregion", 0xd6551b9c, "m.ko")
            .unwrap();
        assert!(s
            .check_crc("usb_register_driver", 0x72b1660d, "m.ko")
            .is_err());
    }
}
