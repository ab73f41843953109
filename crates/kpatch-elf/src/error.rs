use std::path::PathBuf;

/// Errors from reading or writing an object. Each names the file and, where there is one,
/// the section or symbol at fault.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a valid ELF object: {reason}")]
    Malformed { file: String, reason: String },
    #[error("{file}: unsupported object: {reason}")]
    Unsupported { file: String, reason: String },
    #[error("{file}: section [{index}] '{section}': {reason}")]
    BadSection {
        file: String,
        index: usize,
        section: String,
        reason: String,
    },
    #[error("{file}: symbol [{index}] '{symbol}': {reason}")]
    BadSymbol {
        file: String,
        index: usize,
        symbol: String,
        reason: String,
    },
    #[error("cannot write object: {reason}")]
    Write { reason: String },
}
