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

/// Every option a config text states: `CONFIG_X=v` as `Some(v)` (unquoted), `# CONFIG_X is not
/// set` as `None`. Options it does not mention are absent.
pub fn stated_options(text: &str) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("# ")
            .and_then(|r| r.strip_suffix(" is not set"))
            .filter(|n| n.starts_with("CONFIG_"))
        {
            out.insert(name.to_string(), None);
        } else if let Some((k, v)) = line
            .split_once('=')
            .filter(|(k, _)| k.starts_with("CONFIG_"))
        {
            out.insert(k.to_string(), Some(unquote(v)));
        }
    }
    out
}

/// One option the target states that a prepared tree's config gives another value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub option: String,
    pub target: Option<String>,
    pub prepared: Option<String>,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = |v: &Option<String>| v.clone().unwrap_or_else(|| "not set".into());
        write!(
            f,
            "{} ({} -> {})",
            self.option,
            v(&self.target),
            v(&self.prepared)
        )
    }
}

/// The options `target` states that `prepared` (the tree's `.config` after `olddefconfig`)
/// states otherwise, or drops: what the source tree could not give the configuration the
/// kernel was built with (an option its Kconfig lacks, a dependency it does not meet). Options
/// in `ignore` are the ones set on purpose.
pub fn drift(target: &str, prepared: &str, ignore: &[&str]) -> Vec<Drift> {
    let prepared = stated_options(prepared);
    stated_options(target)
        .into_iter()
        .filter(|(k, _)| !ignore.contains(&k.as_str()))
        .filter_map(|(option, want)| {
            let got = prepared.get(&option).cloned().flatten();
            (got != want).then_some(Drift {
                option,
                target: want,
                prepared: got,
            })
        })
        .collect()
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

    /// The rt tree bug: `linux-source` without Debian's PREEMPT_RT series has no
    /// ARCH_SUPPORTS_RT, so `olddefconfig` quietly turned PREEMPT_RT off and the module's
    /// vermagic said `preempt` to a `preempt_rt` kernel.
    #[test]
    fn regression_olddefconfig_dropping_preempt_rt_is_drift() {
        let target = "CONFIG_PREEMPT_RT=y\n# CONFIG_PREEMPT is not set\nCONFIG_HZ=250\n\
                      # CONFIG_MODULE_SIG_ALL is not set\nCONFIG_X=\"a\"\n";
        let prepared = "# CONFIG_PREEMPT_RT is not set\nCONFIG_PREEMPT=y\nCONFIG_HZ=250\n\
                        CONFIG_MODULE_SIG_ALL=y\nCONFIG_X=\"a\"\nCONFIG_NEW_DEFAULT=y\n";
        let d = drift(target, prepared, &["CONFIG_MODULE_SIG_ALL"]);
        let shown: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "CONFIG_PREEMPT (not set -> y)".to_string(),
                "CONFIG_PREEMPT_RT (y -> not set)".to_string()
            ]
        );
        // options the target does not state (Debian strips some strings) are not drift
        assert!(drift("CONFIG_A=y\n", "CONFIG_A=y\nCONFIG_BUILD_SALT=\"\"\n", &[]).is_empty());
    }
}
