//! A Debian kernel build, identified by its ABI and package version.

use crate::store::Store;
use crate::{bzimage, headers, version, TargetError};
use std::path::PathBuf;

/// One Debian kernel: `abi` like `6.1.0-50-amd64`, `version` the Debian package version of
/// its packages like `6.1.176-1`. All paths returned point into the kpatch-rs cache and are
/// fetched on first use.
#[derive(Debug, Clone)]
pub struct DebianKernel {
    pub abi: String,
    pub version: String,
    store: Store,
}

fn not_abi(abi: &str) -> TargetError {
    TargetError::NotDebianAbi {
        abi: abi.to_string(),
    }
}

impl DebianKernel {
    /// A kernel with a known ABI and version, fetched through `store`.
    pub fn new(abi: &str, version: &str, store: Store) -> Result<Self, TargetError> {
        version::parse_abi(abi).ok_or_else(|| not_abi(abi))?;
        Ok(DebianKernel {
            abi: abi.to_string(),
            version: version.to_string(),
            store,
        })
    }

    /// The running kernel if it is a Debian one (any line, any flavour), else the newest
    /// `linux-image-<abi>` that `linux-image-amd64` depends on in apt's candidate version.
    pub fn default_target() -> Result<Self, TargetError> {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let proc_version = std::fs::read_to_string("/proc/version").unwrap_or_default();
        Self::default_target_with(Store::system(), &release, &proc_version)
    }

    /// [`default_target`](Self::default_target) with the running kernel's release string and
    /// `/proc/version` text given.
    pub fn default_target_with(
        store: Store,
        release: &str,
        proc_version: &str,
    ) -> Result<Self, TargetError> {
        let release = release.trim();
        if version::is_debian_abi(release) {
            if let Some(v) = version::debian_version_from_proc_version(proc_version) {
                return Self::new(release, &v, store);
            }
            return Self::named_with(release, store);
        }
        let meta = "linux-image-amd64";
        let v = store
            .candidate(meta)?
            .ok_or_else(|| TargetError::NoCandidate {
                package: meta.into(),
            })?;
        let depends =
            version::depends_from_show(&store.tools().show(meta, &v)?).unwrap_or_default();
        let abi = version::image_abi_from_depends(&depends).ok_or_else(|| {
            TargetError::NoImageDependency {
                package: format!("{meta}={v}"),
                depends: depends.clone(),
            }
        })?;
        Self::named_with(&abi, store)
    }

    /// The kernel with this ABI, at the version apt offers for its image package.
    pub fn named(abi: &str) -> Result<Self, TargetError> {
        Self::named_with(abi, Store::system())
    }

    pub fn named_with(abi: &str, store: Store) -> Result<Self, TargetError> {
        version::parse_abi(abi).ok_or_else(|| not_abi(abi))?;
        for pkg in [
            format!("linux-image-{abi}-unsigned"),
            format!("linux-image-{abi}"),
        ] {
            if let Some(v) = store.candidate(&pkg)? {
                return Self::new(abi, &v, store);
            }
        }
        Err(TargetError::NoCandidate {
            package: format!("linux-image-{abi}-unsigned"),
        })
    }

    /// The store (cache root and package tools) this kernel is fetched through.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn abi_parts(&self) -> version::Abi {
        // checked in `new`
        version::parse_abi(&self.abi).expect("DebianKernel holds a parsed ABI")
    }

    /// The unpacked image package (`linux-image-<abi>-unsigned`, else `linux-image-<abi>`).
    pub fn image_dir(&self) -> Result<PathBuf, TargetError> {
        let unsigned = format!("linux-image-{}-unsigned", self.abi);
        match self.store.package(&unsigned, &self.version) {
            Ok(p) => Ok(p),
            Err(first) => {
                let signed = format!("linux-image-{}", self.abi);
                self.store
                    .package(&signed, &self.version)
                    .map_err(|_| first)
            }
        }
    }

    fn expect(path: PathBuf, what: &str) -> Result<PathBuf, TargetError> {
        if path.exists() {
            Ok(path)
        } else {
            Err(TargetError::Missing {
                path,
                what: what.into(),
            })
        }
    }

    /// `boot/vmlinuz-<abi>` (the bzImage).
    pub fn vmlinuz(&self) -> Result<PathBuf, TargetError> {
        Self::expect(
            self.image_dir()?.join(format!("boot/vmlinuz-{}", self.abi)),
            "vmlinuz",
        )
    }

    /// `boot/config-<abi>`.
    pub fn config(&self) -> Result<PathBuf, TargetError> {
        Self::expect(
            self.image_dir()?.join(format!("boot/config-{}", self.abi)),
            "kernel config",
        )
    }

    /// `boot/System.map-<abi>`, when it is a real one. Debian's image packages ship a
    /// one-line stub ("The real System.map is in the linux-image-<version>-dbg package"; that
    /// package is ~850 MB) and that gives [`TargetError::StubSystemMap`]: take the symbols
    /// from the guest's `/proc/kallsyms` instead (kpatch-guest can dump it).
    pub fn system_map(&self) -> Result<PathBuf, TargetError> {
        let path = Self::expect(
            self.image_dir()?
                .join(format!("boot/System.map-{}", self.abi)),
            "System.map",
        )?;
        let head = std::fs::read(&path).map_err(|e| TargetError::io(&path, e))?;
        if head.len() < 4096 && String::from_utf8_lossy(&head).contains("real System.map is in") {
            return Err(TargetError::StubSystemMap { path });
        }
        Ok(path)
    }

    /// `lib/modules/<abi>`: Debian 6.1 modules are plain `.ko` files (CONFIG_MODULE_COMPRESS_NONE),
    /// 6.12's are `.ko.xz`.
    /// Its `build` and `source` symlinks are relative and dangle (headers live elsewhere).
    pub fn modules_dir(&self) -> Result<PathBuf, TargetError> {
        Self::expect(
            self.image_dir()?.join(format!("lib/modules/{}", self.abi)),
            "modules directory",
        )
    }

    /// The ELF vmlinux decompressed out of the vmlinuz, cached at
    /// `<cache>/vmlinux/<abi>_<version>/vmlinux`. Sections, no symbol table.
    pub fn vmlinux(&self) -> Result<PathBuf, TargetError> {
        let dir = self
            .store
            .root()
            .join("vmlinux")
            .join(format!("{}_{}", self.abi, self.version));
        let out = dir.join("vmlinux");
        if out.is_file() {
            return Ok(out);
        }
        let vmlinuz = self.vmlinuz()?;
        let data = std::fs::read(&vmlinuz).map_err(|e| TargetError::io(&vmlinuz, e))?;
        let elf = bzimage::extract_vmlinux(&vmlinuz, &data)?;
        std::fs::create_dir_all(&dir).map_err(|e| TargetError::io(&dir, e))?;
        kpatch_common::fs::write_atomic(&out, &elf).map_err(|e| TargetError::io(&out, e))?;
        Ok(out)
    }

    /// The unpacked `linux-headers-<abi>` package alone: `.config`, `Module.symvers` and the
    /// generated headers of this ABI. Debian keeps this package for every ABI it keeps the
    /// image of, so a build needs nothing more from it ([`Self::symvers`]).
    pub fn headers_dir(&self) -> Result<PathBuf, TargetError> {
        self.store
            .package(&format!("linux-headers-{}", self.abi), &self.version)
    }

    /// One root holding `linux-headers-<abi>`, its `-common` headers and the `linux-kbuild-*`
    /// host tools, fixed up so `make -C <kbuild dir> M=<dir> modules` works (see
    /// [`crate::headers`]): the headers as Debian installs them. The package names come from
    /// the headers package's own `Depends`.
    ///
    /// The 6.1 line's `linux-kbuild-6.1` is unversioned and the archive keeps only its newest
    /// version, so this fails for older 6.1 ABIs. `kpatch-rs build` never needs it: it builds
    /// modules in the prepared source tree, which has the same host tools.
    pub fn kbuild_headers_dir(&self) -> Result<PathBuf, TargetError> {
        let main = format!("linux-headers-{}", self.abi);
        let v = self.version.as_str();
        let depends =
            version::depends_from_show(&self.store.tools().show(&main, v)?).unwrap_or_default();
        let named = |prefix: &str| {
            depends
                .split([',', '|'])
                .filter_map(|d| d.split_whitespace().next())
                .find(|n| n.starts_with(prefix))
                .map(str::to_string)
        };
        let a = self.abi_parts();
        let common = named(&format!("linux-headers-{}-common", a.base))
            .unwrap_or_else(|| format!("linux-headers-{}-common", a.base));
        let kbuild =
            named("linux-kbuild-").unwrap_or_else(|| format!("linux-kbuild-{}", a.major_minor));
        let root = self.store.unpacked(
            &format!("kbuild-{}_{v}", self.abi),
            &[(&main, v), (&common, v), (&kbuild, v)],
            headers::fix_makefiles,
        )?;
        Self::expect(
            root.join("usr/src").join(&main).join("Makefile"),
            "headers Makefile",
        )?;
        Ok(root)
    }

    /// `<kbuild headers root>/usr/src/linux-headers-<abi>`: pass it to `make -C` with
    /// `M=<dir>` (see [`Self::kbuild_headers_dir`] for when it can be had).
    pub fn kbuild_dir(&self) -> Result<PathBuf, TargetError> {
        Ok(self
            .kbuild_headers_dir()?
            .join("usr/src")
            .join(format!("linux-headers-{}", self.abi)))
    }

    /// `Module.symvers` of this kernel (from the headers package).
    pub fn symvers(&self) -> Result<PathBuf, TargetError> {
        let dir = self
            .headers_dir()?
            .join("usr/src")
            .join(format!("linux-headers-{}", self.abi));
        Self::expect(dir.join("Module.symvers"), "Module.symvers")
    }

    /// The `linux-source-<major.minor>` tarball (`usr/src/linux-source-6.1.tar.xz`) inside its
    /// unpacked package, at this kernel's package version. Not unpacked. When the archive no
    /// longer has the source of that version, the error says so and names the versions it has.
    pub fn source_tarball(&self) -> Result<PathBuf, TargetError> {
        let a = self.abi_parts();
        let pkg = a.source_package();
        if !self.store.versions(&pkg)?.contains(&self.version) {
            return Err(self.source_missing(&pkg)?);
        }
        let dir = self.store.package(&pkg, &self.version)?;
        Self::expect(dir.join(format!("usr/src/{pkg}.tar.xz")), "source tarball")
    }

    /// Whether the archive still has the source of this kernel's exact version.
    pub fn source_available(&self) -> Result<bool, TargetError> {
        Ok(self
            .store
            .versions(&self.abi_parts().source_package())?
            .contains(&self.version))
    }

    fn source_missing(&self, pkg: &str) -> Result<TargetError, TargetError> {
        Ok(TargetError::SourceMissing {
            abi: self.abi.clone(),
            package: pkg.to_string(),
            version: self.version.clone(),
            available: self.store.versions(pkg)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PackageTools;
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    /// apt with a fixed catalogue: package -> candidate, and `linux-image-amd64`'s Depends.
    struct Catalogue {
        candidates: Vec<(&'static str, &'static str)>,
        depends: &'static str,
        shown: Mutex<Vec<String>>,
    }

    impl PackageTools for Catalogue {
        fn policy(&self, package: &str) -> Result<String, TargetError> {
            let versions: Vec<&str> = self
                .candidates
                .iter()
                .filter(|(p, _)| *p == package)
                .map(|(_, v)| *v)
                .collect();
            let c = versions.first().copied().unwrap_or("(none)");
            let mut text =
                format!("{package}:\n  Installed: (none)\n  Candidate: {c}\n  Version table:\n");
            for v in versions {
                text.push_str(&format!("     {v} 500\n        500 http://deb.debian.org/debian bookworm/main amd64 Packages\n"));
            }
            Ok(text)
        }
        fn show(&self, package: &str, version: &str) -> Result<String, TargetError> {
            self.shown
                .lock()
                .unwrap()
                .push(format!("{package}={version}"));
            Ok(format!(
                "Package: {package}\nVersion: {version}\nDepends: {}\n",
                self.depends
            ))
        }
        fn download(&self, p: &str, _: &str, _: &Path) -> Result<PathBuf, TargetError> {
            Err(TargetError::NoCandidate { package: p.into() })
        }
        fn extract(&self, _: &Path, _: &Path) -> Result<(), TargetError> {
            unreachable!("no downloads in these tests")
        }
        fn names(&self, _: &str) -> Result<Vec<String>, TargetError> {
            Ok(vec![])
        }
    }

    fn store(c: Catalogue) -> (Store, Arc<Catalogue>) {
        let c = Arc::new(c);
        (Store::new("/nonexistent-cache", c.clone()), c)
    }

    fn catalogue() -> Catalogue {
        Catalogue {
            candidates: vec![
                ("linux-image-amd64", "6.1.192-2"),
                ("linux-image-6.1.0-56-amd64-unsigned", "6.1.192-2"),
                ("linux-image-6.1.0-50-amd64", "6.1.176-1"),
                ("linux-image-6.1.0-53-cloud-amd64", "6.1.187-1"),
                ("linux-image-6.12.117+deb12-rt-amd64", "6.12.117-1~deb12u1"),
                ("linux-source-6.1", "6.1.192-2"),
                ("linux-source-6.1", "6.1.176-1"),
            ],
            depends: "linux-image-6.1.0-56-amd64 (= 6.1.192-2)",
            shown: Mutex::new(vec![]),
        }
    }

    #[test]
    fn non_debian_host_resolves_metapackage() {
        let (s, c) = store(catalogue());
        let k = DebianKernel::default_target_with(s, "6.18.44-fc-v782\n", "Linux version 6.18.44")
            .unwrap();
        assert_eq!(
            (k.abi.as_str(), k.version.as_str()),
            ("6.1.0-56-amd64", "6.1.192-2")
        );
        assert_eq!(
            *c.shown.lock().unwrap(),
            vec!["linux-image-amd64=6.1.192-2".to_string()]
        );
    }

    #[test]
    fn debian_host_uses_running_kernel_and_its_version() {
        let (s, c) = store(catalogue());
        let pv = "Linux version 6.1.0-50-amd64 (gcc-12 (Debian 12.2.0-14) 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian 6.1.170-3 (2025-01-01)";
        let k = DebianKernel::default_target_with(s, "6.1.0-50-amd64", pv).unwrap();
        assert_eq!(
            (k.abi.as_str(), k.version.as_str()),
            ("6.1.0-50-amd64", "6.1.170-3")
        );
        assert!(c.shown.lock().unwrap().is_empty());
    }

    #[test]
    fn named_falls_back_to_signed_image_and_rejects_unknown() {
        let (s, _) = store(catalogue());
        assert_eq!(
            DebianKernel::named_with("6.1.0-50-amd64", s.clone())
                .unwrap()
                .version,
            "6.1.176-1"
        );
        let err = DebianKernel::named_with("6.1.0-99-amd64", s.clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains("linux-image-6.1.0-99-amd64"), "{err}");
        assert!(matches!(
            DebianKernel::named_with("6.18.44-fc", s),
            Err(TargetError::NotDebianAbi { .. })
        ));
    }

    #[test]
    fn any_line_and_flavour_is_a_target() {
        let (s, _) = store(catalogue());
        let k = DebianKernel::named_with("6.1.0-53-cloud-amd64", s.clone()).unwrap();
        assert_eq!(k.version, "6.1.187-1");
        let k = DebianKernel::named_with("6.12.117+deb12-rt-amd64", s.clone()).unwrap();
        assert_eq!(k.version, "6.12.117-1~deb12u1");
        let pv = "Linux version 6.12.117+deb12-cloud-amd64 (debian-kernel@lists.debian.org) (x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1~deb12u1 (2026-11-20)";
        let k = DebianKernel::default_target_with(s, "6.12.117+deb12-cloud-amd64\n", pv).unwrap();
        assert_eq!(
            (k.abi.as_str(), k.version.as_str()),
            ("6.12.117+deb12-cloud-amd64", "6.12.117-1~deb12u1")
        );
    }

    #[test]
    fn missing_source_names_the_versions_the_archive_has() {
        let (s, _) = store(catalogue());
        let k = DebianKernel::named_with("6.1.0-53-cloud-amd64", s.clone()).unwrap();
        assert!(!k.source_available().unwrap());
        let err = k.source_tarball().unwrap_err();
        assert!(
            matches!(&err, TargetError::SourceMissing { version, available, .. }
            if version == "6.1.187-1" && available == &["6.1.192-2".to_string(), "6.1.176-1".to_string()]),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("linux-source-6.1 6.1.187-1") && msg.contains("6.1.192-2, 6.1.176-1"),
            "{msg}"
        );
        let k = DebianKernel::named_with("6.12.117+deb12-rt-amd64", s).unwrap();
        let msg = k.source_tarball().unwrap_err().to_string();
        assert!(
            msg.contains("linux-source-6.12") && msg.contains("no version of it"),
            "{msg}"
        );
    }

    #[test]
    fn metapackage_without_image_dependency_is_an_error() {
        let mut c = catalogue();
        c.depends = "kmod";
        let (s, _) = store(c);
        let err = DebianKernel::default_target_with(s, "6.18.44", "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("linux-image-amd64=6.1.192-2"), "{err}");
    }
}
