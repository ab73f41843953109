//! An initramfs image in the cpio "newc" format (the SVR4 format with no CRC, magic
//! `070701`), written in Rust so no `cpio` binary is needed.
//!
//! Each entry is a 110-byte ASCII header (magic + 13 eight-digit hex fields: ino, mode,
//! uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize,
//! check), the NUL-terminated name padded to a multiple of 4, then the data padded to a
//! multiple of 4. The archive ends with an entry named `TRAILER!!!`. The kernel's unpacker
//! does not create missing parent directories, so every parent is emitted (in path order,
//! which puts parents first).

use crate::GuestError;
use std::collections::BTreeMap;
use std::path::Path;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

/// An initramfs under construction. Paths are absolute guest paths (`/bin/busybox`);
/// adding the same path twice replaces the earlier entry.
#[derive(Debug, Clone, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

fn norm(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

impl Initramfs {
    /// An empty image with the directories and `/dev/console` a minimal init needs.
    pub fn new() -> Self {
        let mut i = Initramfs::default();
        for d in [
            "/bin",
            "/sbin",
            "/usr/bin",
            "/usr/sbin",
            "/dev",
            "/proc",
            "/sys",
            "/tmp",
            "/lib/modules",
            "/root",
        ] {
            i.dir(d, 0o755);
        }
        i.char_dev("/dev/console", 0o600, 5, 1);
        i.char_dev("/dev/null", 0o666, 1, 3);
        i
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.entries.insert(
            norm(path),
            Entry::Dir {
                mode: mode & 0o7777,
            },
        );
        self
    }

    pub fn file(&mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) -> &mut Self {
        self.entries.insert(
            norm(path),
            Entry::File {
                mode: mode & 0o7777,
                data: data.into(),
            },
        );
        self
    }

    /// A file copied from the host (its content, with the given mode).
    pub fn host_file(
        &mut self,
        path: &str,
        mode: u32,
        host: &Path,
    ) -> Result<&mut Self, GuestError> {
        let data = std::fs::read(host).map_err(|e| GuestError::io(host, e))?;
        Ok(self.file(path, mode, data))
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entries.insert(
            norm(path),
            Entry::Symlink {
                target: target.to_string(),
            },
        );
        self
    }

    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> &mut Self {
        self.entries.insert(
            norm(path),
            Entry::CharDev {
                mode: mode & 0o7777,
                major,
                minor,
            },
        );
        self
    }

    /// `/init`, the script the kernel runs as PID 1 (render one with [`crate::TestScript`]).
    pub fn add_init(&mut self, script: &str) -> &mut Self {
        self.file("/init", 0o755, script.as_bytes())
    }

    /// Adds a kernel module as `/lib/modules/<name>.ko`, decompressing `.ko.xz` and
    /// `.ko.gz`. Returns the guest path.
    pub fn add_module(&mut self, host: &Path) -> Result<String, GuestError> {
        let (stem, data) = kpatch_target::modules::read_module(host)?;
        let guest = format!("/lib/modules/{stem}.ko");
        self.file(&guest, 0o644, data);
        Ok(guest)
    }

    /// The content of the regular file at `path`, if the image holds one.
    pub fn file_data(&self, path: &str) -> Option<&[u8]> {
        match self.entries.get(&norm(path)) {
            Some(Entry::File { data, .. }) => Some(data),
            _ => None,
        }
    }

    /// True when the image holds `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(&norm(path))
    }

    /// The archive bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // implied parent directories
        let mut all = self.entries.clone();
        for path in self.entries.keys() {
            let mut p = path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                all.entry(parent.to_string())
                    .or_insert(Entry::Dir { mode: 0o755 });
                p = parent;
            }
        }
        let mut out = Vec::new();
        let mut ino = 1u32;
        for (path, entry) in &all {
            if path.is_empty() {
                continue;
            }
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match entry {
                Entry::Dir { mode } => (S_IFDIR | mode, &[], (0, 0)),
                Entry::File { mode, data } => (S_IFREG | mode, data, (0, 0)),
                Entry::Symlink { target } => (S_IFLNK | 0o777, target.as_bytes(), (0, 0)),
                Entry::CharDev { mode, major, minor } => (S_IFCHR | mode, &[], (*major, *minor)),
            };
            let nlink = if matches!(entry, Entry::Dir { .. }) {
                2
            } else {
                1
            };
            write_entry(&mut out, ino, mode, nlink, rdev, path, data);
            ino += 1;
        }
        write_entry(&mut out, 0, 0, 1, (0, 0), "TRAILER!!!", &[]);
        out
    }

    pub fn write_to(&self, path: &Path) -> Result<(), GuestError> {
        std::fs::write(path, self.to_bytes()).map_err(|e| GuestError::io(path, e))
    }
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() & 3 != 0 {
        out.push(0);
    }
}

fn write_entry(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal newc reader for the tests: (name, mode, rdev, data) per entry.
    type Parsed = (String, u32, (u32, u32), Vec<u8>);

    fn parse(mut b: &[u8]) -> Vec<Parsed> {
        let total = b.len();
        let mut out = vec![];
        loop {
            assert_eq!(&b[..6], b"070701");
            let f = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[6 + i * 8..14 + i * 8]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, rmaj, rmin, namesize) =
                (f(1), f(6) as usize, f(9), f(10), f(11) as usize);
            let name = std::str::from_utf8(&b[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            assert_eq!(b[110 + namesize - 1], 0);
            let data_start = (110 + namesize).div_ceil(4) * 4;
            let data = b[data_start..data_start + size].to_vec();
            let next = (data_start + size).div_ceil(4) * 4;
            assert_eq!((total - b.len()) % 4, 0, "entries are 4-byte aligned");
            b = &b[next..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty());
                return out;
            }
            out.push((name, mode, (rmaj, rmin), data));
        }
    }

    #[test]
    fn writes_parseable_newc_with_parents_first() {
        let mut i = Initramfs::default();
        i.file("/a/b/c.txt", 0o644, "hello");
        i.symlink("/bin/sh", "busybox");
        i.char_dev("/dev/console", 0o600, 5, 1);
        let e = parse(&i.to_bytes());
        let names: Vec<_> = e.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "a",
                "a/b",
                "a/b/c.txt",
                "bin",
                "bin/sh",
                "dev",
                "dev/console"
            ]
        );
        assert_eq!(e[0].1, S_IFDIR | 0o755);
        assert_eq!(
            (e[2].1, e[2].3.as_slice()),
            (S_IFREG | 0o644, &b"hello"[..])
        );
        assert_eq!(
            (e[4].1, e[4].3.as_slice()),
            (S_IFLNK | 0o777, &b"busybox"[..])
        );
        assert_eq!((e[6].1, e[6].2), (S_IFCHR | 0o600, (5, 1)));
    }

    #[test]
    fn matches_gnu_cpio_when_available() {
        // Cross-check with the cpio tool if the host has it: it must list our entries.
        let Ok(out) = std::process::Command::new("cpio").arg("--version").output() else {
            eprintln!("skipped: no cpio binary to cross-check with");
            return;
        };
        assert!(out.status.success());
        let mut i = Initramfs::new();
        i.file("/init", 0o755, "#!/bin/sh\n");
        i.symlink("/bin/sh", "busybox");
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("x.cpio");
        i.write_to(&img).unwrap();
        let list = std::process::Command::new("cpio")
            .args(["-itv", "-F"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            list.status.success(),
            "{}",
            String::from_utf8_lossy(&list.stderr)
        );
        let text = String::from_utf8_lossy(&list.stdout);
        assert!(
            text.lines()
                .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with(" init")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("lrwxrwxrwx") && l.ends_with("bin/sh -> busybox")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("crw-------") && l.ends_with("dev/console")),
            "{text}"
        );
    }

    #[test]
    fn replaces_and_normalises_paths() {
        let mut i = Initramfs::default();
        i.file("/x//y", 0o600, "1");
        i.file("x/./y", 0o644, "2");
        let e = parse(&i.to_bytes());
        assert_eq!(e.len(), 2);
        assert_eq!((e[1].0.as_str(), e[1].3.as_slice()), ("x/y", &b"2"[..]));
        assert!(i.contains("/x/y"));
    }

    #[test]
    fn add_module_decompresses_xz_and_rejects_non_modules() {
        let dir = tempfile::tempdir().unwrap();
        let elf = b"\x7fELF\x02\x01\x01 module body".to_vec();
        let mut enc = xz2::write::XzEncoder::new(Vec::new(), 1);
        std::io::Write::write_all(&mut enc, &elf).unwrap();
        let p = dir.path().join("ext4.ko.xz");
        std::fs::write(&p, enc.finish().unwrap()).unwrap();
        let mut i = Initramfs::new();
        assert_eq!(i.add_module(&p).unwrap(), "/lib/modules/ext4.ko");
        let e = parse(&i.to_bytes());
        let m = e.iter().find(|x| x.0 == "lib/modules/ext4.ko").unwrap();
        assert_eq!(m.3, elf);

        let bad = dir.path().join("notes.txt");
        std::fs::write(&bad, "x").unwrap();
        assert!(i
            .add_module(&bad)
            .unwrap_err()
            .to_string()
            .contains("notes.txt"));
        let fake = dir.path().join("fake.ko");
        std::fs::write(&fake, "not elf").unwrap();
        assert!(i
            .add_module(&fake)
            .unwrap_err()
            .to_string()
            .contains("not an ELF"));
    }
}
