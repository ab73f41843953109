//! How the management commands talk to the operator: exit codes, progress, blockers.

use crate::tasks::Blocker;
use crate::watch::{Event, Observer, SignalReport};
use std::io::Write;

/// Success.
pub const EXIT_OK: u8 = 0;
/// An error; the message says what and where.
pub const EXIT_ERROR: u8 = 1;
/// A transition stalled and was reversed: the kernel is as before the command.
pub const EXIT_REVERTED: u8 = 2;
/// Nothing to do.
pub const EXIT_NOTHING: u8 = 3;
/// A transition stalled and so did its reversal: a patch is still in transition.
pub const EXIT_STUCK: u8 = 4;

/// The exit status table shown by `--help` of the management commands.
pub const EXIT_CODES_HELP: &str = "\
Exit status:
  0  success
  1  error (the message names the file, patch or kernel interface; see also dmesg)
  2  a transition stalled and was reversed: the kernel is as it was before the command
     (for load: patch disabled and module removed; for unload: patch enabled again);
     the blocking tasks are printed
  3  nothing to do (signal: no transition in progress; load --all: nothing installed;
     unload --all: nothing loaded)
  4  a transition stalled and so did its reversal: the patch is still in transition;
     the blocking tasks are printed (see `kpatch-rs list`, `kpatch-rs signal`)";

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// One line per blocker, then its stack indented.
pub fn format_blockers(blockers: &[Blocker]) -> String {
    let mut s = String::new();
    for b in blockers {
        let kind = if b.kthread {
            "kernel thread"
        } else {
            "process"
        };
        let thread = if b.tid != b.pid {
            format!(" (thread {})", b.tid)
        } else {
            String::new()
        };
        let state = if b.patch_state == 0 {
            "unpatched"
        } else {
            "patched"
        };
        s.push_str(&format!(
            "  {} {}{} [{}], still {}\n",
            b.pid, b.comm, thread, kind, state
        ));
        match &b.stack {
            Some(lines) if !lines.is_empty() => {
                for l in lines {
                    s.push_str(&format!("      {l}\n"));
                }
            }
            Some(_) => {}
            None => s.push_str("      (stack not readable)\n"),
        }
    }
    s
}

fn short_list(blockers: &[Blocker]) -> String {
    let mut names: Vec<String> = blockers
        .iter()
        .take(4)
        .map(|b| format!("{} {}", b.tid, b.comm))
        .collect();
    if blockers.len() > 4 {
        names.push(format!("+{} more", blockers.len() - 4));
    }
    names.join(", ")
}

/// Describe a signalling step.
pub fn format_signal(patch: &str, r: &SignalReport) -> String {
    let mut parts = Vec::new();
    if r.sysfs_signal {
        parts.push(format!(
            "wrote 1 to /sys/kernel/livepatch/{patch}/signal (fake signal to user tasks, wake-up of kernel threads)"
        ));
    } else {
        parts.push(
            "the kernel signals blocking tasks itself every 15s of a transition (no signal attribute)"
                .to_string(),
        );
    }
    if !r.stop_continued.is_empty() {
        let pids: Vec<String> = r.stop_continued.iter().map(|p| p.to_string()).collect();
        parts.push(format!("sent SIGSTOP+SIGCONT to {}", pids.join(" ")));
    }
    if !r.kthreads.is_empty() {
        let tids: Vec<String> = r.kthreads.iter().map(|p| p.to_string()).collect();
        parts.push(format!(
            "kernel threads {} cannot be signalled from user space",
            tids.join(" ")
        ));
    }
    for e in &r.errors {
        parts.push(format!("failed: {e}"));
    }
    format!("{patch}: {}", parts.join("; "))
}

/// Prints events: progress only on a terminal, decisions always (to stderr).
pub struct TextObserver<W: Write> {
    out: W,
    tty: bool,
    progress_shown: bool,
    /// While user space is frozen nothing is written (the terminal, or whatever reads a pipe,
    /// may be frozen too): lines wait here until the thaw.
    held: Option<Vec<String>>,
}

impl<W: Write> TextObserver<W> {
    pub fn new(out: W, tty: bool) -> Self {
        TextObserver {
            out,
            tty,
            progress_shown: false,
            held: None,
        }
    }

    fn end_progress(&mut self) {
        if self.progress_shown && self.held.is_none() {
            let _ = writeln!(self.out);
            self.progress_shown = false;
        }
    }

    fn line(&mut self, s: &str) {
        if let Some(held) = &mut self.held {
            held.push(s.to_string());
            return;
        }
        self.end_progress();
        let _ = writeln!(self.out, "{s}");
    }
}

impl<W: Write> Observer for TextObserver<W> {
    fn event(&mut self, ev: &Event) {
        match ev {
            Event::Loading { patch } => {
                if self.tty {
                    self.line(&format!("loading patch module {patch}"));
                }
            }
            Event::Disabling { patch } => {
                if self.tty {
                    self.line(&format!("disabling patch {patch}"));
                }
            }
            Event::Progress {
                patch,
                target,
                elapsed_ms,
                blockers,
            } => {
                if self.tty && self.held.is_none() {
                    let verb = if *target == 1 {
                        "patching"
                    } else {
                        "unpatching"
                    };
                    let old = if *target == 1 { "old" } else { "patched" };
                    let who = if blockers.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", short_list(blockers))
                    };
                    let _ = write!(
                        self.out,
                        "\r\x1b[K{patch}: {verb}, {}, {} task(s) on the {old} code{who}",
                        secs(*elapsed_ms),
                        blockers.len()
                    );
                    let _ = self.out.flush();
                    self.progress_shown = true;
                }
            }
            Event::Signalled { patch, report } => {
                self.line(&format!(
                    "{patch}: transition stalled; signalling the blocking tasks"
                ));
                self.line(&format_signal(patch, report));
            }
            Event::TransitionDone {
                patch,
                target,
                elapsed_ms,
            } => {
                if self.tty {
                    let what = if *target == 1 { "patched" } else { "unpatched" };
                    self.line(&format!(
                        "{patch}: transition complete, {what} ({})",
                        secs(*elapsed_ms)
                    ));
                }
            }
            Event::Reverting {
                patch,
                blockers,
                interrupted,
            } => {
                let why = if *interrupted {
                    "interrupted"
                } else {
                    "transition did not complete"
                };
                self.line(&format!(
                    "{patch}: {why}; reversing it ({} blocking task(s): {})",
                    blockers.len(),
                    short_list(blockers)
                ));
            }
            Event::Removed { patch } => {
                if self.tty {
                    self.line(&format!("removed module {patch}"));
                }
            }
            Event::Frozen {
                tasks,
                cgroups,
                stopped,
                elapsed_ms,
            } => {
                self.end_progress();
                self.held = Some(vec![format!(
                    "froze {tasks} user task(s) in {elapsed_ms} ms ({cgroups} cgroup(s) frozen, {stopped} task(s) stopped)"
                )]);
            }
            Event::Thawed {
                paused_ms,
                switched,
                errors,
            } => {
                for l in self.held.take().unwrap_or_default() {
                    self.line(&l);
                }
                let how = if *switched {
                    "every frozen task switched"
                } else {
                    "not every frozen task switched"
                };
                self.line(&format!("thawed: user space paused {paused_ms} ms; {how}"));
                for e in errors {
                    self.line(&format!("thaw: {e}"));
                }
            }
        }
    }
}

impl<W: Write> Drop for TextObserver<W> {
    fn drop(&mut self) {
        self.end_progress();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocker() -> Blocker {
        Blocker {
            pid: 77,
            tid: 77,
            comm: "sleeper".into(),
            kthread: true,
            patch_state: 0,
            stack: Some(vec!["[<0>] klp_test_sleep+0x20/0x40".into()]),
        }
    }

    #[test]
    fn quiet_without_tty_except_decisions() {
        let mut buf = Vec::new();
        {
            let mut o = TextObserver::new(&mut buf, false);
            o.event(&Event::Loading { patch: "p".into() });
            o.event(&Event::Progress {
                patch: "p".into(),
                target: 1,
                elapsed_ms: 1000,
                blockers: vec![blocker()],
            });
            o.event(&Event::Reverting {
                patch: "p".into(),
                blockers: vec![blocker()],
                interrupted: false,
            });
            o.event(&Event::Signalled {
                patch: "p".into(),
                report: SignalReport {
                    kthreads: vec![77],
                    ..SignalReport::default()
                },
            });
        }
        let s = String::from_utf8(buf).unwrap();
        assert!(!s.contains("loading"), "{s}");
        assert!(!s.contains('\r'), "{s}");
        assert!(
            s.contains(
                "p: transition did not complete; reversing it (1 blocking task(s): 77 sleeper)"
            ),
            "{s}"
        );
        assert!(
            s.contains("kernel threads 77 cannot be signalled from user space"),
            "{s}"
        );
    }

    #[test]
    fn blockers_with_stacks() {
        let mut b = blocker();
        let s = format_blockers(&[b.clone()]);
        assert_eq!(
            s,
            "  77 sleeper [kernel thread], still unpatched\n      [<0>] klp_test_sleep+0x20/0x40\n"
        );
        b.stack = None;
        b.kthread = false;
        b.tid = 78;
        b.patch_state = 1;
        let s = format_blockers(&[b]);
        assert_eq!(
            s,
            "  77 sleeper (thread 78) [process], still patched\n      (stack not readable)\n"
        );
    }

    #[test]
    fn progress_on_tty_names_blockers() {
        let mut buf = Vec::new();
        {
            let mut o = TextObserver::new(&mut buf, true);
            o.event(&Event::Progress {
                patch: "p".into(),
                target: 1,
                elapsed_ms: 2500,
                blockers: vec![blocker()],
            });
        }
        let s = String::from_utf8(buf).unwrap();
        assert!(
            s.contains("p: patching, 2.5s, 1 task(s) on the old code: 77 sleeper"),
            "{s}"
        );
        assert!(s.ends_with('\n'));
    }
}
