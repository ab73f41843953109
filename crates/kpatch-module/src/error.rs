//! Errors of module generation. Each names the translation unit, section, symbol or file at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("{tu}: {source}")]
    Elf {
        tu: String,
        #[source]
        source: kpatch_elf::ElfError,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid patch name `{name}`: {reason}")]
    BadPatchName { name: String, reason: String },

    #[error("{tu}: invalid livepatch object name `{object}`: {reason}")]
    BadObjectName {
        tu: String,
        object: String,
        reason: String,
    },

    #[error("{tu}: symbol `{symbol}` cannot be named in a livepatch symbol: {reason}")]
    BadSymbolName {
        tu: String,
        symbol: String,
        reason: String,
    },

    #[error("{tu}: symbol `{symbol}` is not in the target kernel ({object}): {reason}")]
    SymbolNotInTarget {
        tu: String,
        symbol: String,
        object: String,
        reason: String,
    },

    #[error("{tu}: changed function `{function}` is not defined as a function in the diff object")]
    ChangedFunctionMissing { tu: String, function: String },

    #[error("{tu}: changed function `{function}` of {object}: {reason}")]
    FunctionNotInTarget {
        tu: String,
        function: String,
        object: String,
        reason: String,
    },

    #[error("function `{function}` of {object} is patched twice (by {first} and {second})")]
    DuplicateFunction {
        function: String,
        object: String,
        first: String,
        second: String,
    },

    #[error(
        "{tu}: special section `{section}` refers to `{symbol}` of module {object}, which livepatch \
         resolves only after the module loader has processed `{section}`; in the patched code, test \
         a static key with `static_key_enabled(&key)` instead of a jump label (static_branch_*), and \
         call a static call's target through a plain function (pointer) instead of static_call()"
    )]
    SpecialSectionKlp {
        tu: String,
        section: String,
        symbol: String,
        object: String,
    },

    #[error("{tu}: {site} takes the address of `{symbol}` ({object}), whose ENDBR the kernel seals at boot (IBT: nothing in {object} takes its address), so an indirect call to it would fault; call it directly, or take the address of a wrapper the patch defines")]
    SealedFunctionAddress {
        tu: String,
        site: String,
        symbol: String,
        object: String,
    },

    #[error("{tu}: code for vmlinux refers to `{symbol}`, which only module {object} defines")]
    VmlinuxUsesModuleSymbol {
        tu: String,
        symbol: String,
        object: String,
    },

    #[error("{tu}: section `{section}` refers to `{symbol}` (resolved by livepatch), but `{section}` is not loaded into memory")]
    KlpInNonAllocSection {
        tu: String,
        section: String,
        symbol: String,
    },

    #[error("{tu}: {count} {kind} callbacks in one file; livepatch allows one per object")]
    MultipleCallbacksInTu {
        tu: String,
        kind: String,
        count: usize,
    },

    #[error("{kind} callback for object {object} defined twice (in {first} and {second}); livepatch allows one per object")]
    DuplicateCallback {
        kind: String,
        object: String,
        first: String,
        second: String,
    },

    #[error("{tu}: section `{section}` has size {size}, not a whole number of {entry}-byte callback records")]
    BadCallbackSection {
        tu: String,
        section: String,
        size: u64,
        entry: u64,
    },

    #[error("{tu}: undefined symbol [{index}] has no name")]
    UnnamedUndefined { tu: String, index: usize },

    #[error("the patch changes no function")]
    NothingToPatch,

    #[error("{path}: kernel headers are for release {found}, the target is {expected}")]
    HeadersVersion {
        path: PathBuf,
        found: String,
        expected: String,
    },

    #[error("kbuild failed (`{command}`, {status}); its output ends with:\n{output}")]
    Kbuild {
        command: String,
        status: String,
        output: String,
    },

    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{file}: vermagic `{found}` is not for the target release {expected}")]
    Vermagic {
        file: String,
        found: String,
        expected: String,
    },

    #[error("{file}: no vermagic in .modinfo")]
    NoVermagic { file: String },

    #[error(
        "{file}: CRC mismatch for `{symbol}`: the module was built against {module_crc:#010x}, \
         the target kernel has {target_crc:#010x}"
    )]
    CrcMismatch {
        file: String,
        symbol: String,
        module_crc: u32,
        target_crc: u32,
    },

    #[error("{file}: `{symbol}` has no entry in __versions, but the target kernel exports it with CRC {target_crc:#010x}")]
    CrcMissing {
        file: String,
        symbol: String,
        target_crc: u32,
    },

    #[error(
        "{file}: `{symbol}` is still undefined after conversion; the module loader would refuse it"
    )]
    UnresolvedInModule { file: String, symbol: String },

    #[error("{file}: {reason}")]
    BadModule { file: String, reason: String },
}

impl ModuleError {
    pub(crate) fn elf(tu: &str, source: kpatch_elf::ElfError) -> Self {
        ModuleError::Elf {
            tu: tu.to_string(),
            source,
        }
    }
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModuleError::Io {
            path: path.into(),
            source,
        }
    }

    /// The patch cannot be live-patched as written (exit status 2 of `build`), as opposed to a
    /// failure of the tools or the target: the message says why and what to do instead.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ModuleError::SealedFunctionAddress { .. }
                | ModuleError::SpecialSectionKlp { .. }
                | ModuleError::VmlinuxUsesModuleSymbol { .. }
        )
    }
}
