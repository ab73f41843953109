//! Build pipeline. The front half: a prepared target kernel tree, patch application, and the
//! selective compilation of the translation units a patch affects, original and patched
//! ([`build_object_pairs`]). The whole build, from patches to a livepatch module through the
//! differ and the module generator: [`livepatch::build_livepatch`].
//!
//! ```text
//! let tree = PreparedTree::debian(&SystemRunner, &cache, &debian_source, &TreeOptions::default())?;
//! let patch = PatchFile::read("fix.patch".as_ref(), 1)?;
//! let out = build_object_pairs(&SystemRunner, &tree, &patch, &work_dir)?;
//! for pair in out.pairs { /* differ(pair.orig, pair.patched) for pair.klp_object */ }
//! ```

pub mod apply;
pub mod compile;
pub mod compiler;
pub mod config;
pub mod distributed;
pub mod error;
pub mod exec;
pub mod featureset;
pub mod includes;
pub mod interrupt;
pub mod journal;
pub mod kbuild;
pub mod lines;
pub mod livepatch;
pub mod lock;
pub mod objcache;
pub mod patchfile;
pub mod pipeline;
pub mod preprocessed;
pub mod probe;
pub mod reach;
pub mod select;
pub mod timing;
pub mod tree;

pub use apply::PatchReport;
pub use error::{BuildError, Result};
pub use exec::{Runner, SystemRunner};
pub use kbuild::Kbuild;
pub use patchfile::PatchFile;
pub use pipeline::{
    build_object_pairs, build_object_pairs_with_progress, BuildOutput, ObjectPair, Progress,
};
pub use probe::Placement;
pub use tree::{DebianSource, PreparedTree, TreeOptions};
