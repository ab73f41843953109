//! A binary package: its control file, its files, its maintainer scripts, written into a
//! staging tree and turned into a `.deb` by `dpkg-deb --build --root-owner-group` (every file
//! owned by root). The `.deb` appears under its final name in one rename.

use crate::{Control, DebError};
use kpatch_common::exec::{Cmd, Runner};
use md5::{Digest, Md5};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One file of the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebFile {
    /// Where it is installed (absolute, e.g. `/usr/bin/kpatch-rs`).
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// A package to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deb {
    pub control: Control,
    pub files: Vec<DebFile>,
    /// Maintainer scripts by name (`postinst`, `prerm`, `postrm`, ...).
    pub scripts: Vec<(String, String)>,
}

impl Deb {
    pub fn new(control: Control) -> Self {
        Deb {
            control,
            files: Vec::new(),
            scripts: Vec::new(),
        }
    }

    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) -> &mut Self {
        self.files.push(DebFile {
            path: path.to_string(),
            data,
            mode,
        });
        self
    }

    pub fn script(&mut self, name: &str, text: String) -> &mut Self {
        self.scripts.push((name.to_string(), text));
        self
    }

    /// `<package>_<version>_<architecture>.deb` (an epoch's `:` is left out, as dpkg does).
    pub fn file_name(&self) -> String {
        let version = self.control.get("Version").unwrap_or("0");
        let version = version.split_once(':').map_or(version, |(_, v)| v);
        format!(
            "{}_{}_{}.deb",
            self.control.get("Package").unwrap_or("unknown"),
            version,
            self.control.get("Architecture").unwrap_or("all")
        )
    }

    /// The `Installed-Size` dpkg expects: KiB, each file rounded up.
    pub fn installed_size(&self) -> u64 {
        self.files
            .iter()
            .map(|f| (f.data.len() as u64).div_ceil(1024))
            .sum::<u64>()
            .max(1)
    }

    /// `DEBIAN/md5sums`: one `<md5>  <path without the leading />` line per file.
    pub fn md5sums(&self) -> String {
        self.files
            .iter()
            .map(|f| {
                let hex: String = Md5::digest(&f.data)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                format!("{hex}  {}\n", f.path.trim_start_matches('/'))
            })
            .collect()
    }

    /// Builds the package in `out_dir`; returns its path.
    pub fn build(&self, out_dir: &Path, runner: &dyn Runner) -> Result<PathBuf, DebError> {
        let stage = tempfile::Builder::new()
            .prefix(".kpatch-rs-deb.")
            .tempdir_in(out_dir)
            .map_err(|e| DebError::io(out_dir, e))?;
        let root = stage.path().join("root");
        self.stage(&root)?;
        let dest = out_dir.join(self.file_name());
        let tmp = stage.path().join("out.deb");
        runner
            .run_ok(
                &Cmd::new("dpkg-deb")
                    .args(["--build", "--root-owner-group", "-Zxz"])
                    .arg(&root)
                    .arg(&tmp),
            )
            .map_err(|source| DebError::Tool {
                what: "building the package",
                source,
            })?;
        std::fs::rename(&tmp, &dest).map_err(|e| DebError::io(&dest, e))?;
        kpatch_common::fs::sync_dir(out_dir);
        Ok(dest)
    }

    /// Writes the package tree under `root` (directories 0755).
    pub fn stage(&self, root: &Path) -> Result<(), DebError> {
        let mut control = self.control.clone();
        control.set("Installed-Size", &self.installed_size().to_string())?;
        let debian = root.join("DEBIAN");
        mkdirs(root, &debian)?;
        write(&debian.join("control"), control.render().as_bytes(), 0o644)?;
        write(&debian.join("md5sums"), self.md5sums().as_bytes(), 0o644)?;
        for (name, text) in &self.scripts {
            write(&debian.join(name), text.as_bytes(), 0o755)?;
        }
        for f in &self.files {
            let path = root.join(f.path.trim_start_matches('/'));
            mkdirs(root, path.parent().unwrap_or(root))?;
            write(&path, &f.data, f.mode)?;
        }
        Ok(())
    }
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), DebError> {
    std::fs::write(path, data).map_err(|e| DebError::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| DebError::io(path, e))
}

/// Creates `dir` and its parents up to `root`, each 0755 (a staging tree made in a 0700
/// temporary directory must not pass that mode on to the package).
fn mkdirs(root: &Path, dir: &Path) -> Result<(), DebError> {
    std::fs::create_dir_all(dir).map_err(|e| DebError::io(dir, e))?;
    let mut d = Some(dir);
    while let Some(p) = d.filter(|p| p.starts_with(root)) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| DebError::io(p, e))?;
        d = p.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpatch_common::exec::SystemRunner;

    fn sample() -> Deb {
        let mut c =
            Control::new("kpatch-rs-test", "1:2.0-1", "amd64", "T <t@example.org>").unwrap();
        c.set_description("a test package", &["Built by a kpatch-deb test.".into()])
            .unwrap();
        let mut d = Deb::new(c);
        d.file("/usr/lib/kpatch-rs/x.ko", vec![7u8; 3000], 0o644);
        d.file("/usr/bin/tool", b"#!/bin/sh\n".to_vec(), 0o755);
        d.script("postinst", "#!/bin/sh\nexit 0\n".into());
        d
    }

    #[test]
    fn names_sizes_and_sums() {
        let d = sample();
        assert_eq!(d.file_name(), "kpatch-rs-test_2.0-1_amd64.deb");
        assert_eq!(d.installed_size(), 3 + 1);
        let sums = d.md5sums();
        assert!(sums.contains("  usr/lib/kpatch-rs/x.ko\n"), "{sums}");
        assert!(
            sums.contains("3e2b31c72181b87149ff995e7202c0e3  usr/bin/tool\n"),
            "{sums}"
        );
    }

    /// Builds the package with the real dpkg-deb (skipped, saying so, where it is missing).
    #[test]
    fn dpkg_deb_builds_what_was_staged() {
        if std::process::Command::new("dpkg-deb")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: no dpkg-deb");
            return;
        }
        let out = tempfile::tempdir().unwrap();
        let deb = sample().build(out.path(), &SystemRunner).unwrap();
        assert_eq!(deb, out.path().join("kpatch-rs-test_2.0-1_amd64.deb"));
        let info = std::process::Command::new("dpkg-deb")
            .arg("--info")
            .arg(&deb)
            .output()
            .unwrap();
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(info.contains(" Version: 1:2.0-1"), "{info}");
        assert!(info.contains(" Installed-Size: 4"), "{info}");
        assert!(info.contains("postinst"), "{info}");
        let list = std::process::Command::new("dpkg-deb")
            .arg("--contents")
            .arg(&deb)
            .output()
            .unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(
            list.contains("-rwxr-xr-x root/root") && list.contains("./usr/bin/tool"),
            "{list}"
        );
        assert!(list.contains("drwxr-xr-x root/root         0"), "{list}");
        assert!(!list.contains("drwx------"), "{list}");
        // Nothing but the package is left in the output directory.
        let names: Vec<_> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
