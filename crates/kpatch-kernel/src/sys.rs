use std::fs::File;
use std::io;
use std::path::Path;
use std::time::Duration;

/// Where the livepatch core publishes its patches.
pub const LIVEPATCH_DIR: &str = "/sys/kernel/livepatch";

/// The signals the management commands send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    Stop,
    Cont,
}

/// Everything that touches the running kernel. Paths are absolute kernel paths (`/sys/...`,
/// `/proc/...`); an implementation may root them elsewhere (see [`crate::FakeKernel`]).
pub trait Kernel {
    /// Read a whole sysfs/procfs file as text.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Write to a sysfs file (a single `write(2)`, as `echo 1 > file` does).
    fn write(&self, path: &Path, data: &str) -> io::Result<()>;
    /// The entry names of a directory, sorted.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Whether the path exists.
    fn exists(&self, path: &Path) -> bool;
    /// `mkdir(2)` (a cgroup, under `/sys/fs/cgroup`).
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// `rmdir(2)` (an empty cgroup).
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// `finit_module(2)` on an open, uncompressed module image.
    fn finit_module(&self, image: &File, params: &str) -> Result<(), nix::errno::Errno>;
    /// `delete_module(2)` with `O_NONBLOCK`.
    fn delete_module(&self, name: &str) -> Result<(), nix::errno::Errno>;
    /// `kill(2)` on one task.
    fn kill(&self, pid: i32, sig: Sig) -> Result<(), nix::errno::Errno>;
    /// The kernel log's buffered messages as `(sequence number, text)` (the `/dev/kmsg`
    /// records), oldest first.
    fn kernel_log(&self) -> io::Result<Vec<(u64, String)>>;
    /// `uname -r` of the running kernel.
    fn release(&self) -> io::Result<String>;
    /// A monotonic clock.
    fn now(&self) -> Duration;
    /// Wait; the fake advances its simulated kernel instead.
    fn sleep(&self, d: Duration);
    /// Where a file of the running system's `/run` is (state that lives as long as the running
    /// kernel, such as [`crate::opjournal`]'s); the fake keeps it in its tree.
    fn runtime_path(&self, path: &Path) -> std::path::PathBuf {
        path.to_path_buf()
    }
}

/// Read a sysfs file and trim the trailing newline.
pub(crate) fn read_trim(k: &dyn Kernel, path: &Path) -> io::Result<String> {
    Ok(k.read(path)?.trim_end().to_string())
}
