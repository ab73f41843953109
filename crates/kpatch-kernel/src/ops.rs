//! Load and unload procedures that always end in a known kernel state.

use crate::error::KernelError;
use crate::freeze::{
    self, FreezeAction, FreezeError, FreezeLog, FreezeMode, FreezeOptions, Frozen, Unfrozen,
};
use crate::modinfo::ModuleFile;
use crate::patches::{
    check_livepatch, is_enabled, is_livepatch_module, module_loaded, patch_dir, transition_patch,
};
use crate::sys::{read_trim, Kernel};
use crate::tasks::Blocker;
use crate::watch::{watch_transition, Event, Observer, WatchOutcome, WatchPolicy};
use kpatch_common::fault::kill_point;
use nix::errno::Errno;
use std::path::Path;
use std::time::Duration;

/// Options for [`load`] and [`unload`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Module parameters passed to `finit_module`.
    pub params: String,
    /// The forward transition.
    pub watch: WatchPolicy,
    /// The reverse transition after giving up.
    pub revert: WatchPolicy,
    /// How long to wait for the kernel to release the module before `delete_module` gives up.
    pub remove_wait: Duration,
    /// The consistency model: lazy (the kernel's), freeze all user space, or freeze the
    /// blockers after `watch.wait`.
    pub freeze: FreezeMode,
    /// How to freeze; its `timeout` bounds the whole pause (freezing plus switching).
    pub freeze_opts: FreezeOptions,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            params: String::new(),
            watch: WatchPolicy::default(),
            revert: WatchPolicy {
                wait: Duration::from_secs(15),
                signal_wait: Duration::from_secs(30),
                ..WatchPolicy::default()
            },
            remove_wait: Duration::from_secs(15),
            freeze: FreezeMode::Lazy,
            freeze_opts: FreezeOptions::default(),
        }
    }
}

/// Hands an observer the freeze actions (see [`crate::watch::Observer::freeze_action`]).
struct ObserverLog<'a>(&'a mut dyn Observer);
impl FreezeLog for ObserverLog<'_> {
    fn record(&mut self, action: &FreezeAction) {
        self.0.freeze_action(action);
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// Freezes user space (or, with `only`, just those tasks), announcing it.
fn freeze_now(
    k: &dyn Kernel,
    opts: &Options,
    only: Option<&[i32]>,
    obs: &mut dyn Observer,
) -> Result<Frozen, FreezeError> {
    let f = match only {
        None => freeze::freeze(k, &opts.freeze_opts, &mut ObserverLog(obs))?,
        Some(pids) => freeze::freeze_tasks(k, pids, &opts.freeze_opts, &mut ObserverLog(obs))?,
    };
    obs.event(&Event::Frozen {
        tasks: f.tasks,
        cgroups: f.cgroups.len(),
        stopped: f.stopped.len(),
        elapsed_ms: ms(f.frozen_at.saturating_sub(f.started)),
    });
    Ok(f)
}

/// The user tasks still on the other side of a transition towards `target`.
fn user_blockers(k: &dyn Kernel, target: i32) -> Vec<Blocker> {
    crate::tasks::find_blockers(k, target, true)
        .into_iter()
        .filter(|b| !b.kthread)
        .collect()
}

/// With user space frozen, waits until every user task has switched towards `target` (or the
/// freeze's time is up), then thaws. Returns the user tasks that had not switched.
fn switch_and_thaw(
    k: &dyn Kernel,
    frozen: &Frozen,
    target: i32,
    opts: &Options,
    obs: &mut dyn Observer,
) -> Vec<Blocker> {
    let deadline = frozen.started + opts.freeze_opts.timeout;
    let left = loop {
        // Only the frozen tasks are waited for (and read: scanning every task of the system
        // would lengthen the pause); a blocker outside the freeze cannot be helped by it.
        let left = crate::tasks::find_blockers_among(k, &frozen.pids, target, false);
        if left.is_empty() || k.now() >= deadline {
            break left;
        }
        k.sleep(opts.freeze_opts.poll);
    };
    let mut errors = freeze::thaw_tasks(k, frozen);
    let paused = k.now().saturating_sub(frozen.started);
    errors.extend(freeze::release_exempt(k, frozen));
    obs.event(&Event::Thawed {
        paused_ms: ms(paused),
        switched: left.is_empty(),
        errors,
    });
    if left.is_empty() {
        left
    } else {
        // Named with their stacks, now that user space runs again.
        let pids: Vec<i32> = left.iter().map(|b| b.pid).collect();
        crate::tasks::find_blockers_among(k, &pids, target, true)
    }
}

/// How a load or unload ended. Every variant names the state the kernel is left in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The requested change is complete (loaded and patched, or unpatched and removed).
    Done { patch: String, elapsed: Duration },
    /// The transition stalled (or the wait was interrupted) and was reversed: the kernel is as
    /// before the command (for a load: the module is removed; for an unload: the patch is
    /// enabled again).
    Reverted {
        patch: String,
        blockers: Vec<Blocker>,
        interrupted: bool,
    },
    /// The reverse transition stalled too: `patch` is still in transition.
    Stuck {
        patch: String,
        blockers: Vec<Blocker>,
        reverse_blockers: Vec<Blocker>,
    },
    /// `--freeze`: user space did not freeze in time (a task in uninterruptible sleep, say), so
    /// it was thawed and nothing was changed: the kernel is as before the command.
    NotFrozen {
        patch: String,
        reason: String,
        unfrozen: Vec<Unfrozen>,
    },
}

/// The kernel log messages logged after sequence number `after` (all when `None`).
fn log_since(k: &dyn Kernel, after: Option<u64>) -> Vec<String> {
    k.kernel_log()
        .unwrap_or_default()
        .into_iter()
        .filter(|(seq, _)| after.is_none_or(|a| *seq > a))
        .map(|(_, l)| l)
        .collect()
}

/// The messages a failed load of `name` left: the last few that name the module
/// (e.g. `fix: disagrees about version of symbol module_layout`).
fn log_about(log: &[String], name: &str) -> Vec<String> {
    let mut out: Vec<String> = log.iter().filter(|l| l.contains(name)).cloned().collect();
    let keep = out.len().saturating_sub(3);
    out.drain(..keep);
    out
}

/// The objects whose pre-patch callback failed during the load of `name`, from the kernel's
/// `livepatch: pre-patch callback failed for object 'vmlinux'` lines (they do not name the
/// patch: the load's own `enabling patch 'NAME'` line starts the search).
fn failed_pre_patch_callbacks(log: &[String], name: &str) -> Vec<String> {
    const FAILED: &str = "pre-patch callback failed for object '";
    let enabling = format!("enabling patch '{name}'");
    log.iter()
        .skip_while(|l| !l.contains(&enabling))
        .filter_map(|l| {
            let rest = &l[l.find(FAILED)? + FAILED.len()..];
            Some(rest[..rest.find('\'')?].to_string())
        })
        .collect()
}

/// Map a `finit_module` error to a message an operator can act on. `log_after` is the last
/// kernel log sequence number before the call (so only newer messages are quoted).
pub fn finit_error(
    k: &dyn Kernel,
    name: &str,
    errno: Errno,
    log_after: Option<u64>,
) -> KernelError {
    let log = log_since(k, log_after);
    let callbacks = failed_pre_patch_callbacks(&log, name);
    if !callbacks.is_empty() {
        return KernelError::Refused {
            name: name.into(),
            errno,
            reason: format!(
                "the patch's own pre-patch callback for {} failed, so the kernel applied nothing \
                 (the error is the callback's)",
                callbacks.join(", ")
            ),
            kernel_log: log_about(&log, name),
        };
    }
    let lockdown = || {
        read_trim(k, Path::new("/sys/kernel/security/lockdown"))
            .map(|l| format!("; /sys/kernel/security/lockdown: {l}"))
            .unwrap_or_default()
    };
    let reason = match errno {
        Errno::EEXIST => return KernelError::ModuleExists { name: name.into() },
        Errno::ENOEXEC => "the module does not fit this kernel build (version magic or symbol versions differ) or is not a valid module".into(),
        Errno::EINVAL => "the kernel rejected the module: built for another kernel (\"disagrees about version of symbol\"), incompatible with the loaded livepatches, or a bad parameter; see dmesg".into(),
        Errno::EKEYREJECTED => format!(
            "signature rejected: the module is unsigned or its signature does not verify while signatures are enforced{}",
            lockdown()
        ),
        Errno::ENOKEY => "signature key not found in the kernel's keyrings".into(),
        Errno::EBADMSG => "malformed module signature".into(),
        Errno::EPERM => format!(
            "operation not permitted: not root (CAP_SYS_MODULE), module loading disabled (/proc/sys/kernel/modules_disabled), or kernel lockdown{}",
            lockdown()
        ),
        Errno::EBUSY => "another livepatch is in transition".into(),
        Errno::ENOENT => "unknown symbol in module (a kernel without livepatch, or a module built for another kernel; see dmesg)".into(),
        Errno::ENODEV => "the livepatch core is not initialised".into(),
        Errno::ENOSYS => "the kernel has no module support".into(),
        Errno::ETXTBSY => "the module file is open for writing by some process".into(),
        _ => "see dmesg".into(),
    };
    KernelError::Refused {
        name: name.into(),
        errno,
        reason,
        kernel_log: log_about(&log, name),
    }
}

/// Why the running kernel refuses unsigned modules, if it does: `module.sig_enforce=1` (or
/// `CONFIG_MODULE_SIG_FORCE`) shows as `Y` in `/sys/module/module/parameters/sig_enforce`, and
/// lockdown (`integrity` or `confidentiality`, e.g. under Secure Boot) refuses them too.
pub fn signatures_enforced(k: &dyn Kernel) -> Option<String> {
    let enforce = Path::new("/sys/module/module/parameters/sig_enforce");
    if read_trim(k, enforce).is_ok_and(|v| v == "Y") {
        return Some(format!("{} is Y", enforce.display()));
    }
    let lockdown = read_trim(k, Path::new("/sys/kernel/security/lockdown")).ok()?;
    let mode = lockdown.split_once('[')?.1.split_once(']')?.0;
    matches!(mode, "integrity" | "confidentiality")
        .then(|| format!("/sys/kernel/security/lockdown: {lockdown}"))
}

/// Check a module file against the running kernel before handing it over.
pub fn preflight(k: &dyn Kernel, module: &ModuleFile) -> Result<String, KernelError> {
    check_livepatch(k)?;
    let name = module.name();
    if !module.info.is_livepatch() {
        return Err(KernelError::NotLivepatch {
            path: module.path.clone(),
            name,
        });
    }
    let running = k
        .release()
        .map_err(|e| KernelError::io("/proc/sys/kernel/osrelease", e))?;
    let built_for = module.info.vermagic_release().unwrap_or("unknown");
    if built_for != running {
        return Err(KernelError::WrongKernel {
            path: module.path.clone(),
            name,
            built_for: built_for.into(),
            running,
            vermagic: module.info.vermagic().unwrap_or("").trim().into(),
        });
    }
    if !kpatch_common::modinfo::is_signed(&module.image) {
        if let Some(reason) = signatures_enforced(k) {
            return Err(KernelError::Unsigned {
                path: module.path.clone(),
                name,
                reason,
            });
        }
    }
    if let Some(busy) = transition_patch(k)? {
        return Err(KernelError::Busy { name, busy });
    }
    if k.exists(&patch_dir(&name)) {
        let enabled = is_enabled(k, &name).unwrap_or(true);
        return Err(KernelError::AlreadyLoaded { name, enabled });
    }
    Ok(name)
}

/// Load a livepatch module and watch its transition; revert if it stalls.
pub fn load(
    k: &dyn Kernel,
    module: &ModuleFile,
    opts: &Options,
    obs: &mut dyn Observer,
) -> Result<Outcome, KernelError> {
    let name = preflight(k, module)?;
    // A livepatch module that is loaded but no longer registered is a disabled leftover.
    if module_loaded(k, &name) {
        if !is_livepatch_module(k, &name) {
            return Err(KernelError::ModuleExists { name });
        }
        remove_module(k, &name, opts.remove_wait, obs)?;
    }
    let file = image_file(module)?;
    let frozen = match opts.freeze {
        FreezeMode::All => match freeze_now(k, opts, None, obs) {
            Ok(f) => Some(f),
            Err(e) => return Ok(not_frozen(name, e)),
        },
        _ => None,
    };
    obs.event(&Event::Loading {
        patch: name.clone(),
    });
    let log_after = k
        .kernel_log()
        .ok()
        .and_then(|l| l.last().map(|(seq, _)| *seq));
    kill_point("load:before-finit");
    if let Err(e) = k.finit_module(&file, &opts.params) {
        if let Some(f) = &frozen {
            let errors = freeze::thaw(k, f);
            obs.event(&Event::Thawed {
                paused_ms: ms(k.now().saturating_sub(f.started)),
                switched: false,
                errors,
            });
        }
        return Err(finit_error(k, &name, e, log_after));
    }
    kill_point("load:transition");
    if let Some(f) = &frozen {
        let left = switch_and_thaw(k, f, 1, opts, obs);
        if !left.is_empty() {
            obs.event(&Event::Reverting {
                patch: name.clone(),
                blockers: left.clone(),
                interrupted: false,
            });
            return revert(k, &name, "0", left, false, opts, obs, true);
        }
    }
    match watch_lazily_or_freeze_blockers(k, &name, 1, opts, obs)? {
        WatchOutcome::Complete { elapsed } => {
            // Someone may have disabled the patch meanwhile (`echo 0 > enabled`).
            if !k.exists(&patch_dir(&name)) {
                remove_module(k, &name, opts.remove_wait, obs)?;
                return Err(KernelError::DisabledMeanwhile { name });
            }
            Ok(Outcome::Done {
                patch: name,
                elapsed,
            })
        }
        WatchOutcome::Stalled {
            blockers,
            interrupted,
            ..
        } => {
            obs.event(&Event::Reverting {
                patch: name.clone(),
                blockers: blockers.clone(),
                interrupted,
            });
            revert(k, &name, "0", blockers, interrupted, opts, obs, true)
        }
    }
}

/// Disable a patch, watch the unpatch transition, remove the module.
pub fn unload(
    k: &dyn Kernel,
    name: &str,
    opts: &Options,
    obs: &mut dyn Observer,
) -> Result<Outcome, KernelError> {
    check_livepatch(k)?;
    let dir = patch_dir(name);
    if !k.exists(&dir) {
        if module_loaded(k, name) && is_livepatch_module(k, name) {
            // Already disabled, only the module is left.
            let start = k.now();
            remove_module(k, name, opts.remove_wait, obs)?;
            return Ok(Outcome::Done {
                patch: name.into(),
                elapsed: k.now().saturating_sub(start),
            });
        }
        return Err(KernelError::NotLoaded {
            name: name.into(),
            dir,
        });
    }
    if let Some(busy) = transition_patch(k)? {
        if busy != name {
            return Err(KernelError::Busy {
                name: name.into(),
                busy,
            });
        }
    }
    if is_enabled(k, name)? {
        let frozen = match opts.freeze {
            FreezeMode::All => match freeze_now(k, opts, None, obs) {
                Ok(f) => Some(f),
                Err(e) => return Ok(not_frozen(name.into(), e)),
            },
            _ => None,
        };
        obs.event(&Event::Disabling { patch: name.into() });
        kill_point("unload:before-disable");
        if let Err(e) = write_enabled(k, name, "0") {
            if let Some(f) = &frozen {
                let errors = freeze::thaw(k, f);
                obs.event(&Event::Thawed {
                    paused_ms: ms(k.now().saturating_sub(f.started)),
                    switched: false,
                    errors,
                });
            }
            return Err(e);
        }
        kill_point("unload:transition");
        if let Some(f) = &frozen {
            let left = switch_and_thaw(k, f, 0, opts, obs);
            if !left.is_empty() {
                obs.event(&Event::Reverting {
                    patch: name.into(),
                    blockers: left.clone(),
                    interrupted: false,
                });
                return revert(k, name, "1", left, false, opts, obs, false);
            }
        }
    }
    match watch_lazily_or_freeze_blockers(k, name, 0, opts, obs)? {
        WatchOutcome::Complete { elapsed } => {
            kill_point("unload:before-remove");
            remove_module(k, name, opts.remove_wait, obs)?;
            Ok(Outcome::Done {
                patch: name.into(),
                elapsed,
            })
        }
        WatchOutcome::Stalled {
            blockers,
            interrupted,
            ..
        } => {
            obs.event(&Event::Reverting {
                patch: name.into(),
                blockers: blockers.clone(),
                interrupted,
            });
            revert(k, name, "1", blockers, interrupted, opts, obs, false)
        }
    }
}

fn not_frozen(patch: String, e: FreezeError) -> Outcome {
    let unfrozen = match &e {
        FreezeError::Timeout { unfrozen, .. } => unfrozen.clone(),
        FreezeError::Failed { .. } => Vec::new(),
    };
    Outcome::NotFrozen {
        patch,
        reason: e.to_string(),
        unfrozen,
    }
}

/// Watches the transition of `name` towards `target` as `opts.watch` says; with
/// [`FreezeMode::Blockers`], once `watch.wait` has passed, freezes the user tasks that still
/// block, lets them switch, thaws them, and watches on (signalling what is left, kernel
/// threads, as the policy says).
fn watch_lazily_or_freeze_blockers(
    k: &dyn Kernel,
    name: &str,
    target: i32,
    opts: &Options,
    obs: &mut dyn Observer,
) -> Result<WatchOutcome, KernelError> {
    if opts.freeze != FreezeMode::Blockers {
        return watch_transition(k, name, &opts.watch, obs);
    }
    let first = WatchPolicy {
        signal: false,
        ..opts.watch.clone()
    };
    match watch_transition(k, name, &first, obs)? {
        WatchOutcome::Stalled {
            interrupted: false, ..
        } => {}
        other => return Ok(other),
    }
    let pids: Vec<i32> = {
        let mut p: Vec<i32> = user_blockers(k, target).iter().map(|b| b.pid).collect();
        p.sort_unstable();
        p.dedup();
        p
    };
    if !pids.is_empty() {
        match freeze_now(k, opts, Some(&pids), obs) {
            Ok(f) => {
                switch_and_thaw(k, &f, target, opts, obs);
            }
            // A blocker that cannot be stopped (uninterruptible sleep) is left to the signals.
            Err(e) => obs.event(&Event::Thawed {
                paused_ms: 0,
                switched: false,
                errors: vec![e.to_string()],
            }),
        }
    }
    // The rest (kernel threads, idle tasks) switch lazily: the kernel retries about once a
    // second, so they get the whole wait (and the signals) again.
    watch_transition(k, name, &opts.watch, obs)
}

fn write_enabled(k: &dyn Kernel, name: &str, value: &str) -> Result<(), KernelError> {
    let path = patch_dir(name).join("enabled");
    k.write(&path, value).map_err(|e| {
        if e.raw_os_error() == Some(Errno::EBUSY as i32) {
            KernelError::Busy {
                name: name.into(),
                busy: transition_patch(k)
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| "another patch".into()),
            }
        } else {
            KernelError::io(path, e)
        }
    })
}

/// Reverse the transition of `name` (write `value` to `enabled`), watch it, and for a load
/// remove the module once the patch is gone.
#[allow(clippy::too_many_arguments)]
fn revert(
    k: &dyn Kernel,
    name: &str,
    value: &str,
    blockers: Vec<Blocker>,
    interrupted: bool,
    opts: &Options,
    obs: &mut dyn Observer,
    remove: bool,
) -> Result<Outcome, KernelError> {
    let registered = k.exists(&patch_dir(name));
    if !(registered && crate::patches::in_transition(k, name).unwrap_or(false)) {
        // The forward transition completed between the last poll and now.
        if remove && registered {
            return Ok(Outcome::Done {
                patch: name.into(),
                elapsed: Duration::ZERO,
            });
        }
        if !remove {
            remove_module(k, name, opts.remove_wait, obs)?;
            return Ok(Outcome::Done {
                patch: name.into(),
                elapsed: Duration::ZERO,
            });
        }
    }
    write_enabled(k, name, value)?;
    kill_point(if remove {
        "load:revert"
    } else {
        "unload:revert"
    });
    // The reversal itself is not cancellable: it is what restores a known state.
    let policy = WatchPolicy {
        cancel: None,
        ..opts.revert.clone()
    };
    match watch_transition(k, name, &policy, obs)? {
        WatchOutcome::Complete { .. } => {
            if remove {
                remove_module(k, name, opts.remove_wait, obs)?;
            }
            Ok(Outcome::Reverted {
                patch: name.into(),
                blockers,
                interrupted,
            })
        }
        WatchOutcome::Stalled {
            blockers: reverse_blockers,
            ..
        } => Ok(Outcome::Stuck {
            patch: name.into(),
            blockers,
            reverse_blockers,
        }),
    }
}

/// Wait for the kernel to let go of a disabled patch module, then `delete_module` it.
pub fn remove_module(
    k: &dyn Kernel,
    name: &str,
    wait: Duration,
    obs: &mut dyn Observer,
) -> Result<(), KernelError> {
    let start = k.now();
    loop {
        // The livepatch core frees a disabled patch asynchronously; its directory goes last.
        let still_registered = k.exists(&patch_dir(name));
        if !still_registered {
            match k.delete_module(name) {
                Ok(()) => {
                    obs.event(&Event::Removed { patch: name.into() });
                    return Ok(());
                }
                Err(Errno::ENOENT) => {
                    obs.event(&Event::Removed { patch: name.into() });
                    return Ok(());
                }
                Err(Errno::EAGAIN | Errno::EBUSY) => {}
                Err(e) => {
                    return Err(KernelError::Remove {
                        name: name.into(),
                        reason: format!("delete_module: {e}"),
                    })
                }
            }
        } else if is_enabled(k, name).unwrap_or(false) {
            return Err(KernelError::Remove {
                name: name.into(),
                reason: "the patch is enabled".into(),
            });
        }
        if k.now().saturating_sub(start) >= wait {
            let refcnt = read_trim(k, &Path::new("/sys/module").join(name).join("refcnt"))
                .unwrap_or_else(|_| "?".into());
            return Err(KernelError::Remove {
                name: name.into(),
                reason: format!(
                    "still in use after {}s (refcnt {refcnt}{})",
                    wait.as_secs(),
                    if still_registered {
                        ", still registered with livepatch"
                    } else {
                        ""
                    }
                ),
            });
        }
        k.sleep(Duration::from_millis(100));
    }
}

/// An open, read-only file holding the uncompressed image (the original file when it is not
/// compressed). The kernel refuses (ETXTBSY) a module fd that anyone holds open for writing,
/// so a decompressed image is written to a temporary file that is reopened read-only and
/// unlinked.
fn image_file(module: &ModuleFile) -> Result<std::fs::File, KernelError> {
    use std::io::Write;
    if !module.compressed {
        return std::fs::File::open(&module.path).map_err(|e| KernelError::io(&module.path, e));
    }
    let tmp_dir = std::env::temp_dir();
    let mut tmp = tempfile::Builder::new()
        .prefix("kpatch-rs-image-")
        .suffix(".ko")
        .tempfile_in(&tmp_dir)
        .map_err(|e| KernelError::io(&tmp_dir, e))?;
    tmp.write_all(&module.image)
        .and_then(|()| tmp.flush())
        .map_err(|e| KernelError::io(tmp.path(), e))?;
    let ro = std::fs::File::open(tmp.path()).map_err(|e| KernelError::io(tmp.path(), e))?;
    drop(tmp); // closes the writable handle and unlinks the name
    Ok(ro)
}
