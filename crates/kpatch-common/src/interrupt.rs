//! Ctrl-C, SIGTERM and SIGHUP: remembered in one flag instead of ending the process, so that
//! what is under way can be undone first (a build restores the kernel tree it patched, a
//! watched transition is reverted). Child processes in the same process group receive the
//! signal themselves. SIGKILL cannot be caught; the journals cover it.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The signals [`install`] catches.
pub const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn set_action(
    sig: libc::c_int,
    handler: libc::sighandler_t,
    flags: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: `action` is fully initialised (zeroed, then its mask emptied); the handler
    // installed is SIG_IGN or `on_signal`, which only stores to an atomic
    // (async-signal-safe).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = flags;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes SIGINT, SIGTERM and SIGHUP set the flag (system calls restart). Call once, from the
/// binary, before the work that must be undone.
pub fn install() -> std::io::Result<()> {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in SIGNALS {
        set_action(sig, handler, libc::SA_RESTART)?;
    }
    Ok(())
}

/// Ignores SIGINT, SIGTERM, SIGHUP and SIGPIPE: for a process that must outlive whatever ends
/// its parent (the freeze watchdog).
pub fn ignore() {
    for sig in SIGNALS.into_iter().chain([libc::SIGPIPE]) {
        let _ = set_action(sig, libc::SIG_IGN, 0);
    }
}

/// Whether a signal arrived since [`install`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The flag itself, for code that polls an `&AtomicBool` (a watch's cancel flag).
pub fn flag() -> &'static AtomicBool {
    &INTERRUPTED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_signal_sets_the_flag() {
        install().unwrap();
        assert!(!interrupted());
        // SAFETY: raising a signal whose handler only sets a flag.
        assert_eq!(unsafe { libc::raise(libc::SIGHUP) }, 0);
        assert!(interrupted() && flag().load(Ordering::SeqCst));
    }
}
