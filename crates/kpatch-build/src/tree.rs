//! A kernel source tree ready for single-object builds: unpacked once, configured with the
//! target's config, `make prepare`d once, and reused by every later build.
//!
//! Debian targets live in `<cache>/src/<kernelrelease>/`. The tarball is unpacked into a
//! temporary sibling directory and renamed into place, so the tree directory exists only when
//! complete; `.kpatch-rs-prepared` (written last) records the config, compiler and make
//! variables of a finished `make prepare`. `<cache>/src/<kernelrelease>.lock` (flock) is held by
//! whoever prepares or builds, so two builds never share the tree at once.
//!
//! A user tree (`--sourcedir`) is used in place: with `--config`, the config is installed and
//! the tree prepared when its `.config` differs or `include/generated/autoconf.h` is missing;
//! without, it must already be configured. Its lock is `<tree>/.kpatch-rs.lock`.
//!
//! Opening either kind restores a patch left behind by an interrupted build (see [`journal`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::compiler;
use crate::config::{drift, set_strings, KernelConfig};
use crate::error::{io_err, BuildError, Result};
use crate::exec::{Cmd, Runner};
use crate::featureset::{self, FeaturesetSource};
use crate::journal::{self, Entry};
use crate::kbuild::Kbuild;
use crate::lock::TreeLock;
use crate::objcache::ObjectCache;
use crate::timing::Timings;

const MARKER: &str = ".kpatch-rs-prepared";
/// Bumped whenever [`prepare`] changes, so a tree prepared the old way is prepared again
/// (2: `modules_prepare`, so modules are linked in the tree itself).
/// (3: a featureset series applied at unpack, and `olddefconfig` checked for drift;
/// 4: `RUSTC=` as the target's config records it.)
const PREPARE_RECIPE: u32 = 4;
const INCLUDE_INDEX: &str = ".kpatch-rs-include-index.json";
/// `<cache>/objects/<kernelrelease>/`: the original objects ([`ObjectCache`]).
pub const OBJECT_CACHE: &str = "objects";

/// Options every Debian config gets so `make prepare` needs none of Debian's key files.
const DEBIAN_CONFIG_FIXES: &[(&str, &str)] = &[
    ("CONFIG_SYSTEM_TRUSTED_KEYS", ""),
    ("CONFIG_SYSTEM_REVOCATION_KEYS", ""),
    ("CONFIG_MODULE_SIG_KEY", "certs/signing_key.pem"),
];

/// The files of a Debian kernel that a tree is made from (from `kpatch_target::DebianKernel`).
#[derive(Debug, Clone)]
pub struct DebianSource {
    /// The ABI release string, `6.1.0-56-amd64` (becomes `KERNELRELEASE`).
    pub kernelrelease: String,
    /// `linux-source-6.1.tar.xz` of the same package version as the image.
    pub source_tarball: PathBuf,
    /// `boot/config-<kernelrelease>` from the image package.
    pub config: PathBuf,
    /// `Module.symvers` from the headers package, copied into the tree for modpost.
    pub symvers: Option<PathBuf>,
    /// Decompressed vmlinux, for the compiler cross-check.
    pub vmlinux: Option<PathBuf>,
    /// The featureset series the flavour is built with (`rt-amd64`), applied at unpack.
    pub featureset: Option<FeaturesetSource>,
}

impl DebianSource {
    /// Everything a tree needs from a Debian kernel, fetched into the cache if missing
    /// (source, image and headers packages; the decompressed vmlinux).
    pub fn from_kernel(k: &kpatch_target::DebianKernel) -> Result<Self> {
        Ok(DebianSource {
            kernelrelease: k.abi.clone(),
            source_tarball: k.source_tarball()?,
            config: k.config()?,
            symvers: Some(k.symvers()?),
            vmlinux: Some(k.vmlinux()?),
            featureset: featureset_source(k)?,
        })
    }
}

fn featureset_source(k: &kpatch_target::DebianKernel) -> Result<Option<FeaturesetSource>> {
    let Some(series) = k.featureset_series()? else {
        return Ok(None);
    };
    Ok(Some(FeaturesetSource {
        changes: k.featureset_changes(&series)?,
        headers: k.featureset_headers()?.unwrap_or_default(),
        series,
    }))
}

/// Knobs shared by both tree kinds.
#[derive(Debug, Clone, Default)]
pub struct TreeOptions {
    /// Compiler command; default: the one the config names (`gcc-12`) if on PATH, else `gcc`.
    pub cc: Option<String>,
    /// make -j; default: the number of CPUs.
    pub jobs: Option<usize>,
    /// Flags appended to `KCFLAGS` (e.g. `-I<dir>` for patch-author headers). They are part of
    /// the prepared state: give the same ones (a stable directory, not a per-build temporary)
    /// on every build, or kbuild redoes part of `prepare` each time.
    pub extra_kcflags: Vec<String>,
    /// Let a compiler mismatch pass (kpatch-build's `--skip-compiler-check`);
    /// the mismatch is still recorded in [`PreparedTree::compiler_mismatch`].
    pub skip_compiler_check: bool,
}

impl TreeOptions {
    fn apply(&self, kbuild: &mut Kbuild) {
        if let Some(j) = self.jobs {
            kbuild.jobs = j;
        }
        for f in &self.extra_kcflags {
            kbuild.kcflags.push(' ');
            kbuild.kcflags.push_str(f);
        }
    }

    fn check_compiler(
        &self,
        runner: &dyn Runner,
        config: &KernelConfig,
        cc: &str,
        vmlinux: Option<&Path>,
    ) -> Result<(String, Option<BuildError>)> {
        match compiler::check(runner, config, cc, vmlinux) {
            Ok(v) => Ok((v, None)),
            Err(e @ BuildError::CompilerMismatch { .. }) if self.skip_compiler_check => {
                Ok((compiler::cc_version(runner, cc)?, Some(e)))
            }
            Err(e) => Err(e),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    /// [`PREPARE_RECIPE`] of the preparation that wrote it.
    recipe: u32,
    kernelrelease: Option<String>,
    cc: String,
    cc_version: String,
    kcflags: String,
    config_len: u64,
    config_hash: String,
}

/// A configured, prepared tree, locked for the lifetime of this value.
#[derive(Debug)]
pub struct PreparedTree {
    pub kbuild: Kbuild,
    pub config: KernelConfig,
    /// `<cc> --version`, checked against the target.
    pub cc_version: String,
    /// The mismatch that [`TreeOptions::skip_compiler_check`] let pass, if any.
    pub compiler_mismatch: Option<String>,
    /// Files restored from a patch an earlier, interrupted build left applied.
    pub recovered: Vec<Entry>,
    /// Time of each preparation stage actually run (`unpack`, `prepare`, …).
    pub timings: Timings,
    /// Where the include index is kept (prepared Debian trees only; user trees change).
    pub include_index_cache: Option<PathBuf>,
    /// A user's tree (`--sourcedir`): objects it already had are put back after a build.
    /// A cached Debian tree keeps no objects at all.
    pub is_user_tree: bool,
    /// What was applied to make the tree (a featureset series), to show with the build.
    pub notes: Vec<String>,
    /// Where original objects are kept between builds (prepared Debian trees only: a user's
    /// tree can change in ways its objects' dependency lists do not show, such as Makefiles).
    pub object_cache: Option<ObjectCache>,
    lock: TreeLock,
}

fn config_fingerprint(text: &[u8]) -> (u64, String) {
    // FNV-1a: enough to notice a different config; not a security boundary.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (text.len() as u64, format!("{h:016x}"))
}

impl PreparedTree {
    pub fn root(&self) -> &Path {
        &self.kbuild.tree
    }

    pub fn lock_path(&self) -> &Path {
        self.lock.path()
    }

    /// The tree for a Debian kernel under `cache`, unpacking and preparing it if needed.
    pub fn debian(
        runner: &dyn Runner,
        cache: &Path,
        src: &DebianSource,
        opts: &TreeOptions,
    ) -> Result<Self> {
        let src_dir = cache.join("src");
        fs::create_dir_all(&src_dir).map_err(io_err(&src_dir))?;
        let root = src_dir.join(&src.kernelrelease);
        let lock = TreeLock::acquire(&src_dir.join(format!("{}.lock", src.kernelrelease)), || {
            eprintln!(
                "kpatch-rs: waiting for another build using {}",
                root.display()
            );
        })?;
        let mut timings = Timings::default();

        let target_config = KernelConfig::read(&src.config)?;
        let cc = opts
            .cc
            .clone()
            .unwrap_or_else(|| compiler::default_cc(&target_config));
        let (cc_version, mismatch) =
            opts.check_compiler(runner, &target_config, &cc, src.vmlinux.as_deref())?;

        if !root.is_dir() {
            let t = Instant::now();
            unpack(
                runner,
                &src_dir,
                &src.kernelrelease,
                &src.source_tarball,
                &root,
                src.featureset.as_ref(),
            )?;
            timings.push("unpack", t.elapsed());
        }
        let recovered = journal::restore(&root)?.unwrap_or_default();

        let mut kbuild = Kbuild::new(&root, &cc, Some(src.kernelrelease.clone()));
        kbuild.rustc = Kbuild::rustc_for(&target_config);
        opts.apply(&mut kbuild);
        let config_text = fs::read(&src.config).map_err(io_err(&src.config))?;
        let fixed = set_strings(&String::from_utf8_lossy(&config_text), DEBIAN_CONFIG_FIXES);
        let (config_len, config_hash) = config_fingerprint(fixed.as_bytes());
        let want = Marker {
            recipe: PREPARE_RECIPE,
            kernelrelease: Some(src.kernelrelease.clone()),
            cc: cc.clone(),
            cc_version: cc_version.clone(),
            kcflags: kbuild.kcflags.clone(),
            config_len,
            config_hash,
        };
        if read_marker(&root).as_ref() != Some(&want) {
            let marker = root.join(MARKER);
            let _ = fs::remove_file(&marker);
            let _ = fs::remove_file(root.join(INCLUDE_INDEX));
            let dot_config = root.join(".config");
            fs::write(&dot_config, fixed.as_bytes()).map_err(io_err(&dot_config))?;
            let t = Instant::now();
            prepare(runner, &kbuild)?;
            check_drift(&root, &fixed)?;
            timings.push("prepare", t.elapsed());
            if let Some(sv) = &src.symvers {
                let dst = root.join("Module.symvers");
                fs::copy(sv, &dst).map_err(io_err(sv))?;
            }
            write_marker(&root, &want)?;
        }
        check_release(&root, &src.kernelrelease)?;
        kbuild.prepared = true;
        let config = KernelConfig::read(&root.join(".config"))?;
        let include_index_cache = Some(root.join(INCLUDE_INDEX));
        let context = serde_json::to_string(&want).map_err(|e| BuildError::Io {
            path: root.join(MARKER),
            source: e.into(),
        })?;
        let object_cache = Some(ObjectCache::new(
            cache.join(OBJECT_CACHE).join(&src.kernelrelease),
            &context,
        ));
        Ok(PreparedTree {
            kbuild,
            config,
            cc_version,
            compiler_mismatch: mismatch.map(|e| e.to_string()),
            recovered,
            timings,
            include_index_cache,
            is_user_tree: false,
            notes: featureset::read_notes(&root),
            object_cache,
            lock,
        })
    }

    /// A user's tree, used in place (see the module documentation).
    pub fn user(
        runner: &dyn Runner,
        dir: &Path,
        config: Option<&Path>,
        vmlinux: Option<&Path>,
        opts: &TreeOptions,
    ) -> Result<Self> {
        let root = dir.to_path_buf();
        let lock = TreeLock::acquire(&root.join(".kpatch-rs.lock"), || {
            eprintln!(
                "kpatch-rs: waiting for another build using {}",
                root.display()
            );
        })?;
        let mut timings = Timings::default();
        let recovered = journal::restore(&root)?.unwrap_or_default();
        let dot_config = root.join(".config");
        let autoconf = root.join("include/generated/autoconf.h");
        let target_config = match config {
            Some(c) => KernelConfig::read(c)?,
            None => {
                for needed in [&dot_config, &autoconf] {
                    if !needed.is_file() {
                        return Err(BuildError::UnconfiguredTree {
                            tree: root.clone(),
                            missing: needed.clone(),
                        });
                    }
                }
                KernelConfig::read(&dot_config)?
            }
        };
        let cc = opts
            .cc
            .clone()
            .unwrap_or_else(|| compiler::default_cc(&target_config));
        let (cc_version, mismatch) = opts.check_compiler(runner, &target_config, &cc, vmlinux)?;
        let mut kbuild = Kbuild::new(&root, &cc, None);
        kbuild.rustc = Kbuild::rustc_for(&target_config);
        opts.apply(&mut kbuild);
        if let Some(c) = config {
            let given = fs::read(c).map_err(io_err(c))?;
            let (config_len, config_hash) = config_fingerprint(&given);
            let want = Marker {
                recipe: PREPARE_RECIPE,
                kernelrelease: None,
                cc: cc.clone(),
                cc_version: cc_version.clone(),
                kcflags: kbuild.kcflags.clone(),
                config_len,
                config_hash,
            };
            if read_marker(&root).as_ref() != Some(&want) || !autoconf.is_file() {
                let _ = fs::remove_file(root.join(MARKER));
                fs::write(&dot_config, &given).map_err(io_err(&dot_config))?;
                let t = Instant::now();
                prepare(runner, &kbuild)?;
                check_drift(&root, &String::from_utf8_lossy(&given))?;
                timings.push("prepare", t.elapsed());
                write_marker(&root, &want)?;
            }
        }
        let config = KernelConfig::read(&dot_config)?;
        Ok(PreparedTree {
            kbuild,
            config,
            cc_version,
            compiler_mismatch: mismatch.map(|e| e.to_string()),
            recovered,
            timings,
            include_index_cache: None,
            is_user_tree: true,
            notes: Vec::new(),
            object_cache: None,
            lock,
        })
    }
}

/// The prepared tree's `UTS_RELEASE` (and so every module's vermagic) must be the target's
/// release string.
pub fn check_release(root: &Path, kernelrelease: &str) -> Result<()> {
    let header = root.join("include/generated/utsrelease.h");
    let text = fs::read_to_string(&header).map_err(io_err(&header))?;
    let found = text
        .split_once("UTS_RELEASE")
        .map(|(_, r)| r.trim().trim_matches('"').to_string())
        .unwrap_or_default();
    if found != kernelrelease {
        return Err(BuildError::ReleaseMismatch {
            header,
            found,
            target: kernelrelease.to_string(),
        });
    }
    Ok(())
}

/// `make olddefconfig && make modules_prepare` with the build's own variables.
pub fn prepare(runner: &dyn Runner, kbuild: &Kbuild) -> Result<()> {
    runner.run_ok(&kbuild.make(["olddefconfig"]))?;
    // `modules_prepare` is `prepare` plus scripts/module.lds: what `make M=` needs to link the
    // livepatch module in this tree (modpost, objtool and sign-file come with `prepare`).
    runner.run_ok(&kbuild.make(["modules_prepare"]))?;
    Ok(())
}

/// The options a Debian config sets on purpose ([`DEBIAN_CONFIG_FIXES`]) are not drift; any
/// other option the target states and `olddefconfig` changed is refused
/// ([`BuildError::ConfigDrift`]).
fn check_drift(root: &Path, target: &str) -> Result<()> {
    let dot_config = root.join(".config");
    let prepared = fs::read_to_string(&dot_config).map_err(io_err(&dot_config))?;
    let ignore: Vec<&str> = DEBIAN_CONFIG_FIXES.iter().map(|(k, _)| *k).collect();
    let changed = drift(target, &prepared, &ignore);
    if changed.is_empty() {
        return Ok(());
    }
    Err(BuildError::ConfigDrift {
        tree: root.to_path_buf(),
        options: changed.iter().map(ToString::to_string).collect(),
    })
}

/// Unpacks `tarball` (one top directory) into a temporary sibling of `root`, applies the
/// featureset series if any, then renames it: a tree exists only complete.
fn unpack(
    runner: &dyn Runner,
    src_dir: &Path,
    name: &str,
    tarball: &Path,
    root: &Path,
    featureset: Option<&FeaturesetSource>,
) -> Result<()> {
    // We hold the lock: any temporary directory of this tree is from a dead process.
    let prefix = format!(".{name}.unpack-");
    for e in fs::read_dir(src_dir).map_err(io_err(src_dir))?.flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
        {
            fs::remove_dir_all(e.path()).map_err(io_err(e.path()))?;
        }
    }
    let tmp = src_dir.join(format!("{prefix}{}", std::process::id()));
    fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    runner.run_ok(&Cmd::new("tar").arg("-xf").arg(tarball).arg("-C").arg(&tmp))?;
    let mut tops: Vec<PathBuf> = fs::read_dir(&tmp)
        .map_err(io_err(&tmp))?
        .flatten()
        .map(|e| e.path())
        .collect();
    let top = match tops.len() {
        1 => tops.pop().unwrap_or_default(),
        _ => tmp.clone(),
    };
    if let Some(fs) = featureset {
        featureset::prepare_tree(runner, &top, fs)?;
    }
    if top == tmp {
        fs::rename(&tmp, root).map_err(io_err(root))?;
    } else {
        fs::rename(&top, root).map_err(io_err(root))?;
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    Ok(())
}

fn read_marker(root: &Path) -> Option<Marker> {
    serde_json::from_slice(&fs::read(root.join(MARKER)).ok()?).ok()
}

fn write_marker(root: &Path, m: &Marker) -> Result<()> {
    let path = root.join(MARKER);
    let text = serde_json::to_vec_pretty(m).map_err(|e| BuildError::Io {
        path: path.clone(),
        source: e.into(),
    })?;
    kpatch_common::fs::write_atomic(&path, &text).map_err(io_err(&path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::CmdOutput;
    use std::sync::Mutex;

    /// Pretends to be tar (creates the tree), the compiler (prints a version) and make.
    struct Fake {
        version: &'static str,
        log: Mutex<Vec<String>>,
    }

    impl Runner for Fake {
        fn run(&self, cmd: &Cmd) -> Result<CmdOutput, crate::exec::RunError> {
            let line = cmd.to_string();
            self.log.lock().unwrap().push(line.clone());
            let prog = cmd.program.to_string_lossy().to_string();
            let mut out = CmdOutput {
                code: Some(0),
                ..Default::default()
            };
            if prog == "tar" {
                let dest = PathBuf::from(&cmd.args[3]);
                fs::create_dir_all(dest.join("linux-source-6.1/fs/proc")).unwrap();
                fs::write(
                    dest.join("linux-source-6.1/fs/proc/cmdline.c"),
                    "original\n",
                )
                .unwrap();
            } else if prog == "make" && cmd.args.last().is_some_and(|a| a == "modules_prepare") {
                // What kbuild's prepare writes from KERNELRELEASE.
                let tree = PathBuf::from(&cmd.args[1]);
                let kr = cmd
                    .args
                    .iter()
                    .find_map(|a| a.to_str()?.strip_prefix("KERNELRELEASE="))
                    .unwrap_or("6.1.192");
                fs::create_dir_all(tree.join("include/generated")).unwrap();
                fs::write(
                    tree.join("include/generated/utsrelease.h"),
                    format!("#define UTS_RELEASE \"{kr}\"\n"),
                )
                .unwrap();
            } else if cmd.args.first().is_some_and(|a| a == "--version") {
                out.stdout = format!("{}\n", self.version);
            }
            Ok(out)
        }
    }

    impl Fake {
        fn new(version: &'static str) -> Self {
            Fake {
                version,
                log: Mutex::new(Vec::new()),
            }
        }
        fn count(&self, what: &str) -> usize {
            self.log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(what))
                .count()
        }
    }

    fn source(dir: &Path, config: &str) -> DebianSource {
        let cfg = dir.join("config-6.1.0-56-amd64");
        fs::write(&cfg, config).unwrap();
        let symvers = dir.join("Module.symvers");
        fs::write(&symvers, "0x1\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n").unwrap();
        DebianSource {
            kernelrelease: "6.1.0-56-amd64".into(),
            source_tarball: dir.join("linux-source-6.1.tar.xz"),
            config: cfg,
            symvers: Some(symvers),
            vmlinux: None,
            featureset: None,
        }
    }

    const CONFIG: &str = "CONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0\"\nCONFIG_SYSTEM_TRUSTED_KEYS=\"debian/certs/debian-uefi-certs.pem\"\n";
    const GCC: &str = "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0";

    /// Debian 6.12 was built without Rust (`CONFIG_RUSTC_VERSION=0`); the host's rustc made
    /// Kconfig say RUSTC_VERSION=109500 and the drift check refused every 6.12 tree.
    #[test]
    fn regression_host_rustc_is_hidden_from_a_target_built_without_rust() {
        let d = tempfile::tempdir().unwrap();
        let opts = TreeOptions {
            cc: Some("gcc-12".into()),
            ..Default::default()
        };
        for (config, want) in [
            (format!("{CONFIG}CONFIG_RUSTC_VERSION=0\n"), true),
            (CONFIG.to_string(), true),
            (format!("{CONFIG}CONFIG_RUSTC_VERSION=108500\n"), false),
        ] {
            let cache = tempfile::tempdir_in(d.path()).unwrap();
            let src = source(d.path(), &config);
            let fake = Fake::new(GCC);
            PreparedTree::debian(&fake, cache.path(), &src, &opts).unwrap();
            let log = fake.log.lock().unwrap();
            let olddefconfig = log.iter().find(|l| l.contains(" olddefconfig")).unwrap();
            assert_eq!(
                olddefconfig.contains(&format!("RUSTC={}", crate::kbuild::NO_RUSTC)),
                want,
                "{config}: {olddefconfig}"
            );
        }
    }

    #[test]
    fn debian_tree_is_unpacked_and_prepared_once() {
        let d = tempfile::tempdir().unwrap();
        let cache = d.path().join("cache");
        let src = source(d.path(), CONFIG);
        let opts = TreeOptions {
            cc: Some("gcc-12".into()),
            jobs: Some(2),
            ..Default::default()
        };
        let fake = Fake::new(GCC);
        let tree = PreparedTree::debian(&fake, &cache, &src, &opts).unwrap();
        let root = cache.join("src/6.1.0-56-amd64");
        assert_eq!(tree.root(), root);
        assert!(root.join("fs/proc/cmdline.c").is_file());
        assert!(root.join(MARKER).is_file());
        assert!(root.join("Module.symvers").is_file());
        let cfg = fs::read_to_string(root.join(".config")).unwrap();
        assert!(cfg.contains("CONFIG_SYSTEM_TRUSTED_KEYS=\"\"\n"), "{cfg}");
        assert_eq!(
            (
                fake.count("tar -xf"),
                fake.count(" olddefconfig"),
                fake.count(" modules_prepare")
            ),
            (1, 1, 1)
        );
        assert!(fake
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("KERNELRELEASE=6.1.0-56-amd64") && l.contains(" modules_prepare")));
        assert!(tree.timings.get("unpack").is_some() && tree.timings.get("prepare").is_some());
        drop(tree);

        // Reused: no tar, no make.
        let again = Fake::new(GCC);
        let tree = PreparedTree::debian(&again, &cache, &src, &opts).unwrap();
        assert_eq!((again.count("tar -xf"), again.count("make")), (0, 0));
        assert!(tree.timings.0.is_empty());
        drop(tree);

        // Other flags: prepared again, not unpacked again.
        let flags = TreeOptions {
            extra_kcflags: vec!["-I/stable/include".into()],
            ..opts.clone()
        };
        let third = Fake::new(GCC);
        let tree = PreparedTree::debian(&third, &cache, &src, &flags).unwrap();
        assert_eq!(
            (third.count("tar -xf"), third.count(" modules_prepare")),
            (0, 1)
        );
        assert!(tree.kbuild.kcflags.ends_with(" -I/stable/include"));
    }

    #[test]
    fn left_over_patch_is_restored_when_the_tree_is_opened() {
        let d = tempfile::tempdir().unwrap();
        let cache = d.path().join("cache");
        let src = source(d.path(), CONFIG);
        let opts = TreeOptions {
            cc: Some("gcc-12".into()),
            ..Default::default()
        };
        let tree = PreparedTree::debian(&Fake::new(GCC), &cache, &src, &opts).unwrap();
        let root = tree.root().to_path_buf();
        journal::begin(&root, &[PathBuf::from("fs/proc/cmdline.c")]).unwrap();
        fs::write(root.join("fs/proc/cmdline.c"), "patched\n").unwrap();
        drop(tree);
        let tree = PreparedTree::debian(&Fake::new(GCC), &cache, &src, &opts).unwrap();
        assert_eq!(
            tree.recovered,
            vec![Entry::Saved(PathBuf::from("fs/proc/cmdline.c"))]
        );
        assert_eq!(
            fs::read_to_string(root.join("fs/proc/cmdline.c")).unwrap(),
            "original\n"
        );
    }

    #[test]
    fn compiler_mismatch_is_refused_unless_skipped() {
        let d = tempfile::tempdir().unwrap();
        let cache = d.path().join("cache");
        let src = source(d.path(), CONFIG);
        let opts = TreeOptions {
            cc: Some("gcc-13".into()),
            ..Default::default()
        };
        let fake = Fake::new("gcc-13 (Debian 13.3.0-1) 13.3.0");
        let e = PreparedTree::debian(&fake, &cache, &src, &opts)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("12.2.0-14+deb12u1") && e.contains("13.3.0-1"),
            "{e}"
        );
        assert_eq!(
            fake.count("tar -xf"),
            0,
            "nothing is unpacked for a refused compiler"
        );
        let skip = TreeOptions {
            skip_compiler_check: true,
            ..opts
        };
        let tree = PreparedTree::debian(&fake, &cache, &src, &skip).unwrap();
        assert!(tree
            .compiler_mismatch
            .as_deref()
            .is_some_and(|m| m.contains("13.3.0-1")));
    }

    #[test]
    fn release_string_is_checked() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("include/generated")).unwrap();
        fs::write(
            d.path().join("include/generated/utsrelease.h"),
            "#define UTS_RELEASE \"6.1.0-56-amd64\"\n",
        )
        .unwrap();
        check_release(d.path(), "6.1.0-56-amd64").unwrap();
        let e = check_release(d.path(), "6.1.0-50-amd64")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"6.1.0-56-amd64\"") && e.contains("\"6.1.0-50-amd64\""),
            "{e}"
        );
    }

    #[test]
    fn unconfigured_user_tree_without_config_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = PreparedTree::user(
            &Fake::new(GCC),
            d.path(),
            None,
            None,
            &TreeOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(e, BuildError::UnconfiguredTree { .. }), "{e}");
    }
}
