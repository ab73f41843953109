//! Installed patches: `<root>/<kernel release>/<name>.ko[.xz|.zst|.gz]`, and the systemd unit
//! that loads them at boot. Every write is a temporary file renamed into place.

use crate::error::KernelError;
use crate::modinfo::ModuleFile;
use kpatch_common::fs::{sync_dir, write_atomic_mode};
use kpatch_common::names::{canonical_module_name, module_name_from_arg, module_name_from_path};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where patches are installed by default.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/kpatch-rs";
/// Where the systemd unit goes by default.
pub const DEFAULT_UNIT_DIR: &str = "/etc/systemd/system";
/// The unit's file name.
pub const UNIT_NAME: &str = "kpatch-rs.service";

/// One installed module file.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Installed {
    pub name: String,
    pub kernel: String,
    pub path: PathBuf,
}

/// The install directory tree.
#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
}

/// Create or replace a symlink atomically.
fn symlink_atomic(target: &Path, link: &Path) -> std::io::Result<()> {
    let dir = link.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".kpatch-rs-link-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link)?;
    sync_dir(dir);
    Ok(())
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Store { root: root.into() }
    }

    pub fn kernel_dir(&self, kernel: &str) -> PathBuf {
        self.root.join(kernel)
    }

    /// The modules installed for one kernel, sorted by file name (the `load --all` order).
    pub fn list_kernel(&self, kernel: &str) -> Result<Vec<Installed>, KernelError> {
        let dir = self.kernel_dir(kernel);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(KernelError::io(&dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| KernelError::io(&dir, e))?;
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if let (false, Some(name)) = (hidden, module_name_from_path(&path)) {
                out.push(Installed {
                    name,
                    kernel: kernel.into(),
                    path,
                });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Everything installed, by kernel then file name.
    pub fn list(&self) -> Result<Vec<Installed>, KernelError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(KernelError::io(&self.root, e)),
        };
        let mut kernels: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        kernels.sort();
        let mut out = Vec::new();
        for k in kernels {
            out.extend(self.list_kernel(&k)?);
        }
        Ok(out)
    }

    /// The installed module `name` for `kernel`.
    pub fn find(&self, kernel: &str, name: &str) -> Result<Option<Installed>, KernelError> {
        let name = canonical_module_name(name);
        Ok(self
            .list_kernel(kernel)?
            .into_iter()
            .find(|i| i.name == name))
    }

    /// A module given on the command line: an existing file, else the installed patch of that
    /// name (with or without `.ko`) for `kernel` — kpatch's lookup order.
    pub fn resolve(&self, arg: &str, kernel: &str) -> Result<ModuleFile, KernelError> {
        let path = Path::new(arg);
        if path.is_file() {
            return ModuleFile::read(path);
        }
        let name = module_name_from_arg(arg);
        match self.find(kernel, &name)? {
            Some(i) => ModuleFile::read(&i.path),
            None => Err(KernelError::NotInstalled {
                name: arg.into(),
                kernel: kernel.into(),
                dir: self.kernel_dir(kernel),
            }),
        }
    }

    /// Copy a module file into `<root>/<kernel>/`.
    pub fn install(&self, module: &ModuleFile, kernel: &str) -> Result<Installed, KernelError> {
        let name = module.name();
        if let Some(existing) = self.find(kernel, &name)? {
            return Err(KernelError::AlreadyInstalled {
                path: existing.path,
                kernel: kernel.into(),
            });
        }
        let file_name = module
            .path
            .file_name()
            .and_then(|f| f.to_str())
            .ok_or_else(|| KernelError::BadFileName {
                path: module.path.clone(),
            })?;
        let ext = file_name
            .find(".ko")
            .map(|i| &file_name[i..])
            .ok_or_else(|| KernelError::BadFileName {
                path: module.path.clone(),
            })?;
        let dir = self.kernel_dir(kernel);
        std::fs::create_dir_all(&dir).map_err(|e| KernelError::io(&dir, e))?;
        let dest = dir.join(format!("{name}{ext}"));
        let raw = std::fs::read(&module.path).map_err(|e| KernelError::io(&module.path, e))?;
        write_atomic_mode(&dest, &raw, 0o644).map_err(|e| KernelError::io(&dest, e))?;
        Ok(Installed {
            name,
            kernel: kernel.into(),
            path: dest,
        })
    }

    /// Remove the installed module `name` for `kernel`.
    pub fn uninstall(&self, kernel: &str, name: &str) -> Result<Installed, KernelError> {
        let found = self
            .find(kernel, name)?
            .ok_or_else(|| KernelError::NotInstalled {
                name: name.into(),
                kernel: kernel.into(),
                dir: self.kernel_dir(kernel),
            })?;
        std::fs::remove_file(&found.path).map_err(|e| KernelError::io(&found.path, e))?;
        let dir = self.kernel_dir(kernel);
        sync_dir(&dir);
        // Leave no empty kernel directory behind (ignore failure: not empty, or raced).
        let _ = std::fs::remove_dir(&dir);
        Ok(found)
    }
}

/// The systemd unit that runs `load --all` at boot, as `install` writes it.
pub fn unit_text(exe: &Path, state_dir: &Path) -> String {
    format!(
        "# Written by kpatch-rs install; removed by kpatch-rs uninstall of the last patch.\n{}",
        unit_body(exe, state_dir)
    )
}

/// The unit itself (kpatch-rs's package ships it as it is). It runs before the login prompts
/// (`getty-pre.target`) and before logins are allowed, so that a host that comes up patched is
/// patched before anyone can log in.
pub fn unit_body(exe: &Path, state_dir: &Path) -> String {
    format!(
        "[Unit]\n\
         Description=Load the kpatch-rs livepatch modules installed for the running kernel\n\
         ConditionKernelCommandLine=!kpatch_rs.enable=0\n\
         RequiresMountsFor={state}\n\
         Before=network-pre.target getty-pre.target systemd-user-sessions.service\n\
         Wants=network-pre.target getty-pre.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         SuccessExitStatus=3\n\
         ExecStart={exe} load --all --state-dir {state}\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        exe = exe.display(),
        state = state_dir.display(),
    )
}

/// Write the unit and enable it (the `multi-user.target.wants` symlink `systemctl enable` makes).
pub fn install_unit(unit_dir: &Path, exe: &Path, state_dir: &Path) -> Result<PathBuf, KernelError> {
    let unit = unit_dir.join(UNIT_NAME);
    let text = unit_text(exe, state_dir);
    std::fs::create_dir_all(unit_dir).map_err(|e| KernelError::io(unit_dir, e))?;
    if std::fs::read_to_string(&unit).ok().as_deref() != Some(text.as_str()) {
        write_atomic_mode(&unit, text.as_bytes(), 0o644).map_err(|e| KernelError::io(&unit, e))?;
    }
    let wants = unit_dir.join("multi-user.target.wants");
    std::fs::create_dir_all(&wants).map_err(|e| KernelError::io(&wants, e))?;
    let link = wants.join(UNIT_NAME);
    symlink_atomic(&unit, &link).map_err(|e| KernelError::io(&link, e))?;
    Ok(unit)
}

/// Disable and remove the unit.
pub fn remove_unit(unit_dir: &Path) -> Result<(), KernelError> {
    for p in [
        unit_dir.join("multi-user.target.wants").join(UNIT_NAME),
        unit_dir.join(UNIT_NAME),
    ] {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(KernelError::io(&p, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modinfo::build_test_module;

    fn module(dir: &Path, file: &str, name: &str) -> ModuleFile {
        let path = dir.join(file);
        let ko = build_test_module(&[("name", name), ("livepatch", "Y")]);
        std::fs::write(&path, &ko).unwrap();
        ModuleFile::read(&path).unwrap()
    }

    #[test]
    fn install_list_find_uninstall() {
        let src = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path().join("state"));
        let m = module(src.path(), "fix-one.ko", "fix_one");
        let i = store.install(&m, "6.1.0-50-amd64").unwrap();
        assert_eq!(i.path, root.path().join("state/6.1.0-50-amd64/fix_one.ko"));
        assert_eq!(std::fs::read(&i.path).unwrap(), m.image);
        let e = store.install(&m, "6.1.0-50-amd64").unwrap_err();
        assert!(matches!(e, KernelError::AlreadyInstalled { .. }), "{e}");
        store.install(&m, "6.1.0-49-amd64").unwrap();
        let all = store.list().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].kernel, "6.1.0-49-amd64");
        assert!(store.find("6.1.0-50-amd64", "fix-one").unwrap().is_some());
        store.uninstall("6.1.0-50-amd64", "fix_one").unwrap();
        assert!(!root.path().join("state/6.1.0-50-amd64").exists());
        let e = store.uninstall("6.1.0-50-amd64", "fix_one").unwrap_err();
        assert!(matches!(e, KernelError::NotInstalled { .. }), "{e}");
        // No temporary files are left behind.
        let leftovers: Vec<_> = std::fs::read_dir(root.path().join("state/6.1.0-49-amd64"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("fix_one.ko")]);
    }

    #[test]
    fn unit_install_and_remove() {
        let d = tempfile::tempdir().unwrap();
        let unit = install_unit(
            d.path(),
            Path::new("/usr/bin/kpatch-rs"),
            Path::new("/var/lib/kpatch-rs"),
        )
        .unwrap();
        let text = std::fs::read_to_string(&unit).unwrap();
        assert!(
            text.contains("ExecStart=/usr/bin/kpatch-rs load --all --state-dir /var/lib/kpatch-rs")
        );
        let link = d.path().join("multi-user.target.wants").join(UNIT_NAME);
        assert_eq!(std::fs::read_link(&link).unwrap(), unit);
        // Idempotent.
        install_unit(
            d.path(),
            Path::new("/usr/bin/kpatch-rs"),
            Path::new("/var/lib/kpatch-rs"),
        )
        .unwrap();
        remove_unit(d.path()).unwrap();
        assert!(!unit.exists() && std::fs::symlink_metadata(&link).is_err());
    }
}
