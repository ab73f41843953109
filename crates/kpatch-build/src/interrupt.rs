//! Ctrl-C and SIGTERM during a build: remember the signal instead of dying, so the patch guard
//! can restore the tree. make and the compiler (same process group) receive SIGINT themselves
//! and fail, which unwinds the pipeline; SIGKILL cannot be caught, and the journal covers it.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::error::{BuildError, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs handlers for SIGINT, SIGTERM and SIGHUP that only set a flag.
/// Call once from the binary before building.
pub fn install_handlers() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }.map_err(|e| BuildError::Io {
            path: format!("sigaction({sig})").into(),
            source: std::io::Error::from(e),
        })?;
    }
    Ok(())
}

/// Whether a signal arrived since the handlers were installed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// `Err(Interrupted)` once a signal arrived.
pub fn check() -> Result<()> {
    if interrupted() {
        Err(BuildError::Interrupted)
    } else {
        Ok(())
    }
}
