//! Errors of the build pipeline. Every variant names the file, tree or tool it concerns.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}):\n{output}")]
    ToolFailed {
        command: String,
        status: String,
        output: String,
    },
    #[error("{patch}: line {line}: {reason}")]
    PatchSyntax {
        patch: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{patch}: not a unified diff: it names no file to patch (no `---`/`+++` header pair)")]
    EmptyPatch { patch: PathBuf },
    #[error("{patch}: {path}: {symlink} is a symlink to {target}, outside the source tree; refusing to patch through it")]
    PatchLeavesTree {
        patch: PathBuf,
        path: PathBuf,
        symlink: PathBuf,
        target: PathBuf,
    },
    #[error("{patch}: does not apply to {tree}; the tree is unchanged. GNU patch said:\n{output}")]
    PatchDoesNotApply {
        patch: PathBuf,
        tree: PathBuf,
        output: String,
    },
    #[error(
        "{tree}: a patch is already applied (journal {journal} exists); recover the tree first"
    )]
    AlreadyPatched { tree: PathBuf, journal: PathBuf },
    #[error("{journal}: corrupt patch journal: {reason}")]
    CorruptJournal { journal: PathBuf, reason: String },
    #[error("compiler mismatch: the target was built with `{target}` but `{cc}` is `{found}`")]
    CompilerMismatch {
        target: String,
        cc: String,
        found: String,
    },
    #[error("{config}: has no {option}")]
    MissingConfigOption { config: PathBuf, option: String },
    #[error(
        "{tree}: not a configured kernel tree ({missing} is missing) and no --config was given"
    )]
    UnconfiguredTree { tree: PathBuf, missing: PathBuf },
    #[error("{tree}: {unit} is not part of the kernel source tree")]
    MissingUnit { tree: PathBuf, unit: PathBuf },
    #[error(
        "{unit}: not built in this kernel configuration ({object} is in neither obj-y nor obj-m)"
    )]
    UnitNotBuilt { unit: PathBuf, object: String },
    #[error("{patch}: touches no file that is compiled into the kernel (only {files})")]
    NothingToCompile { patch: PathBuf, files: String },
    #[error("{object}: kbuild did not produce it in {tree}")]
    MissingObject { tree: PathBuf, object: String },
    #[error("{path}: {reason}")]
    Vmlinux { path: PathBuf, reason: String },
    #[error(
        "{object}: the Makefiles place it in {expected} but kbuild compiled it for {compiled}"
    )]
    PlacementMismatch {
        object: String,
        expected: String,
        compiled: String,
    },
    #[error("{header}: UTS_RELEASE is \"{found}\", the target is \"{target}\"")]
    ReleaseMismatch {
        header: PathBuf,
        found: String,
        target: String,
    },
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("{}: `make olddefconfig` changed options the target kernel was built with, so this source is not the one it was built from: {}", tree.display(), options.join(", "))]
    ConfigDrift { tree: PathBuf, options: Vec<String> },
    #[error("{}: does not apply to the source, nor is it already in it ({series}{}); a tree of this kernel cannot be made from the archive: build against your own tree of it with --sourcedir DIR --config FILE --vmlinux FILE. patch said:\n{output}", patch.display(), if *exact { String::new() } else if skipped.is_empty() { ", the newest the archive has kept for this kernel".to_string() } else { format!(", the newest that could be fetched for this kernel; not fetched: {}", skipped.join("; ")) })]
    FeaturesetPatch {
        patch: PathBuf,
        series: String,
        exact: bool,
        /// The newer packaging versions that were tried first, and why each could not be had
        /// (a mirror that lists a version but does not serve it says 404).
        skipped: Vec<String>,
        output: String,
    },
    #[error("{}: {count} header(s) differ from the kernel's own ({}), so the tree is not the source the kernel was built from: {}", tree.display(), headers.display(), files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "))]
    FeaturesetHeaders {
        tree: PathBuf,
        headers: PathBuf,
        count: usize,
        files: Vec<PathBuf>,
    },
    /// Its message names the package or file; `transparent` so that `{:#}` does not print it
    /// twice (once here, once as the source).
    #[error(transparent)]
    Target(#[from] kpatch_target::TargetError),
    #[error("interrupted")]
    Interrupted,
    /// An I/O error, named by what was being done to which file (`reading patch fix.patch`).
    #[error("{what} {}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--sourcedir {}: no vmlinux there; give --vmlinux (symbol positions come from it)", tree.display())]
    TreeWithoutVmlinux { tree: PathBuf },
    #[error("{}: not a prepared kernel tree (no include/config/kernel.release)", tree.display())]
    NotPreparedTree {
        tree: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the patch changes no compiled source file for this kernel configuration")]
    NothingCompiled,
    #[error("the patch changes a loadable module, but the target's modules are unknown")]
    ModulesUnknown,
    #[error("module {module} is not in {}", dir.display())]
    ModuleNotInTree { module: String, dir: PathBuf },
    #[error("{}: no sign-file in the target's build tree", tool.display())]
    NoSignFile { tool: PathBuf },
    #[error(transparent)]
    Elf(#[from] kpatch_elf::ElfError),
    #[error(transparent)]
    Diff(#[from] kpatch_diff::DiffError),
    /// Boxed: the largest of the errors by far.
    #[error(transparent)]
    Symbols(Box<kpatch_symbols::Error>),
    #[error(transparent)]
    Module(#[from] kpatch_module::ModuleError),
}

pub type Result<T, E = BuildError> = std::result::Result<T, E>;

impl From<kpatch_symbols::Error> for BuildError {
    fn from(e: kpatch_symbols::Error) -> Self {
        BuildError::Symbols(Box::new(e))
    }
}

impl From<kpatch_common::exec::RunError> for BuildError {
    fn from(e: kpatch_common::exec::RunError) -> Self {
        use kpatch_common::exec::RunError;
        match e {
            RunError::Spawn { command, source } => BuildError::Spawn { command, source },
            RunError::Failed {
                command,
                status,
                output,
            } => BuildError::ToolFailed {
                command,
                status,
                output,
            },
        }
    }
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.into();
    move |source| BuildError::Io { path, source }
}
