//! Build pipeline: target kernel, patch application, selective compilation.
