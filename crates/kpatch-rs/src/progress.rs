//! Stage-by-stage progress on a terminal; silent when stderr is not one.

use std::io::IsTerminal;
use std::time::Instant;

pub struct Progress {
    start: Instant,
    tty: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        Progress {
            start: Instant::now(),
            tty: !quiet && std::io::stderr().is_terminal(),
        }
    }

    /// Prints one stage line with the elapsed time, on a terminal only.
    pub fn stage(&self, what: impl AsRef<str>) {
        if self.tty {
            eprintln!(
                "[{:>6.1}s] {}",
                self.start.elapsed().as_secs_f64(),
                what.as_ref()
            );
        }
    }

    /// Rewrites one line with `done of total what` as a long step advances, on a terminal only;
    /// the line is finished when `done` reaches `total`.
    pub fn count(&self, what: &str, done: usize, total: usize) {
        if self.tty {
            eprint!(
                "\r[{:>6.1}s] {done} of {total} {what}",
                self.start.elapsed().as_secs_f64()
            );
            if done >= total {
                eprintln!();
            }
        }
    }

    /// Prints a line whatever stderr is (warnings the user must see).
    pub fn warn(&self, what: impl AsRef<str>) {
        eprintln!("kpatch-rs: {}", what.as_ref());
    }

    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}
