//! The whole build, from source patches to a livepatch module for one exact kernel
//! ([`build_livepatch`]): pick the target (a Debian kernel fetched into the cache, or a user's
//! tree), prepare its source once, compile the translation units the patch touches before and
//! after applying it, diff each object pair, resolve the changes against the target's symbols
//! and turn them into a livepatch module. Proving the module in a guest is the caller's.

use std::path::{Path, PathBuf};
use std::time::Instant;

use kpatch_diff::{DiffError, Outcome as DiffOutcome, Report};
use kpatch_elf::Object;
use kpatch_module::{
    BuiltModule, GlueOptions, KbuildOptions, KernelResolver, ModuleOptions, PatchMetadata, TuInput,
};
use kpatch_symbols::{KernelSymbol, KernelSymbols, Symvers};
use kpatch_target::DebianKernel;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::{BuildError, Result};
use crate::exec::{Cmd, Runner};
use crate::pipeline::{build_object_pairs_with_progress, BuildOutput, ObjectPair};
use crate::reach::FilterCounts;
use crate::{DebianSource, PatchFile, PreparedTree, TreeOptions};

/// The kernel to build for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// A Debian kernel by ABI (`6.1.0-56-amd64`); `None`: the running kernel when it is a
    /// Debian one, else the newest 6.1 generic kernel.
    Debian(Option<String>),
    /// A prepared kernel tree the user built, with its vmlinux (default: `<dir>/vmlinux`) and,
    /// when the tree has none, its `.config`.
    Tree {
        dir: PathBuf,
        config: Option<PathBuf>,
        vmlinux: Option<PathBuf>,
    },
}

/// What to build.
#[derive(Debug, Clone)]
pub struct LivepatchOptions {
    /// Source patches (unified diffs against the kernel tree, `-p1`), applied in order.
    pub patches: Vec<PathBuf>,
    pub target: TargetSpec,
    /// The patch name ([`patch_name`]); the module is `livepatch-<name>.ko`.
    pub name: String,
    /// Parallel make jobs (default: the tree's).
    pub jobs: Option<usize>,
    /// Where the module goes.
    pub output_dir: PathBuf,
    /// Keep the work directory ([`Livepatch::work_dir`]) and let the differ print what it saw.
    pub debug: bool,
    /// `klp_patch.replace`: the patch replaces the loaded ones instead of stacking on them.
    pub replace: bool,
    /// Accept a compiler other than the one the target was built with.
    pub skip_compiler_check: bool,
    /// Sign the module with the target's sign-file: `(key, certificate)`.
    pub sign: Option<(PathBuf, PathBuf)>,
    /// What the patch does, for `.modinfo` (default: the patches' `Subject:` lines).
    pub description: Option<String>,
    /// CVE numbers the patch fixes, besides those its headers name.
    pub cves: Vec<String>,
    /// The patch's version: the module becomes `livepatch-<name>-v<version>`, so that a newer
    /// cumulative version can be loaded while the older one runs (default: none, and version 1
    /// in `.modinfo`).
    pub patch_version: Option<u32>,
    /// Hand the object compiles to distcc or icecream.
    pub distributed: Option<crate::distributed::Tool>,
}

impl LivepatchOptions {
    /// The name the module is built under: `name`, or `name-v<version>`.
    pub fn module_patch_name(&self) -> String {
        match self.patch_version {
            Some(v) => format!("{}-v{v}", self.name),
            None => self.name.clone(),
        }
    }
}

/// Where the build reports its stages and the warnings the user must see.
pub trait Observer {
    fn stage(&self, what: &str);
    fn warn(&self, what: &str);
    /// `done` of `total` (`what`: `units preprocessed`, `patched objects compiled`).
    fn count(&self, _what: &str, _done: usize, _total: usize) {}
}

/// The pipeline's progress, told to an observer.
struct Told<'a>(&'a dyn Observer);

impl crate::pipeline::Progress for Told<'_> {
    fn stage(&self, what: &str) {
        self.0.stage(what)
    }
    fn count(&self, what: &str, done: usize, total: usize) {
        self.0.count(what, done, total)
    }
}

/// An observer that drops everything.
impl Observer for () {
    fn stage(&self, _: &str) {}
    fn warn(&self, _: &str) {}
}

/// The target kernel and where each of its parts is.
#[derive(Debug)]
pub struct Target {
    pub tree: PreparedTree,
    /// Its release (`uname -r`).
    pub release: String,
    /// The image the symbols are read from (a vmlinux).
    pub symbols_image: PathBuf,
    pub symvers: PathBuf,
    /// The tree modules are built in (`make -C`).
    pub kbuild_dir: PathBuf,
    /// Its `lib/modules/<release>`, when known.
    pub modules_dir: Option<PathBuf>,
    pub debian: Option<DebianKernel>,
    pub vmlinux: Option<PathBuf>,
}

/// What the differ found in one translation unit that changed.
#[derive(Debug, Clone)]
pub struct UnitReport {
    /// The source file (`fs/proc/cmdline.c`).
    pub unit: PathBuf,
    /// `vmlinux`, or the module the unit is linked into.
    pub object: String,
    pub report: Report,
}

/// A built livepatch module and how it came to be.
#[derive(Debug)]
pub struct Livepatch {
    /// The module, at its place in [`LivepatchOptions::output_dir`].
    pub module: BuiltModule,
    pub target: Target,
    /// Lowercase hex SHA-256 of the patches' text, as recorded in the module.
    pub patch_sha256: String,
    pub units: Vec<UnitReport>,
    /// The patched objects: `vmlinux` and module names, sorted.
    pub objects: Vec<String>,
    /// Seconds per stage, in order.
    pub timings: Vec<(String, f64)>,
    /// What the header filters removed.
    pub filter: FilterCounts,
    /// Original objects taken from the cache, and compiled.
    pub orig_cached: usize,
    pub orig_compiled: usize,
    /// The work directory, kept with [`LivepatchOptions::debug`].
    pub work_dir: Option<PathBuf>,
}

impl Livepatch {
    /// `(object, function, sympos)` of every patched function.
    pub fn functions(&self) -> Vec<(String, String, u64)> {
        self.module
            .plan
            .functions
            .iter()
            .map(|f| (f.object.clone(), f.name.clone(), f.sympos))
            .collect()
    }

    /// The loadable modules the patch patches.
    pub fn target_modules(&self) -> Vec<String> {
        self.objects
            .iter()
            .filter(|o| o.as_str() != kpatch_common::VMLINUX)
            .cloned()
            .collect()
    }
}

/// How a build ended.
#[derive(Debug)]
pub enum Outcome {
    Built(Box<Livepatch>),
    /// The change cannot be live-patched: the differ's or the module generator's reasons.
    Refused(Vec<String>),
    /// The patch changes no function.
    NoChange,
}

/// The patch name: `name`, else the first patch's file name without `.patch`/`.diff`; any
/// character but ASCII letters, digits, `-` and `_` becomes `-`.
pub fn patch_name(name: Option<&str>, first_patch: &Path) -> String {
    let raw = name.map(str::to_string).unwrap_or_else(|| {
        let f = first_patch
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        f.trim_end_matches(".patch")
            .trim_end_matches(".diff")
            .to_string()
    });
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Builds the livepatch module of `opts` (see the module docs). The kernel tree is never left
/// patched; on error or refusal no module is written.
pub fn build_livepatch(
    opts: &LivepatchOptions,
    runner: &dyn Runner,
    obs: &dyn Observer,
) -> Result<Outcome> {
    // Before minutes of compiling: a name the module cannot carry (too long for the kernel).
    kpatch_module::names::check_patch_name(&opts.name)?;
    let work_tmp = tempfile::Builder::new()
        .prefix("kpatch-rs-build.")
        .tempdir()
        .map_err(|e| BuildError::Io {
            path: std::env::temp_dir(),
            source: e,
        })?;
    let work = work_tmp.path().to_path_buf();
    let (patch_path, sha, headers) = combined_patch(&opts.patches, &work)?;
    let patch = PatchFile::read(&patch_path, 1)?;

    let started = Instant::now();
    let mut target = target(opts, runner, obs)?;
    if let Some(tool) = &opts.distributed {
        distribute(runner, &mut target.tree, tool, &work, obs)?;
    }
    let mut timings = vec![("target".to_string(), started.elapsed().as_secs_f64())];
    report_tree(&target.tree, obs);

    obs.stage(&format!(
        "compiling the units {} touches, original and patched",
        opts.patches[0].display()
    ));
    let built = build_object_pairs_with_progress(
        runner,
        &target.tree,
        &patch,
        &work.join("objects"),
        &Told(obs),
    )?;
    report_objects(&built, obs);
    if built.pairs.is_empty() {
        return Err(BuildError::NothingCompiled);
    }
    timings.extend(stage_timings(&target.tree, &built));
    let (filter, orig_cached, orig_compiled) =
        (built.filter.clone(), built.orig_cached, built.orig_compiled);

    let started = Instant::now();
    obs.stage(&format!("diffing {} object pair(s)", built.pairs.len()));
    let (tus, units) = match diff_pairs(&built.pairs, opts.debug, obs)? {
        Diffed::Changed(tus, units) => (tus, units),
        Diffed::Refused(reasons) => return Ok(Outcome::Refused(reasons)),
        Diffed::NoChange => return Ok(Outcome::NoChange),
    };
    timings.push(("diff".into(), started.elapsed().as_secs_f64()));

    let started = Instant::now();
    obs.stage("resolving symbols against the target kernel");
    let objects = patched_objects(&tus);
    let resolver = resolver(&target, &objects)?;
    std::fs::create_dir_all(&opts.output_dir).map_err(|source| BuildError::File {
        what: "creating",
        path: opts.output_dir.clone(),
        source,
    })?;
    let module_name = opts.module_patch_name();
    obs.stage(&format!("building livepatch-{module_name}.ko"));
    let kernel_version = target.debian.as_ref().map(|k| k.version.as_str());
    let metadata = metadata(opts, kernel_version, &headers);
    let mut module =
        match build_module(opts, &target, &sha, metadata, &work, tus, &resolver, runner)? {
            Ok(m) => m,
            Err(refusal) => return Ok(Outcome::Refused(vec![refusal])),
        };
    for note in &module.plan.notes {
        obs.warn(note);
    }
    if let Some((key, cert)) = &opts.sign {
        obs.stage("signing the module with the kernel's sign-file");
        sign(runner, &target.kbuild_dir, key, cert, &module.path)?;
    }
    module.path = place(
        &module.path,
        &opts.output_dir.join(format!("livepatch-{module_name}.ko")),
    )?;
    timings.push(("module".into(), started.elapsed().as_secs_f64()));
    obs.stage(&format!("wrote {}", module.path.display()));

    let work_dir = opts.debug.then(|| work_tmp.keep());
    Ok(Outcome::Built(Box::new(Livepatch {
        module,
        target,
        patch_sha256: sha,
        units,
        objects,
        timings,
        filter,
        orig_cached,
        orig_compiled,
        work_dir,
    })))
}

/// Sets the tree's object compiles up to go through `tool`, each helper checked.
fn distribute(
    runner: &dyn Runner,
    tree: &mut PreparedTree,
    tool: &crate::distributed::Tool,
    work: &Path,
    obs: &dyn Observer,
) -> Result<()> {
    let target_cc = tree
        .config
        .get("CONFIG_CC_VERSION_TEXT")
        .unwrap_or(&tree.cc_version)
        .to_string();
    let d = crate::distributed::set_up(
        runner,
        tool.clone(),
        &tree.kbuild.cc,
        &target_cc,
        &work.join("distributed"),
        tree.kbuild.jobs,
    )?;
    obs.stage(&format!(
        "compiling through {:?} with {} jobs, helpers checked for {target_cc}",
        d.tool, d.jobs
    ));
    tree.kbuild.distributed = Some(d);
    Ok(())
}

/// The seconds each stage of preparing the tree and compiling the units took.
fn stage_timings(tree: &PreparedTree, built: &BuildOutput) -> Vec<(String, f64)> {
    let stages = tree.timings.0.iter().chain(built.timings.0.iter());
    stages.map(|(s, d)| (s.clone(), d.as_secs_f64())).collect()
}

/// The objects the units patch (`vmlinux`, module names), sorted, each once.
fn patched_objects(tus: &[TuInput]) -> Vec<String> {
    let mut objects: Vec<String> = tus.iter().map(|t| t.object.clone()).collect();
    objects.sort();
    objects.dedup();
    objects
}

/// The patches as one file (applied in order), the SHA-256 of their text, and each one's header.
fn combined_patch(
    patches: &[PathBuf],
    work: &Path,
) -> Result<(PathBuf, String, Vec<crate::patchfile::PatchHeader>)> {
    let mut text: Vec<u8> = Vec::new();
    let mut headers = Vec::new();
    for p in patches {
        let t = std::fs::read(p).map_err(|source| BuildError::File {
            what: "reading patch",
            path: p.clone(),
            source,
        })?;
        // Each patch is checked on its own, so that an error names the user's file and line
        // rather than the combined copy.
        PatchFile::read(p, 1)?;
        headers.push(crate::patchfile::header(&String::from_utf8_lossy(&t)));
        text.extend_from_slice(&t);
        if !t.ends_with(b"\n") {
            text.push(b'\n');
        }
    }
    let sha = format!("{:x}", Sha256::digest(&text));
    let path = work.join("combined.patch");
    std::fs::write(&path, &text).map_err(|source| BuildError::File {
        what: "writing",
        path: path.clone(),
        source,
    })?;
    Ok((path, sha, headers))
}

/// The `.modinfo` metadata: the description given, else the patches' subjects; the CVE numbers
/// given and those the headers name; the name, version and the Debian kernel's version.
fn metadata(
    opts: &LivepatchOptions,
    kernel_version: Option<&str>,
    headers: &[crate::patchfile::PatchHeader],
) -> PatchMetadata {
    let subjects: Vec<&str> = headers
        .iter()
        .filter_map(|h| h.subject.as_deref())
        .collect();
    let description = opts
        .description
        .clone()
        .or_else(|| (!subjects.is_empty()).then(|| subjects.join("; ")));
    let mut cves: Vec<String> = opts.cves.iter().map(|c| c.to_ascii_uppercase()).collect();
    cves.extend(headers.iter().flat_map(|h| h.cves.iter().cloned()));
    cves.sort();
    cves.dedup();
    PatchMetadata {
        description,
        name: Some(opts.name.clone()),
        version: Some(opts.patch_version.unwrap_or(1)),
        cves,
        kernel_version: kernel_version.map(str::to_string),
    }
}

/// The patch-author headers (kpatch-macros.h, kpatch-syscall.h), kept in one stable directory of
/// the cache: their `-I` is part of a prepared tree's flags, so it must not change per build.
pub fn patch_author_headers() -> Result<PathBuf> {
    let cache = kpatch_target::cache_dir();
    let dir = cache.join("include");
    let current = kpatch_module::headers::HEADERS
        .iter()
        .all(|(name, text)| std::fs::read_to_string(dir.join(name)).is_ok_and(|t| t == *text));
    if !current {
        let tmp = tempfile::Builder::new()
            .prefix(".include.")
            .tempdir_in(&cache)
            .map_err(|source| BuildError::Io {
                path: cache.clone(),
                source,
            })?;
        kpatch_module::headers::install_headers(tmp.path())?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(tmp.keep(), &dir).map_err(|source| BuildError::File {
            what: "installing the patch-author headers in",
            path: dir.clone(),
            source,
        })?;
    }
    Ok(dir)
}

/// The target of `opts`, its tree prepared.
fn target(opts: &LivepatchOptions, runner: &dyn Runner, obs: &dyn Observer) -> Result<Target> {
    let cache = kpatch_target::cache_dir();
    std::fs::create_dir_all(&cache).map_err(|source| BuildError::Io {
        path: cache.clone(),
        source,
    })?;
    let include = patch_author_headers()?;
    let tree_opts = TreeOptions {
        jobs: opts.jobs,
        extra_kcflags: vec![format!("-I{}", include.display())],
        skip_compiler_check: opts.skip_compiler_check,
        ..Default::default()
    };
    match &opts.target {
        TargetSpec::Tree {
            dir,
            config,
            vmlinux,
        } => user_tree(
            runner,
            dir,
            config.as_deref(),
            vmlinux.as_deref(),
            &tree_opts,
            obs,
        ),
        TargetSpec::Debian(abi) => debian_kernel(runner, abi.as_deref(), &tree_opts, obs),
    }
}

fn user_tree(
    runner: &dyn Runner,
    dir: &Path,
    config: Option<&Path>,
    vmlinux: Option<&Path>,
    tree_opts: &TreeOptions,
    obs: &dyn Observer,
) -> Result<Target> {
    obs.stage(&format!("target: the kernel tree at {}", dir.display()));
    let vmlinux = vmlinux
        .map(Path::to_path_buf)
        .or_else(|| Some(dir.join("vmlinux")).filter(|v| v.exists()));
    let Some(vmlinux) = vmlinux else {
        return Err(BuildError::TreeWithoutVmlinux {
            tree: dir.to_path_buf(),
        });
    };
    let tree = PreparedTree::user(runner, dir, config, Some(&vmlinux), tree_opts)?;
    let release = std::fs::read_to_string(dir.join("include/config/kernel.release"))
        .map_err(|source| BuildError::NotPreparedTree {
            tree: dir.to_path_buf(),
            source,
        })?
        .trim()
        .to_string();
    Ok(Target {
        symbols_image: vmlinux.clone(),
        symvers: dir.join("Module.symvers"),
        kbuild_dir: dir.to_path_buf(),
        modules_dir: None,
        release,
        tree,
        debian: None,
        vmlinux: Some(vmlinux),
    })
}

fn debian_kernel(
    runner: &dyn Runner,
    abi: Option<&str>,
    tree_opts: &TreeOptions,
    obs: &dyn Observer,
) -> Result<Target> {
    let k = match abi {
        Some(abi) => DebianKernel::named(abi)?,
        None => DebianKernel::default_target()?,
    };
    obs.stage(&format!("target: Debian kernel {} ({})", k.abi, k.version));
    let src = DebianSource::from_kernel(&k)?;
    obs.stage("preparing the source tree (first time: unpack and make prepare)");
    let tree = PreparedTree::debian(runner, &kpatch_target::cache_dir(), &src, tree_opts)?;
    Ok(Target {
        release: k.abi.clone(),
        symbols_image: k.vmlinux()?,
        symvers: k.symvers()?,
        // Modules are built in the prepared tree itself (`make modules_prepare` built its host
        // tools), never against linux-kbuild-*: the archive keeps that package only for the
        // newest 6.1 ABI.
        kbuild_dir: tree.root().to_path_buf(),
        modules_dir: k.modules_dir().ok(),
        vmlinux: Some(k.vmlinux()?),
        debian: Some(k),
        tree,
    })
}

/// The warnings opening the tree may leave.
fn report_tree(tree: &PreparedTree, obs: &dyn Observer) {
    if let Some(m) = &tree.compiler_mismatch {
        obs.warn(&format!(
            "compiler mismatch accepted (--skip-compiler-check): {m}"
        ));
    }
    for e in &tree.recovered {
        obs.warn(&format!(
            "restored a file an interrupted build had left patched: {e:?}"
        ));
    }
    for n in &tree.notes {
        obs.stage(n);
    }
}

/// What compiling the units said.
fn report_objects(built: &BuildOutput, obs: &dyn Observer) {
    for line in &built.patch.inexact {
        obs.warn(line);
    }
    for w in &built.patched_warnings {
        obs.warn(&format!("compiler: {w}"));
    }
    // A few are named; past that, how many for each reason (a header can have thousands).
    const NAMED: usize = 20;
    if built.skipped.len() <= NAMED {
        for s in &built.skipped {
            obs.stage(&format!("not compiled: {}: {}", s.unit.display(), s.reason));
        }
    } else {
        let mut by_reason: std::collections::BTreeMap<&str, usize> = Default::default();
        for s in &built.skipped {
            let reason = s.reason.split(" (").next().unwrap_or(&s.reason);
            *by_reason.entry(reason).or_default() += 1;
        }
        for (reason, n) in by_reason {
            obs.stage(&format!("not compiled: {n} units: {reason}"));
        }
    }
    for f in &built.ignored {
        obs.warn(&format!(
            "ignored: {} is neither a source file nor a header",
            f.display()
        ));
    }
}

enum Diffed {
    /// The units for the module generator, and what the differ found in each.
    Changed(Vec<TuInput>, Vec<UnitReport>),
    Refused(Vec<String>),
    NoChange,
}

/// Diffs every pair (in parallel). Any refusal refuses the whole patch.
fn diff_pairs(pairs: &[ObjectPair], debug: bool, obs: &dyn Observer) -> Result<Diffed> {
    let options = kpatch_diff::Options {
        debug,
        ..Default::default()
    };
    let diffs: Vec<_> = pairs
        .par_iter()
        .map(|pair| -> Result<_> {
            let orig = Object::read(&pair.orig)?;
            let patched = Object::read(&pair.patched)?;
            let r = kpatch_diff::diff(orig.clone(), &pair.object, patched, &pair.object, &options);
            Ok((pair, orig, r))
        })
        .collect::<Result<_>>()?;
    let mut tus = Vec::new();
    let mut units = Vec::new();
    let mut refused = Vec::new();
    for (pair, orig, r) in diffs {
        match r {
            Ok(DiffOutcome::Changed { output, report }) => {
                for f in &report.functions {
                    obs.stage(&format!("{}: {f}", pair.object));
                }
                tus.push(TuInput {
                    name: pair.object.clone(),
                    source: Some(pair.unit.display().to_string()),
                    object: pair.klp_object.clone(),
                    diff: *output,
                    original: orig,
                    changed: report.changed_functions.clone(),
                    new: report.new_functions.clone(),
                });
                units.push(UnitReport {
                    unit: pair.unit.clone(),
                    object: pair.klp_object.clone(),
                    report,
                });
            }
            Ok(DiffOutcome::NoChange { .. }) => {
                obs.stage(&format!("{}: no function changed", pair.object))
            }
            Err(e @ DiffError::Unpatchable { .. }) => refused.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(if !refused.is_empty() {
        Diffed::Refused(refused)
    } else if tus.is_empty() {
        Diffed::NoChange
    } else {
        Diffed::Changed(tus, units)
    })
}

/// The resolver of the target's symbols for the patched objects, with the functions each seals
/// at boot under IBT.
fn resolver(target: &Target, objects: &[String]) -> Result<KernelResolver> {
    let t = symbols_for(target, objects)?;
    let symvers = Symvers::from_path(&target.symvers)?;
    let mut resolver = KernelResolver::new(t.symbols, symvers)
        .with_sealed(kpatch_common::VMLINUX, &t.vmlinux_sealed);
    resolver.sealed.extend(t.module_sealed);
    if target.tree.config.get("CONFIG_MODVERSIONS") != Some("y") {
        resolver = resolver.without_modversions();
    }
    Ok(resolver)
}

/// The target's symbols for the objects a patch changes, and what each seals at boot under IBT.
struct TargetSymbols {
    /// vmlinux's, and each patched module's own symtab.
    symbols: KernelSymbols,
    /// The addresses of the functions vmlinux seals.
    vmlinux_sealed: Vec<u64>,
    /// `(module, function)` of the functions the patched modules seal.
    module_sealed: Vec<(String, String)>,
}

fn symbols_for(target: &Target, objects: &[String]) -> Result<TargetSymbols> {
    let image = std::fs::read(&target.symbols_image).map_err(|source| BuildError::File {
        what: "reading",
        path: target.symbols_image.clone(),
        source,
    })?;
    let file = target.symbols_image.display().to_string();
    let vmlinux = kpatch_symbols::parse_kernel_image(&image, &file)?;
    let vmlinux_sealed = kpatch_symbols::sealed_endbr_addresses(&image, &file)?;
    let modules: Vec<&String> = objects
        .iter()
        .filter(|o| o.as_str() != kpatch_common::VMLINUX)
        .collect();
    if modules.is_empty() {
        return Ok(TargetSymbols {
            symbols: vmlinux,
            vmlinux_sealed,
            module_sealed: Vec::new(),
        });
    }
    let dir = target
        .modules_dir
        .as_ref()
        .ok_or(BuildError::ModulesUnknown)?;
    let index = kpatch_target::modules::index_modules(dir)?;
    let mut all: Vec<KernelSymbol> = vmlinux.symbols().to_vec();
    let mut sealed = Vec::new();
    for m in modules {
        let canon = kpatch_common::canonical_module_name(m);
        let ko = index
            .get(&canon)
            .ok_or_else(|| BuildError::ModuleNotInTree {
                module: m.clone(),
                dir: dir.clone(),
            })?;
        let (_, data) = kpatch_target::modules::read_module(ko)?;
        let file = ko.display().to_string();
        all.extend(
            kpatch_symbols::parse_module(&data, &file, &canon)?
                .symbols()
                .iter()
                .cloned(),
        );
        sealed.extend(
            kpatch_symbols::sealed_module_functions(&data, &file)?
                .into_iter()
                .map(|f| (canon.clone(), f)),
        );
    }
    Ok(TargetSymbols {
        symbols: KernelSymbols::new(vmlinux.source.clone(), all),
        vmlinux_sealed,
        module_sealed: sealed,
    })
}

/// Builds the module in the work directory (signed there, then moved into place in one
/// rename). `Ok(Err(reason))`: the module generator refused the change.
#[allow(clippy::too_many_arguments)]
fn build_module(
    opts: &LivepatchOptions,
    target: &Target,
    sha: &str,
    metadata: PatchMetadata,
    work: &Path,
    tus: Vec<TuInput>,
    resolver: &KernelResolver,
    runner: &dyn Runner,
) -> Result<std::result::Result<BuiltModule, String>> {
    let mut glue = GlueOptions::new(target.release.clone(), sha.to_string());
    glue.replace = opts.replace;
    glue.metadata = metadata;
    let module_name = opts.module_patch_name();
    let mopts = ModuleOptions {
        patch_name: module_name.clone(),
        glue,
        kbuild: KbuildOptions {
            kbuild_dir: target.kbuild_dir.clone(),
            cc: target.tree.kbuild.cc.clone(),
            jobs: target.tree.kbuild.jobs,
        },
        output: work.join(format!("livepatch-{module_name}.ko")),
        work_dir: opts.debug.then(|| work.join("module")),
    };
    match kpatch_module::build_module(&mopts, tus, resolver, runner) {
        Ok(m) => Ok(Ok(m)),
        Err(e) if e.is_refusal() => Ok(Err(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Signs `module` in place with the target's `scripts/sign-file` (SHA-256).
fn sign(
    runner: &dyn Runner,
    kbuild_dir: &Path,
    key: &Path,
    cert: &Path,
    module: &Path,
) -> Result<()> {
    let tool = kbuild_dir.join("scripts/sign-file");
    if !tool.is_file() {
        return Err(BuildError::NoSignFile { tool });
    }
    runner.run_ok(&Cmd::new(&tool).arg("sha256").arg(key).arg(cert).arg(module))?;
    Ok(())
}

/// Moves the finished module to `dest` atomically: a copy beside it, then a rename.
fn place(built: &Path, dest: &Path) -> Result<PathBuf> {
    kpatch_common::fs::copy_atomic(built, dest).map_err(|source| BuildError::File {
        what: "writing",
        path: dest.to_path_buf(),
        source,
    })?;
    Ok(dest.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_names_come_from_the_option_or_the_first_patch() {
        assert_eq!(
            patch_name(None, Path::new("/x/fix-cmdline.patch")),
            "fix-cmdline"
        );
        assert_eq!(patch_name(None, Path::new("a b.diff")), "a-b");
        assert_eq!(
            patch_name(Some("my_fix.1"), Path::new("x.patch")),
            "my_fix-1"
        );
    }

    struct NoRunner;
    impl Runner for NoRunner {
        fn run(
            &self,
            cmd: &Cmd,
        ) -> std::result::Result<crate::exec::CmdOutput, crate::exec::RunError> {
            panic!("nothing runs before the patches are read: {cmd}");
        }
    }

    fn options(patches: Vec<PathBuf>) -> LivepatchOptions {
        LivepatchOptions {
            patches,
            target: TargetSpec::Debian(None),
            name: "fix".into(),
            jobs: None,
            output_dir: ".".into(),
            debug: false,
            replace: true,
            skip_compiler_check: false,
            sign: None,
            description: None,
            cves: Vec::new(),
            patch_version: None,
            distributed: None,
        }
    }

    #[test]
    fn metadata_comes_from_the_headers_and_the_options() {
        use crate::patchfile::PatchHeader;
        let mut opts = options(vec!["/nonexistent/fix.patch".into()]);
        let headers = [
            PatchHeader {
                subject: Some("proc: one".into()),
                cves: vec!["CVE-2099-1002".into()],
            },
            PatchHeader::default(),
            PatchHeader {
                subject: Some("proc: two".into()),
                cves: vec!["CVE-2099-1001".into(), "CVE-2099-1002".into()],
            },
        ];
        let m = metadata(&opts, Some("6.1.192-3"), &headers);
        assert_eq!(m.description.as_deref(), Some("proc: one; proc: two"));
        assert_eq!(m.cves, ["CVE-2099-1001", "CVE-2099-1002"]);
        assert_eq!(
            (m.name.as_deref(), m.version, m.kernel_version.as_deref()),
            (Some("fix"), Some(1), Some("6.1.192-3"))
        );
        assert_eq!(opts.module_patch_name(), "fix");
        opts.description = Some("given".into());
        opts.cves = vec!["cve-2099-0007".into()];
        opts.patch_version = Some(4);
        let m = metadata(&opts, None, &[PatchHeader::default()]);
        assert_eq!(m.description.as_deref(), Some("given"));
        assert_eq!(
            (m.cves, m.version),
            (vec!["CVE-2099-0007".to_string()], Some(4))
        );
        assert_eq!(opts.module_patch_name(), "fix-v4");
        assert_eq!(metadata(&options(Vec::new()), None, &[]).description, None);
    }

    /// Bad patches are refused before anything is fetched or built, naming the user's file (not
    /// the combined copy in the work directory) and the line.
    #[test]
    fn bad_patches_are_named_with_their_line_before_anything_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.patch");
        std::fs::write(&good, "--- a/x.c\n+++ b/x.c\n@@ -1 +1 @@\n-a\n+b\n").unwrap();
        let cases: [(&str, &[u8], &str); 4] = [
            ("elf.patch", b"\x7fELF\x02\x01\x01\0", "line 1: a NUL byte"),
            (
                "mail.patch",
                b"Subject: hi\n\nno diff here\n",
                "not a unified diff",
            ),
            (
                "up.patch",
                b"--- a/../../etc/shadow\n+++ b/../../etc/shadow\n@@ -1 +1 @@\n-a\n+b\n",
                "line 1: `../../etc/shadow` leaves the source tree",
            ),
            (
                "bin.patch",
                b"diff --git a/x.bin b/x.bin\nGIT binary patch\nliteral 1\nIcmZQz0000\n",
                "line 2: a binary hunk",
            ),
        ];
        for (file, text, expected) in cases {
            let bad = dir.path().join(file);
            std::fs::write(&bad, text).unwrap();
            let e = build_livepatch(&options(vec![good.clone(), bad.clone()]), &NoRunner, &())
                .unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("{}: ", bad.display())) && msg.contains(expected),
                "{file}: {msg}"
            );
        }
    }

    #[test]
    fn a_missing_patch_is_named_before_anything_is_built() {
        let opts = options(vec!["/nonexistent/fix.patch".into()]);
        let e = build_livepatch(&opts, &NoRunner, &()).unwrap_err();
        assert!(
            matches!(
                e,
                BuildError::File {
                    what: "reading patch",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("/nonexistent/fix.patch"), "{e}");
    }

    /// Found by the upstream-fixes corpus: a patch named after its file
    /// (`drivers-platform-chrome-cros-ec-sensorhub-ring`) compiled for minutes and was then
    /// refused by the module generator for its name. The name is checked first now.
    #[test]
    fn a_module_name_too_long_for_the_kernel_is_refused_before_anything_is_built() {
        let mut opts = options(vec!["/nonexistent/fix.patch".into()]);
        opts.name = "drivers-platform-chrome-cros-ec-sensorhub-ring".into();
        let e = build_livepatch(&opts, &NoRunner, &()).unwrap_err();
        assert!(e.to_string().contains("longer than 55 characters"), "{e}");
    }
}
