//! Livepatch module generation: klp relocations, klp symbols, glue.
//!
//! [`build_module`] turns the differ's objects into a loadable livepatch module:
//! 1. [`plan::plan`] resolves every symbol the patched code uses through a [`SymbolResolver`] and
//!    rewrites the diff objects for linking (livepatch symbols become undefined weak
//!    placeholders; changed functions get global aliases);
//! 2. [`glue::generate`] writes the `klp_patch` C glue;
//! 3. [`kbuild`] builds `livepatch-<patch>.ko` against the target's headers;
//! 4. [`finalize::convert_klp`] turns the placeholders into `.klp.sym.*` symbols with
//!    `.klp.rela.*` sections, and [`finalize::check_module`] checks vermagic and CRCs;
//! 5. the module is written atomically (temporary file, rename).

mod error;
pub mod finalize;
pub mod glue;
pub mod headers;
pub mod kbuild;
pub mod names;
pub mod plan;
pub mod resolver;

pub use error::ModuleError;
pub use glue::{GlueOptions, PatchMetadata};
pub use kbuild::KbuildOptions;
pub use kpatch_common::exec::{Runner, SystemRunner};
pub use plan::{CallbackKind, Plan, TuInput};
pub use resolver::{KernelResolver, Resolution, ResolveError, SymbolResolver, TuContext};

use std::path::{Path, PathBuf};

/// What to build.
#[derive(Debug, Clone)]
pub struct ModuleOptions {
    /// The patch name; the module is `livepatch-<name>.ko` (kernel name `livepatch_<name>`).
    pub patch_name: String,
    pub glue: GlueOptions,
    pub kbuild: KbuildOptions,
    /// Where the `.ko` goes.
    pub output: PathBuf,
    /// Keep the kbuild directory here instead of a temporary directory (for debugging).
    pub work_dir: Option<PathBuf>,
}

/// The module that was built.
#[derive(Debug, Clone)]
pub struct BuiltModule {
    pub path: PathBuf,
    /// The kernel's name for it (`livepatch_<name>`, also `/sys/kernel/livepatch/<name>`).
    pub module_name: String,
    pub plan: Plan,
}

/// Builds the livepatch module (see the crate docs). On any error no module is left at
/// `opts.output`.
pub fn build_module(
    opts: &ModuleOptions,
    tus: Vec<TuInput>,
    resolver: &dyn SymbolResolver,
    runner: &dyn Runner,
) -> Result<BuiltModule, ModuleError> {
    names::check_patch_name(&opts.patch_name)?;
    kbuild::check_headers_release(&opts.kbuild.kbuild_dir, &opts.glue.target_release)?;
    let plan = plan::plan(tus, resolver)?;
    let glue = glue::generate(&plan, &opts.glue);
    let stem = names::module_file_stem(&opts.patch_name);

    let tmp;
    let dir: &Path = match &opts.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| ModuleError::io(d, e))?;
            d
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("kpatch-rs-module.")
                .tempdir()
                .map_err(|e| ModuleError::io(std::env::temp_dir(), e))?;
            tmp.path()
        }
    };
    kbuild::write_build_dir(dir, &stem, &plan, &glue)?;
    let ko_path = kbuild::run_kbuild(runner, &opts.kbuild, dir, &stem)?;
    let file = ko_path.display().to_string();
    let mut ko = kpatch_elf::Object::read(&ko_path).map_err(|e| ModuleError::elf(&file, e))?;
    finalize::convert_klp(&mut ko, &plan, &file)?;
    finalize::check_module(&ko, &plan, &opts.glue.target_release, &file)?;
    ko.write_to_path(&opts.output)
        .map_err(|e| ModuleError::elf(&opts.output.display().to_string(), e))?;
    Ok(BuiltModule {
        path: opts.output.clone(),
        module_name: kpatch_common::canonical_module_name(&stem),
        plan,
    })
}
