//! Build pipeline: target kernel, patch application, selective compilation.

pub mod apply;
pub mod error;
pub mod compiler;
pub mod config;
pub mod exec;
pub mod journal;
pub mod includes;
pub mod kbuild;
pub mod patchfile;
pub mod probe;

pub use error::{BuildError, Result};
