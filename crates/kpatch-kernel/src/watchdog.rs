//! The freeze watchdog: a process that outlives `kpatch-rs load --freeze` and undoes what it
//! left if it dies (SIGKILL, a crash) or hangs while user space is frozen.
//!
//! The parent writes one [`Record`] per line to the watchdog's standard input *before* each
//! action. When the input ends without [`Record::Done`] (the parent is gone), or the freeze has
//! lasted past its [`Record::Deadline`] without [`Record::Thawed`], [`recover`] thaws every
//! cgroup and task the records name, and reverts a transition the parent had started.

use crate::freeze::{self, FreezeAction, Frozen};
use crate::patches::{in_transition, is_enabled, module_loaded, patch_dir};
use crate::sys::Kernel;
use std::path::PathBuf;
use std::time::Duration;

/// One line of the parent's journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Action(FreezeAction),
    /// The freeze must be over within this many milliseconds of the watchdog's start.
    Deadline(u64),
    /// `finit_module` of the patch is about to run.
    Loading(String),
    /// `0` is about to be written to the patch's `enabled`.
    Disabling(String),
    /// The load or unload of this patch ended in a known state (done, reverted, refused).
    Completed(String),
    /// The parent thawed everything itself.
    Thawed,
    /// The parent finished: nothing to undo.
    Done,
}

impl Record {
    /// The line for this record (no newline).
    pub fn line(&self) -> String {
        match self {
            Record::Action(FreezeAction::ExemptCgroup(p)) => {
                format!("exempt-cgroup {}", p.display())
            }
            Record::Action(FreezeAction::Moved { pid, from }) => {
                format!("moved {pid} {}", from.display())
            }
            Record::Action(FreezeAction::FrozeCgroup(p)) => format!("cgroup {}", p.display()),
            Record::Action(FreezeAction::Stopped(pid)) => format!("stopped {pid}"),
            Record::Deadline(ms) => format!("deadline {ms}"),
            Record::Loading(n) => format!("loading {n}"),
            Record::Disabling(n) => format!("disabling {n}"),
            Record::Completed(n) => format!("completed {n}"),
            Record::Thawed => "thawed".into(),
            Record::Done => "done".into(),
        }
    }

    /// Parses a line; `None` for anything else (ignored).
    pub fn parse(line: &str) -> Option<Record> {
        let line = line.trim_end();
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let pid = || rest.parse::<i32>().ok();
        Some(match word {
            "exempt-cgroup" => Record::Action(FreezeAction::ExemptCgroup(PathBuf::from(rest))),
            "moved" => {
                let (p, from) = rest.split_once(' ')?;
                Record::Action(FreezeAction::Moved {
                    pid: p.parse().ok()?,
                    from: PathBuf::from(from),
                })
            }
            "cgroup" => Record::Action(FreezeAction::FrozeCgroup(PathBuf::from(rest))),
            "stopped" => Record::Action(FreezeAction::Stopped(pid()?)),
            "deadline" => Record::Deadline(rest.parse().ok()?),
            "loading" if !rest.is_empty() => Record::Loading(rest.into()),
            "disabling" if !rest.is_empty() => Record::Disabling(rest.into()),
            "completed" if !rest.is_empty() => Record::Completed(rest.into()),
            "thawed" => Record::Thawed,
            "done" => Record::Done,
            _ => return None,
        })
    }
}

/// What the records say is frozen (to be thawed), and whether the parent thawed it already.
pub fn frozen_from(records: &[Record]) -> (Frozen, bool) {
    let mut f = Frozen::default();
    let mut thawed = false;
    for r in records {
        match r {
            Record::Action(FreezeAction::ExemptCgroup(p)) => f.exempt_cgroup = Some(p.clone()),
            Record::Action(FreezeAction::Moved { pid, from }) => f.moved.push((*pid, from.clone())),
            Record::Action(FreezeAction::FrozeCgroup(p)) => {
                f.cgroups.push(p.clone());
                thawed = false;
            }
            Record::Action(FreezeAction::Stopped(pid)) => {
                f.stopped.push(*pid);
                thawed = false;
            }
            Record::Thawed => {
                // A later freeze (the blockers of --freeze=blockers) starts a new list.
                f = Frozen::default();
                thawed = true;
            }
            _ => {}
        }
    }
    (f, thawed)
}

/// Undoes what the records show the parent left (see the module documentation): thaws, then
/// reverts a load (disable and remove the module) or an unload (enable again) that had not
/// finished. Returns what it did, one line each.
pub fn recover(k: &dyn Kernel, records: &[Record], wait: Duration) -> Vec<String> {
    let mut said = Vec::new();
    if records.contains(&Record::Done) {
        return said;
    }
    let (frozen, thawed) = frozen_from(records);
    if !thawed
        && (!frozen.cgroups.is_empty() || !frozen.stopped.is_empty() || !frozen.moved.is_empty())
    {
        let errors = freeze::thaw(k, &frozen);
        said.push(format!(
            "thawed {} cgroup(s) and {} stopped task(s) left by kpatch-rs",
            frozen.cgroups.len(),
            frozen.stopped.len()
        ));
        said.extend(errors);
    }
    let last = records.iter().rev().find_map(|r| match r {
        Record::Loading(n) => Some(Some((n.clone(), true))),
        Record::Disabling(n) => Some(Some((n.clone(), false))),
        Record::Completed(_) => Some(None),
        _ => None,
    });
    let Some(Some((name, loading))) = last else {
        return said;
    };
    if loading {
        if k.exists(&patch_dir(&name)) && is_enabled(k, &name).unwrap_or(false) {
            said.push(format!(
                "{name}: kpatch-rs died during the load; disabling the patch"
            ));
            if let Err(e) = k.write(&patch_dir(&name).join("enabled"), "0") {
                said.push(format!("{name}: disabling: {e}"));
                return said;
            }
        }
        let start = k.now();
        while k.exists(&patch_dir(&name)) && k.now().saturating_sub(start) < wait {
            k.sleep(Duration::from_millis(50));
        }
        if module_loaded(k, &name) && !k.exists(&patch_dir(&name)) {
            match k.delete_module(&name) {
                Ok(()) => said.push(format!("{name}: removed the module")),
                Err(e) => said.push(format!("{name}: delete_module: {e}")),
            }
        } else if k.exists(&patch_dir(&name)) {
            said.push(format!(
                "{name}: still registered after {}s; see `kpatch-rs list`",
                wait.as_secs()
            ));
        }
    } else if k.exists(&patch_dir(&name))
        && !is_enabled(k, &name).unwrap_or(true)
        && in_transition(k, &name).unwrap_or(false)
    {
        said.push(format!(
            "{name}: kpatch-rs died during the unload; enabling the patch again"
        ));
        if let Err(e) = k.write(&patch_dir(&name).join("enabled"), "1") {
            said.push(format!("{name}: enabling: {e}"));
        }
        wait_for_transition(k, &name, wait, &mut said);
    } else if k.exists(&patch_dir(&name))
        && is_enabled(k, &name).unwrap_or(false)
        && in_transition(k, &name).unwrap_or(false)
    {
        // It died reverting a stalled unload: let that reversal finish.
        said.push(format!(
            "{name}: kpatch-rs died while enabling the patch again after a stalled unload; \
             waiting for that"
        ));
        wait_for_transition(k, &name, wait, &mut said);
    } else if !k.exists(&patch_dir(&name)) && module_loaded(k, &name) {
        let _ = k.delete_module(&name);
        said.push(format!(
            "{name}: the unpatch had finished; removed the module"
        ));
    }
    said
}

/// Waits up to `wait` for the transition of `name` to end; says so if it does not.
fn wait_for_transition(k: &dyn Kernel, name: &str, wait: Duration, said: &mut Vec<String>) {
    let start = k.now();
    while in_transition(k, name).unwrap_or(false) {
        if k.now().saturating_sub(start) >= wait {
            said.push(format!(
                "{name}: still in transition after {}s; see `kpatch-rs list`",
                wait.as_secs()
            ));
            return;
        }
        k.sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let all = [
            Record::Action(FreezeAction::ExemptCgroup(
                "/sys/fs/cgroup/kpatch-rs.exempt".into(),
            )),
            Record::Action(FreezeAction::Moved {
                pid: 7,
                from: "/sys/fs/cgroup/user.slice/a b".into(),
            }),
            Record::Action(FreezeAction::FrozeCgroup(
                "/sys/fs/cgroup/system.slice".into(),
            )),
            Record::Action(FreezeAction::Stopped(42)),
            Record::Deadline(3000),
            Record::Loading("livepatch_fix".into()),
            Record::Disabling("livepatch_fix".into()),
            Record::Completed("livepatch_fix".into()),
            Record::Thawed,
            Record::Done,
        ];
        for r in all {
            assert_eq!(Record::parse(&r.line()), Some(r.clone()), "{}", r.line());
        }
        assert_eq!(Record::parse("stopped x"), None);
        assert_eq!(Record::parse("loading "), None);
        assert_eq!(Record::parse(""), None);
    }

    #[test]
    fn a_thaw_forgets_what_it_thawed() {
        let r = [
            Record::Action(FreezeAction::Stopped(5)),
            Record::Thawed,
            Record::Action(FreezeAction::Stopped(9)),
        ];
        let (f, thawed) = frozen_from(&r);
        assert_eq!((f.stopped, thawed), (vec![9], false));
    }
}
