//! The versions of one patch for one kernel, as packages deliver them: cumulative livepatch
//! modules that share a patch name (`kpatch_rs_patch_name` in `.modinfo`) and differ in their
//! version and module name (`livepatch-NAME-vN`).
//!
//! [`activate`] installs a version for boot and, when the kernel it was built for is running,
//! loads it *before* it retires the older versions (unload, uninstall). With atomic replace the
//! new module takes over from the old one in one transition, so the patch never stops being
//! applied. When the load is refused or reversed, the new version is uninstalled again and the
//! old one is left loaded and installed. [`deactivate`] unloads and uninstalls every version.

use crate::error::KernelError;
use crate::modinfo::ModuleFile;
use crate::ops::{self, Options, Outcome};
use crate::patches::{
    check_livepatch, is_livepatch_module, loaded_patches, module_loaded, patch_dir,
};
use crate::store::{Installed, Store};
use crate::sys::Kernel;
use crate::watch::Observer;
use std::path::PathBuf;

/// Why [`activate`] or [`deactivate`] could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    #[error(transparent)]
    Kernel(Box<KernelError>),
    #[error("{path}: no kernel release in .modinfo (vermagic)")]
    NoKernel { path: PathBuf },
    #[error(
        "patch {name} is loaded, but it is not {path} (the copy installed for boot differs or is \
         missing): a new version of a patch needs a new module name (`build --patch-version`)"
    )]
    OtherModuleLoaded { name: String, path: PathBuf },
    #[error("{cause}; then restoring what was installed before failed: {source}")]
    RollBack {
        cause: String,
        #[source]
        source: Box<KernelError>,
    },
}

impl From<KernelError> for SeriesError {
    fn from(e: KernelError) -> Self {
        SeriesError::Kernel(Box::new(e))
    }
}

/// What [`activate`] did.
#[derive(Debug)]
pub enum Activation {
    /// The running kernel is not the one the module was built for: installed for boot with that
    /// kernel, not loaded. `retired`: older versions uninstalled.
    ForBoot {
        installed: Installed,
        running: String,
        retired: Vec<String>,
    },
    /// Loaded (or, with `already`, found loaded), then the older versions retired; `warnings`
    /// says what of that could not be done.
    Loaded {
        installed: Installed,
        already: bool,
        retired: Vec<String>,
        warnings: Vec<String>,
    },
    /// The transition was reversed (or a freeze undone): the new version is not installed, and
    /// whatever ran before still runs.
    NotLoaded { outcome: Outcome },
}

/// What [`deactivate`] did.
#[derive(Debug)]
pub enum Deactivation {
    /// Every version unloaded (when the running kernel is theirs) and uninstalled.
    Done {
        unloaded: Vec<String>,
        uninstalled: Vec<String>,
    },
    /// Unloading one was reversed (`outcome`): it still runs, and nothing was uninstalled.
    NotUnloaded { outcome: Outcome },
}

/// The patch name of a module: `kpatch_rs_patch_name`, else (a module built without it) the
/// module name, so that it is a series of its own.
pub fn series_name(module: &ModuleFile) -> String {
    module
        .info
        .patch_name()
        .map(str::to_string)
        .unwrap_or_else(|| module.name())
}

fn kernel_of(module: &ModuleFile) -> Result<String, SeriesError> {
    module
        .info
        .vermagic_release()
        .map(str::to_string)
        .ok_or_else(|| SeriesError::NoKernel {
            path: module.path.clone(),
        })
}

/// The modules installed for `kernel` that are versions of `series` (unreadable files are not).
pub fn versions(store: &Store, kernel: &str, series: &str) -> Result<Vec<Installed>, KernelError> {
    Ok(store
        .list_kernel(kernel)?
        .into_iter()
        .filter(|i| {
            ModuleFile::read(&i.path)
                .map(|m| series_name(&m) == series)
                .unwrap_or(false)
        })
        .collect())
}

/// What was installed under the module's name before [`install`].
enum Prior {
    Nothing,
    Same,
    /// Another file of the same name, replaced: its path and bytes.
    Replaced(PathBuf, Vec<u8>),
}

fn same_image(installed: &Installed, module: &ModuleFile) -> bool {
    ModuleFile::read(&installed.path).is_ok_and(|m| m.image == module.image)
}

/// Installs `module` for `kernel`, replacing a different file of the same name.
fn install(
    store: &Store,
    module: &ModuleFile,
    kernel: &str,
) -> Result<(Installed, Prior), KernelError> {
    let name = module.name();
    let prior = match store.find(kernel, &name)? {
        None => Prior::Nothing,
        Some(i) if same_image(&i, module) => return Ok((i, Prior::Same)),
        Some(i) => {
            let bytes = std::fs::read(&i.path).map_err(|e| KernelError::io(&i.path, e))?;
            store.uninstall(kernel, &name)?;
            Prior::Replaced(i.path, bytes)
        }
    };
    Ok((store.install(module, kernel)?, prior))
}

/// Puts back what [`install`] changed.
fn restore(store: &Store, kernel: &str, name: &str, prior: Prior) -> Result<(), KernelError> {
    match prior {
        Prior::Same => Ok(()),
        Prior::Nothing => store.uninstall(kernel, name).map(drop),
        Prior::Replaced(path, bytes) => {
            store.uninstall(kernel, name)?;
            let dir = tempfile::tempdir().map_err(|e| KernelError::io(std::env::temp_dir(), e))?;
            let file = dir.path().join(path.file_name().unwrap_or_default());
            std::fs::write(&file, bytes).map_err(|e| KernelError::io(&file, e))?;
            store.install(&ModuleFile::read(&file)?, kernel).map(drop)
        }
    }
}

/// Unloads (when `running`) and uninstalls the older versions; what could not be done becomes
/// a warning, for the new version runs and is installed either way.
fn retire(
    k: &dyn Kernel,
    store: &Store,
    kernel: &str,
    older: &[Installed],
    running: bool,
    opts: &Options,
    obs: &mut dyn Observer,
) -> (Vec<String>, Vec<String>) {
    let mut retired = Vec::new();
    let mut warnings = Vec::new();
    for o in older {
        let registered = running && k.exists(&patch_dir(&o.name));
        let leftover = running && module_loaded(k, &o.name) && is_livepatch_module(k, &o.name);
        if registered || leftover {
            match ops::unload(k, &o.name, opts, obs) {
                Ok(Outcome::Done { .. }) => {}
                Ok(other) => {
                    warnings.push(format!("{}: unload did not complete: {other:?}", o.name))
                }
                Err(e) => warnings.push(format!("{}: {e}", o.name)),
            }
        }
        match store.uninstall(kernel, &o.name) {
            Ok(_) => retired.push(o.name.clone()),
            Err(e) => warnings.push(e.to_string()),
        }
    }
    (retired, warnings)
}

/// Where [`activate`] and [`deactivate`] act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The installed patches, and the running kernel when it is the module's.
    System,
    /// The installed patches only (a chroot, an image being built: the running kernel is
    /// another system's).
    BootOnly,
}

/// Installs `module` for boot with the kernel it was built for and, when that kernel runs (and
/// `scope` allows), loads it, then retires the older versions of its patch (see the module
/// docs).
pub fn activate(
    k: &dyn Kernel,
    store: &Store,
    module: &ModuleFile,
    scope: Scope,
    opts: &Options,
    obs: &mut dyn Observer,
) -> Result<Activation, SeriesError> {
    let name = module.name();
    let kernel = kernel_of(module)?;
    let older: Vec<Installed> = versions(store, &kernel, &series_name(module))?
        .into_iter()
        .filter(|i| i.name != name)
        .collect();
    let running = match scope {
        Scope::System => k
            .release()
            .map_err(|e| KernelError::io("/proc/sys/kernel/osrelease", e))?,
        Scope::BootOnly => "another system's (a chroot)".to_string(),
    };
    if running != kernel {
        let (installed, _) = install(store, module, &kernel)?;
        let (retired, _) = retire(k, store, &kernel, &older, false, opts, obs);
        return Ok(Activation::ForBoot {
            installed,
            running,
            retired,
        });
    }
    check_livepatch(k)?;
    if k.exists(&patch_dir(&name)) {
        return match store.find(&kernel, &name)? {
            Some(installed) if same_image(&installed, module) => {
                let (retired, warnings) = retire(k, store, &kernel, &older, true, opts, obs);
                Ok(Activation::Loaded {
                    installed,
                    already: true,
                    retired,
                    warnings,
                })
            }
            _ => Err(SeriesError::OtherModuleLoaded {
                name,
                path: module.path.clone(),
            }),
        };
    }
    let (installed, prior) = install(store, module, &kernel)?;
    let outcome = ModuleFile::read(&installed.path).and_then(|m| ops::load(k, &m, opts, obs));
    match outcome {
        Ok(Outcome::Done { .. }) => {
            let (retired, warnings) = retire(k, store, &kernel, &older, true, opts, obs);
            Ok(Activation::Loaded {
                installed,
                already: false,
                retired,
                warnings,
            })
        }
        Ok(outcome) => {
            restore(store, &kernel, &name, prior).map_err(|source| SeriesError::RollBack {
                cause: format!("{name}: the load was reversed"),
                source: Box::new(source),
            })?;
            Ok(Activation::NotLoaded { outcome })
        }
        Err(e) => {
            restore(store, &kernel, &name, prior).map_err(|source| SeriesError::RollBack {
                cause: e.to_string(),
                source: Box::new(source),
            })?;
            Err(e.into())
        }
    }
}

/// Unloads (when the running kernel is the module's) and uninstalls every version of the
/// module's patch, and the module itself. An unload that is reversed stops it before anything
/// is uninstalled.
pub fn deactivate(
    k: &dyn Kernel,
    store: &Store,
    module: &ModuleFile,
    scope: Scope,
    opts: &Options,
    obs: &mut dyn Observer,
) -> Result<Deactivation, SeriesError> {
    let kernel = kernel_of(module)?;
    let mut members: Vec<String> = versions(store, &kernel, &series_name(module))?
        .into_iter()
        .map(|i| i.name)
        .collect();
    if !members.contains(&module.name()) {
        members.push(module.name());
    }
    let running = k
        .release()
        .map_err(|e| KernelError::io("/proc/sys/kernel/osrelease", e))?;
    let mut unloaded = Vec::new();
    if scope == Scope::System && running == kernel && check_livepatch(k).is_ok() {
        // The top of the stack first, then modules whose patch was already replaced or disabled.
        let mut order: Vec<String> = loaded_patches(k)?
            .into_iter()
            .rev()
            .map(|p| p.name)
            .filter(|n| members.contains(n))
            .collect();
        for m in &members {
            if !order.contains(m) && module_loaded(k, m) && is_livepatch_module(k, m) {
                order.push(m.clone());
            }
        }
        for name in order {
            match ops::unload(k, &name, opts, obs)? {
                Outcome::Done { .. } => unloaded.push(name),
                outcome => return Ok(Deactivation::NotUnloaded { outcome }),
            }
        }
    }
    let mut uninstalled = Vec::new();
    for m in members {
        if store.find(&kernel, &m)?.is_some() {
            store.uninstall(&kernel, &m)?;
            uninstalled.push(m);
        }
    }
    Ok(Deactivation::Done {
        unloaded,
        uninstalled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeKernel, FakeTask, Stuck};
    use crate::modinfo::build_test_module;
    use crate::watch::Recorder;
    use kpatch_common::modinfo::{MODINFO_PATCH_NAME, MODINFO_PATCH_VERSION, MODINFO_REPLACE};
    use std::path::Path;

    const REL: &str = "6.1.0-57-amd64";

    /// A replace patch module `livepatch_fix_v<version>` of patch `fix` built for `kernel`.
    fn version(k: &FakeKernel, kernel: &str, version: u32) -> ModuleFile {
        let name = format!("livepatch_fix_v{version}");
        let vermagic = format!("{kernel} SMP preempt mod_unload modversions ");
        let v = version.to_string();
        let ko = build_test_module(&[
            ("name", &name),
            ("livepatch", "Y"),
            ("vermagic", &vermagic),
            (MODINFO_PATCH_NAME, "fix"),
            (MODINFO_PATCH_VERSION, &v),
            (MODINFO_REPLACE, "1"),
            (crate::MODINFO_FUNCTIONS, "vmlinux:cmdline_proc_show,0"),
        ]);
        let path = k.path(format!("/usr/lib/kpatch-rs/{kernel}/{name}.ko"));
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

    fn installed(store: &Store, kernel: &str) -> Vec<String> {
        store
            .list_kernel(kernel)
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect()
    }

    fn enabled(k: &FakeKernel) -> Vec<String> {
        loaded_patches(k)
            .unwrap()
            .into_iter()
            .filter(|p| p.enabled)
            .map(|p| p.name)
            .collect()
    }

    #[test]
    fn a_new_version_is_loaded_before_the_old_one_is_removed() {
        let (k, store) = setup();
        let opts = Options::default();
        let v1 = version(&k, REL, 1);
        let a = activate(
            &k,
            &store,
            &v1,
            Scope::System,
            &opts,
            &mut Recorder::default(),
        )
        .unwrap();
        assert!(
            matches!(a, Activation::Loaded { already: false, .. }),
            "{a:?}"
        );
        assert_eq!(enabled(&k), ["livepatch_fix_v1"]);
        let v2 = version(&k, REL, 2);
        let a = activate(
            &k,
            &store,
            &v2,
            Scope::System,
            &opts,
            &mut Recorder::default(),
        )
        .unwrap();
        match a {
            Activation::Loaded {
                retired, warnings, ..
            } => {
                assert_eq!(retired, ["livepatch_fix_v1"]);
                assert!(warnings.is_empty(), "{warnings:?}");
            }
            a => panic!("{a:?}"),
        }
        assert_eq!(enabled(&k), ["livepatch_fix_v2"]);
        assert!(!k.has_module("livepatch_fix_v1"));
        assert_eq!(installed(&store, REL), ["livepatch_fix_v2"]);
        // The kernel saw the new module before the old one was removed: never unpatched.
        let calls = k.calls();
        let load = calls
            .iter()
            .enumerate()
            .filter(|(_, c)| c.as_str() == "finit_module ok")
            .map(|(i, _)| i)
            .nth(1)
            .unwrap();
        let remove = calls
            .iter()
            .position(|c| c == "delete_module livepatch_fix_v1")
            .unwrap();
        assert!(load < remove, "{calls:?}");
        assert!(
            !calls.iter().any(|c| c.contains("livepatch_fix_v1/enabled")),
            "the old patch was replaced, never disabled: {calls:?}"
        );
        // Configuring again is a no-op.
        let a = activate(
            &k,
            &store,
            &v2,
            Scope::System,
            &opts,
            &mut Recorder::default(),
        )
        .unwrap();
        assert!(
            matches!(a, Activation::Loaded { already: true, .. }),
            "{a:?}"
        );
    }

    #[test]
    fn a_refused_load_leaves_the_old_version_running_and_installed() {
        let (k, store) = setup();
        let opts = Options::default();
        let v1 = version(&k, REL, 1);
        activate(
            &k,
            &store,
            &v1,
            Scope::System,
            &opts,
            &mut Recorder::default(),
        )
        .unwrap();
        let v2 = version(&k, REL, 2);
        k.fail_next_finit(nix::errno::Errno::EINVAL);
        let e = activate(
            &k,
            &store,
            &v2,
            Scope::System,
            &opts,
            &mut Recorder::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("the kernel refused livepatch_fix_v2"),
            "{e}"
        );
        assert_eq!(enabled(&k), ["livepatch_fix_v1"]);
        assert_eq!(installed(&store, REL), ["livepatch_fix_v1"]);
    }

    #[test]
    fn a_reversed_load_leaves_the_old_version_running_and_installed() {
        let (k, store) = setup();
        let mut opts = Options::default();
        let v1 = version(&k, REL, 1);
        activate(
            &k,
            &store,
            &v1,
            Scope::System,
            &opts,
            &mut Recorder::default(),
        )
        .unwrap();
        k.add_task(FakeTask::kthread(9, "sleeper").stuck(Stuck::Forever, 1))
            .unwrap();
        opts.watch.wait = std::time::Duration::from_millis(300);
        opts.watch.signal_wait = std::time::Duration::from_millis(300);
        let v2 = version(&k, REL, 2);
        let a = activate(
            &k,
            &store,
            &v2,
            Scope::System,
            &opts,
            &mut Recorder::default(),
        )
        .unwrap();
        assert!(
            matches!(
                a,
                Activation::NotLoaded {
                    outcome: Outcome::Reverted { .. }
                }
            ),
            "{a:?}"
        );
        assert_eq!(enabled(&k), ["livepatch_fix_v1"]);
        assert!(!k.has_module("livepatch_fix_v2"));
        assert_eq!(installed(&store, REL), ["livepatch_fix_v1"]);
    }

    #[test]
    fn another_kernel_gets_the_patch_for_boot_only() {
        let (k, store) = setup();
        let other = "6.1.0-58-amd64";
        let opts = Options::default();
        let v1 = version(&k, other, 1);
        let v2 = version(&k, other, 2);
        activate(
            &k,
            &store,
            &v1,
            Scope::System,
            &opts,
            &mut Recorder::default(),
        )
        .unwrap();
        let a = activate(
            &k,
            &store,
            &v2,
            Scope::System,
            &opts,
            &mut Recorder::default(),
        )
        .unwrap();
        match a {
            Activation::ForBoot {
                running, retired, ..
            } => assert_eq!(
                (running.as_str(), retired),
                (REL, vec!["livepatch_fix_v1".into()])
            ),
            a => panic!("{a:?}"),
        }
        assert!(k.calls().iter().all(|c| !c.starts_with("finit_module")));
        assert_eq!(installed(&store, other), ["livepatch_fix_v2"]);
    }

    #[test]
    fn the_same_module_name_with_other_content_is_refused_while_loaded() {
        let (k, store) = setup();
        let opts = Options::default();
        let v1 = version(&k, REL, 1);
        activate(
            &k,
            &store,
            &v1,
            Scope::System,
            &opts,
            &mut Recorder::default(),
        )
        .unwrap();
        // Rebuilt without a new version: same module name, other content.
        let ko = build_test_module(&[
            ("name", "livepatch_fix_v1"),
            ("livepatch", "Y"),
            ("vermagic", &format!("{REL} SMP ")),
            (MODINFO_PATCH_NAME, "fix"),
            ("description", "rebuilt"),
        ]);
        let path = k.path("/tmp/rebuilt/livepatch_fix_v1.ko");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, ko).unwrap();
        let rebuilt = ModuleFile::read(&path).unwrap();
        let e = activate(
            &k,
            &store,
            &rebuilt,
            Scope::System,
            &opts,
            &mut Recorder::default(),
        )
        .unwrap_err();
        assert!(matches!(e, SeriesError::OtherModuleLoaded { .. }), "{e}");
        assert!(same_image(
            &store.find(REL, "livepatch_fix_v1").unwrap().unwrap(),
            &v1
        ));
    }

    #[test]
    fn in_a_chroot_the_running_kernel_is_left_alone() {
        let (k, store) = setup();
        let opts = Options::default();
        let v1 = version(&k, REL, 1);
        let a = activate(
            &k,
            &store,
            &v1,
            Scope::BootOnly,
            &opts,
            &mut Recorder::default(),
        )
        .unwrap();
        assert!(matches!(a, Activation::ForBoot { .. }), "{a:?}");
        assert!(!k.has_module("livepatch_fix_v1"));
        assert_eq!(installed(&store, REL), ["livepatch_fix_v1"]);
        // A module of the same name loaded in the host stays.
        crate::ops::load(&k, &v1, &opts, &mut Recorder::default()).unwrap();
        let d = deactivate(
            &k,
            &store,
            &v1,
            Scope::BootOnly,
            &opts,
            &mut Recorder::default(),
        )
        .unwrap();
        assert!(
            matches!(d, Deactivation::Done { ref unloaded, .. } if unloaded.is_empty()),
            "{d:?}"
        );
        assert!(k.has_module("livepatch_fix_v1"));
        assert!(installed(&store, REL).is_empty());
    }

    #[test]
    fn deactivate_unloads_and_uninstalls_every_version() {
        let (k, store) = setup();
        let opts = Options::default();
        let v1 = version(&k, REL, 1);
        activate(
            &k,
            &store,
            &v1,
            Scope::System,
            &opts,
            &mut Recorder::default(),
        )
        .unwrap();
        // A version installed but not loaded (as after a failed upgrade), and one for another
        // kernel, which stays.
        let v2 = version(&k, REL, 2);
        store.install(&v2, REL).unwrap();
        let other = version(&k, "6.1.0-58-amd64", 3);
        store.install(&other, "6.1.0-58-amd64").unwrap();
        let d = deactivate(
            &k,
            &store,
            &v2,
            Scope::System,
            &opts,
            &mut Recorder::default(),
        )
        .unwrap();
        match d {
            Deactivation::Done {
                unloaded,
                mut uninstalled,
            } => {
                uninstalled.sort();
                assert_eq!(unloaded, ["livepatch_fix_v1"]);
                assert_eq!(uninstalled, ["livepatch_fix_v1", "livepatch_fix_v2"]);
            }
            d => panic!("{d:?}"),
        }
        assert!(enabled(&k).is_empty() && !k.has_module("livepatch_fix_v1"));
        assert!(installed(&store, REL).is_empty());
        assert_eq!(installed(&store, "6.1.0-58-amd64"), ["livepatch_fix_v3"]);
        assert!(Path::new(&k.path("/var/lib/kpatch-rs/6.1.0-58-amd64")).is_dir());
    }

    #[test]
    fn a_reversed_unload_uninstalls_nothing() {
        let (k, store) = setup();
        let mut opts = Options::default();
        let v1 = version(&k, REL, 1);
        activate(
            &k,
            &store,
            &v1,
            Scope::System,
            &opts,
            &mut Recorder::default(),
        )
        .unwrap();
        k.add_task(FakeTask::kthread(9, "sleeper").stuck(Stuck::Forever, 0))
            .unwrap();
        opts.watch.wait = std::time::Duration::from_millis(300);
        opts.watch.signal_wait = std::time::Duration::from_millis(300);
        let d = deactivate(
            &k,
            &store,
            &v1,
            Scope::System,
            &opts,
            &mut Recorder::default(),
        )
        .unwrap();
        assert!(
            matches!(
                d,
                Deactivation::NotUnloaded {
                    outcome: Outcome::Reverted { .. }
                }
            ),
            "{d:?}"
        );
        assert_eq!(enabled(&k), ["livepatch_fix_v1"]);
        assert_eq!(installed(&store, REL), ["livepatch_fix_v1"]);
    }
}
