use std::path::PathBuf;

/// Errors while resolving, fetching or preparing a Debian target kernel.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("package {package}: `{command}` failed: {message}")]
    Apt {
        package: String,
        command: String,
        message: String,
    },
    #[error("package {package}: apt offers no candidate version (are the package lists current? `apt-get update`)")]
    NoCandidate { package: String },
    #[error("package {package}: cannot find a linux-image dependency in {depends:?}")]
    NoImageDependency { package: String, depends: String },
    #[error("{abi:?} is not a Debian kernel ABI kpatch-rs targets (expected 6.1.0-NN-FLAVOUR or 6.12.NNN+debNN-FLAVOUR, FLAVOUR one of amd64, cloud-amd64, rt-amd64)")]
    NotDebianAbi { abi: String },
    #[error("kernel {abi}: the archive no longer has {package} {version}, the source of this kernel; it has {}", if available.is_empty() { "no version of it".to_string() } else { available.join(", ") })]
    SourceMissing {
        abi: String,
        package: String,
        version: String,
        available: Vec<String>,
    },
    #[error("kernel {abi}: Debian builds it with the {featureset} featureset, whose patch series is in the packaging of its source, and the archive has that of no usable version for {version} (deb-src lists offer: {}; tried: {})", if offered.is_empty() { "none".to_string() } else { offered.join(", ") }, if tried.is_empty() { "none".to_string() } else { tried.join("; ") })]
    FeaturesetMissing {
        abi: String,
        featureset: String,
        version: String,
        offered: Vec<String>,
        tried: Vec<String>,
    },
    #[error("{path}: {what}")]
    BadPackage { path: PathBuf, what: String },
    #[error("{path}: not a bzImage: {reason}")]
    BzImage { path: PathBuf, reason: String },
    #[error("{path}: {format} payload: {message}")]
    Decompress {
        path: PathBuf,
        format: &'static str,
        message: String,
    },
    #[error("{path}: Debian ships a stub System.map (the real one is in the -dbg package); use the guest's /proc/kallsyms")]
    StubSystemMap { path: PathBuf },
    #[error("{path}: {what}")]
    BadModule { path: PathBuf, what: String },
    #[error("{path}: expected {what} is missing from the unpacked package")]
    Missing { path: PathBuf, what: String },
}

impl TargetError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TargetError::Io {
            path: path.into(),
            source,
        }
    }
}
