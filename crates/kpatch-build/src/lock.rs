//! An exclusive advisory lock (flock) on a file next to a tree, held for as long as a build
//! uses the tree. The kernel drops it when the process dies, however it dies.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{BuildError, Result};

#[derive(Debug)]
pub struct TreeLock {
    path: PathBuf,
    _lock: Flock<File>,
}

impl TreeLock {
    /// Waits until the lock at `path` is ours; `waiting` is called once if it is busy. A
    /// signal caught by [`crate::interrupt`] ends the wait with `Interrupted`.
    pub fn acquire(path: &Path, waiting: impl FnOnce()) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| BuildError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let open = || {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .map_err(|source| BuildError::Io {
                    path: path.to_path_buf(),
                    source,
                })
        };
        // Poll rather than block, so Ctrl-C (see `interrupt`) ends the wait.
        let mut told = Some(waiting);
        let lock = loop {
            match Flock::lock(open()?, FlockArg::LockExclusiveNonblock) {
                Ok(l) => break l,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    if let Some(w) = told.take() {
                        w();
                    }
                    crate::interrupt::check()?;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err((_, e)) => {
                    return Err(BuildError::Io {
                        path: path.to_path_buf(),
                        source: std::io::Error::from(e),
                    })
                }
            }
        };
        Ok(TreeLock {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_waits_until_first_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("tree.lock");
        let first = TreeLock::acquire(&p, || panic!("free lock reported busy")).unwrap();
        let p2 = p.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            let mut waited = false;
            let _second = TreeLock::acquire(&p2, || waited = true).unwrap();
            tx.send(waited).unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            rx.try_recv().is_err(),
            "second lock must block while the first is held"
        );
        drop(first);
        assert!(
            rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap(),
            "second caller was told it waits"
        );
        h.join().unwrap();
    }
}
