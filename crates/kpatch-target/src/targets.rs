//! What can be targeted from this machine: every Debian amd64 kernel whose image package apt
//! offers, in both lines and every flavour, and whether the archive still has its source.

use crate::version::{self, Line};
use crate::{Store, TargetError};
use serde::Serialize;
use std::collections::BTreeMap;

/// One kernel apt offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Offered {
    /// `6.1.0-57-cloud-amd64`
    pub abi: String,
    /// The image package's version, `6.1.192-3`: the version of the source it needs.
    pub version: String,
    /// `6.1` or `6.12`.
    pub line: String,
    pub flavour: String,
    /// The archive has `linux-source-<line>` at exactly [`Self::version`].
    pub source: bool,
}

/// Every kernel offered, newest ABI first within each line (6.1 first), then by flavour.
pub fn offered(store: &Store) -> Result<Vec<Offered>, TargetError> {
    // ABI -> (line, serial, flavour); image packages are `linux-image-<abi>[-unsigned]`.
    let mut abis: BTreeMap<String, version::Abi> = BTreeMap::new();
    for name in store.tools().names("linux-image-")? {
        let Some(rest) = name.strip_prefix("linux-image-") else {
            continue;
        };
        let abi = rest.strip_suffix("-unsigned").unwrap_or(rest);
        if let Some(parsed) = version::parse_abi(abi) {
            abis.insert(abi.to_string(), parsed);
        }
    }
    let mut packages: Vec<String> = abis.keys().map(|a| format!("linux-image-{a}")).collect();
    packages.extend(abis.keys().map(|a| format!("linux-image-{a}-unsigned")));
    let lines = [Line::V6_1, Line::V6_12];
    packages.extend(lines.iter().map(|l| format!("linux-source-{l}")));
    let text = store.tools().policies(&packages)?;
    let blocks: BTreeMap<String, String> = version::split_policies(&text).into_iter().collect();
    let candidate = |pkg: &str| {
        blocks
            .get(pkg)
            .and_then(|b| version::candidate_from_policy(b))
    };
    let sources: BTreeMap<Line, Vec<String>> = lines
        .iter()
        .map(|l| {
            (
                *l,
                blocks
                    .get(&format!("linux-source-{l}"))
                    .map(|b| version::versions_from_policy(b))
                    .unwrap_or_default(),
            )
        })
        .collect();
    let mut out: Vec<(version::Abi, Offered)> = Vec::new();
    for (abi, parsed) in abis {
        let Some(v) = candidate(&format!("linux-image-{abi}"))
            .or_else(|| candidate(&format!("linux-image-{abi}-unsigned")))
        else {
            continue;
        };
        let source = sources.get(&parsed.line).is_some_and(|vs| vs.contains(&v));
        out.push((
            parsed.clone(),
            Offered {
                abi,
                version: v,
                line: parsed.line.to_string(),
                flavour: parsed.flavour.clone(),
                source,
            },
        ));
    }
    out.sort_by(|(a, _), (b, _)| {
        a.line
            .cmp(&b.line)
            .then(b.serial.cmp(&a.serial))
            .then(a.flavour.cmp(&b.flavour))
    });
    Ok(out.into_iter().map(|(_, o)| o).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PackageTools;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    struct Archive;

    const IMAGES: &[(&str, &str)] = &[
        ("linux-image-6.1.0-47-amd64", "6.1.170-3"),
        ("linux-image-6.1.0-48-rt-amd64", "6.1.172-1"),
        ("linux-image-6.1.0-57-amd64-unsigned", "6.1.192-3"),
        ("linux-image-6.1.0-57-amd64", "6.1.192-3"),
        ("linux-image-6.1.0-57-cloud-amd64", "6.1.192-3"),
        ("linux-image-6.12.117+deb12-amd64", "6.12.117-1~deb12u1"),
        ("linux-image-6.12.101+deb12-amd64", "6.12.101-1~deb12u1"),
    ];

    impl PackageTools for Archive {
        fn policy(&self, package: &str) -> Result<String, TargetError> {
            let versions: &[&str] = match package {
                "linux-source-6.1" => &["6.1.192-3", "6.1.170-3"],
                "linux-source-6.12" => &["6.12.117-1~deb12u1"],
                p => IMAGES
                    .iter()
                    .find(|(n, _)| *n == p)
                    .map(|(_, v)| std::slice::from_ref(v))
                    .unwrap_or(&[]),
            };
            let mut t = format!(
                "{package}:\n  Installed: (none)\n  Candidate: {}\n  Version table:\n",
                versions.first().unwrap_or(&"(none)")
            );
            for v in versions {
                t.push_str(&format!("     {v} 500\n        500 http://deb.debian.org/debian bookworm/main amd64 Packages\n"));
            }
            Ok(t)
        }
        fn show(&self, _: &str, _: &str) -> Result<String, TargetError> {
            unreachable!()
        }
        fn download(&self, _: &str, _: &str, _: &Path) -> Result<PathBuf, TargetError> {
            unreachable!()
        }
        fn extract(&self, _: &Path, _: &Path) -> Result<(), TargetError> {
            unreachable!()
        }
        fn names(&self, prefix: &str) -> Result<Vec<String>, TargetError> {
            let mut n: Vec<String> = IMAGES.iter().map(|(n, _)| n.to_string()).collect();
            n.extend(
                [
                    "linux-image-amd64",
                    "linux-image-6.1.0-57-amd64-dbg",
                    "linux-image-6.1.0-50-arm64",
                ]
                .map(String::from),
            );
            Ok(n.into_iter().filter(|n| n.starts_with(prefix)).collect())
        }
    }

    #[test]
    fn lists_both_lines_every_flavour_and_marks_missing_sources() {
        let got = offered(&Store::new("/nonexistent", Arc::new(Archive))).unwrap();
        let rows: Vec<(&str, &str, bool)> = got
            .iter()
            .map(|o| (o.abi.as_str(), o.version.as_str(), o.source))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("6.1.0-57-amd64", "6.1.192-3", true),
                ("6.1.0-57-cloud-amd64", "6.1.192-3", true),
                ("6.1.0-48-rt-amd64", "6.1.172-1", false),
                ("6.1.0-47-amd64", "6.1.170-3", true),
                ("6.12.117+deb12-amd64", "6.12.117-1~deb12u1", true),
                ("6.12.101+deb12-amd64", "6.12.101-1~deb12u1", false),
            ]
        );
        assert_eq!(
            (got[1].line.as_str(), got[1].flavour.as_str()),
            ("6.1", "cloud-amd64")
        );
        assert_eq!(got[4].line, "6.12");
    }
}
