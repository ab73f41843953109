use crate::sys::{Kernel, Sig};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

/// The running kernel, through the real syscalls and file systems rooted at `/`.
pub struct RealKernel {
    start: Instant,
}

impl RealKernel {
    pub fn new() -> Self {
        RealKernel {
            start: Instant::now(),
        }
    }
}

impl Default for RealKernel {
    fn default() -> Self {
        Self::new()
    }
}

/// One `/dev/kmsg` record, `prio,seq,usec,flags[,...];text` plus continuation lines, as
/// `(seq, text)`.
fn parse_kmsg_record(rec: &str) -> Option<(u64, String)> {
    let first = rec.lines().next()?;
    let (head, text) = first.split_once(';')?;
    let seq = head.split(',').nth(1)?.parse().ok()?;
    Some((seq, text.to_string()))
}

impl Kernel for RealKernel {
    fn read(&self, path: &Path) -> io::Result<String> {
        let bytes = std::fs::read(path)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn write(&self, path: &Path, data: &str) -> io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(data.as_bytes())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn finit_module(&self, image: &File, params: &str) -> Result<(), nix::errno::Errno> {
        let params = CString::new(params).map_err(|_| nix::errno::Errno::EINVAL)?;
        nix::kmod::finit_module(image, &params, nix::kmod::ModuleInitFlags::empty())
    }

    fn delete_module(&self, name: &str) -> Result<(), nix::errno::Errno> {
        let name = CString::new(name).map_err(|_| nix::errno::Errno::EINVAL)?;
        nix::kmod::delete_module(&name, nix::kmod::DeleteModuleFlags::O_NONBLOCK)
    }

    fn kill(&self, pid: i32, sig: Sig) -> Result<(), nix::errno::Errno> {
        let sig = match sig {
            Sig::Stop => nix::sys::signal::Signal::SIGSTOP,
            Sig::Cont => nix::sys::signal::Signal::SIGCONT,
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
    }

    fn kernel_log(&self) -> io::Result<Vec<(u64, String)>> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open("/dev/kmsg")?;
        let mut lines = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            // One record per read: "prio,seq,usec,flags;text\n" and continuation lines.
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(rec) = parse_kmsg_record(&String::from_utf8_lossy(&buf[..n])) {
                        lines.push(rec);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // EPIPE: the record was overwritten while we read; go on with the next one.
                Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(lines)
    }

    fn release(&self) -> io::Result<String> {
        Ok(std::fs::read_to_string("/proc/sys/kernel/osrelease")?
            .trim()
            .to_string())
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_records() {
        assert_eq!(
            parse_kmsg_record(
                "4,1234,5678901,-;fix: disagrees about version of symbol x\n SUBSYSTEM=y\n"
            ),
            Some((1234, "fix: disagrees about version of symbol x".into()))
        );
        assert_eq!(parse_kmsg_record("garbage"), None);
    }

    #[test]
    fn reads_the_host_proc() {
        let k = RealKernel::new();
        let me = std::process::id().to_string();
        assert!(k.list_dir(Path::new("/proc")).unwrap().contains(&me));
        let comm = k.read(&Path::new("/proc").join(&me).join("comm")).unwrap();
        assert!(!comm.trim().is_empty());
        let release = k.release().unwrap();
        assert_eq!(
            release,
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap()
                .trim()
        );
        let t0 = k.now();
        k.sleep(Duration::from_millis(5));
        assert!(k.now() >= t0 + Duration::from_millis(5));
        // No such process: kill reports ESRCH rather than signalling anything.
        assert_eq!(k.kill(i32::MAX, Sig::Cont), Err(nix::errno::Errno::ESRCH));
    }
}
