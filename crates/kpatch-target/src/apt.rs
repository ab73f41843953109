//! The seam to apt and dpkg: every external package-tool call goes through [`PackageTools`].

use crate::TargetError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The package operations kpatch-target needs. [`SystemApt`] runs the real tools; tests
/// substitute a fake.
pub trait PackageTools: Send + Sync {
    /// Output of `apt-cache policy <package>`.
    fn policy(&self, package: &str) -> Result<String, TargetError>;
    /// Output of `apt-cache show <package>=<version>`.
    fn show(&self, package: &str, version: &str) -> Result<String, TargetError>;
    /// `apt-get download <package>=<version>` with `dir` as working directory; returns the .deb.
    fn download(&self, package: &str, version: &str, dir: &Path) -> Result<PathBuf, TargetError>;
    /// `dpkg-deb -x <deb> <dest>`.
    fn extract(&self, deb: &Path, dest: &Path) -> Result<(), TargetError>;
    /// Output of one `apt-cache policy <package>...` for several packages (apt takes about a
    /// second per call, whatever the count): one `<package>:` block each, in order.
    fn policies(&self, packages: &[String]) -> Result<String, TargetError> {
        let mut text = String::new();
        for p in packages {
            text.push_str(&self.policy(p)?);
        }
        Ok(text)
    }
    /// The names of every package apt knows that start with `prefix` (`apt-cache pkgnames`).
    fn names(&self, prefix: &str) -> Result<Vec<String>, TargetError>;
    /// Every version of the source package `source` that the deb-src lists offer, as
    /// `apt-cache showsrc` prints them. The lists are apt's own, kept in a private configuration
    /// under `lists` (see [`SourceLists`]); the system's sources and lists are never touched.
    fn source_versions(
        &self,
        lists: &SourceLists,
        source: &str,
    ) -> Result<Vec<String>, TargetError> {
        let _ = (lists, source);
        Ok(Vec::new())
    }
    /// `apt-get source --download-only --diff-only <source>=<version>` in `dir`: the Debian
    /// packaging tarball (`<source>_<version>.debian.tar.xz`) alone, not the upstream source.
    fn download_source_diff(
        &self,
        lists: &SourceLists,
        source: &str,
        version: &str,
        dir: &Path,
    ) -> Result<PathBuf, TargetError> {
        let _ = (lists, dir);
        Err(TargetError::Apt {
            package: source.to_string(),
            command: format!("apt-get source --download-only --diff-only {source}={version}"),
            message: "no deb-src lists".into(),
        })
    }
}

/// A private apt configuration for source packages: the system's `deb` entries as `deb-src`
/// (plus `extra_releases` on the same archive), with their own lists under `dir`. The lists
/// are fetched when missing and refreshed when older than a day.
#[derive(Debug, Clone)]
pub struct SourceLists {
    pub dir: PathBuf,
    /// Debian releases added beside the system's own (`trixie`, whose kernel is the 6.12 line
    /// that Debian 12 rebuilds in its security suite).
    pub extra_releases: Vec<String>,
}

impl SourceLists {
    fn options(&self) -> Vec<String> {
        let d = |p: &str| self.dir.join(p).display().to_string();
        vec![
            format!("-oDir::Etc::SourceList={}", d("sources.list")),
            format!("-oDir::Etc::SourceParts={}", d("sources.list.d")),
            format!("-oDir::State::Lists={}", d("lists")),
            format!("-oDir::Cache={}", d("cache")),
            // the cache is the caller's (root's) own directory: no `_apt` sandbox user
            "-oAPT::Sandbox::User=root".into(),
            "-q".into(),
        ]
    }

    /// The `deb-src` lines for the `deb` index targets apt reports
    /// (`apt-get indextargets`: `<uri> <release> <component>` per line).
    pub fn sources_list(&self, index_targets: &str) -> String {
        let mut lines: Vec<String> = Vec::new();
        let mut push = |l: String| {
            if !lines.contains(&l) {
                lines.push(l);
            }
        };
        for t in index_targets.lines() {
            let w: Vec<&str> = t.split_whitespace().collect();
            let [uri, release, component] = w[..] else {
                continue;
            };
            push(format!("deb-src {uri} {release} {component}"));
            // a release's own archive also carries the extra releases, and its security
            // suite theirs (Debian 13's `linux 6.12.118-1`, which Debian 12's security suite
            // rebuilds as `linux-6.12 6.12.118-1~deb12u1`, is only in trixie-security)
            let suffix = match release.split_once('-') {
                None => Some(""),
                Some((_, "security")) => Some("-security"),
                Some(_) => None,
            };
            if let Some(suffix) = suffix {
                for extra in &self.extra_releases {
                    push(format!("deb-src {uri} {extra}{suffix} {component}"));
                }
            }
        }
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }
}

/// The real apt-cache, apt-get and dpkg-deb.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemApt;

fn run(package: &str, mut cmd: Command) -> Result<String, TargetError> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| TargetError::Apt {
        package: package.to_string(),
        command: shown.clone(),
        message: format!("cannot run: {e}"),
    })?;
    if !out.status.success() {
        let mut message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if message.is_empty() {
            message = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        return Err(TargetError::Apt {
            package: package.to_string(),
            command: shown,
            message: format!("{} ({})", message, out.status),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl SystemApt {
    /// Writes the private deb-src configuration and fetches its lists when they are missing,
    /// older than a day, or made from another sources list.
    fn ensure_source_lists(&self, lists: &SourceLists) -> Result<(), TargetError> {
        let what = "deb-src lists";
        let mut c = Command::new("apt-get");
        c.args([
            "indextargets",
            "--format",
            "$(REPO_URI) $(RELEASE) $(COMPONENT) $(TARGET_OF)",
        ]);
        let targets: String = run(what, c)?
            .lines()
            .filter(|l| l.ends_with(" deb"))
            .map(|l| l.trim_end_matches(" deb").to_string() + "\n")
            .collect();
        let text = lists.sources_list(&targets);
        for d in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
            let p = lists.dir.join(d);
            std::fs::create_dir_all(&p).map_err(|e| TargetError::io(&p, e))?;
        }
        let list = lists.dir.join("sources.list");
        let stamp = lists.dir.join("lists/.kpatch-rs-updated");
        let same = std::fs::read_to_string(&list).is_ok_and(|t| t == text);
        let fresh = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() < 24 * 3600);
        if same && fresh {
            return Ok(());
        }
        kpatch_common::fs::write_atomic(&list, text.as_bytes())
            .map_err(|e| TargetError::io(&list, e))?;
        let mut c = Command::new("apt-get");
        c.args(lists.options()).arg("update");
        run(what, c)?;
        std::fs::write(&stamp, b"").map_err(|e| TargetError::io(&stamp, e))
    }
}

/// The `Version:` of every `apt-cache showsrc` stanza whose `Package:` is `source`.
pub fn versions_from_showsrc(text: &str, source: &str) -> Vec<String> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        if let (Some(p), Some(v)) = (field("Package:"), field("Version:")) {
            if p == source && !out.iter().any(|o| o == v) {
                out.push(v.to_string());
            }
        }
    }
    out
}

impl PackageTools for SystemApt {
    fn source_versions(
        &self,
        lists: &SourceLists,
        source: &str,
    ) -> Result<Vec<String>, TargetError> {
        self.ensure_source_lists(lists)?;
        let mut c = Command::new("apt-cache");
        c.args(lists.options()).arg("showsrc").arg(source);
        match run(source, c) {
            Ok(text) => Ok(versions_from_showsrc(&text, source)),
            // "Unable to find a source package"
            Err(_) => Ok(Vec::new()),
        }
    }

    fn download_source_diff(
        &self,
        lists: &SourceLists,
        source: &str,
        version: &str,
        dir: &Path,
    ) -> Result<PathBuf, TargetError> {
        self.ensure_source_lists(lists)?;
        let mut c = Command::new("apt-get");
        c.args(lists.options())
            .args(["source", "--download-only", "--diff-only"])
            .arg(format!("{source}={version}"))
            .current_dir(dir);
        run(source, c)?;
        let name = format!(
            "{source}_{}.debian.tar.",
            version.split_once(':').map_or(version, |(_, v)| v)
        );
        let entries = std::fs::read_dir(dir).map_err(|e| TargetError::io(dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| TargetError::io(dir, e))?.path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&name))
            {
                return Ok(path);
            }
        }
        Err(TargetError::Apt {
            package: source.to_string(),
            command: format!("apt-get source --diff-only {source}={version}"),
            message: format!("no {name}* appeared in {}", dir.display()),
        })
    }

    fn policy(&self, package: &str) -> Result<String, TargetError> {
        let mut c = Command::new("apt-cache");
        c.arg("policy").arg(package);
        run(package, c)
    }

    fn show(&self, package: &str, version: &str) -> Result<String, TargetError> {
        let mut c = Command::new("apt-cache");
        c.arg("show").arg(format!("{package}={version}"));
        run(package, c)
    }

    fn download(&self, package: &str, version: &str, dir: &Path) -> Result<PathBuf, TargetError> {
        let mut c = Command::new("apt-get");
        c.args(["-q", "download"])
            .arg(format!("{package}={version}"))
            .current_dir(dir);
        run(package, c)?;
        let entries = std::fs::read_dir(dir).map_err(|e| TargetError::io(dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| TargetError::io(dir, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(&format!("{package}_")) && name.ends_with(".deb") {
                return Ok(path);
            }
        }
        Err(TargetError::Apt {
            package: package.to_string(),
            command: format!("apt-get download {package}={version}"),
            message: format!("no {package}_*.deb appeared in {}", dir.display()),
        })
    }

    fn extract(&self, deb: &Path, dest: &Path) -> Result<(), TargetError> {
        let package = deb
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('_').next())
            .unwrap_or("?")
            .to_string();
        let mut c = Command::new("dpkg-deb");
        c.arg("-x").arg(deb).arg(dest);
        run(&package, c).map(drop)
    }

    fn policies(&self, packages: &[String]) -> Result<String, TargetError> {
        if packages.is_empty() {
            return Ok(String::new());
        }
        let mut c = Command::new("apt-cache");
        c.arg("policy").args(packages);
        run(&packages[0], c)
    }

    fn names(&self, prefix: &str) -> Result<Vec<String>, TargetError> {
        let mut c = Command::new("apt-cache");
        c.arg("pkgnames").arg(prefix);
        Ok(run(prefix, c)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb_src_lines_mirror_the_system_sources_and_add_extra_releases() {
        let lists = SourceLists {
            dir: PathBuf::from("/x"),
            extra_releases: vec!["trixie".into()],
        };
        let targets = "http://deb.debian.org/debian-security/ bookworm-security main\n\
                       http://deb.debian.org/debian/ bookworm main\n\
                       http://deb.debian.org/debian/ bookworm main\n\
                       http://deb.debian.org/debian/ bookworm-updates main\n";
        assert_eq!(
            lists.sources_list(targets),
            "deb-src http://deb.debian.org/debian-security/ bookworm-security main\n\
             deb-src http://deb.debian.org/debian-security/ trixie-security main\n\
             deb-src http://deb.debian.org/debian/ bookworm main\n\
             deb-src http://deb.debian.org/debian/ trixie main\n\
             deb-src http://deb.debian.org/debian/ bookworm-updates main\n"
        );
    }

    #[test]
    fn showsrc_versions_of_the_named_source_only() {
        let text =
            "Package: linux\nBinary: linux-source-6.1, linux-doc-6.1\nVersion: 6.1.176-1\n\n\
                    Package: linux-signed-amd64\nVersion: 6.1.176+1\n\n\
                    Package: linux\nVersion: 6.1.170-3\n\nPackage: linux\nVersion: 6.1.176-1\n";
        assert_eq!(
            versions_from_showsrc(text, "linux"),
            vec!["6.1.176-1".to_string(), "6.1.170-3".to_string()]
        );
    }
}
