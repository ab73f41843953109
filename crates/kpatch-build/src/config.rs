//! Reading and editing a kernel `.config`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{io_err, Result};

/// A parsed `.config`: `CONFIG_X` → value (strings unquoted); unset options are absent.
#[derive(Debug, Clone, Default)]
pub struct KernelConfig {
    pub path: PathBuf,
    values: BTreeMap<String, String>,
}

impl KernelConfig {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        Ok(Self::parse(path, &text))
    }

    pub fn parse(path: &Path, text: &str) -> Self {
        let mut values = BTreeMap::new();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                if k.starts_with("CONFIG_") {
                    values.insert(k.to_string(), unquote(v));
                }
            }
        }
        KernelConfig {
            path: path.to_path_buf(),
            values,
        }
    }

    pub fn get(&self, option: &str) -> Option<&str> {
        self.values.get(option).map(String::as_str)
    }
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    match v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(s) => s.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => v.to_string(),
    }
}

/// Sets string options in config text (replacing `CONFIG_X=...` or `# CONFIG_X is not set`
/// lines, appending otherwise).
pub fn set_strings(text: &str, settings: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(text.len() + 128);
    let mut done = vec![false; settings.len()];
    for line in text.lines() {
        let hit = settings.iter().position(|(k, _)| {
            line.strip_prefix(k).is_some_and(|r| r.starts_with('='))
                || line
                    .strip_prefix("# ")
                    .and_then(|r| r.strip_prefix(k))
                    .is_some_and(|r| r == " is not set")
        });
        match hit {
            Some(i) => {
                out.push_str(&format!("{}=\"{}\"\n", settings[i].0, settings[i].1));
                done[i] = true;
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (i, (k, v)) in settings.iter().enumerate() {
        if !done[i] {
            out.push_str(&format!("{k}=\"{v}\"\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_set() {
        let text = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_S=\"x \\\"q\\\"\"\nCONFIG_K=\"debian/certs.pem\"\n";
        let c = KernelConfig::parse(Path::new("c"), text);
        assert_eq!(c.get("CONFIG_A"), Some("y"));
        assert_eq!(c.get("CONFIG_B"), None);
        assert_eq!(c.get("CONFIG_S"), Some("x \"q\""));
        let s = set_strings(
            text,
            &[("CONFIG_K", ""), ("CONFIG_B", "v"), ("CONFIG_NEW", "")],
        );
        assert_eq!(s, "CONFIG_A=y\nCONFIG_B=\"v\"\nCONFIG_S=\"x \\\"q\\\"\"\nCONFIG_K=\"\"\nCONFIG_NEW=\"\"\n");
    }
}
