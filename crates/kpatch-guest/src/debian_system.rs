//! A real Debian 12 system to boot instead of the busybox initramfs: a root file system made by
//! mmdebstrap from the archive (systemd as PID 1, apt, the target kernel package, whose
//! postinst builds the system's own initramfs with initramfs-tools), packed into an ext4 image
//! by `mkfs.ext4 -d` (no loop mount), and cached under `<cache>/debian-system/`, keyed by the
//! kernel and everything the recipe puts in.
//!
//! QEMU boots the kernel and the initramfs the system installed in its `/boot`, with the image
//! as its root disk (`snapshot=on`: a run's changes never reach the cache, and they survive a
//! reboot inside the guest, for QEMU keeps running). A second disk, labelled
//! [`TEST_DISK_LABEL`] and mounted read-only at [`TEST_MOUNT`], carries a run's files; at every
//! boot, once `multi-user.target` is reached, the system runs its `run.sh` ([`TEST_SCRIPT`])
//! as root.

use crate::{GuestConfig, GuestError};
use kpatch_target::DebianKernel;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The release the system is made of.
pub const SUITE: &str = "bookworm";
/// The label of the run's disk.
pub const TEST_DISK_LABEL: &str = "kpatch-rs-test";
/// Where the system mounts it.
pub const TEST_MOUNT: &str = "/mnt/kpatch-rs-test";
/// The script the system runs from it at every boot.
pub const TEST_SCRIPT: &str = "run.sh";
/// The root image's size (sparse; the system takes about 700 MB of it).
const IMAGE_SIZE: &str = "2G";
/// Bump to rebuild every cached system after a change the key would not see.
const RECIPE_VERSION: u32 = 1;

/// The packages besides `--variant=minbase`'s; the kernel package is added by [`recipe`].
const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "kmod",
    "dbus",
    "e2fsprogs",
    "initramfs-tools",
];

/// Run in mmdebstrap's customize hook with the root directory as `$1`: the root file system
/// and the run's disk in fstab, a host name, no apt timers (they would take dpkg's lock in the
/// middle of a test), and the unit that runs the run's script.
const CUSTOMIZE: &str = r#"set -e
root="$1"
cat > "$root/etc/fstab" <<EOF
/dev/vda / ext4 errors=remount-ro 0 1
LABEL=@LABEL@ @MOUNT@ ext4 ro,nofail,x-systemd.device-timeout=120s 0 0
EOF
mkdir -p "$root@MOUNT@"
echo kpatch-rs-guest > "$root/etc/hostname"
ln -sf /dev/null "$root/etc/systemd/system/apt-daily.timer"
ln -sf /dev/null "$root/etc/systemd/system/apt-daily-upgrade.timer"
cat > "$root/etc/systemd/system/kpatch-rs-test.service" <<EOF
[Unit]
Description=Run the kpatch-rs test disk's @SCRIPT@
After=multi-user.target
RequiresMountsFor=@MOUNT@
ConditionPathExists=@MOUNT@/@SCRIPT@

[Service]
Type=oneshot
ExecStart=/bin/sh @MOUNT@/@SCRIPT@
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
EOF
ln -sf ../kpatch-rs-test.service "$root/etc/systemd/system/multi-user.target.wants/kpatch-rs-test.service"
"#;

/// A cached system, ready to boot.
#[derive(Debug, Clone)]
pub struct DebianSystem {
    /// The ext4 root image.
    pub image: PathBuf,
    /// The kernel and initramfs from the system's `/boot`.
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    /// `package version` lines of every package in the system (`dpkg-query -W`).
    pub packages: PathBuf,
    /// Seconds the build took, when this call built it (None: it was cached).
    pub built_in: Option<f64>,
}

/// The mmdebstrap packages and the customize script for `kernel`.
fn recipe(abi: &str, version: &str) -> (Vec<String>, String) {
    let mut packages: Vec<String> = PACKAGES.iter().map(|p| p.to_string()).collect();
    packages.push(format!("linux-image-{abi}={version}"));
    let customize = CUSTOMIZE
        .replace("@LABEL@", TEST_DISK_LABEL)
        .replace("@MOUNT@", TEST_MOUNT)
        .replace("@SCRIPT@", TEST_SCRIPT);
    (packages, customize)
}

/// `<abi>-<first 16 hex digits of the SHA-256 of everything the system is made of>`.
fn cache_key(abi: &str, packages: &[String], customize: &str) -> String {
    let mut h = Sha256::new();
    h.update(format!("{RECIPE_VERSION}\n{SUITE}\n{IMAGE_SIZE}\n"));
    for p in packages {
        h.update(p.as_bytes());
        h.update(b"\n");
    }
    h.update(customize.as_bytes());
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("{abi}-{}", &hex[..16])
}

fn run(cmd: &mut Command, dir: &Path) -> Result<(), GuestError> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| GuestError::Build {
        command: shown.clone(),
        dir: dir.to_path_buf(),
        status: "not started".into(),
        output: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = output.lines().collect();
    Err(GuestError::Build {
        command: shown,
        dir: dir.to_path_buf(),
        status: out.status.to_string(),
        output: lines[lines.len().saturating_sub(40)..].join("\n"),
    })
}

impl DebianSystem {
    /// The system for `kernel`: from the cache, else built (measured: 54 s to 139 s on two
    /// cores, downloads included). Needs root, or mmdebstrap's unshare mode.
    pub fn ensure(kernel: &DebianKernel) -> Result<Self, GuestError> {
        let (packages, customize) = recipe(&kernel.abi, &kernel.version);
        let base = kpatch_target::cache_dir().join("debian-system");
        let dir = base.join(cache_key(&kernel.abi, &packages, &customize));
        let system = DebianSystem {
            image: dir.join("root.img"),
            vmlinuz: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            packages: dir.join("packages.txt"),
            built_in: None,
        };
        std::fs::create_dir_all(&base).map_err(|e| GuestError::io(&base, e))?;
        let lock_path = base.join(".lock");
        let lock = std::fs::File::create(&lock_path).map_err(|e| GuestError::io(&lock_path, e))?;
        let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| GuestError::io(&lock_path, e.into()))?;
        if dir.join("complete").exists() {
            return Ok(system);
        }
        let started = Instant::now();
        build(kernel, &packages, &customize, &base, &dir)?;
        Ok(DebianSystem {
            built_in: Some(started.elapsed().as_secs_f64()),
            ..system
        })
    }

    /// QEMU settings to boot the system with `test_disk` (see [`make_test_disk`]) attached;
    /// reboots inside the guest are allowed (the root disk's changes survive them).
    pub fn config(&self, test_disk: &Path, timeout: Duration) -> GuestConfig {
        let mut c = GuestConfig::new(&self.vmlinuz, &self.initrd);
        c.memory_mb = 1024;
        c.append = "root=/dev/vda rw console=ttyS0 loglevel=6 no_timer_check panic=-1 \
                    systemd.show_status=1"
            .into();
        c.extra_args = vec![
            "-drive".into(),
            format!(
                "file={},format=raw,if=virtio,snapshot=on",
                self.image.display()
            ),
            "-drive".into(),
            format!(
                "file={},format=raw,if=virtio,readonly=on",
                test_disk.display()
            ),
        ];
        c.allow_reboot = true;
        c.timeout = timeout;
        c
    }
}

/// Builds the system into a temporary directory beside `dir`, then renames it into place.
fn build(
    kernel: &DebianKernel,
    packages: &[String],
    customize: &str,
    base: &Path,
    dir: &Path,
) -> Result<(), GuestError> {
    let work = tempfile::Builder::new()
        .prefix(".build.")
        .tempdir_in(base)
        .map_err(|e| GuestError::io(base, e))?;
    let w = work.path();
    let hook = w.join("customize.sh");
    std::fs::write(&hook, customize).map_err(|e| GuestError::io(&hook, e))?;
    let root = w.join("root");
    let listing = w.join("packages.txt");
    run(
        Command::new("mmdebstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", packages.join(",")))
            .arg(format!("--customize-hook=sh {} \"$1\"", hook.display()))
            .arg(format!(
                "--customize-hook=chroot \"$1\" dpkg-query -W > {}",
                listing.display()
            ))
            .arg(SUITE)
            .arg(&root),
        w,
    )?;
    let listed = std::fs::read_to_string(&listing).map_err(|e| GuestError::io(&listing, e))?;
    let want = format!("linux-image-{}\t{}", kernel.abi, kernel.version);
    if !listed.lines().any(|l| l == want) {
        return Err(GuestError::BadInput {
            path: listing,
            what: format!("the system has no {want:?}"),
        });
    }
    for (from, to) in [
        (format!("vmlinuz-{}", kernel.abi), "vmlinuz"),
        (format!("initrd.img-{}", kernel.abi), "initrd.img"),
    ] {
        let src = root.join("boot").join(&from);
        std::fs::copy(&src, w.join(to)).map_err(|e| GuestError::io(&src, e))?;
    }
    let image = w.join("root.img");
    run(
        Command::new("truncate")
            .args(["-s", IMAGE_SIZE])
            .arg(&image),
        w,
    )?;
    run(
        Command::new("mkfs.ext4")
            .args(["-q", "-L", "kpatch-rs-root", "-d"])
            .arg(&root)
            .arg(&image),
        w,
    )?;
    std::fs::remove_dir_all(&root).map_err(|e| GuestError::io(&root, e))?;
    std::fs::remove_file(&hook).map_err(|e| GuestError::io(&hook, e))?;
    std::fs::write(w.join("complete"), "").map_err(|e| GuestError::io(w, e))?;
    let built = work.keep();
    std::fs::rename(&built, dir).map_err(|e| GuestError::io(dir, e))
}

/// An ext4 image of `files` labelled [`TEST_DISK_LABEL`], for [`DebianSystem::config`].
pub fn make_test_disk(files: &Path, image: &Path) -> Result<(), GuestError> {
    let size: u64 = walk_size(files)?;
    // Room for the file system's own structures.
    let mb = size / (1 << 20) * 3 / 2 + 32;
    let _ = std::fs::remove_file(image);
    let dir = image.parent().unwrap_or(Path::new("."));
    run(
        Command::new("truncate")
            .args(["-s", &format!("{mb}M")])
            .arg(image),
        dir,
    )?;
    run(
        Command::new("mkfs.ext4")
            .args(["-q", "-L", TEST_DISK_LABEL, "-d"])
            .arg(files)
            .arg(image),
        dir,
    )
}

fn walk_size(p: &Path) -> Result<u64, GuestError> {
    let meta = std::fs::symlink_metadata(p).map_err(|e| GuestError::io(p, e))?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for e in std::fs::read_dir(p).map_err(|e| GuestError::io(p, e))? {
        total += walk_size(&e.map_err(|e| GuestError::io(p, e))?.path())?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_changes_with_what_the_system_holds() {
        let k = "6.1.0-57-amd64";
        let (p, c) = recipe(k, "6.1.192-3");
        assert!(p.contains(&"linux-image-6.1.0-57-amd64=6.1.192-3".to_string()));
        assert!(c.contains("LABEL=kpatch-rs-test /mnt/kpatch-rs-test ext4 ro,nofail"));
        assert!(c.contains("ExecStart=/bin/sh /mnt/kpatch-rs-test/run.sh"));
        let key = cache_key(k, &p, &c);
        assert!(key.starts_with("6.1.0-57-amd64-") && key.len() == "6.1.0-57-amd64-".len() + 16);
        assert_eq!(key, cache_key(k, &p, &c));
        let (p2, _) = recipe(k, "6.1.192-4");
        assert_ne!(key, cache_key(k, &p2, &c));
        assert_ne!(key, cache_key(k, &p, &format!("{c}\n")));
    }

    #[test]
    fn the_config_boots_the_systems_kernel_with_both_disks() {
        let s = DebianSystem {
            image: "/c/root.img".into(),
            vmlinuz: "/c/vmlinuz".into(),
            initrd: "/c/initrd.img".into(),
            packages: "/c/packages.txt".into(),
            built_in: None,
        };
        let c = s.config(Path::new("/t/test.img"), Duration::from_secs(60));
        let a = c.args();
        assert!(!a.contains(&"-no-reboot".to_string()), "{a:?}");
        assert!(a.contains(&"file=/c/root.img,format=raw,if=virtio,snapshot=on".to_string()));
        assert!(a.contains(&"file=/t/test.img,format=raw,if=virtio,readonly=on".to_string()));
        assert!(c.append.starts_with("root=/dev/vda rw console=ttyS0"));
        assert_eq!(
            (c.kernel.as_path(), c.initramfs.as_path()),
            (Path::new("/c/vmlinuz"), Path::new("/c/initrd.img"))
        );
    }
}
