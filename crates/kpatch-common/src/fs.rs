//! Writing a file so that a reader sees the old content or the new, never a part: a temporary
//! file in the same directory, written and synced, then renamed over the destination (and the
//! directory synced, so the rename survives a crash). On error the temporary file is removed
//! and the destination is untouched.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `data` to `path` atomically, with the permissions a new file gets.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    replace_with(path, None, true, |f| f.write_all(data))
}

/// [`write_atomic`] without the syncs: readers see the old file or the whole new one, and a
/// crash of the writer leaves no half-written file, but a crash of the machine may leave an
/// empty or missing one. For outputs that are made again anyway (objects, cache entries a
/// reader checks): the two syncs cost more than the rest of a small differ run.
pub fn replace_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    replace_with(path, None, false, |f| f.write_all(data))
}

/// Writes `data` to `path` atomically with permission bits `mode` (e.g. `0o644`).
pub fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    replace_with(path, Some(mode), true, |f| f.write_all(data))
}

/// Copies the file `from` to `to` atomically (the copy is made beside `to`, then renamed).
pub fn copy_atomic(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut src = std::fs::File::open(from)?;
    replace_with(to, None, true, |f| std::io::copy(&mut src, f).map(|_| ()))
}

/// The directory `path` is in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A name for a temporary file beside `path`, unique in this process.
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    parent_dir(path).join(format!(".{name}.tmp.{}.{n}", std::process::id()))
}

/// Writes `path` atomically with what `fill` writes into the temporary file (permission bits
/// `mode` if given). A process killed meanwhile leaves only the hidden temporary file
/// `.NAME.tmp.PID.N` beside `path` (see [`is_temp_name`]).
pub fn write_atomic_with(
    path: &Path,
    mode: Option<u32>,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    replace_with(path, mode, true, fill)
}

/// Whether a file name is one of the temporary files of an atomic write (left behind only by a
/// process that was killed while writing).
pub fn is_temp_name(name: &str) -> bool {
    let mut parts = name.rsplitn(3, '.');
    let numeric =
        |s: Option<&str>| s.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    numeric(parts.next())
        && numeric(parts.next())
        && parts
            .next()
            .and_then(|head| head.strip_prefix('.'))
            .and_then(|head| head.strip_suffix(".tmp"))
            .is_some_and(|file| !file.is_empty())
}

fn replace_with(
    path: &Path,
    mode: Option<u32>,
    durable: bool,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // A device or a pipe (`-o /dev/null`, `/dev/stdout`) is written in place: renaming a
    // file over it would replace the device node itself.
    if let Ok(m) = std::fs::metadata(path) {
        if !m.is_file() && !m.is_dir() {
            let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
            return fill(&mut f);
        }
    }
    let tmp = temp_path(path);
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        if let Some(mode) = mode {
            options.mode(mode);
        }
        let mut f = options.open(&tmp)?;
        fill(&mut f)?;
        if let Some(mode) = mode {
            // Whatever the umask took away.
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    if durable {
        sync_dir(parent_dir(path));
    }
    Ok(())
}

/// Syncs a directory's entries (best effort: some filesystems refuse it).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {

    /// /dev/null was found replaced by a regular file on a machine that ran the tests: an
    /// atomic write renames over its destination, device or not.
    #[test]
    fn regression_a_device_is_written_in_place_not_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let d = tempfile::tempdir().unwrap();
        let null = d.path().join("null");
        let made = std::process::Command::new("mknod")
            .arg(&null)
            .args(["c", "1", "3"])
            .status()
            .is_ok_and(|s| s.success());
        if !made {
            eprintln!("skipped: mknod needs root");
            return;
        }
        write_atomic(&null, b"gone").unwrap();
        replace_atomic(&null, b"gone").unwrap();
        write_atomic_mode(&null, b"gone", 0o600).unwrap();
        let m = std::fs::metadata(&null).unwrap();
        assert!(
            m.file_type().is_char_device(),
            "{null:?} is no longer a device"
        );
    }

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_replaces_and_leaves_nothing_behind() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        write_atomic_mode(&p, b"three", 0o600).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        replace_atomic(&p, b"four").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"four");
        write_atomic_mode(&p, b"three", 0o600).unwrap();
        let q = d.path().join("b.txt");
        copy_atomic(&p, &q).unwrap();
        assert_eq!(std::fs::read(&q).unwrap(), b"three");
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn temporary_names_are_recognised() {
        let p = temp_path(Path::new("/x/fix.ko"));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(is_temp_name(name), "{name}");
        for other in [
            "fix.ko",
            ".fix.ko",
            ".kpatch-rs.lock",
            "fix.ko.sha256",
            ".tmp.1.2",
        ] {
            assert!(!is_temp_name(other), "{other}");
        }
    }

    #[test]
    fn a_failed_write_keeps_the_old_content() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a");
        write_atomic(&p, b"old").unwrap();
        // The source of a copy that cannot be read.
        assert!(copy_atomic(&d.path().join("missing"), &p).is_err());
        // A destination that is a directory: the rename fails.
        std::fs::create_dir(d.path().join("dir")).unwrap();
        std::fs::write(d.path().join("dir/x"), b"").unwrap();
        assert!(write_atomic(&d.path().join("dir"), b"new").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
