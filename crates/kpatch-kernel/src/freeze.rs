//! Freezing user space around a livepatch transition (kpatch's consistency model beside the
//! kernel's per-task one).
//!
//! What is frozen: every user task except PID 1 and the tasks named in
//! [`FreezeOptions::exempt`] (kpatch-rs itself and its watchdog). Kernel threads and idle tasks
//! are never frozen: the kernel switches them lazily.
//!
//! How:
//! - **cgroup v2** (mounted at `/sys/fs/cgroup`): the exempt tasks are moved into a cgroup of
//!   their own, `/sys/fs/cgroup/kpatch-rs.exempt`, then `1` is written to `cgroup.freeze` of each
//!   top-level cgroup (freezing its whole subtree) and `cgroup.events` is polled for `frozen 1`.
//!   `init.scope` (PID 1) is left alone, and so is any cgroup holding a kernel thread (it could
//!   never report `frozen 1`): its children are frozen instead, and its own user tasks are
//!   stopped as below.
//! - **signals**, for user tasks outside any freezable cgroup (all of them without cgroup v2, as
//!   in a busybox initramfs): `SIGSTOP`, then `/proc/<pid>/stat` is polled for state `T`. A task
//!   that was already stopped is neither stopped nor continued.
//!
//! Every action is announced through a [`FreezeLog`] before it is taken, so a watchdog that
//! outlives the caller can undo exactly what was done (see [`crate::watchdog`]). Whatever
//! happens, [`freeze`] returns with nothing frozen when it fails; [`thaw`] undoes a freeze.

use crate::sys::{read_trim, Kernel, Sig};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where cgroup v2 is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The cgroup the exempt tasks wait in, under [`CGROUP_ROOT`].
pub const EXEMPT_CGROUP: &str = "kpatch-rs.exempt";
/// `PF_KTHREAD` in the flags of `/proc/<pid>/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Which consistency model a load or unload uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FreezeMode {
    /// The kernel's: each task switches on its own (signalled after a wait). No pause.
    #[default]
    Lazy,
    /// kpatch's: freeze user space, switch, thaw. The patch is live for every user task at once.
    All,
    /// Lazy first; after the wait, freeze only the user tasks that still block.
    Blockers,
}

/// Options for [`freeze`].
#[derive(Debug, Clone)]
pub struct FreezeOptions {
    /// Give up (thaw, and fail naming the tasks) when user space is not frozen by then.
    pub timeout: Duration,
    /// Interval between polls.
    pub poll: Duration,
    /// Never frozen (kpatch-rs and its watchdog).
    pub exempt: Vec<i32>,
    /// Use the cgroup v2 freezer where it is mounted (else only signals).
    pub cgroups: bool,
}

impl Default for FreezeOptions {
    fn default() -> Self {
        FreezeOptions {
            timeout: Duration::from_secs(2),
            poll: Duration::from_millis(2),
            exempt: Vec::new(),
            cgroups: true,
        }
    }
}

/// One freeze action, announced before it is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreezeAction {
    /// The exempt cgroup is created.
    ExemptCgroup(PathBuf),
    /// Task `pid` is moved out of cgroup `from` (a path under [`CGROUP_ROOT`]).
    Moved { pid: i32, from: PathBuf },
    /// `1` is written to `<cgroup>/cgroup.freeze`.
    FrozeCgroup(PathBuf),
    /// `SIGSTOP` is sent to `pid`.
    Stopped(i32),
}

/// Receives every [`FreezeAction`] before it happens.
pub trait FreezeLog {
    fn record(&mut self, action: &FreezeAction);
}

/// A log that keeps nothing.
pub struct NoLog;
impl FreezeLog for NoLog {
    fn record(&mut self, _: &FreezeAction) {}
}

/// A user task that did not freeze in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unfrozen {
    pub pid: i32,
    pub comm: String,
    /// The `/proc/<pid>/stat` state letter (`D`: uninterruptible sleep, cannot be frozen).
    pub state: char,
    pub stack: Option<Vec<String>>,
}

/// Why a freeze failed. User space is thawed again when this is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreezeError {
    /// Not every task froze within the timeout.
    Timeout {
        after: Duration,
        unfrozen: Vec<Unfrozen>,
    },
    /// A cgroup or signal operation failed.
    Failed { what: String, reason: String },
}

impl std::fmt::Display for FreezeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FreezeError::Timeout { after, unfrozen } => {
                write!(
                    f,
                    "user space did not freeze within {:.1}s; not frozen:",
                    after.as_secs_f64()
                )?;
                for u in unfrozen {
                    write!(f, " {} ({}, state {})", u.pid, u.comm, u.state)?;
                }
                Ok(())
            }
            FreezeError::Failed { what, reason } => write!(f, "{what}: {reason}"),
        }
    }
}

/// A frozen user space, to be given to [`thaw`].
#[derive(Debug, Clone, Default)]
pub struct Frozen {
    pub exempt_cgroup: Option<PathBuf>,
    /// Exempt tasks moved, and the cgroup each came from.
    pub moved: Vec<(i32, PathBuf)>,
    pub cgroups: Vec<PathBuf>,
    pub stopped: Vec<i32>,
    /// User tasks frozen (by either method).
    pub tasks: usize,
    /// Their process ids.
    pub pids: Vec<i32>,
    /// When the first task was frozen (the pause begins: finding the tasks comes before) and
    /// when everything was ([`Kernel::now`]).
    pub started: Duration,
    pub frozen_at: Duration,
}

/// One process as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub kthread: bool,
}

/// Parses `/proc/<pid>/stat` (the comm may hold spaces and parentheses).
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let state = rest.first()?.chars().next()?;
    let flags: u64 = rest.get(6)?.parse().ok()?;
    Some(ProcStat {
        pid,
        comm,
        state,
        kthread: flags & PF_KTHREAD != 0,
    })
}

fn stat(k: &dyn Kernel, pid: i32) -> Option<ProcStat> {
    parse_stat(
        &k.read(&Path::new("/proc").join(pid.to_string()).join("stat"))
            .ok()?,
    )
}

fn pids(k: &dyn Kernel) -> Vec<i32> {
    k.list_dir(Path::new("/proc"))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// The cgroup (v2) of `pid`, as a path under [`CGROUP_ROOT`].
fn cgroup_of(k: &dyn Kernel, pid: i32) -> Option<PathBuf> {
    let text = k
        .read(&Path::new("/proc").join(pid.to_string()).join("cgroup"))
        .ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    Some(Path::new(CGROUP_ROOT).join(rel.trim_start_matches('/')))
}

/// Whether cgroup v2 is mounted at [`CGROUP_ROOT`].
pub fn cgroup2_available(k: &dyn Kernel) -> bool {
    k.exists(&Path::new(CGROUP_ROOT).join("cgroup.procs"))
        && !k.exists(&Path::new(CGROUP_ROOT).join("tasks"))
}

fn failed(what: impl Into<String>, e: impl std::fmt::Display) -> FreezeError {
    FreezeError::Failed {
        what: what.into(),
        reason: e.to_string(),
    }
}

/// Freezes every user task but PID 1 and `opts.exempt` (see the module documentation).
pub fn freeze(
    k: &dyn Kernel,
    opts: &FreezeOptions,
    log: &mut dyn FreezeLog,
) -> Result<Frozen, FreezeError> {
    let mut frozen = Frozen {
        started: k.now(),
        ..Frozen::default()
    };
    match freeze_into(k, opts, log, &mut frozen) {
        Ok(()) => {
            frozen.frozen_at = k.now();
            Ok(frozen)
        }
        Err(e) => {
            thaw(k, &frozen);
            Err(e)
        }
    }
}

fn freeze_into(
    k: &dyn Kernel,
    opts: &FreezeOptions,
    log: &mut dyn FreezeLog,
    frozen: &mut Frozen,
) -> Result<(), FreezeError> {
    let all: Vec<ProcStat> = pids(k).into_iter().filter_map(|p| stat(k, p)).collect();
    let spared = |p: &ProcStat| p.kthread || p.pid == 1 || opts.exempt.contains(&p.pid);
    let mut by_signal: Vec<i32> = Vec::new();
    if opts.cgroups && cgroup2_available(k) {
        let root = PathBuf::from(CGROUP_ROOT);
        let exempt = root.join(EXEMPT_CGROUP);
        if !k.exists(&exempt) {
            log.record(&FreezeAction::ExemptCgroup(exempt.clone()));
            k.mkdir(&exempt)
                .map_err(|e| failed(format!("creating {}", exempt.display()), e))?;
            frozen.exempt_cgroup = Some(exempt.clone());
        }
        for &pid in &opts.exempt {
            let Some(from) = cgroup_of(k, pid) else {
                continue;
            };
            if from == exempt {
                continue;
            }
            log.record(&FreezeAction::Moved {
                pid,
                from: from.clone(),
            });
            k.write(&exempt.join("cgroup.procs"), &pid.to_string())
                .map_err(|e| failed(format!("moving {pid} into {}", exempt.display()), e))?;
            frozen.moved.push((pid, from));
        }
        // Cgroups that must not be frozen whole: those holding PID 1, an exempt task or a
        // kernel thread, and every ancestor of one.
        let mut pinned: Vec<PathBuf> = vec![exempt.clone()];
        for p in all.iter().filter(|p| p.kthread || p.pid == 1) {
            if let Some(cg) = cgroup_of(k, p.pid) {
                pinned.push(cg);
            }
        }
        let pinned_below = |cg: &Path| pinned.iter().any(|p| p.starts_with(cg));
        // First the plan (nothing is frozen yet, so finding the tasks lengthens no pause)...
        let mut stack = vec![root.clone()];
        let mut pinned_nodes = Vec::new();
        let mut to_freeze = Vec::new();
        while let Some(cg) = stack.pop() {
            if cg != root && !pinned_below(&cg) {
                to_freeze.push(cg);
                continue;
            }
            pinned_nodes.push(cg.clone());
            for child in k.list_dir(&cg).unwrap_or_default() {
                let c = cg.join(&child);
                if k.exists(&c.join("cgroup.procs")) && c != exempt {
                    stack.push(c);
                }
            }
        }
        // User tasks directly in a pinned cgroup are stopped by signal.
        for p in all.iter().filter(|p| !spared(p)) {
            if cgroup_of(k, p.pid).is_none_or(|cg| pinned_nodes.contains(&cg)) {
                by_signal.push(p.pid);
            }
        }
        // ...then the freeze, all at once.
        for cg in to_freeze {
            log.record(&FreezeAction::FrozeCgroup(cg.clone()));
            if frozen.cgroups.is_empty() {
                frozen.started = k.now();
            }
            k.write(&cg.join("cgroup.freeze"), "1")
                .map_err(|e| failed(format!("freezing {}", cg.display()), e))?;
            frozen.cgroups.push(cg);
        }
    } else {
        by_signal = all.iter().filter(|p| !spared(p)).map(|p| p.pid).collect();
    }
    let in_cgroups: Vec<i32> = all
        .iter()
        .filter(|p| !spared(p) && !by_signal.contains(&p.pid))
        .map(|p| p.pid)
        .collect();
    frozen.tasks = in_cgroups.len();
    frozen.pids = in_cgroups;
    stop_tasks(k, &by_signal, log, frozen)?;
    wait_frozen(k, opts, frozen)
}

/// Stops `pids` by signal (those not already stopped), recording them in `frozen`.
fn stop_tasks(
    k: &dyn Kernel,
    pids: &[i32],
    log: &mut dyn FreezeLog,
    frozen: &mut Frozen,
) -> Result<(), FreezeError> {
    for &pid in pids {
        match stat(k, pid) {
            Some(s) if matches!(s.state, 'T' | 't') => continue,
            None => continue,
            Some(_) => {}
        }
        log.record(&FreezeAction::Stopped(pid));
        if frozen.cgroups.is_empty() && frozen.stopped.is_empty() {
            frozen.started = k.now();
        }
        match k.kill(pid, Sig::Stop) {
            Ok(()) => {
                frozen.stopped.push(pid);
                frozen.pids.push(pid);
                frozen.tasks += 1;
            }
            Err(nix::errno::Errno::ESRCH) => {} // exited meanwhile
            Err(e) => return Err(failed(format!("SIGSTOP to {pid}"), e)),
        }
    }
    Ok(())
}

/// Freezes just `pids` (user tasks that block a transition), by signal.
pub fn freeze_tasks(
    k: &dyn Kernel,
    pids: &[i32],
    opts: &FreezeOptions,
    log: &mut dyn FreezeLog,
) -> Result<Frozen, FreezeError> {
    let mut frozen = Frozen {
        started: k.now(),
        ..Frozen::default()
    };
    let r = stop_tasks(k, pids, log, &mut frozen).and_then(|()| wait_frozen(k, opts, &mut frozen));
    match r {
        Ok(()) => {
            frozen.frozen_at = k.now();
            Ok(frozen)
        }
        Err(e) => {
            thaw(k, &frozen);
            Err(e)
        }
    }
}

fn wait_frozen(
    k: &dyn Kernel,
    opts: &FreezeOptions,
    frozen: &mut Frozen,
) -> Result<(), FreezeError> {
    let start = k.now();
    loop {
        let cgroups_done = frozen.cgroups.iter().all(|cg| {
            read_trim(k, &cg.join("cgroup.events"))
                .is_ok_and(|t| t.lines().any(|l| l.trim() == "frozen 1"))
        });
        let stopped_done = frozen
            .stopped
            .iter()
            .all(|&p| stat(k, p).is_none_or(|s| matches!(s.state, 'T' | 't' | 'Z' | 'X')));
        if cgroups_done && stopped_done {
            return Ok(());
        }
        let after = k.now().saturating_sub(start);
        if after >= opts.timeout {
            return Err(FreezeError::Timeout {
                after,
                unfrozen: unfrozen(k, frozen),
            });
        }
        k.sleep(opts.poll);
    }
}

/// The tasks that hold a freeze back: stopped ones not in `T`, and in the frozen cgroups every
/// task that is running or in uninterruptible sleep.
fn unfrozen(k: &dyn Kernel, frozen: &Frozen) -> Vec<Unfrozen> {
    let mut pids: Vec<i32> = frozen
        .stopped
        .iter()
        .copied()
        .filter(|&p| stat(k, p).is_some_and(|s| !matches!(s.state, 'T' | 't')))
        .collect();
    for cg in &frozen.cgroups {
        let mut stack = vec![cg.clone()];
        while let Some(c) = stack.pop() {
            for line in k.read(&c.join("cgroup.procs")).unwrap_or_default().lines() {
                if let Ok(p) = line.trim().parse::<i32>() {
                    if stat(k, p).is_some_and(|s| matches!(s.state, 'D' | 'R')) {
                        pids.push(p);
                    }
                }
            }
            for child in k.list_dir(&c).unwrap_or_default() {
                if k.exists(&c.join(&child).join("cgroup.procs")) {
                    stack.push(c.join(child));
                }
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter()
        .filter_map(|p| {
            let s = stat(k, p)?;
            let stack = k
                .read(
                    &Path::new("/proc")
                        .join(p.to_string())
                        .join("task")
                        .join(p.to_string())
                        .join("stack"),
                )
                .ok()
                .map(|t| {
                    t.lines()
                        .map(|l| l.trim().to_string())
                        .filter(|l| !l.is_empty())
                        .collect()
                });
            Some(Unfrozen {
                pid: p,
                comm: s.comm,
                state: s.state,
                stack,
            })
        })
        .collect()
}

/// What a thaw could not undo, as messages (empty when everything was thawed).
pub fn thaw(k: &dyn Kernel, frozen: &Frozen) -> Vec<String> {
    let mut errors = thaw_tasks(k, frozen);
    errors.extend(release_exempt(k, frozen));
    errors
}

/// Thaws the frozen cgroups and continues the stopped tasks: the end of the pause.
pub fn thaw_tasks(k: &dyn Kernel, frozen: &Frozen) -> Vec<String> {
    let mut errors = Vec::new();
    for cg in frozen.cgroups.iter().rev() {
        if let Err(e) = k.write(&cg.join("cgroup.freeze"), "0") {
            if k.exists(cg) {
                errors.push(format!("thawing {}: {e}", cg.display()));
            }
        }
    }
    for &pid in &frozen.stopped {
        match k.kill(pid, Sig::Cont) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => errors.push(format!("SIGCONT to {pid}: {e}")),
        }
    }
    errors
}

/// Moves the exempt tasks back to their cgroups and removes the exempt cgroup.
pub fn release_exempt(k: &dyn Kernel, frozen: &Frozen) -> Vec<String> {
    let mut errors = Vec::new();
    for (pid, from) in &frozen.moved {
        // Back where it was; a task that exited is gone from the exempt group anyway.
        if let Err(e) = k.write(&from.join("cgroup.procs"), &pid.to_string()) {
            if stat(k, *pid).is_some() && k.exists(from) {
                errors.push(format!("moving {pid} back to {}: {e}", from.display()));
            }
        }
    }
    if let Some(cg) = &frozen.exempt_cgroup {
        if let Err(e) = k.rmdir(cg) {
            errors.push(format!("removing {}: {e}", cg.display()));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let s = parse_stat("42 (my (odd) name) T 2 0 0 0 -1 2129984 0 0 0 0 0 0").unwrap();
        assert_eq!(
            (s.pid, s.comm.as_str(), s.state, s.kthread),
            (42, "my (odd) name", 'T', true)
        );
        let u = parse_stat("7 (sh) S 1 7 7 0 -1 4194560 0").unwrap();
        assert!(!u.kthread && u.state == 'S');
        assert_eq!(parse_stat("garbage"), None);
    }
}
