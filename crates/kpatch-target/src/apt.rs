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

impl PackageTools for SystemApt {
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
