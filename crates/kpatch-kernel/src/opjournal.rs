//! The journal of a load or unload in progress, so that a kpatch-rs killed in the middle (even
//! by SIGKILL, in lazy mode where no watchdog runs) leaves a kernel the next one can put right.
//!
//! It is the freeze watchdog's journal ([`crate::watchdog::Record`] lines, each written before
//! the step it names) kept in a file instead of a pipe: `/run/kpatch-rs/op.<pid>.journal`,
//! locked (`flock`) by its process for as long as it runs. The next `load` or `unload` takes
//! over every journal whose lock it can get, since its process is gone, and undoes what it left
//! with [`crate::watchdog::recover`], as the watchdog would have: a load is reverted (the patch
//! disabled and its module removed), an unload whose patch was still switching is enabled
//! again, an unload whose patch was already gone has its module removed. `kpatch-rs list`
//! only reads the journals ([`pending`]). `/run` is emptied at boot, with the kernel state
//! the journals describe.

use crate::error::KernelError;
use crate::sys::Kernel;
use crate::watchdog::Record;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the journals are (through [`Kernel::runtime_path`]).
pub const DIR: &str = "/run/kpatch-rs";

/// The journal of this process's load or unload.
pub struct OpJournal {
    file: Flock<File>,
    path: PathBuf,
}

/// A journal of another process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pending {
    pub pid: u32,
    /// Still running (its lock is held); else it was killed.
    pub running: bool,
    /// `load` or `unload`, and the patch, from its last unfinished record (none: it had not
    /// started anything, or had completed it).
    pub operation: Option<(String, String)>,
    #[serde(skip)]
    pub records: Vec<Record>,
}

impl Pending {
    /// One line for `kpatch-rs list`.
    pub fn describe(&self) -> String {
        let what = match &self.operation {
            Some((op, patch)) => format!("{op} of {patch}"),
            None => "a load or unload".into(),
        };
        if self.running {
            format!("kpatch-rs (pid {}) is running: {what}", self.pid)
        } else {
            format!(
                "kpatch-rs (pid {}) was killed during the {what}; the next `kpatch-rs load` or \
                 `unload` undoes what it left",
                self.pid
            )
        }
    }
}

/// The operation of the last record that began one and was not completed.
fn operation(records: &[Record]) -> Option<(String, String)> {
    records.iter().rev().find_map(|r| match r {
        Record::Loading(n) => Some(Some(("load".to_string(), n.clone()))),
        Record::Disabling(n) => Some(Some(("unload".to_string(), n.clone()))),
        Record::Completed(_) | Record::Done => Some(None),
        _ => None,
    })?
}

fn journals(k: &dyn Kernel) -> Vec<(u32, PathBuf)> {
    let dir = k.runtime_path(Path::new(DIR));
    let mut out: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix("op.")?
                .strip_suffix(".journal")?
                .parse()
                .ok()?;
            Some((pid, e.path()))
        })
        .collect();
    out.sort();
    out
}

fn read_records(path: &Path) -> Vec<Record> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(Record::parse)
        .collect()
}

/// Every journal there is, running or left by a killed kpatch-rs (read only; for `list`).
pub fn pending(k: &dyn Kernel) -> Vec<Pending> {
    journals(k)
        .into_iter()
        .filter_map(|(pid, path)| {
            let f = File::open(&path).ok()?;
            let running = match Flock::lock(f, FlockArg::LockSharedNonblock) {
                Ok(_) => false,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => true,
                Err(_) => false,
            };
            let records = read_records(&path);
            let operation = operation(&records);
            // A finished journal is removed by its process; one left empty means nothing began.
            (running || operation.is_some()).then_some(Pending {
                pid,
                running,
                operation,
                records,
            })
        })
        .collect()
}

impl OpJournal {
    /// Starts this process's journal, after taking over the journals of killed processes:
    /// returns, for each of those, its records (to be handed to
    /// [`crate::watchdog::recover`]); their files are removed once read.
    pub fn begin(k: &dyn Kernel) -> Result<(OpJournal, Vec<Pending>), KernelError> {
        let dir = k.runtime_path(Path::new(DIR));
        std::fs::create_dir_all(&dir).map_err(|e| KernelError::io(&dir, e))?;
        let mut left = Vec::new();
        for (pid, path) in journals(k) {
            let Ok(f) = File::open(&path) else { continue };
            let Ok(lock) = Flock::lock(f, FlockArg::LockExclusiveNonblock) else {
                continue; // its process runs
            };
            // Another process may have taken it over and removed it meanwhile.
            if lock.metadata().map(|m| m.nlink()).unwrap_or(0) == 0 {
                continue;
            }
            let records = read_records(&path);
            let _ = std::fs::remove_file(&path);
            let operation = operation(&records);
            if operation.is_some() {
                left.push(Pending {
                    pid,
                    running: false,
                    operation,
                    records,
                });
            }
        }
        let path = dir.join(format!("op.{}.journal", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| KernelError::io(&path, e))?;
        let file = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| KernelError::io(&path, e.into()))?;
        Ok((OpJournal { file, path }, left))
    }

    /// Appends a record (on disk before this returns: it precedes the step it names).
    pub fn record(&mut self, r: &Record) {
        let _ = writeln!(&mut *self.file, "{}", r.line()).and_then(|()| self.file.sync_data());
    }

    /// The work is over: the journal goes.
    pub fn finish(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeKernel;

    fn put(k: &FakeKernel, pid: u32, lines: &str) -> PathBuf {
        let dir = k.runtime_path(Path::new(DIR));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("op.{pid}.journal"));
        std::fs::write(&p, lines).unwrap();
        p
    }

    #[test]
    fn journals_of_dead_processes_are_taken_over_and_live_ones_left_alone() {
        let k = FakeKernel::new("6.1.0-50-amd64").unwrap();
        let dead = put(&k, 4001, "loading fix_a\n");
        put(&k, 4002, "disabling fix_b\ncompleted fix_b\n");
        let live = put(&k, 4003, "loading fix_c\n");
        let held = Flock::lock(File::open(&live).unwrap(), FlockArg::LockExclusive).unwrap();
        let p = pending(&k);
        assert_eq!(p.len(), 2, "a completed journal is nothing pending: {p:?}");
        assert_eq!(
            (p[0].pid, p[0].running, p[0].operation.clone()),
            (4001, false, Some(("load".into(), "fix_a".into())))
        );
        assert!(p[0]
            .describe()
            .contains("was killed during the load of fix_a"));
        assert_eq!((p[1].pid, p[1].running), (4003, true));
        assert!(p[1].describe().contains("is running: load of fix_c"));

        let (mut mine, left) = OpJournal::begin(&k).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].records, [Record::Loading("fix_a".into())]);
        assert!(!dead.exists() && live.exists());
        mine.record(&Record::Disabling("fix_d".into()));
        let me = pending(&k)
            .into_iter()
            .find(|p| p.pid == std::process::id())
            .unwrap();
        assert!(me.running);
        mine.finish();
        drop(held);
        assert_eq!(pending(&k).len(), 1, "only fix_c's, now not running");
    }
}
