//! Errors of symbol resolution. Every variant names the file, symbol or object concerned.

use std::fmt;
use std::path::PathBuf;

/// One occurrence of an ambiguous or unmatched local symbol, reported to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// 1-based position among same-named symbols of the object, in kallsyms order.
    pub position: usize,
    /// Link-time (or, for /proc/kallsyms, run-time) address.
    pub address: u64,
    /// nm-style type letter (`t`, `T`, `d`, ...).
    pub kind: char,
    /// Source file from the vmlinux FILE symbol, when known.
    pub file: Option<String>,
    /// Names near the candidate that were compared with the translation unit.
    pub neighbours: Vec<String>,
    /// How many of the translation unit's other symbols were found near the candidate.
    pub score: usize,
    /// How many of those are evidence: names that occur only once in the object (so they are the
    /// unit's own), or members of the candidate's FILE block.
    pub anchors: usize,
    /// Another symbol of the same name is right next to this one, so the neighbours may be the
    /// other's.
    pub twin: bool,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} at {:#x} ({})",
            self.position, self.address, self.kind
        )?;
        if let Some(file) = &self.file {
            write!(f, " in {file}")?;
        }
        write!(
            f,
            ", {} matching neighbour(s), {} distinctive",
            self.score, self.anchors
        )?;
        if self.twin {
            write!(f, ", next to another of the same name")?;
        }
        if !self.neighbours.is_empty() {
            write!(f, " [{}]", self.neighbours.join(", "))?;
        }
        Ok(())
    }
}

fn list(candidates: &[Candidate]) -> String {
    candidates.iter().map(|c| format!("\n  {c}")).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{file}:{line}: malformed Module.symvers line: {reason}")]
    SymversLine {
        file: String,
        line: usize,
        reason: String,
    },

    #[error("{file}:{line}: malformed kallsyms line: {reason}")]
    KallsymsLine {
        file: String,
        line: usize,
        reason: String,
    },

    #[error("{file}: cannot parse ELF: {reason}")]
    Elf { file: String, reason: String },

    #[error("{file}: {format}-compressed, not an ELF file: decompress it first")]
    Compressed { file: String, format: &'static str },

    #[error("{file}: ELF file has no usable symbol table (.symtab missing or empty: stripped)")]
    NoSymtab { file: String },

    #[error("{file}: no kallsyms tables found: {reason}")]
    KallsymsNotFound { file: String, reason: String },

    #[error("{file}: kallsyms table is corrupt: {reason}")]
    KallsymsCorrupt { file: String, reason: String },

    #[error("{file}: malformed __versions section: {reason}")]
    Modversions { file: String, reason: String },

    #[error("symbol `{symbol}` not found in {object} (symbols from {file})")]
    SymbolNotFound {
        symbol: String,
        object: String,
        file: String,
    },

    #[error(
        "symbol `{symbol}` of {tu} occurs {} times in {object} (symbols from {file}) and its \
         neighbours do not single out one occurrence; candidates:{}",
        candidates.len(),
        list(candidates)
    )]
    Ambiguous {
        symbol: String,
        object: String,
        tu: String,
        file: String,
        candidates: Vec<Candidate>,
    },

    #[error(
        "symbol `{symbol}` of {tu} occurs in {object} (symbols from {file}), but no occurrence \
         lies among the translation unit's other symbols; candidates:{}",
        list(candidates)
    )]
    NoMatchingBlock {
        symbol: String,
        object: String,
        tu: String,
        file: String,
        candidates: Vec<Candidate>,
    },

    #[error(
        "symbol `{symbol}` has no occurrence #{position} in {object}: it occurs {occurrences} \
         time(s) (symbols from {file})"
    )]
    NoSuchPosition {
        symbol: String,
        object: String,
        position: usize,
        occurrences: usize,
        file: String,
    },

    #[error("symbol `{symbol}` is not exported by the target (not in {file})")]
    NotExported { symbol: String, file: String },

    #[error(
        "CRC mismatch for `{symbol}`: {user} expects {found:#010x}, the target ({file}, {module}) \
         has {expected:#010x}"
    )]
    CrcMismatch {
        symbol: String,
        user: String,
        found: u32,
        expected: u32,
        module: String,
        file: String,
    },
}
