//! Watching a livepatch transition: progress, the blocking tasks, signalling, giving up.

use crate::error::KernelError;
use crate::patches::{in_transition, is_enabled, patch_dir};
use crate::sys::{Kernel, Sig};
use crate::tasks::{find_blockers, Blocker};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long to wait and what to do while a transition lasts.
#[derive(Debug, Clone)]
pub struct WatchPolicy {
    /// Interval between polls of `transition`.
    pub poll: Duration,
    /// Wait this long before signalling the blockers.
    pub wait: Duration,
    /// Signal the blockers after `wait` (else give up right then).
    pub signal: bool,
    /// Also send SIGSTOP+SIGCONT to user-space blockers when signalling.
    pub stop_cont: bool,
    /// Wait this long after signalling before giving up.
    pub signal_wait: Duration,
    /// Interval between progress reports (each one scans `/proc`).
    pub report_every: Duration,
    /// Read the kernel stacks of the blockers.
    pub stacks: bool,
    /// Set (e.g. by a SIGINT handler: `kpatch_common::interrupt::flag()`) to stop waiting: the
    /// watch then ends as [`WatchOutcome::Stalled`] with `interrupted`, so the caller reverts.
    pub cancel: Option<&'static AtomicBool>,
}

impl Default for WatchPolicy {
    fn default() -> Self {
        WatchPolicy {
            poll: Duration::from_millis(100),
            wait: Duration::from_secs(15),
            signal: true,
            stop_cont: false,
            signal_wait: Duration::from_secs(15),
            report_every: Duration::from_secs(1),
            stacks: true,
            cancel: None,
        }
    }
}

/// What a signalling step did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SignalReport {
    /// `1` was written to `/sys/kernel/livepatch/<patch>/signal` (kernels 4.18–5.x): the kernel
    /// sent a fake signal to each user-space blocker and woke each blocking kthread.
    pub sysfs_signal: bool,
    /// Processes sent SIGSTOP then SIGCONT.
    pub stop_continued: Vec<i32>,
    /// Kernel threads among the blockers (user space cannot signal them; the kernel wakes them).
    pub kthreads: Vec<i32>,
    /// Failures to signal, as `pid: error`.
    pub errors: Vec<String>,
}

/// Progress and decisions, in the order they happen.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The module image is about to be handed to the kernel.
    Loading {
        patch: String,
    },
    /// A transition (patching when `target` is 1) is under way.
    Progress {
        patch: String,
        target: i32,
        elapsed_ms: u64,
        blockers: Vec<Blocker>,
    },
    Signalled {
        patch: String,
        report: SignalReport,
    },
    TransitionDone {
        patch: String,
        target: i32,
        elapsed_ms: u64,
    },
    /// Giving up (after the waits, or interrupted): the transition is being reversed.
    Reverting {
        patch: String,
        blockers: Vec<Blocker>,
        interrupted: bool,
    },
    /// Disabling the patch.
    Disabling {
        patch: String,
    },
    Removed {
        patch: String,
    },
    /// User space is frozen (`--freeze`): `tasks` user tasks, `cgroups` of them by the cgroup
    /// freezer, `stopped` by SIGSTOP, after `elapsed_ms`.
    Frozen {
        tasks: usize,
        cgroups: usize,
        stopped: usize,
        elapsed_ms: u64,
    },
    /// User space runs again after `paused_ms` frozen; `switched` tells whether every frozen
    /// task had switched by then.
    Thawed {
        paused_ms: u64,
        switched: bool,
        errors: Vec<String>,
    },
}

/// Receives [`Event`]s.
pub trait Observer {
    fn event(&mut self, ev: &Event);
    /// A freeze action about to be taken (for a watchdog that undoes them if kpatch-rs dies).
    fn freeze_action(&mut self, _action: &crate::freeze::FreezeAction) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {
    fn event(&mut self, _ev: &Event) {}
}

/// Collects events (for tests and `--json`).
#[derive(Default)]
pub struct Recorder(pub Vec<Event>);
impl Observer for Recorder {
    fn event(&mut self, ev: &Event) {
        self.0.push(ev.clone());
    }
}

/// How a watched transition ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchOutcome {
    /// `transition` went to 0 (or the patch went away after unpatching).
    Complete { elapsed: Duration },
    /// Still in transition after the waits (or when cancelled); the last blockers seen.
    Stalled {
        elapsed: Duration,
        blockers: Vec<Blocker>,
        interrupted: bool,
    },
}

/// Signal the tasks blocking `patch`'s transition the way the kernel allows.
pub fn signal_blockers(
    k: &dyn Kernel,
    patch: &str,
    blockers: &[Blocker],
    stop_cont: bool,
) -> SignalReport {
    let mut report = SignalReport::default();
    let signal_file = patch_dir(patch).join("signal");
    if k.exists(&signal_file) {
        match k.write(&signal_file, "1") {
            Ok(()) => report.sysfs_signal = true,
            Err(e) => report
                .errors
                .push(format!("{}: {e}", signal_file.display())),
        }
    }
    let mut seen = Vec::new();
    for b in blockers {
        if b.kthread {
            report.kthreads.push(b.tid);
            continue;
        }
        if !stop_cont || seen.contains(&b.pid) {
            continue;
        }
        seen.push(b.pid);
        let r = k
            .kill(b.pid, Sig::Stop)
            .and_then(|()| k.kill(b.pid, Sig::Cont));
        match r {
            Ok(()) => report.stop_continued.push(b.pid),
            Err(e) => {
                // Never leave a process stopped because the second kill failed.
                let _ = k.kill(b.pid, Sig::Cont);
                report.errors.push(format!("{}: {e}", b.pid))
            }
        }
    }
    report
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// Watch `patch`'s transition until it completes or the policy gives up.
pub fn watch_transition(
    k: &dyn Kernel,
    patch: &str,
    policy: &WatchPolicy,
    obs: &mut dyn Observer,
) -> Result<WatchOutcome, KernelError> {
    let start = k.now();
    let dir = patch_dir(patch);
    let mut last_report: Option<Duration> = None;
    let mut signalled_at: Option<Duration> = None;
    let mut blockers: Vec<Blocker> = Vec::new();
    let mut target = 1;
    loop {
        let now = k.now();
        let elapsed = now.saturating_sub(start);
        // After an unpatch completes the kernel frees the patch and its directory goes away.
        if !k.exists(&dir) {
            obs.event(&Event::TransitionDone {
                patch: patch.into(),
                target: 0,
                elapsed_ms: ms(elapsed),
            });
            return Ok(WatchOutcome::Complete { elapsed });
        }
        let transition = match in_transition(k, patch) {
            Ok(t) => t,
            Err(_) if !k.exists(&dir) => continue,
            Err(e) => return Err(e),
        };
        if let Ok(enabled) = is_enabled(k, patch) {
            target = i32::from(enabled);
        }
        if !transition {
            obs.event(&Event::TransitionDone {
                patch: patch.into(),
                target,
                elapsed_ms: ms(elapsed),
            });
            return Ok(WatchOutcome::Complete { elapsed });
        }
        let report_due = last_report.is_none_or(|t| now.saturating_sub(t) >= policy.report_every);
        if report_due {
            blockers = find_blockers(k, target, policy.stacks);
            last_report = Some(now);
            obs.event(&Event::Progress {
                patch: patch.into(),
                target,
                elapsed_ms: ms(elapsed),
                blockers: blockers.clone(),
            });
        }
        match signalled_at {
            None if elapsed >= policy.wait => {
                if !policy.signal {
                    return Ok(WatchOutcome::Stalled {
                        elapsed,
                        blockers,
                        interrupted: false,
                    });
                }
                if !report_due {
                    blockers = find_blockers(k, target, policy.stacks);
                }
                let report = signal_blockers(k, patch, &blockers, policy.stop_cont);
                obs.event(&Event::Signalled {
                    patch: patch.into(),
                    report,
                });
                signalled_at = Some(now);
            }
            Some(at) if now.saturating_sub(at) >= policy.signal_wait => {
                if !report_due {
                    blockers = find_blockers(k, target, policy.stacks);
                }
                return Ok(WatchOutcome::Stalled {
                    elapsed,
                    blockers,
                    interrupted: false,
                });
            }
            _ => {}
        }
        if policy.cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
            return Ok(WatchOutcome::Stalled {
                elapsed,
                blockers: find_blockers(k, target, policy.stacks),
                interrupted: true,
            });
        }
        k.sleep(policy.poll);
    }
}
