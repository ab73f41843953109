use std::path::PathBuf;
use std::time::Duration;

/// Errors of the guest harness.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("guest did not finish within {after:?}; last console lines:\n{tail}")]
    Timeout {
        after: Duration,
        tail: String,
        run: Box<crate::GuestRun>,
    },
    #[error("QEMU exited ({status}) without console output: {stderr}")]
    Qemu { status: String, stderr: String },
    #[error("guest file {name}: {what}")]
    Transfer { name: String, what: String },
    #[error("{path}: {what}")]
    BadInput { path: PathBuf, what: String },
    #[error("`{command}` in {dir} failed ({status}):\n{output}")]
    Build {
        command: String,
        dir: PathBuf,
        status: String,
        output: String,
    },
    #[error(transparent)]
    Target(#[from] kpatch_target::TargetError),
}

impl GuestError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GuestError::Io {
            path: path.into(),
            source,
        }
    }
}
