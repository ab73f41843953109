//! Featuresets: the patch series Debian applies on top of `linux-source` for some flavours.
//!
//! Debian builds its `rt-amd64` kernels from the same source as the others with the series of
//! `debian/patches-rt/` applied (PREEMPT_RT, and in 6.12 the lazy preemption model on top of
//! the mainline RT code). `linux-source-*` holds the source without it, so a tree for an rt
//! kernel needs the series too. It is in the Debian packaging tarball of the `linux` source
//! package (`linux_<version>.debian.tar.xz`), fetched with `apt-get source --diff-only`
//! through a private deb-src configuration ([`SourceLists`]).
//!
//! The archive does not keep the packaging of every version. The series is taken, in this
//! order, from: the kernel's own version; the version it is a rebuild of (Debian 12's
//! `linux-6.12 6.12.117-1~deb12u1` is Debian 13's `linux 6.12.117-1`); the nearest older
//! version of the same line. In the last case the tree is only as good as the checks that
//! follow (each patch applies or is already applied, the headers equal those of the kernel's
//! own `linux-headers-*-common-rt`), and the changelog entries for the series between the two
//! versions are reported.

use crate::apt::SourceLists;
use crate::version::{self, Abi, Line};
use crate::{DebianKernel, TargetError};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How many older versions are tried when the kernel's own packaging is not in the archive.
const OLDER_TRIES: usize = 6;

/// The featureset a flavour is built with (`rt` for `rt-amd64`), if any.
pub fn featureset_of(abi: &Abi) -> Option<&'static str> {
    match abi.flavour.as_str() {
        "rt-amd64" => Some("rt"),
        _ => None,
    }
}

/// The source packages whose packaging carries a line's series, in order of preference:
/// Debian 12 builds the 6.12 line as `linux-6.12`, Debian 13 (whose kernel it is) as `linux`.
pub fn source_packages(line: Line) -> &'static [&'static str] {
    match line {
        Line::V6_1 => &["linux"],
        Line::V6_12 => &["linux-6.12", "linux"],
    }
}

/// The Debian releases, beside the system's own, whose archive may hold a line's packaging.
pub fn extra_releases(line: Line) -> &'static [&'static str] {
    match line {
        Line::V6_1 => &[],
        Line::V6_12 => &["trixie"],
    }
}

/// A source version that may carry the series, and how it relates to the kernel's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub source: String,
    pub version: String,
    /// The kernel's own version, or the version it is a rebuild of.
    pub exact: bool,
}

/// The versions to try for a kernel of `target` version, in order: exact or rebuilt-from
/// first, then up to [`OLDER_TRIES`] older versions of the same upstream line, newest first.
/// Newer versions are never taken: their series may hold changes the kernel does not.
/// `offered` is `(source package, version)` for every version the deb-src lists know.
pub fn candidates(target: &str, offered: &[(String, String)]) -> Vec<Candidate> {
    let same_line = |v: &str| {
        let mm = |x: &str| -> String {
            version::upstream_of(x)
                .split('.')
                .take(2)
                .collect::<Vec<_>>()
                .join(".")
        };
        mm(v) == mm(target)
    };
    let mut out: Vec<Candidate> = offered
        .iter()
        .filter(|(_, v)| v == target || version::rebuilt_from(v) == version::rebuilt_from(target))
        .map(|(s, v)| Candidate {
            source: s.clone(),
            version: v.clone(),
            exact: true,
        })
        .collect();
    let mut older: Vec<&(String, String)> = offered
        .iter()
        .filter(|(_, v)| {
            same_line(v)
                && version::compare_versions(version::rebuilt_from(v), target).is_lt()
                && version::rebuilt_from(v) != version::rebuilt_from(target)
        })
        .collect();
    older.sort_by(|a, b| version::compare_versions(&b.1, &a.1));
    // a rebuild (`~deb12u1`) and the version it rebuilds carry the same series: they count as
    // one version towards the limit, and both are tried
    let mut versions: Vec<&str> = Vec::new();
    for (s, v) in older {
        let base = version::rebuilt_from(v);
        if !versions.contains(&base) {
            if versions.len() == OLDER_TRIES {
                break;
            }
            versions.push(base);
        }
        out.push(Candidate {
            source: s.clone(),
            version: v.clone(),
            exact: false,
        });
    }
    out
}

/// A featureset's patch series, unpacked into the cache.
#[derive(Debug, Clone)]
pub struct FeaturesetSeries {
    /// `rt`
    pub featureset: &'static str,
    /// The source package and version it was taken from (`linux`, `6.1.176-1`).
    pub source: String,
    pub version: String,
    /// Taken from the kernel's own version (or the one it is a rebuild of).
    pub exact: bool,
    /// The patches, in the order of the series file.
    pub patches: Vec<PathBuf>,
    /// The versions tried before this one, and why each failed.
    pub skipped: Vec<String>,
}

impl FeaturesetSeries {
    /// `rt series of linux 6.1.176-1`
    pub fn describe(&self) -> String {
        format!(
            "{} series of {} {}",
            self.featureset, self.source, self.version
        )
    }
}

/// The patch file names of a quilt `series` file, in order (comments and blank lines skipped).
pub fn parse_series(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.split_whitespace().next().unwrap_or(l).to_string())
        .collect()
}

/// The changelog lines of `featureset` (`* [rt] ...`) of the versions after `after` up to and
/// including `upto`, each prefixed with its version: what changed in the series between the
/// version it was taken from and the kernel's.
pub fn changelog_entries(
    changelog: &str,
    featureset: &str,
    after: &str,
    upto: &str,
) -> Vec<String> {
    let tag = format!("[{featureset}]");
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in changelog.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            // `linux (6.1.177-1) bookworm-security; urgency=high`
            current = line
                .split_once('(')
                .and_then(|(_, r)| r.split_once(')'))
                .map(|(v, _)| v.to_string());
            continue;
        }
        let Some(v) = &current else { continue };
        let inside = version::compare_versions(v, after).is_gt()
            && version::compare_versions(v, upto).is_le();
        if inside && line.contains(&tag) {
            out.push(format!("{v}: {}", line.trim().trim_start_matches("* ")));
        }
    }
    out
}

impl DebianKernel {
    /// The featureset this kernel's flavour is built with (`rt`), if any.
    pub fn featureset(&self) -> Option<&'static str> {
        featureset_of(&self.abi_parts())
    }

    fn source_lists(&self) -> SourceLists {
        SourceLists {
            dir: self.store().root().join("apt-src"),
            extra_releases: extra_releases(self.abi_parts().line)
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }

    /// The featureset's patch series for this kernel (see the module documentation), fetched
    /// into `<cache>/debian/patches-<featureset>_<source>_<version>/`; `None` for flavours
    /// without a featureset.
    pub fn featureset_series(&self) -> Result<Option<FeaturesetSeries>, TargetError> {
        let Some(fs) = self.featureset() else {
            return Ok(None);
        };
        let store = self.store();
        let lists = self.source_lists();
        let mut offered = Vec::new();
        for src in source_packages(self.abi_parts().line) {
            for v in store.tools().source_versions(&lists, src)? {
                offered.push((src.to_string(), v));
            }
        }
        let tried = candidates(&self.version, &offered);
        let line = self.abi_parts().major_minor;
        offered.retain(|(_, v)| version::upstream_of(v).starts_with(&format!("{line}.")));
        let mut skipped = Vec::new();
        for c in &tried {
            match self.unpack_series(fs, &lists, c) {
                Ok(patches) => {
                    return Ok(Some(FeaturesetSeries {
                        featureset: fs,
                        source: c.source.clone(),
                        version: c.version.clone(),
                        exact: c.exact,
                        patches,
                        skipped,
                    }))
                }
                Err(e) => skipped.push(format!("{} {}: {}", c.source, c.version, short(&e))),
            }
        }
        Err(TargetError::FeaturesetMissing {
            abi: self.abi.clone(),
            featureset: fs.to_string(),
            version: self.version.clone(),
            offered: offered.iter().map(|(s, v)| format!("{s} {v}")).collect(),
            tried: skipped,
        })
    }

    fn unpack_series(
        &self,
        fs: &str,
        lists: &SourceLists,
        c: &Candidate,
    ) -> Result<Vec<PathBuf>, TargetError> {
        let debian = self.store().debian_dir();
        let dest = debian.join(format!(
            "patches-{fs}_{}_{}",
            c.source,
            c.version.replace(':', "%3a")
        ));
        if !dest.is_dir() {
            std::fs::create_dir_all(&debian).map_err(|e| TargetError::io(&debian, e))?;
            let tmp = tempfile::Builder::new()
                .prefix(".tmp-patches-")
                .tempdir_in(&debian)
                .map_err(|e| TargetError::io(&debian, e))?;
            let tarball = self.store().tools().download_source_diff(
                lists,
                &c.source,
                &c.version,
                tmp.path(),
            )?;
            let member = format!("debian/patches-{fs}");
            let out = Command::new("tar")
                .arg("-xf")
                .arg(&tarball)
                .arg("-C")
                .arg(tmp.path())
                .arg(&member)
                .output()
                .map_err(|e| TargetError::io(&tarball, e))?;
            if !out.status.success() {
                return Err(TargetError::BadPackage {
                    path: tarball,
                    what: format!(
                        "has no {member}/: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                });
            }
            let series_dir = tmp.path().join(&member);
            if let Err(e) = std::fs::rename(&series_dir, &dest) {
                if !dest.is_dir() {
                    return Err(TargetError::io(&dest, e));
                }
            }
        }
        let series = dest.join("series");
        let text = std::fs::read_to_string(&series).map_err(|e| TargetError::io(&series, e))?;
        let patches: Vec<PathBuf> = parse_series(&text).iter().map(|p| dest.join(p)).collect();
        if let Some(missing) = patches.iter().find(|p| !p.is_file()) {
            return Err(TargetError::Missing {
                path: missing.clone(),
                what: format!("patch named by {}", series.display()),
            });
        }
        Ok(patches)
    }

    /// The `[<featureset>]` changelog entries between the version `series` was taken from and
    /// this kernel's, from the changelog in this kernel's `linux-source-*` package (empty when
    /// the series is the kernel's own).
    pub fn featureset_changes(
        &self,
        series: &FeaturesetSeries,
    ) -> Result<Vec<String>, TargetError> {
        if series.exact {
            return Ok(Vec::new());
        }
        let pkg = self.abi_parts().source_package();
        let dir = self.store().package(&pkg, &self.version)?;
        let path = dir.join(format!("usr/share/doc/{pkg}/changelog.Debian.gz"));
        let text = read_gz(&path)?;
        Ok(changelog_entries(
            &text,
            series.featureset,
            &series.version,
            &self.version,
        ))
    }

    /// The kernel's own `linux-headers-<base>-common-<featureset>` tree
    /// (`usr/src/linux-headers-6.1.0-57-common-rt`): the headers of the source Debian built the
    /// kernel from, featureset applied, to check a prepared tree against.
    pub fn featureset_headers(&self) -> Result<Option<PathBuf>, TargetError> {
        let Some(fs) = self.featureset() else {
            return Ok(None);
        };
        let name = format!("linux-headers-{}-common-{fs}", self.abi_parts().base);
        let dir = self.store().package(&name, &self.version)?;
        Ok(Some(Self::expect_dir(dir.join("usr/src").join(&name))?))
    }

    fn expect_dir(path: PathBuf) -> Result<PathBuf, TargetError> {
        if path.is_dir() {
            Ok(path)
        } else {
            Err(TargetError::Missing {
                path,
                what: "headers directory".into(),
            })
        }
    }
}

/// One line for a version that could not be had: apt's "Failed to fetch ... 404 Not Found"
/// becomes "not downloadable (404 Not Found)".
fn short(e: &TargetError) -> String {
    let text = e.to_string();
    let fetch = text
        .split("Failed to fetch ")
        .skip(1)
        .find(|rest| rest.contains("://"));
    match fetch.and_then(|r| r.lines().next()) {
        // `<url>  404  Not Found [IP: 203.0.113.80 80]`
        Some(rest) => {
            let status: Vec<&str> = rest
                .split_whitespace()
                .skip(1)
                .take_while(|w| !w.starts_with('['))
                .collect();
            format!("not downloadable ({})", status.join(" "))
        }
        None => text
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(160)
            .collect(),
    }
}

fn read_gz(path: &Path) -> Result<String, TargetError> {
    let f = std::fs::File::open(path).map_err(|e| TargetError::io(path, e))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(f)
        .read_to_string(&mut text)
        .map_err(|e| TargetError::io(path, e))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(s, v)| (s.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn exact_version_first_then_older_of_the_same_line_newest_first() {
        let o = offered(&[
            ("linux", "6.1.170-3"),
            ("linux", "6.1.176-1"),
            ("linux", "6.1.192-3"),
            ("linux", "6.1.8-1"),
        ]);
        let c = candidates("6.1.192-3", &o);
        let got: Vec<(&str, bool)> = c.iter().map(|c| (c.version.as_str(), c.exact)).collect();
        assert_eq!(
            got,
            vec![
                ("6.1.192-3", true),
                ("6.1.176-1", false),
                ("6.1.170-3", false),
                ("6.1.8-1", false)
            ]
        );
        // never a newer version
        let c = candidates("6.1.176-1", &o);
        assert!(c.iter().all(|c| c.version != "6.1.192-3"), "{c:?}");
    }

    #[test]
    fn a_deb12_rebuild_takes_the_series_of_the_version_it_rebuilds() {
        let o = offered(&[
            ("linux-6.12", "6.12.117-1~deb12u1"),
            ("linux", "6.12.117-1"),
            ("linux", "6.12.107-1"),
            ("linux", "6.12.95-1~bpo12+1"),
            ("linux-6.12", "6.12.107-1~deb12u1"),
            ("linux", "6.1.176-1"),
        ]);
        let c = candidates("6.12.117-1~deb12u1", &o);
        let got: Vec<(&str, &str, bool)> = c
            .iter()
            .map(|c| (c.source.as_str(), c.version.as_str(), c.exact))
            .collect();
        assert_eq!(
            got,
            vec![
                ("linux-6.12", "6.12.117-1~deb12u1", true),
                ("linux", "6.12.117-1", true),
                ("linux", "6.12.107-1", false),
                ("linux-6.12", "6.12.107-1~deb12u1", false),
                ("linux", "6.12.95-1~bpo12+1", false),
            ]
        );
    }

    #[test]
    fn a_failed_fetch_is_one_short_line() {
        let e = TargetError::Apt {
            package: "linux".into(),
            command: "apt-get source".into(),
            message: "E: Failed to fetch http://deb.debian.org/x/linux_6.1.192-3.debian.tar.xz  404  Not Found [IP: 203.0.113.80 80]\nE: Failed to fetch some archives. (exit status: 100)".into(),
        };
        assert_eq!(short(&e), "not downloadable (404 Not Found)");
    }

    #[test]
    fn series_file_names_in_order() {
        let text = "# rt\n0001-a.patch\n\n0002-b.patch -p1\n  # c\n0003-c.patch # note\n";
        assert_eq!(
            parse_series(text),
            vec!["0001-a.patch", "0002-b.patch", "0003-c.patch"]
        );
    }

    #[test]
    fn changelog_entries_between_two_versions() {
        let log = "linux (6.1.192-3) bookworm-security; urgency=high\n\n  * New upstream\n\n \
                   -- Someone <x@y>  Thu, 26 Nov 2026 08:14:00 +0100\n\n\
                   linux (6.1.177-1) bookworm-security; urgency=high\n\n  \
                   * [rt] Refresh \"ARM: enable irq\"\n  * [rt] Drop \"debugobjects\"\n\n\
                   linux (6.1.176-1) bookworm; urgency=medium\n\n  * [rt] Update to 6.1.176-rt64\n";
        assert_eq!(
            changelog_entries(log, "rt", "6.1.176-1", "6.1.192-3"),
            vec![
                "6.1.177-1: [rt] Refresh \"ARM: enable irq\"".to_string(),
                "6.1.177-1: [rt] Drop \"debugobjects\"".to_string()
            ]
        );
        assert!(changelog_entries(log, "rt", "6.1.192-3", "6.1.192-3").is_empty());
    }
}
