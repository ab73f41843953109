//! The patch state of the running kernel as a monitoring script wants it: what is loaded, what
//! is installed for boot, whether the two agree, the effective patch level, and one verdict
//! with its exit code.

use crate::error::KernelError;
use crate::modinfo::ModuleFile;
use crate::patches::{check_livepatch, loaded_patches, transition_patch, LoadedPatch};
use crate::store::{Installed, Store};
use crate::sys::Kernel;
use serde::Serialize;
use std::path::PathBuf;

/// Every patch for the running kernel is loaded, enabled and installed for boot.
pub const STATUS_UP_TO_DATE: u8 = 0;
/// Loaded and installed differ, a patch is disabled, or a transition is in progress.
pub const STATUS_PENDING: u8 = 2;
/// No patch is loaded or installed for the running kernel.
pub const STATUS_NONE: u8 = 3;
/// The running kernel cannot be live-patched (no livepatch core).
pub const STATUS_UNPATCHABLE: u8 = 4;

/// The exit status table of `kpatch-rs status`.
pub const STATUS_EXIT_CODES_HELP: &str = "\
Exit status:
  0  up to date: every patch installed for the running kernel is loaded and enabled, and every
     loaded patch is installed for boot
  1  error (the message names the file or kernel interface)
  2  pending: a patch installed for boot is not loaded, a loaded patch is not installed for boot
     (it would be gone after a reboot), a patch is disabled, or a transition is in progress
  3  none applied: no patch is loaded or installed for the running kernel
  4  the running kernel is not patchable (no livepatch support)";

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    UpToDate,
    Pending,
    None,
    Unpatchable,
}

impl State {
    pub fn exit_code(self) -> u8 {
        match self {
            State::UpToDate => STATUS_UP_TO_DATE,
            State::Pending => STATUS_PENDING,
            State::None => STATUS_NONE,
            State::Unpatchable => STATUS_UNPATCHABLE,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            State::UpToDate => "up to date",
            State::Pending => "pending",
            State::None => "no patch applied",
            State::Unpatchable => "the running kernel is not patchable",
        }
    }
}

/// One patch module for the running kernel: loaded, installed, or both.
#[derive(Debug, Clone, Serialize)]
pub struct PatchStatus {
    /// The module's name (`livepatch_fix_v2`).
    pub module: String,
    /// `enabled`, `enabling`, `disabled`, `disabling`; `None` when not loaded.
    pub loaded: Option<&'static str>,
    /// The file installed for boot, if any.
    pub installed: Option<PathBuf>,
    /// The patch's name and version (`kpatch_rs_patch_name`, `kpatch_rs_patch_version`).
    pub name: Option<String>,
    pub version: Option<u32>,
    pub description: Option<String>,
    pub cves: Vec<String>,
    pub patch_sha256: Option<String>,
    /// Whether it replaces the patches loaded before it (atomic replace).
    pub replace: Option<bool>,
}

/// One entry of the effective patch level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Level {
    pub name: String,
    pub version: Option<u32>,
}

/// Everything `kpatch-rs status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub kernel: String,
    pub livepatch: bool,
    pub state: State,
    pub exit_code: u8,
    /// Loaded patches in stack order (bottom first), then installed ones that are not loaded.
    pub patches: Vec<PatchStatus>,
    /// The patches in effect: the enabled ones above (and including) the topmost replace patch.
    pub patch_level: Vec<Level>,
    /// Why the state is pending, one sentence each.
    pub pending: Vec<String>,
    /// The patch in transition, if any.
    pub transition: Option<String>,
    /// Patches installed for other kernels (loaded at their boot).
    pub other_kernels: Vec<Installed>,
}

/// The metadata of an installed module, from its `.modinfo`.
fn describe(module: &str, installed: Option<&Installed>) -> PatchStatus {
    let info = installed
        .and_then(|i| ModuleFile::read(&i.path).ok())
        .map(|m| m.info);
    let info = info.as_ref();
    PatchStatus {
        module: module.to_string(),
        loaded: None,
        installed: installed.map(|i| i.path.clone()),
        name: info.and_then(|i| i.patch_name()).map(str::to_string),
        version: info.and_then(|i| i.patch_version()),
        description: info.and_then(|i| i.description()).map(str::to_string),
        cves: info.map(|i| i.cves()).unwrap_or_default(),
        patch_sha256: info.and_then(|i| i.patch_sha256()).map(str::to_string),
        replace: info.and_then(|i| i.replace()),
    }
}

/// The effective patch level: the enabled patches from the topmost replace patch up.
fn patch_level(patches: &[PatchStatus]) -> Vec<Level> {
    let enabled: Vec<&PatchStatus> = patches
        .iter()
        .filter(|p| p.loaded == Some("enabled"))
        .collect();
    let from = enabled
        .iter()
        .rposition(|p| p.replace == Some(true))
        .unwrap_or(0);
    enabled[from..]
        .iter()
        .map(|p| Level {
            name: p.name.clone().unwrap_or_else(|| p.module.clone()),
            version: p.version,
        })
        .collect()
}

/// Reads the running kernel's patch state and the installed patches under `store`.
pub fn status(k: &dyn Kernel, store: &Store) -> Result<Status, KernelError> {
    let kernel = k
        .release()
        .map_err(|e| KernelError::io("/proc/sys/kernel/osrelease", e))?;
    let livepatch = check_livepatch(k).is_ok();
    let installed = store.list_kernel(&kernel)?;
    let other_kernels: Vec<Installed> = store
        .list()?
        .into_iter()
        .filter(|i| i.kernel != kernel)
        .collect();
    let (loaded, transition): (Vec<LoadedPatch>, Option<String>) = if livepatch {
        (loaded_patches(k)?, transition_patch(k)?)
    } else {
        (Vec::new(), None)
    };
    let mut patches = Vec::new();
    let mut pending = Vec::new();
    for p in &loaded {
        let inst = installed.iter().find(|i| i.name == p.name);
        let mut s = describe(&p.name, inst);
        s.loaded = Some(p.state());
        if inst.is_none() {
            pending.push(format!(
                "{} is loaded but not installed for boot: a reboot would drop it",
                p.name
            ));
        }
        if !p.enabled || p.transition {
            pending.push(format!("{} is {}", p.name, p.state()));
        }
        patches.push(s);
    }
    for i in installed
        .iter()
        .filter(|i| !loaded.iter().any(|p| p.name == i.name))
    {
        if livepatch {
            pending.push(format!("{} is installed for boot but not loaded", i.name));
        }
        patches.push(describe(&i.name, Some(i)));
    }
    let state = if !livepatch {
        State::Unpatchable
    } else if !pending.is_empty() {
        State::Pending
    } else if patches.is_empty() {
        State::None
    } else {
        State::UpToDate
    };
    Ok(Status {
        kernel,
        livepatch,
        state,
        exit_code: state.exit_code(),
        patch_level: patch_level(&patches),
        patches,
        pending,
        transition,
        other_kernels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeKernel, FakeTask};
    use crate::modinfo::build_test_module;
    use crate::ops::{self, Options};
    use crate::watch::Recorder;
    use kpatch_common::modinfo::{
        MODINFO_CVES, MODINFO_PATCH_NAME, MODINFO_PATCH_VERSION, MODINFO_REPLACE,
    };

    const REL: &str = "6.1.0-57-amd64";

    fn module(k: &FakeKernel, name: &str, version: &str, replace: &str) -> ModuleFile {
        let vermagic = format!("{REL} SMP preempt mod_unload modversions ");
        let ko = build_test_module(&[
            ("name", name),
            ("livepatch", "Y"),
            ("vermagic", &vermagic),
            ("description", "proc: say live"),
            (MODINFO_PATCH_NAME, "fix"),
            (MODINFO_PATCH_VERSION, version),
            (MODINFO_CVES, "CVE-2099-1001"),
            (MODINFO_REPLACE, replace),
        ]);
        let path = k.path(format!("/src/{name}.ko"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, ko).unwrap();
        ModuleFile::read(&path).unwrap()
    }

    fn setup() -> (FakeKernel, Store) {
        let k = FakeKernel::new(REL).unwrap();
        k.add_task(FakeTask::user(1, "init")).unwrap();
        let store = Store::new(k.path("/var/lib/kpatch-rs"));
        (k, store)
    }

    #[test]
    fn none_then_pending_then_up_to_date() {
        let (k, store) = setup();
        let s = status(&k, &store).unwrap();
        assert_eq!((s.state, s.exit_code), (State::None, STATUS_NONE));
        let m = module(&k, "livepatch_fix_v1", "1", "1");
        store.install(&m, REL).unwrap();
        let s = status(&k, &store).unwrap();
        assert_eq!(s.state, State::Pending);
        assert_eq!(
            s.pending,
            ["livepatch_fix_v1 is installed for boot but not loaded"]
        );
        assert_eq!(s.patches[0].cves, ["CVE-2099-1001"]);
        assert!(s.patch_level.is_empty());
        ops::load(&k, &m, &Options::default(), &mut Recorder::default()).unwrap();
        let s = status(&k, &store).unwrap();
        assert_eq!(
            (s.state, s.exit_code),
            (State::UpToDate, 0),
            "{:?}",
            s.pending
        );
        assert_eq!(s.patches[0].loaded, Some("enabled"));
        assert_eq!(s.patches[0].description.as_deref(), Some("proc: say live"));
        assert_eq!(
            s.patch_level,
            [Level {
                name: "fix".into(),
                version: Some(1)
            }]
        );
        // Loaded by hand, not installed: pending, and the level counts it (it stacks).
        let extra = module(&k, "livepatch_extra", "1", "0");
        ops::load(&k, &extra, &Options::default(), &mut Recorder::default()).unwrap();
        let s = status(&k, &store).unwrap();
        assert_eq!(s.state, State::Pending);
        assert!(
            s.pending[0].contains("livepatch_extra is loaded but not installed"),
            "{:?}",
            s.pending
        );
        assert_eq!(s.patch_level.len(), 2);
        assert_eq!(s.patches[1].name, None, "no installed file to read it from");
    }

    #[test]
    fn the_level_starts_at_the_topmost_replace_patch() {
        let mk = |module: &str, version, loaded, replace| PatchStatus {
            module: module.into(),
            loaded,
            installed: None,
            name: Some("fix".into()),
            version: Some(version),
            description: None,
            cves: vec![],
            patch_sha256: None,
            replace: Some(replace),
        };
        let patches = [
            mk("a", 1, Some("enabled"), true),
            mk("b", 2, Some("enabled"), true),
            mk("c", 3, Some("enabled"), false),
            mk("d", 4, None, true),
        ];
        let level: Vec<Option<u32>> = patch_level(&patches).iter().map(|l| l.version).collect();
        assert_eq!(level, [Some(2), Some(3)]);
    }

    #[test]
    fn a_kernel_without_livepatch_is_unpatchable() {
        let k = FakeKernel::without_livepatch(REL).unwrap();
        let store = Store::new(k.path("/var/lib/kpatch-rs"));
        let m = module(&k, "livepatch_fix_v1", "1", "1");
        store.install(&m, "6.1.0-58-amd64").unwrap();
        let s = status(&k, &store).unwrap();
        assert_eq!(
            (s.state, s.exit_code),
            (State::Unpatchable, STATUS_UNPATCHABLE)
        );
        assert_eq!(s.other_kernels.len(), 1);
    }
}
