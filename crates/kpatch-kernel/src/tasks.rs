//! Finding the tasks that hold a livepatch transition open (`/proc/<pid>/task/<tid>/patch_state`).

use crate::sys::{read_trim, Kernel};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// `PF_KTHREAD` in the flags field of `/proc/<pid>/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// A task that is not yet in the state the transition is heading to.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Blocker {
    /// Thread group id (the process).
    pub pid: i32,
    /// Thread id.
    pub tid: i32,
    pub comm: String,
    pub kthread: bool,
    /// 0 (unpatched) or 1 (patched): the state the task is still in.
    pub patch_state: i32,
    /// `/proc/<pid>/task/<tid>/stack`, when readable (root, `CONFIG_STACKTRACE`).
    pub stack: Option<Vec<String>>,
}

fn task_dir(pid: i32, tid: i32) -> PathBuf {
    Path::new("/proc")
        .join(pid.to_string())
        .join("task")
        .join(tid.to_string())
}

fn numeric(names: Vec<String>) -> Vec<i32> {
    names.into_iter().filter_map(|n| n.parse().ok()).collect()
}

/// Tasks whose `patch_state` is neither -1 (no transition) nor `target` (1 when patching,
/// 0 when unpatching). Tasks that exit while being read are skipped.
pub fn find_blockers(k: &dyn Kernel, target: i32, with_stacks: bool) -> Vec<Blocker> {
    let pids = numeric(k.list_dir(Path::new("/proc")).unwrap_or_default());
    find_blockers_among(k, &pids, target, with_stacks)
}

/// [`find_blockers`] among the tasks of processes `pids` only.
pub fn find_blockers_among(
    k: &dyn Kernel,
    pids: &[i32],
    target: i32,
    with_stacks: bool,
) -> Vec<Blocker> {
    let mut out = Vec::new();
    for &pid in pids {
        let tdir = Path::new("/proc").join(pid.to_string()).join("task");
        let tids = match k.list_dir(&tdir) {
            Ok(t) => numeric(t),
            Err(_) => vec![pid],
        };
        for tid in tids {
            let dir = task_dir(pid, tid);
            let Ok(state) = read_trim(k, &dir.join("patch_state")) else {
                continue;
            };
            let Ok(state) = state.parse::<i32>() else {
                continue;
            };
            if state == -1 || state == target {
                continue;
            }
            out.push(describe(k, pid, tid, state, with_stacks));
        }
    }
    out
}

fn describe(k: &dyn Kernel, pid: i32, tid: i32, state: i32, with_stacks: bool) -> Blocker {
    let dir = task_dir(pid, tid);
    let comm = read_trim(k, &dir.join("comm")).unwrap_or_else(|_| "?".into());
    let kthread = read_trim(k, &dir.join("stat"))
        .ok()
        .and_then(|s| stat_flags(&s))
        .map(|f| f & PF_KTHREAD != 0)
        .unwrap_or(false);
    let stack = if with_stacks {
        k.read(&dir.join("stack")).ok().map(|s| {
            s.lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
    } else {
        None
    };
    Blocker {
        pid,
        tid,
        comm,
        kthread,
        patch_state: state,
        stack,
    }
}

/// Field 9 (`flags`) of `/proc/<pid>/stat`; the comm field (2) may contain spaces and parens,
/// so count from the last `)`.
fn stat_flags(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest: " state ppid pgrp session tty_nr tpgid flags ..." → flags is the 7th word.
    rest.split_whitespace().nth(6)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_flags_after_comm_with_spaces() {
        let s = "42 (my (odd) name) S 2 0 0 0 -1 2129984 0 0 0 0 0 0";
        let flags = stat_flags(s).unwrap();
        assert_eq!(flags, 2129984);
        assert_ne!(flags & PF_KTHREAD, 0);
        assert_eq!(stat_flags("garbage"), None);
    }
}
