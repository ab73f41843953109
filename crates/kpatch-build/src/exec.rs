//! The seam through which every external tool (make, patch, tar, gcc) is run: kpatch-common's
//! [`Runner`]; its errors become [`crate::BuildError::Spawn`] and [`crate::BuildError::ToolFailed`].

pub use kpatch_common::exec::{Cmd, CmdOutput, RunError, Runner, SystemRunner};
