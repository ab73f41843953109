//! The loaded livepatches as `/sys/kernel/livepatch` and `/sys/module` describe them.

use crate::error::KernelError;
use crate::sys::{read_trim, Kernel, LIVEPATCH_DIR};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One patched object (`vmlinux` or a module) of a loaded patch.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LoadedObject {
    pub name: String,
    /// Whether the object is present and its functions are redirected (`patched`).
    pub patched: bool,
    /// `(function, sympos)` pairs.
    pub functions: Vec<(String, u32)>,
}

/// A patch registered with the livepatch core.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LoadedPatch {
    pub name: String,
    pub enabled: bool,
    pub transition: bool,
    /// 1 for the first patch on the stack; from `stack_order` when the kernel provides it,
    /// else derived from the module list order in `/proc/modules`.
    pub stack_order: Option<u32>,
    pub objects: Vec<LoadedObject>,
    /// `/sys/module/<name>/refcnt`.
    pub refcnt: Option<u32>,
}

impl LoadedPatch {
    /// `enabled`, `enabling…`, `disabled`, `disabling…`.
    pub fn state(&self) -> &'static str {
        match (self.enabled, self.transition) {
            (true, false) => "enabled",
            (true, true) => "enabling",
            (false, false) => "disabled",
            (false, true) => "disabling",
        }
    }
}

pub fn patch_dir(name: &str) -> PathBuf {
    Path::new(LIVEPATCH_DIR).join(name)
}

fn read_bool(k: &dyn Kernel, path: &Path) -> Result<bool, KernelError> {
    let s = read_trim(k, path).map_err(|e| KernelError::io(path, e))?;
    match s.as_str() {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(KernelError::Parse {
            path: path.to_path_buf(),
            content: s,
        }),
    }
}

/// Whether the kernel has the livepatch core.
pub fn check_livepatch(k: &dyn Kernel) -> Result<(), KernelError> {
    if k.exists(Path::new(LIVEPATCH_DIR)) {
        Ok(())
    } else {
        Err(KernelError::NoLivepatch {
            dir: LIVEPATCH_DIR.into(),
        })
    }
}

/// `enabled` of a loaded patch.
pub fn is_enabled(k: &dyn Kernel, name: &str) -> Result<bool, KernelError> {
    read_bool(k, &patch_dir(name).join("enabled"))
}

/// `transition` of a loaded patch.
pub fn in_transition(k: &dyn Kernel, name: &str) -> Result<bool, KernelError> {
    read_bool(k, &patch_dir(name).join("transition"))
}

/// Names of the registered patches (sorted).
pub fn patch_names(k: &dyn Kernel) -> Result<Vec<String>, KernelError> {
    check_livepatch(k)?;
    k.list_dir(Path::new(LIVEPATCH_DIR))
        .map_err(|e| KernelError::io(LIVEPATCH_DIR, e))
}

/// The patch currently in transition, if any.
pub fn transition_patch(k: &dyn Kernel) -> Result<Option<String>, KernelError> {
    for name in patch_names(k)? {
        // A patch may vanish between listing and reading; skip it then.
        if let Ok(true) = in_transition(k, &name) {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// Module names in `/proc/modules` order (newest first).
fn module_order(k: &dyn Kernel) -> Vec<String> {
    k.read(Path::new("/proc/modules"))
        .map(|s| {
            s.lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Read one loaded patch.
pub fn read_patch(k: &dyn Kernel, name: &str) -> Result<LoadedPatch, KernelError> {
    let dir = patch_dir(name);
    if !k.exists(&dir) {
        return Err(KernelError::NotLoaded {
            name: name.to_string(),
            dir,
        });
    }
    let enabled = read_bool(k, &dir.join("enabled"))?;
    let transition = read_bool(k, &dir.join("transition"))?;
    let stack_order = read_trim(k, &dir.join("stack_order"))
        .ok()
        .and_then(|s| s.parse().ok());
    let mut objects = Vec::new();
    let entries = k.list_dir(&dir).map_err(|e| KernelError::io(&dir, e))?;
    for obj in entries {
        let odir = dir.join(&obj);
        // Object directories are the ones with a `patched` attribute.
        let Ok(patched) = read_bool(k, &odir.join("patched")) else {
            continue;
        };
        let mut functions = Vec::new();
        for f in k.list_dir(&odir).map_err(|e| KernelError::io(&odir, e))? {
            if let Some((func, pos)) = f.rsplit_once(',') {
                if let Ok(pos) = pos.parse() {
                    functions.push((func.to_string(), pos));
                }
            }
        }
        objects.push(LoadedObject {
            name: obj,
            patched,
            functions,
        });
    }
    let refcnt = read_trim(k, &Path::new("/sys/module").join(name).join("refcnt"))
        .ok()
        .and_then(|s| s.parse().ok());
    Ok(LoadedPatch {
        name: name.to_string(),
        enabled,
        transition,
        stack_order,
        objects,
        refcnt,
    })
}

/// All loaded patches in stack order (bottom first).
pub fn loaded_patches(k: &dyn Kernel) -> Result<Vec<LoadedPatch>, KernelError> {
    let mut patches = Vec::new();
    for name in patch_names(k)? {
        match read_patch(k, &name) {
            Ok(p) => patches.push(p),
            Err(KernelError::NotLoaded { .. }) => {} // went away meanwhile
            Err(e) => return Err(e),
        }
    }
    if patches.iter().any(|p| p.stack_order.is_none()) {
        // /proc/modules lists the newest module first; the stack is in load order.
        let order = module_order(k);
        let mut ranked: Vec<(usize, usize)> = patches
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let pos = order
                    .iter()
                    .position(|m| *m == p.name)
                    .unwrap_or(usize::MAX);
                (i, pos)
            })
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (rank, (i, pos)) in ranked.into_iter().enumerate() {
            if pos != usize::MAX {
                patches[i].stack_order = Some(rank as u32 + 1);
            }
        }
    }
    patches.sort_by_key(|p| (p.stack_order.unwrap_or(u32::MAX), p.name.clone()));
    Ok(patches)
}

/// Whether a loaded module is a livepatch: its taint flags (`/sys/module/<name>/taint`) hold
/// `K` (TAINT_LIVEPATCH), which the kernel sets for every module with `livepatch=Y`.
pub fn is_livepatch_module(k: &dyn Kernel, name: &str) -> bool {
    read_trim(k, &Path::new("/sys/module").join(name).join("taint"))
        .map(|t| t.contains('K'))
        .unwrap_or(false)
}

/// Whether a module of that name is loaded (`/sys/module/<name>` with a `refcnt`).
pub fn module_loaded(k: &dyn Kernel, name: &str) -> bool {
    k.exists(&Path::new("/sys/module").join(name).join("refcnt"))
}
