//! Build pipeline: target kernel, patch application, selective compilation.

pub mod apply;
pub mod error;
pub mod exec;
pub mod journal;
pub mod patchfile;

pub use error::{BuildError, Result};
