use std::path::PathBuf;

/// Errors from inspecting or changing the kernel's livepatch state.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not an ELF module: {reason}")]
    NotElf { path: PathBuf, reason: String },
    #[error("{path}: malformed module: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{path}: not a kernel module for this machine: {reason}")]
    Foreign { path: PathBuf, reason: String },
    #[error("{path}: decompresses to more than {} MiB; refusing it as a module", limit >> 20)]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path}: no .modinfo section")]
    NoModinfo { path: PathBuf },
    #[error("{path}: cannot decompress: {source}")]
    Decompress {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: module {name} is not a livepatch module (no livepatch=Y in .modinfo)")]
    NotLivepatch { path: PathBuf, name: String },
    #[error(
        "the running kernel has no livepatch support: {dir} does not exist (CONFIG_LIVEPATCH)"
    )]
    NoLivepatch { dir: PathBuf },
    #[error(
        "{path}: module {name} was built for kernel {built_for}, but the running kernel is {running} \
         (vermagic \"{vermagic}\")"
    )]
    WrongKernel {
        path: PathBuf,
        name: String,
        built_for: String,
        running: String,
        vermagic: String,
    },
    #[error("patch {name} is already loaded{}", if *.enabled { " and enabled" } else { " (disabled)" })]
    AlreadyLoaded { name: String, enabled: bool },
    #[error("module {name} is already loaded (finit_module: EEXIST)")]
    ModuleExists { name: String },
    #[error(
        "patch {busy} is in transition; refusing to start another transition for {name} \
         (wait for it, or run `kpatch-rs signal`)"
    )]
    Busy { name: String, busy: String },
    #[error("the kernel refused {name}: {reason} (finit_module: {errno}){}",
        if kernel_log.is_empty() { String::new() } else { format!("; kernel log: {}", kernel_log.join(" | ")) })]
    Refused {
        name: String,
        errno: nix::errno::Errno,
        reason: String,
        /// The kernel's own messages about the module, logged by the failed load.
        kernel_log: Vec<String>,
    },
    #[error("patch {name} was disabled by someone else while its transition was watched; its module was removed")]
    DisabledMeanwhile { name: String },
    #[error("patch {name} is not loaded ({dir} does not exist)")]
    NotLoaded { name: String, dir: PathBuf },
    #[error("{path}: unexpected content {content:?}")]
    Parse { path: PathBuf, content: String },
    #[error("module {name} could not be removed: {reason}")]
    Remove { name: String, reason: String },
    #[error("no installed patch named {name} for kernel {kernel} in {dir}")]
    NotInstalled {
        name: String,
        kernel: String,
        dir: PathBuf,
    },
    #[error("{path}: already installed for kernel {kernel} (uninstall it first)")]
    AlreadyInstalled { path: PathBuf, kernel: String },
    #[error(
        "{path}: not trusted: {reason} (kpatch-rs loads at boot only what root alone can change)"
    )]
    Untrusted { path: PathBuf, reason: String },
    #[error("{path}: no SHA-256 recorded at install ({record} is missing or unreadable): not installed by `kpatch-rs install`; refusing to load it")]
    NoRecordedHash { path: PathBuf, record: PathBuf },
    #[error("{path}: its SHA-256 {actual} differs from {recorded}, recorded at install in {record}; refusing to load it")]
    HashMismatch {
        path: PathBuf,
        recorded: String,
        actual: String,
        record: PathBuf,
    },
    #[error("{path}: module {name} is not signed, and the kernel enforces module signatures ({reason}); refused before finit_module")]
    Unsigned {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("{path}: invalid module file name (expected NAME.ko, NAME.ko.xz, NAME.ko.zst or NAME.ko.gz)")]
    BadFileName { path: PathBuf },
}

impl KernelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        KernelError::Io {
            path: path.into(),
            source,
        }
    }
}
