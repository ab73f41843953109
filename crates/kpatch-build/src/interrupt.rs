//! Ctrl-C and SIGTERM during a build: the binary installs kpatch-common's handlers
//! ([`install`]), which remember the signal instead of dying, so the patch guard can restore the
//! tree. make and the compiler (same process group) receive SIGINT themselves and fail, which
//! unwinds the pipeline; SIGKILL cannot be caught, and the journal covers it.

use crate::error::{BuildError, Result};

pub use kpatch_common::interrupt::{install, interrupted};

/// `Err(Interrupted)` once a signal arrived.
pub fn check() -> Result<()> {
    if interrupted() {
        Err(BuildError::Interrupted)
    } else {
        Ok(())
    }
}
