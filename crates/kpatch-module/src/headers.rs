//! The patch-author headers kpatch-rs ships (`include/` of the repository), embedded so that the
//! binary can put them on the include path of every compile without a separate install step.

use crate::ModuleError;
use std::path::{Path, PathBuf};

/// `kpatch-macros.h`: callbacks, ignore/force markers, KPATCH_PRINTK.
pub const KPATCH_MACROS_H: &str = include_str!("../../../include/kpatch-macros.h");
/// `kpatch-syscall.h`: KPATCH_SYSCALL_DEFINE1..6.
pub const KPATCH_SYSCALL_H: &str = include_str!("../../../include/kpatch-syscall.h");

/// Every shipped header, by file name.
pub const HEADERS: [(&str, &str); 2] = [
    ("kpatch-macros.h", KPATCH_MACROS_H),
    ("kpatch-syscall.h", KPATCH_SYSCALL_H),
];

/// Writes the headers into `dir` (created if needed) and returns it, for use as `-I<dir>`.
/// Files already holding the same text are left alone.
pub fn install_headers(dir: &Path) -> Result<PathBuf, ModuleError> {
    std::fs::create_dir_all(dir).map_err(|e| ModuleError::io(dir, e))?;
    for (name, text) in HEADERS {
        let p = dir.join(name);
        if std::fs::read_to_string(&p)
            .map(|t| t == text)
            .unwrap_or(false)
        {
            continue;
        }
        kpatch_common::fs::write_atomic(&p, text.as_bytes()).map_err(|e| ModuleError::io(&p, e))?;
    }
    Ok(dir.to_path_buf())
}
