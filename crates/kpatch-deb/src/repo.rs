//! A flat apt repository (`deb [signed-by=KEYRING] URI ./`): the packages under `pool/`,
//! indexed by `dpkg-scanpackages --multiversion` (every version stays installable by
//! `apt install PACKAGE=VERSION`), described by `apt-ftparchive release`, and, given a key,
//! signed by gpg (`InRelease`, `Release.gpg`) with the public key exported beside them.
//! Every index is written under a temporary name and renamed into place, the signatures last.

use crate::DebError;
use kpatch_common::exec::{Cmd, Runner};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The public key file a signed repository carries, for the hosts' `signed-by=`.
pub const KEYRING: &str = "kpatch-rs-archive-keyring.gpg";

/// How to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignWith {
    /// The key (id, fingerprint or user id) gpg signs with.
    pub key: String,
    /// gpg's home directory (default: gpg's own).
    pub gnupg_home: Option<PathBuf>,
}

/// What the repository says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoOptions {
    pub origin: String,
    pub label: String,
    pub sign: Option<SignWith>,
}

/// What [`update`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    pub dir: PathBuf,
    /// The packages added to `pool/` by this update.
    pub added: Vec<PathBuf>,
    /// The package entries `Packages` lists.
    pub entries: usize,
    /// The public key file, when signed.
    pub keyring: Option<PathBuf>,
}

/// Adds `debs` to the repository in `dir` (made when missing) and rewrites its indexes.
pub fn update(
    dir: &Path,
    debs: &[PathBuf],
    opts: &RepoOptions,
    runner: &dyn Runner,
) -> Result<Repo, DebError> {
    let pool = dir.join("pool");
    std::fs::create_dir_all(&pool).map_err(|e| DebError::io(&pool, e))?;
    let added = debs
        .iter()
        .map(|d| add_to_pool(&pool, d))
        .collect::<Result<Vec<_>, _>>()?;
    let packages = run(
        runner,
        "indexing the packages",
        Cmd::new("dpkg-scanpackages")
            .args(["--multiversion", "pool", "/dev/null"])
            .dir(dir),
    )?;
    let entries = packages
        .lines()
        .filter(|l| l.starts_with("Package: "))
        .count();
    let mut staged = Vec::new();
    staged.push(stage(dir, "Packages", packages.as_bytes())?);
    staged.push(stage(dir, "Packages.gz", &gzip(packages.as_bytes(), dir)?)?);
    // apt-ftparchive hashes the index files it finds in `dir`: the new ones are put in place
    // first (a client between the two renames sees the old Release, whose hashes it then finds
    // wrong, and retries; never a Release that vouches for a file that is not there).
    for (tmp, name) in staged.drain(..) {
        place(&tmp, &dir.join(name))?;
    }
    let release = run(
        runner,
        "writing Release",
        Cmd::new("apt-ftparchive")
            .arg("-o")
            .arg(format!("APT::FTPArchive::Release::Origin={}", opts.origin))
            .arg("-o")
            .arg(format!("APT::FTPArchive::Release::Label={}", opts.label))
            .args(["release", "."])
            .dir(dir),
    )?;
    let release_tmp = stage(dir, "Release", release.as_bytes())?;
    let keyring = match &opts.sign {
        Some(sign) => {
            let inrelease = dir.join(".InRelease.new");
            let detached = dir.join(".Release.gpg.new");
            let key = dir.join(format!(".{KEYRING}.new"));
            gpg(runner, sign, "signing InRelease", |c| {
                c.args(["--clearsign", "--output"])
                    .arg(&inrelease)
                    .arg(&release_tmp.0)
            })?;
            gpg(runner, sign, "signing Release.gpg", |c| {
                c.args(["--armor", "--detach-sign", "--output"])
                    .arg(&detached)
                    .arg(&release_tmp.0)
            })?;
            gpg(runner, sign, "exporting the public key", |c| {
                c.args(["--output"]).arg(&key).args(["--export", &sign.key])
            })?;
            place(&release_tmp.0, &dir.join("Release"))?;
            place(&detached, &dir.join("Release.gpg"))?;
            place(&inrelease, &dir.join("InRelease"))?;
            let keyring = dir.join(KEYRING);
            place(&key, &keyring)?;
            Some(keyring)
        }
        None => {
            // A signature of an earlier Release would not match the new one.
            for stale in ["InRelease", "Release.gpg"] {
                let p = dir.join(stale);
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(DebError::io(p, e)),
                }
            }
            place(&release_tmp.0, &dir.join("Release"))?;
            None
        }
    };
    kpatch_common::fs::sync_dir(dir);
    Ok(Repo {
        dir: dir.to_path_buf(),
        added,
        entries,
        keyring,
    })
}

/// Copies `deb` into the pool; the same file already there is fine, a different one is not.
fn add_to_pool(pool: &Path, deb: &Path) -> Result<PathBuf, DebError> {
    let name = deb
        .file_name()
        .ok_or_else(|| DebError::io(deb, std::io::ErrorKind::InvalidInput.into()))?;
    let dest = pool.join(name);
    let data = std::fs::read(deb).map_err(|e| DebError::io(deb, e))?;
    match std::fs::read(&dest) {
        Ok(existing) if existing == data => return Ok(dest),
        Ok(_) => return Err(DebError::PoolConflict { path: dest }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(DebError::io(dest, e)),
    }
    kpatch_common::fs::write_atomic_mode(&dest, &data, 0o644)
        .map_err(|e| DebError::io(&dest, e))?;
    Ok(dest)
}

fn run(runner: &dyn Runner, what: &'static str, cmd: Cmd) -> Result<String, DebError> {
    runner
        .run_ok(&cmd)
        .map(|o| o.stdout)
        .map_err(|source| DebError::Tool { what, source })
}

fn gpg(
    runner: &dyn Runner,
    sign: &SignWith,
    what: &'static str,
    args: impl FnOnce(Cmd) -> Cmd,
) -> Result<(), DebError> {
    let mut c = Cmd::new("gpg").args(["--batch", "--yes", "--no-tty"]);
    if let Some(home) = &sign.gnupg_home {
        c = c.arg("--homedir").arg(home);
    }
    c = c.args(["--local-user", &sign.key]);
    run(runner, what, args(c)).map(drop)
}

/// `data` written to `.<name>.new` in `dir`; returns that path and the final name.
fn stage(dir: &Path, name: &'static str, data: &[u8]) -> Result<(PathBuf, &'static str), DebError> {
    let tmp = dir.join(format!(".{name}.new"));
    std::fs::write(&tmp, data).map_err(|e| DebError::io(&tmp, e))?;
    Ok((tmp, name))
}

fn place(tmp: &Path, dest: &Path) -> Result<(), DebError> {
    std::fs::rename(tmp, dest).map_err(|e| DebError::io(dest, e))
}

fn gzip(data: &[u8], dir: &Path) -> Result<Vec<u8>, DebError> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data)
        .and_then(|()| enc.finish())
        .map_err(|e| DebError::io(dir.join("Packages.gz"), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Control, Deb};
    use kpatch_common::exec::SystemRunner;

    fn have(tool: &str) -> bool {
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("skipped: no {tool}");
        }
        ok
    }

    fn deb(dir: &Path, version: &str) -> PathBuf {
        let mut c = Control::new(
            "livepatch-x-6.1.0-57-amd64",
            version,
            "amd64",
            "T <t@example.org>",
        )
        .unwrap();
        c.set_description("x", &[]).unwrap();
        c.set("Livepatch-Cves", "CVE-2099-1001").unwrap();
        let mut d = Deb::new(c);
        d.file(
            "/usr/lib/kpatch-rs/x.ko",
            version.as_bytes().to_vec(),
            0o644,
        );
        d.build(dir, &SystemRunner).unwrap()
    }

    /// The real tools end to end: two versions indexed, a signed Release that gpg verifies, and
    /// a conflicting rebuild refused.
    #[test]
    fn indexes_every_version_and_signs_release() {
        if !(have("dpkg-scanpackages") && have("apt-ftparchive") && have("gpg") && have("dpkg-deb"))
        {
            return;
        }
        let work = tempfile::tempdir().unwrap();
        let home = work.path().join("gnupg");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let gen = std::process::Command::new("gpg")
            .arg("--homedir")
            .arg(&home)
            .args([
                "--batch",
                "--passphrase",
                "",
                "--quick-gen-key",
                "kpatch-deb test <t@example.org>",
                "ed25519",
                "sign",
                "never",
            ])
            .output()
            .unwrap();
        assert!(
            gen.status.success(),
            "{}",
            String::from_utf8_lossy(&gen.stderr)
        );
        let debs = work.path().join("debs");
        std::fs::create_dir(&debs).unwrap();
        let v1 = deb(&debs, "1");
        let v2 = deb(&debs, "2");
        let repo_dir = work.path().join("repo");
        let opts = RepoOptions {
            origin: "kpatch-rs".into(),
            label: "test".into(),
            sign: Some(SignWith {
                key: "t@example.org".into(),
                gnupg_home: Some(home.clone()),
            }),
        };
        let r = update(&repo_dir, std::slice::from_ref(&v1), &opts, &SystemRunner).unwrap();
        assert_eq!(r.entries, 1);
        let r = update(&repo_dir, &[v1, v2], &opts, &SystemRunner).unwrap();
        assert_eq!(r.entries, 2);
        let packages = std::fs::read_to_string(repo_dir.join("Packages")).unwrap();
        assert!(
            packages.contains("Version: 1\n") && packages.contains("Version: 2\n"),
            "{packages}"
        );
        assert!(
            packages.contains("Filename: pool/livepatch-x-6.1.0-57-amd64_2_amd64.deb"),
            "{packages}"
        );
        assert!(
            packages.contains("Livepatch-Cves: CVE-2099-1001"),
            "{packages}"
        );
        let release = std::fs::read_to_string(repo_dir.join("Release")).unwrap();
        assert!(
            release.contains("Origin: kpatch-rs") && release.contains(" Packages.gz\n"),
            "{release}"
        );
        // gpgv with only the exported key verifies both signatures.
        let keyring = r.keyring.unwrap();
        for args in [vec!["InRelease"], vec!["Release.gpg", "Release"]] {
            let v = std::process::Command::new("gpgv")
                .arg("--keyring")
                .arg(&keyring)
                .args(&args)
                .current_dir(&repo_dir)
                .output()
                .unwrap();
            assert!(
                v.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&v.stderr)
            );
        }
        let leftovers: Vec<String> = std::fs::read_dir(&repo_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // A rebuilt package under the same name is refused; the pool keeps the first.
        let other = work.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let mut c = Control::new(
            "livepatch-x-6.1.0-57-amd64",
            "1",
            "amd64",
            "T <t@example.org>",
        )
        .unwrap();
        c.set_description("rebuilt", &[]).unwrap();
        let rebuilt = Deb::new(c).build(&other, &SystemRunner).unwrap();
        let e = update(&repo_dir, &[rebuilt], &opts, &SystemRunner).unwrap_err();
        assert!(matches!(e, DebError::PoolConflict { .. }), "{e}");
        // Unsigned: the old signatures go.
        let unsigned = RepoOptions { sign: None, ..opts };
        update(&repo_dir, &[], &unsigned, &SystemRunner).unwrap();
        assert!(!repo_dir.join("InRelease").exists() && !repo_dir.join("Release.gpg").exists());
        assert!(repo_dir.join("Release").exists());
        // The agent gpg started for that home ends with the test.
        let _ = std::process::Command::new("gpgconf")
            .arg("--homedir")
            .arg(&home)
            .args(["--kill", "gpg-agent"])
            .output();
    }
}
