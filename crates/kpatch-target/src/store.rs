//! The package store under `<cache>/debian/`: download, unpack atomically, reuse.

use crate::apt::{PackageTools, SystemApt};
use crate::{cache_dir, version, TargetError};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Where packages are unpacked, and the tools used to fetch them.
#[derive(Clone)]
pub struct Store {
    root: PathBuf,
    tools: Arc<dyn PackageTools>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}

impl Store {
    /// The user's cache dir ([`cache_dir`]) with the system's apt and dpkg.
    pub fn system() -> Self {
        Store::new(cache_dir(), Arc::new(SystemApt))
    }

    pub fn new(root: impl Into<PathBuf>, tools: Arc<dyn PackageTools>) -> Self {
        Store {
            root: root.into(),
            tools,
        }
    }

    /// The cache root this store writes under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn tools(&self) -> &dyn PackageTools {
        &*self.tools
    }

    /// `<cache>/debian`
    pub fn debian_dir(&self) -> PathBuf {
        self.root.join("debian")
    }

    /// The candidate version apt offers for `package`, if any.
    pub fn candidate(&self, package: &str) -> Result<Option<String>, TargetError> {
        Ok(version::candidate_from_policy(&self.tools.policy(package)?))
    }

    /// Every version apt knows of `package`, newest first (empty when it knows none).
    pub fn versions(&self, package: &str) -> Result<Vec<String>, TargetError> {
        Ok(version::versions_from_policy(&self.tools.policy(package)?))
    }

    /// One package unpacked into `<cache>/debian/<package>_<version>/` (reused when present).
    pub fn package(&self, package: &str, version: &str) -> Result<PathBuf, TargetError> {
        self.unpacked(
            &format!("{package}_{version}"),
            &[(package, version)],
            |_| Ok(()),
        )
    }

    /// Several packages unpacked into ONE root `<cache>/debian/<name>/`, then `fixup` run on
    /// it, then the root renamed into place. The rename is atomic, so an interrupted fetch
    /// leaves only a `.tmp-*` directory, never a half-unpacked root. Absolute symlinks are
    /// rewritten to relative ones so that they resolve inside the root.
    pub fn unpacked(
        &self,
        name: &str,
        packages: &[(&str, &str)],
        fixup: impl FnOnce(&Path) -> Result<(), TargetError>,
    ) -> Result<PathBuf, TargetError> {
        let debian = self.debian_dir();
        let dest = debian.join(dir_name(name));
        if dest.is_dir() {
            return Ok(dest);
        }
        std::fs::create_dir_all(&debian).map_err(|e| TargetError::io(&debian, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".tmp-{}-", dir_name(name)))
            .tempdir_in(&debian)
            .map_err(|e| TargetError::io(&debian, e))?;
        let dl = tmp.path().join("download");
        let root = tmp.path().join("root");
        for d in [&dl, &root] {
            std::fs::create_dir(d).map_err(|e| TargetError::io(d, e))?;
        }
        for (package, version) in packages {
            let deb = self.tools.download(package, version, &dl)?;
            self.tools.extract(&deb, &root)?;
            std::fs::remove_file(&deb).map_err(|e| TargetError::io(&deb, e))?;
        }
        relink_absolute_symlinks(&root)?;
        fixup(&root)?;
        match std::fs::rename(&root, &dest) {
            Ok(()) => Ok(dest),
            // Someone else finished the same fetch first: theirs is as good as ours.
            Err(_) if dest.is_dir() => Ok(dest),
            Err(e) => Err(TargetError::io(&dest, e)),
        }
    }
}

/// A cache directory name for `name`: apt's own escaping of the epoch colon, which kbuild
/// refuses in paths.
fn dir_name(name: &str) -> String {
    name.replace(':', "%3a")
}

/// Rewrites every absolute symlink under `root` to the relative path that reaches the same
/// absolute path taken inside `root` (`usr/src/x/build -> /usr/src/y` becomes `../y`).
pub fn relink_absolute_symlinks(root: &Path) -> Result<(), TargetError> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| TargetError::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| TargetError::io(&dir, e))?;
            let path = entry.path();
            let ft = entry.file_type().map_err(|e| TargetError::io(&path, e))?;
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&path).map_err(|e| TargetError::io(&path, e))?;
                if target.is_absolute() {
                    let rel_parent = dir.strip_prefix(root).unwrap_or(Path::new(""));
                    let new = relative_target(rel_parent, &target);
                    std::fs::remove_file(&path).map_err(|e| TargetError::io(&path, e))?;
                    std::os::unix::fs::symlink(&new, &path)
                        .map_err(|e| TargetError::io(&path, e))?;
                }
            }
        }
    }
    Ok(())
}

/// The relative path from directory `from` (relative to a root) to absolute `target` taken
/// inside the same root.
pub fn relative_target(from: &Path, target: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in from.components() {
        if matches!(c, Component::Normal(_)) {
            out.push("..");
        }
    }
    for c in target.components() {
        if let Component::Normal(n) = c {
            out.push(n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn relative_target_climbs_to_root() {
        assert_eq!(
            relative_target(
                Path::new("lib/modules/6.1.0-56-amd64"),
                Path::new("/usr/src/linux-headers-6.1.0-56-amd64")
            ),
            PathBuf::from("../../../usr/src/linux-headers-6.1.0-56-amd64")
        );
        assert_eq!(
            relative_target(Path::new(""), Path::new("/a/b")),
            PathBuf::from("a/b")
        );
    }

    /// Fake apt: "downloads" write a marker, "extract" creates files and an absolute symlink.
    struct Fake {
        calls: Mutex<Vec<String>>,
        fail: Option<&'static str>,
    }

    impl PackageTools for Fake {
        fn policy(&self, package: &str) -> Result<String, TargetError> {
            Ok(format!("{package}:\n  Candidate: 1.0-1\n"))
        }
        fn show(&self, _: &str, _: &str) -> Result<String, TargetError> {
            Ok(String::new())
        }
        fn download(
            &self,
            package: &str,
            version: &str,
            dir: &Path,
        ) -> Result<PathBuf, TargetError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("download {package}={version}"));
            if self.fail == Some(package) {
                return Err(TargetError::Apt {
                    package: package.into(),
                    command: "apt-get download".into(),
                    message: "E: Version '9' for 'x' was not found".into(),
                });
            }
            let deb = dir.join(format!("{package}_{version}_amd64.deb"));
            std::fs::write(&deb, package).unwrap();
            Ok(deb)
        }
        fn extract(&self, deb: &Path, dest: &Path) -> Result<(), TargetError> {
            let pkg = std::fs::read_to_string(deb).unwrap();
            let d = dest.join("usr/src").join(&pkg);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("file"), &pkg).unwrap();
            std::os::unix::fs::symlink("/usr/src/other", d.join("abs")).unwrap();
            Ok(())
        }
        fn names(&self, _: &str) -> Result<Vec<String>, TargetError> {
            Ok(vec![])
        }
    }

    fn store(fail: Option<&'static str>) -> (tempfile::TempDir, Store, Arc<Fake>) {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(Fake {
            calls: Mutex::new(vec![]),
            fail,
        });
        let s = Store::new(dir.path(), fake.clone());
        (dir, s, fake)
    }

    #[test]
    fn unpacks_once_and_reuses_with_relative_links() {
        let (_d, s, fake) = store(None);
        let p = s.package("pkg-a", "1:2.0-1").unwrap();
        assert!(p.ends_with("debian/pkg-a_1%3a2.0-1"));
        assert_eq!(
            std::fs::read_to_string(p.join("usr/src/pkg-a/file")).unwrap(),
            "pkg-a"
        );
        assert_eq!(
            std::fs::read_link(p.join("usr/src/pkg-a/abs")).unwrap(),
            PathBuf::from("../../../usr/src/other")
        );
        let again = s.package("pkg-a", "1:2.0-1").unwrap();
        assert_eq!(p, again);
        assert_eq!(
            fake.calls.lock().unwrap().len(),
            1,
            "second call must reuse the cache"
        );
        // no leftovers besides the final directory
        let names: Vec<_> = std::fs::read_dir(s.debian_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn failed_fetch_leaves_no_root_and_names_package() {
        let (_d, s, _) = store(Some("pkg-b"));
        let err = s
            .unpacked("combo_1", &[("pkg-a", "1"), ("pkg-b", "9")], |_| Ok(()))
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("pkg-b") && msg.contains("was not found"),
            "{msg}"
        );
        assert!(!s.debian_dir().join("combo_1").exists());
        assert_eq!(
            std::fs::read_dir(s.debian_dir()).unwrap().count(),
            0,
            "temp dir must be removed"
        );
    }

    #[test]
    fn candidate_parses_policy() {
        let (_d, s, _) = store(None);
        assert_eq!(s.candidate("x").unwrap().as_deref(), Some("1.0-1"));
    }
}
