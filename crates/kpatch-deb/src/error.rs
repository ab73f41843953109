use kpatch_common::exec::RunError;
use std::path::PathBuf;

/// Why a package or a repository could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Tool {
        what: &'static str,
        #[source]
        source: RunError,
    },
    #[error("{path}: not a livepatch module (no livepatch=Y in .modinfo)")]
    NotLivepatch { path: PathBuf },
    #[error("{path}: no target kernel in .modinfo (kpatch_rs_kernel or vermagic)")]
    NoKernel { path: PathBuf },
    #[error("package name `{name}`: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("package version `{version}`: {reason}")]
    BadVersion {
        version: String,
        reason: &'static str,
    },
    #[error("control field {field}: {reason}")]
    BadField { field: String, reason: &'static str },
    #[error("{path} already holds a different file; a rebuilt package needs a new version")]
    PoolConflict { path: PathBuf },
}

impl DebError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DebError::Io {
            path: path.into(),
            source,
        }
    }
}
