//! A test hook: `KPATCH_RS_TEST_KILL_AT=STEP` makes the process send itself SIGKILL when it
//! reaches the step of that name, so that the fault tests can kill `load`, `unload`, `install`
//! and `uninstall` at each step deterministically, without racing a `kill` from outside. The
//! steps are listed in [`STEPS`]; nothing else reads the variable, and without it a kill point
//! costs one cached lookup.

use std::sync::OnceLock;

/// The environment variable read by [`kill_point`].
pub const KILL_AT_VAR: &str = "KPATCH_RS_TEST_KILL_AT";

/// Every kill point, as `command:step`.
pub const STEPS: &[&str] = &[
    // load: the module is read and checked, finit_module not yet called.
    "load:before-finit",
    // load: finit_module returned, the transition is being watched.
    "load:transition",
    // load: the stalled transition's reversal was started (`enabled` is 0), being watched.
    "load:revert",
    // unload: the patch is about to be disabled.
    "unload:before-disable",
    // unload: `enabled` is 0, the unpatch transition is being watched.
    "unload:transition",
    // unload: the stalled unpatch's reversal was started (`enabled` is 1), being watched.
    "unload:revert",
    // unload: the patch is gone, its module not yet removed.
    "unload:before-remove",
    // install: the boot unit is written, nothing of the module yet.
    "install:unit",
    // install: the module's SHA-256 record is written, the module not yet.
    "install:sha256",
    // install: half of the module's bytes are written to its temporary file.
    "install:module-partial",
    // install: the module is renamed into place (the install is complete on disk).
    "install:module",
    // uninstall: the module file is removed, its SHA-256 record not yet.
    "uninstall:module",
    // uninstall: everything of the patch is removed, the boot unit not yet.
    "uninstall:before-unit",
];

/// Sends SIGKILL to this process if [`KILL_AT_VAR`] names `step`.
pub fn kill_point(step: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(KILL_AT_VAR).ok());
    if at.as_deref() == Some(step) {
        debug_assert!(STEPS.contains(&step), "unlisted kill point {step}");
        // SAFETY: raise(2) with a valid signal number has no memory-safety preconditions.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
}
