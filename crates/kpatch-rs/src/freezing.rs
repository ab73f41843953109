//! `load --freeze` and `unload --freeze` in the binary: the watchdog process that outlives
//! kpatch-rs, the observer that journals every freeze action to it first, and the figures
//! `--json` prints.

use anyhow::Context;
use kpatch_kernel::freeze::{FreezeAction, FreezeMode};
use kpatch_kernel::ops::Outcome;
use kpatch_kernel::tasks::Blocker;
use kpatch_kernel::watch::{Event, Observer};
use kpatch_kernel::watchdog::Record;
use serde::Serialize;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Instant;

/// Text for `--help` of load and unload.
pub const FREEZE_HELP: &str = "\
Consistency models (--freeze):
  lazy (default)  the kernel's: each task switches to the new code on its own, at its next
                  exit from the kernel or when its stack is clean; nothing pauses, but a task
                  asleep in a patched function holds the transition open.
  all             kpatch's: freeze user space, load (or disable) the patch, wait until every
                  frozen task has switched, thaw. The patch goes live for all user tasks at one
                  instant; kernel threads and idle tasks then switch lazily.
  blockers        lazy first; after --wait, freeze only the user tasks that still block, let
                  them switch, thaw them, and go on as in lazy mode.

What is frozen: every user task but PID 1, kpatch-rs and its watchdog. With cgroup v2 mounted
at /sys/fs/cgroup, the cgroup freezer freezes each top-level cgroup (kpatch-rs and its watchdog
wait in /sys/fs/cgroup/kpatch-rs.exempt meanwhile and go back after), except init.scope and any
cgroup holding a kernel thread, whose children are frozen instead and whose own user tasks are
stopped with SIGSTOP. Without cgroup v2 every user task is stopped with SIGSTOP (and sent
SIGCONT after; tasks already stopped are left alone). Kernel threads are never frozen. Nothing
is printed while user space is frozen (the terminal may be frozen too).

No task is ever left frozen: a freeze that is not complete within --freeze-timeout is undone
and nothing is loaded (the tasks that did not freeze, typically in uninterruptible sleep, are
named with their stacks); a watchdog process journals every action before it is taken and, if
kpatch-rs dies (even by SIGKILL) or hangs past the timeout, thaws everything and reverts a
half-done transition. If the machine itself dies mid-freeze nothing persists: cgroup freeze
state and SIGSTOP live in memory only, the exempt cgroup is gone with them, and a patch is
loaded at boot only if it was installed (`kpatch-rs install`), lazily.";

/// The watchdog: `kpatch-rs freeze-watchdog`, fed [`Record`]s on its standard input.
pub struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    /// Starts the watchdog in a process group of its own (a Ctrl-C on the terminal does not
    /// reach it). `deadline_ms`: the longest a freeze may last before it thaws by itself.
    pub fn spawn(deadline_ms: u64) -> anyhow::Result<Watchdog> {
        let exe = std::env::current_exe()
            .context("finding the kpatch-rs executable for the freeze watchdog")?;
        let mut child = Command::new(exe)
            .arg("freeze-watchdog")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .context("starting the freeze watchdog")?;
        let stdin = child.stdin.take();
        let mut w = Watchdog { child, stdin };
        w.send(&Record::Deadline(deadline_ms));
        Ok(w)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Journals one record (written through at once: it must be there before the action).
    pub fn send(&mut self, r: &Record) {
        if let Some(s) = &mut self.stdin {
            let _ = writeln!(s, "{}", r.line()).and_then(|()| s.flush());
        }
    }

    /// Tells the watchdog the work is done and waits for it to go.
    pub fn finish(mut self) {
        self.send(&Record::Done);
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Where a load or unload journals each step before taking it: the freeze watchdog (with
/// `--freeze`) and the journal file ([`kpatch_kernel::opjournal`]) that the next kpatch-rs
/// reads if this one is killed.
#[derive(Default)]
pub struct Journal {
    pub watchdog: Option<Watchdog>,
    pub file: Option<kpatch_kernel::opjournal::OpJournal>,
}

impl Journal {
    /// Journals one record to both.
    pub fn send(&mut self, r: &Record) {
        if let Some(w) = &mut self.watchdog {
            w.send(r);
        }
        if let Some(f) = &mut self.file {
            f.record(r);
        }
    }

    /// The work is over: the watchdog goes, and so does the journal file.
    pub fn finish(self) {
        if let Some(w) = self.watchdog {
            w.finish();
        }
        if let Some(f) = self.file {
            f.finish();
        }
    }
}

/// What `--json` reports about one load or unload.
#[derive(Debug, Default, Serialize)]
pub struct Figures {
    pub patch: String,
    pub outcome: &'static str,
    pub mode: FreezeMode,
    /// How long user space (or the blockers) was frozen; 0 in lazy mode.
    pub freeze_ms: u64,
    /// Of that, the time to get everything frozen.
    pub freeze_wait_ms: u64,
    /// From handing the module to the kernel (or disabling the patch) to the end of the
    /// transition, kernel threads included.
    pub transition_ms: u64,
    pub tasks_frozen: usize,
    pub blockers: Vec<Blocker>,
    pub unfrozen: Vec<kpatch_kernel::freeze::Unfrozen>,
}

impl Figures {
    pub fn outcome(&mut self, o: &Outcome) {
        let (patch, outcome) = match o {
            Outcome::Done { patch, .. } => (patch, "done"),
            Outcome::Reverted {
                patch, blockers, ..
            } => {
                self.blockers = blockers.clone();
                (patch, "reverted")
            }
            Outcome::Stuck {
                patch, blockers, ..
            } => {
                self.blockers = blockers.clone();
                (patch, "stuck")
            }
            Outcome::NotFrozen {
                patch, unfrozen, ..
            } => {
                self.unfrozen = unfrozen.clone();
                (patch, "not_frozen")
            }
        };
        self.patch = patch.clone();
        self.outcome = outcome;
    }
}

/// Forwards events to `inner`, journals the steps and freeze actions, and takes the figures.
pub struct Journaled<'a> {
    pub inner: &'a mut dyn Observer,
    pub journal: &'a mut Journal,
    pub figures: Figures,
    started: Option<Instant>,
}

impl<'a> Journaled<'a> {
    pub fn new(inner: &'a mut dyn Observer, journal: &'a mut Journal, mode: FreezeMode) -> Self {
        Journaled {
            inner,
            journal,
            figures: Figures {
                mode,
                ..Figures::default()
            },
            started: None,
        }
    }

    fn send(&mut self, r: Record) {
        self.journal.send(&r);
    }
}

impl Observer for Journaled<'_> {
    fn event(&mut self, ev: &Event) {
        match ev {
            Event::Loading { patch } => {
                self.send(Record::Loading(patch.clone()));
                self.started = Some(Instant::now());
            }
            Event::Disabling { patch } => {
                self.send(Record::Disabling(patch.clone()));
                self.started = Some(Instant::now());
            }
            Event::Frozen {
                tasks, elapsed_ms, ..
            } => {
                self.figures.tasks_frozen += tasks;
                self.figures.freeze_wait_ms += elapsed_ms;
            }
            Event::Thawed { paused_ms, .. } => {
                self.send(Record::Thawed);
                self.figures.freeze_ms += paused_ms;
            }
            Event::TransitionDone { .. } => {
                if let Some(t) = self.started {
                    self.figures.transition_ms = t.elapsed().as_millis() as u64;
                }
            }
            _ => {}
        }
        self.inner.event(ev);
    }

    fn freeze_action(&mut self, action: &FreezeAction) {
        self.send(Record::Action(action.clone()));
        self.inner.freeze_action(action);
    }
}

/// `kpatch-rs freeze-watchdog`: reads records until `done`; on the end of its input without
/// it (the parent died), or past the deadline without `thawed`, undoes the parent's work.
pub fn run_watchdog() -> anyhow::Result<std::process::ExitCode> {
    kpatch_common::interrupt::ignore();
    let k = kpatch_kernel::RealKernel::new();
    let (tx, rx) = std::sync::mpsc::channel::<Record>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        while stdin.read_line(&mut line).is_ok_and(|n| n > 0) {
            if let Some(r) = Record::parse(&line) {
                if tx.send(r).is_err() {
                    return;
                }
            }
            line.clear();
        }
    });
    let start = Instant::now();
    let mut records: Vec<Record> = Vec::new();
    let mut deadline: Option<std::time::Duration> = None;
    loop {
        let wait = deadline
            .map(|d| d.saturating_sub(start.elapsed()))
            .unwrap_or(std::time::Duration::from_secs(3600));
        match rx.recv_timeout(wait.max(std::time::Duration::from_millis(1))) {
            Ok(Record::Done) => return Ok(std::process::ExitCode::SUCCESS),
            Ok(Record::Deadline(ms)) => deadline = Some(std::time::Duration::from_millis(ms)),
            Ok(r) => records.push(r),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let (frozen, thawed) = kpatch_kernel::watchdog::frozen_from(&records);
                if !thawed && (!frozen.cgroups.is_empty() || !frozen.stopped.is_empty()) {
                    let errors = kpatch_kernel::freeze::thaw(&k, &frozen);
                    eprintln!(
                        "kpatch-rs watchdog: the freeze outlasted its deadline; thawed user space"
                    );
                    for e in errors {
                        eprintln!("kpatch-rs watchdog: {e}");
                    }
                    records.push(Record::Thawed);
                }
                deadline = None;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                for l in kpatch_kernel::watchdog::recover(
                    &k,
                    &records,
                    std::time::Duration::from_secs(30),
                ) {
                    eprintln!("kpatch-rs watchdog: {l}");
                }
                return Ok(std::process::ExitCode::SUCCESS);
            }
        }
    }
}
