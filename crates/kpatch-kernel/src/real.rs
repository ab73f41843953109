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
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    let first = rec.lines().next().unwrap_or("");
                    if let Some((head, text)) = first.split_once(';') {
                        let seq = head.split(',').nth(1).and_then(|s| s.parse().ok());
                        if let Some(seq) = seq {
                            lines.push((seq, text.to_string()));
                        }
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
