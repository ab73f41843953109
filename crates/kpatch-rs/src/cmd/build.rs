//! `kpatch-rs build PATCH...`: from a source patch to a livepatch module for one exact kernel.
//!
//! The steps: pick the target (a Debian kernel fetched into the cache, or a user's tree),
//! prepare its source once, compile the translation units the patch touches before and after
//! applying it, diff each object pair, and turn the differences into a livepatch module.
//! `--verify` then proves the module in a guest running the target kernel.

use crate::progress::Progress;
use crate::verify::{verify, Verification};
use anyhow::{bail, Context};
use kpatch_build::{build_object_pairs, PatchFile, PreparedTree, SystemRunner, TreeOptions};
use kpatch_diff::{DiffError, Outcome};
use kpatch_elf::Object;
use kpatch_module::{GlueOptions, KbuildOptions, KernelResolver, ModuleOptions, TuInput};
use kpatch_target::DebianKernel;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(after_help = "Exit status: 0 module built (and verified with --verify), 1 error, 2 the change cannot be \
live-patched, 3 the patch changes no function, 4 the module failed verification in the guest.\n\n\
Targets: by default the running kernel when it is a Debian kernel, else the newest Debian 6.1 kernel apt offers; \
--kernel names a Debian kernel (6.1.0-NN-amd64); --sourcedir/--config/--vmlinux name any prepared kernel tree.")]
pub struct Args {
    /// Source patches (unified diffs against the kernel tree, `-p1`), applied in order.
    #[arg(required = true)]
    pub patches: Vec<PathBuf>,
    /// A Debian kernel ABI to target, e.g. 6.1.0-56-amd64.
    #[arg(long, conflicts_with = "sourcedir")]
    pub kernel: Option<String>,
    /// A kernel source tree to build against instead of a Debian kernel.
    #[arg(short = 's', long)]
    pub sourcedir: Option<PathBuf>,
    /// The target kernel's .config (with --sourcedir).
    #[arg(short = 'c', long)]
    pub config: Option<PathBuf>,
    /// The target kernel's vmlinux, for symbol positions and the compiler check (with --sourcedir).
    #[arg(short = 'v', long)]
    pub vmlinux: Option<PathBuf>,
    /// Parallel jobs for make.
    #[arg(short = 'j', long)]
    pub jobs: Option<usize>,
    /// Accepted for kpatch-build compatibility (kpatch-rs compiles only the objects it needs).
    #[arg(short = 't', long = "target")]
    pub targets: Vec<String>,
    /// The patch name (default: the first patch file's name); the module is livepatch-NAME.ko.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// Directory for the module (default: the current directory).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Keep the work directory and print what the differ saw.
    #[arg(short = 'd', long)]
    pub debug: bool,
    /// Build a patch that stacks on the loaded ones instead of replacing them.
    #[arg(short = 'R', long = "non-replace")]
    pub non_replace: bool,
    /// Patch an out-of-tree module (not supported yet: refused).
    #[arg(long)]
    pub oot_module: Option<PathBuf>,
    /// Skip the check that the compiler is the one the target kernel was built with.
    #[arg(long)]
    pub skip_compiler_check: bool,
    /// Boot the target kernel in a QEMU guest, load, check and unload the module.
    #[arg(long)]
    pub verify: bool,
    /// A shell command to run in the guest unpatched, patched and unpatched again (repeatable).
    #[arg(long = "verify-cmd", value_name = "CMD")]
    pub verify_cmds: Vec<String>,
    /// Sign the module with the kernel's sign-file (for kernels that enforce signatures).
    #[arg(long, requires = "sign_cert")]
    pub sign_key: Option<PathBuf>,
    #[arg(long, requires = "sign_key")]
    pub sign_cert: Option<PathBuf>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The target kernel and where each of its parts is.
struct Target {
    tree: PreparedTree,
    release: String,
    symbols_image: PathBuf,
    symvers: PathBuf,
    kbuild_dir: PathBuf,
    modules_dir: Option<PathBuf>,
    debian: Option<DebianKernel>,
    vmlinux: Option<PathBuf>,
}

fn patch_name(args: &Args) -> String {
    let raw = args.name.clone().unwrap_or_else(|| {
        let f = args.patches[0].file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        f.trim_end_matches(".patch").trim_end_matches(".diff").to_string()
    });
    raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect()
}

/// The patch-author headers (kpatch-macros.h, kpatch-syscall.h), kept in one stable directory of
/// the cache: their `-I` is part of a prepared tree's flags, so it must not change per build.
fn patch_author_headers() -> anyhow::Result<PathBuf> {
    let dir = kpatch_target::cache_dir().join("include");
    let current = kpatch_module::headers::HEADERS.iter().all(|(name, text)| std::fs::read_to_string(dir.join(name)).is_ok_and(|t| t == *text));
    if !current {
        let tmp = tempfile::Builder::new().prefix(".include.").tempdir_in(kpatch_target::cache_dir())?;
        kpatch_module::headers::install_headers(tmp.path())?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(tmp.keep(), &dir).with_context(|| format!("installing the patch-author headers in {}", dir.display()))?;
    }
    Ok(dir)
}

fn target(args: &Args, runner: &SystemRunner, p: &Progress) -> anyhow::Result<Target> {
    std::fs::create_dir_all(kpatch_target::cache_dir())?;
    let include = patch_author_headers()?;
    let opts = TreeOptions {
        jobs: args.jobs,
        extra_kcflags: vec![format!("-I{}", include.display())],
        skip_compiler_check: args.skip_compiler_check,
        ..Default::default()
    };
    if let Some(dir) = &args.sourcedir {
        p.stage(format!("target: the kernel tree at {}", dir.display()));
        let vmlinux = args.vmlinux.clone().or_else(|| Some(dir.join("vmlinux")).filter(|v| v.exists()));
        let Some(vmlinux) = vmlinux else {
            bail!("--sourcedir {}: no vmlinux there; give --vmlinux (symbol positions come from it)", dir.display());
        };
        let tree = PreparedTree::user(runner, dir, args.config.as_deref(), Some(&vmlinux), &opts)?;
        let release = std::fs::read_to_string(dir.join("include/config/kernel.release"))
            .with_context(|| format!("{}: not a prepared kernel tree (no include/config/kernel.release)", dir.display()))?
            .trim()
            .to_string();
        return Ok(Target {
            symbols_image: vmlinux.clone(),
            symvers: dir.join("Module.symvers"),
            kbuild_dir: dir.clone(),
            modules_dir: None,
            release,
            tree,
            debian: None,
            vmlinux: Some(vmlinux),
        });
    }
    if args.config.is_some() || args.vmlinux.is_some() {
        bail!("--config and --vmlinux go with --sourcedir");
    }
    let k = match &args.kernel {
        Some(abi) => DebianKernel::named(abi)?,
        None => DebianKernel::default_target()?,
    };
    p.stage(format!("target: Debian kernel {} ({})", k.abi, k.version));
    let src = kpatch_build::DebianSource::from_kernel(&k)?;
    p.stage("preparing the source tree (first time: unpack and make prepare)");
    let tree = PreparedTree::debian(runner, &kpatch_target::cache_dir(), &src, &opts)?;
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

/// The patches as one file (applied in order) and the SHA-256 of their text.
fn combined_patch(args: &Args, work: &Path) -> anyhow::Result<(PathBuf, String)> {
    let mut text = String::new();
    for p in &args.patches {
        let t = std::fs::read_to_string(p).with_context(|| format!("reading patch {}", p.display()))?;
        text.push_str(&t);
        if !t.ends_with('\n') {
            text.push('\n');
        }
    }
    let sha = format!("{:x}", Sha256::digest(text.as_bytes()));
    let path = work.join("combined.patch");
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    Ok((path, sha))
}

/// The target's symbols for the objects a patch changes (vmlinux, and each module's own
/// symtab), and the functions each seals at boot under IBT (`(object, name)`).
fn symbols_for(target: &Target, objects: &[String]) -> anyhow::Result<(kpatch_symbols::KernelSymbols, Vec<u64>, Vec<(String, String)>)> {
    let image = std::fs::read(&target.symbols_image).with_context(|| format!("reading {}", target.symbols_image.display()))?;
    let file = target.symbols_image.display().to_string();
    let vmlinux = kpatch_symbols::parse_kernel_image(&image, &file)?;
    let vmlinux_sealed = kpatch_symbols::sealed_endbr_addresses(&image, &file)?;
    let modules: Vec<&String> = objects.iter().filter(|o| o.as_str() != kpatch_common::VMLINUX).collect();
    if modules.is_empty() {
        return Ok((vmlinux, vmlinux_sealed, Vec::new()));
    }
    let dir = target.modules_dir.as_ref().context("the patch changes a loadable module, but the target's modules are unknown")?;
    let index = kpatch_target::modules::index_modules(dir)?;
    let mut all: Vec<kpatch_symbols::KernelSymbol> = vmlinux.symbols().to_vec();
    let mut sealed = Vec::new();
    for m in modules {
        let canon = kpatch_common::canonical_module_name(m);
        let ko = index.get(&canon).with_context(|| format!("module {m} is not in {}", dir.display()))?;
        let (_, data) = kpatch_target::modules::read_module(ko)?;
        let file = ko.display().to_string();
        all.extend(kpatch_symbols::parse_module(&data, &file, &canon)?.symbols().iter().cloned());
        sealed.extend(kpatch_symbols::sealed_module_functions(&data, &file)?.into_iter().map(|f| (canon.clone(), f)));
    }
    Ok((kpatch_symbols::KernelSymbols::new(vmlinux.source.clone(), all), vmlinux_sealed, sealed))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let p = Progress::new(args.json);
    if args.oot_module.is_some() {
        bail!("--oot-module: out-of-tree modules are not supported yet");
    }
    let name = patch_name(&args);
    kpatch_build::interrupt::install().context("installing the signal handlers")?;
    let runner = SystemRunner;
    let work_tmp = tempfile::Builder::new().prefix("kpatch-rs-build.").tempdir()?;
    let work = work_tmp.path().to_path_buf();
    let (patch_path, sha) = combined_patch(&args, &work)?;
    let patch = PatchFile::read(&patch_path, 1)?;

    let t_target = std::time::Instant::now();
    let target = target(&args, &runner, &p)?;
    let t_target = t_target.elapsed().as_secs_f64();
    if let Some(m) = &target.tree.compiler_mismatch {
        p.warn(format!("compiler mismatch accepted (--skip-compiler-check): {m}"));
    }
    for e in &target.tree.recovered {
        p.warn(format!("restored a file an interrupted build had left patched: {e:?}"));
    }

    p.stage(format!("compiling the units {} touches, original and patched", args.patches[0].display()));
    let built = build_object_pairs(&runner, &target.tree, &patch, &work.join("objects"))?;
    for line in &built.patch.inexact {
        p.warn(line);
    }
    for w in &built.patched_warnings {
        p.warn(format!("compiler: {w}"));
    }
    for s in &built.skipped {
        p.stage(format!("not compiled: {}: {}", s.unit.display(), s.reason));
    }
    for f in &built.ignored {
        p.warn(format!("ignored: {} is neither a source file nor a header", f.display()));
    }
    if built.pairs.is_empty() {
        bail!("the patch changes no compiled source file for this kernel configuration");
    }
    let mut timings: Vec<(String, f64)> = std::iter::once(("target".to_string(), t_target))
        .chain(target.tree.timings.0.iter().chain(built.timings.0.iter()).map(|(s, d)| (s.clone(), d.as_secs_f64())))
        .collect();
    let t = std::time::Instant::now();
    p.stage(format!("diffing {} object pair(s)", built.pairs.len()));
    let options = kpatch_diff::Options { debug: args.debug, ..Default::default() };
    let diffs: Vec<_> = built
        .pairs
        .par_iter()
        .map(|pair| -> anyhow::Result<_> {
            let orig = Object::read(&pair.orig)?;
            let patched = Object::read(&pair.patched)?;
            let r = kpatch_diff::diff(orig.clone(), &pair.object, patched, &pair.object, &options);
            Ok((pair, orig, r))
        })
        .collect::<anyhow::Result<_>>()?;

    let mut tus = Vec::new();
    let mut refused = Vec::new();
    let mut summary = Vec::new();
    for (pair, orig, r) in diffs {
        match r {
            Ok(Outcome::Changed { output, report }) => {
                for f in &report.changed_functions {
                    p.stage(format!("{}: changed function: {f}", pair.object));
                }
                for f in &report.new_functions {
                    p.stage(format!("{}: new function: {f}", pair.object));
                }
                summary.push(serde_json::json!({"unit": pair.unit, "object": pair.klp_object, "report": report}));
                tus.push(TuInput {
                    name: pair.object.clone(),
                    source: Some(pair.unit.display().to_string()),
                    object: pair.klp_object.clone(),
                    diff: *output,
                    original: orig,
                    changed: report.changed_functions.clone(),
                    new: report.new_functions.clone(),
                });
            }
            Ok(Outcome::NoChange { .. }) => p.stage(format!("{}: no function changed", pair.object)),
            Err(e @ DiffError::Unpatchable { .. }) => refused.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    if !refused.is_empty() {
        eprintln!("kpatch-rs: the patch cannot be live-patched:\n{}", refused.join("\n"));
        return Ok(ExitCode::from(2));
    }
    if tus.is_empty() {
        eprintln!("kpatch-rs: the patch changes no function");
        return Ok(ExitCode::from(3));
    }

    timings.push(("diff".into(), t.elapsed().as_secs_f64()));
    let t = std::time::Instant::now();
    p.stage("resolving symbols against the target kernel");
    let mut objects: Vec<String> = tus.iter().map(|t| t.object.clone()).collect();
    objects.sort();
    objects.dedup();
    let (symbols, vmlinux_sealed, module_sealed) = symbols_for(&target, &objects)?;
    let symvers = kpatch_symbols::Symvers::from_path(&target.symvers)?;
    let mut resolver = KernelResolver::new(symbols, symvers).with_sealed(kpatch_common::VMLINUX, &vmlinux_sealed);
    resolver.sealed.extend(module_sealed);
    if target.tree.config.get("CONFIG_MODVERSIONS") != Some("y") {
        resolver = resolver.without_modversions();
    }
    let out_dir = args.output.clone().unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut glue = GlueOptions::new(target.release.clone(), sha.clone());
    glue.replace = !args.non_replace;
    let mopts = ModuleOptions {
        patch_name: name.clone(),
        glue,
        kbuild: KbuildOptions { kbuild_dir: target.kbuild_dir.clone(), cc: target.tree.kbuild.cc.clone(), jobs: target.tree.kbuild.jobs },
        // Built in the work directory, signed there, then moved into place in one rename.
        output: work.join(format!("livepatch-{name}.ko")),
        work_dir: args.debug.then(|| work.join("module")),
    };
    p.stage(format!("building livepatch-{name}.ko"));
    let mut module = match kpatch_module::build_module(&mopts, tus, &resolver, &kpatch_module::SystemRunner) {
        Ok(m) => m,
        Err(e) if e.is_refusal() => {
            eprintln!("kpatch-rs: the patch cannot be live-patched:\n{e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    for note in &module.plan.notes {
        p.warn(note);
    }
    if let (Some(key), Some(cert)) = (&args.sign_key, &args.sign_cert) {
        p.stage("signing the module with the kernel's sign-file");
        sign(&target.kbuild_dir, key, cert, &module.path)?;
    }
    module.path = place(&module.path, &out_dir.join(format!("livepatch-{name}.ko")))?;
    timings.push(("module".into(), t.elapsed().as_secs_f64()));
    p.stage(format!("wrote {}", module.path.display()));

    let functions: Vec<(String, String, u64)> =
        module.plan.functions.iter().map(|f| (f.object.clone(), f.name.clone(), f.sympos)).collect();
    let mut verified = None;
    if args.verify {
        let t = std::time::Instant::now();
        p.stage("verifying in a guest running the target kernel (QEMU, TCG)");
        let guest = match (&target.debian, &target.vmlinux) {
            (Some(k), _) => kpatch_guest::Guest::for_kernel(k)?,
            (None, Some(v)) => kpatch_guest::Guest::new(v.clone())?,
            (None, None) => bail!("--verify needs the target's kernel image"),
        };
        let target_modules: Vec<String> = objects.iter().filter(|o| o.as_str() != kpatch_common::VMLINUX).cloned().collect();
        let v = Verification {
            module: &module.path,
            module_name: &module.module_name,
            functions: &functions,
            target_modules: &target_modules,
            commands: &args.verify_cmds,
        };
        let result = verify(guest, target.modules_dir.as_deref(), &v)?;
        print_verification(&args, &result, &p);
        verified = Some(result);
        timings.push(("verify".into(), t.elapsed().as_secs_f64()));
    }
    if args.debug {
        let kept = work_tmp.keep();
        eprintln!("kpatch-rs: work directory kept at {}", kept.display());
    }
    let ok = verified.as_ref().is_none_or(|v| v.run.done && v.run.failed().is_empty() && v.run.problems.is_empty());
    if args.json {
        let value = serde_json::json!({
            "module": module.path,
            "module_name": module.module_name,
            "kernel": target.release,
            "patch_sha256": sha,
            "units": summary,
            "functions": functions,
            "timings": timings,
            "elapsed": p.elapsed(),
            "verified": verified.as_ref().map(|_| ok),
            "verification": verified.as_ref().map(|v| serde_json::json!({
                "checks": v.run.results.iter().map(|r| serde_json::json!({"name": r.name, "ok": r.ok, "detail": r.detail})).collect::<Vec<_>>(),
                "problems": v.run.problems.iter().map(|p| format!("{:?}: {}", p.kind, p.line)).collect::<Vec<_>>(),
                "outputs": args.verify_cmds.iter().zip(&v.outputs).map(|(c, [b, p, a])| serde_json::json!({
                    "command": c, "unpatched": b, "patched": p, "after_unload": a,
                })).collect::<Vec<_>>(),
            })),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("{}", module.path.display());
    }
    Ok(ExitCode::from(if ok { 0 } else { 4 }))
}

fn print_verification(args: &Args, v: &crate::verify::Verified, p: &Progress) {
    let run = &v.run;
    for r in &run.results {
        p.stage(format!("guest: {} {}", if r.ok { "ok  " } else { "FAIL" }, r.name));
    }
    for problem in &run.problems {
        p.warn(format!("guest: kernel problem: {problem:?}"));
    }
    if !run.done {
        p.warn(format!("guest: the script did not finish; last console lines:\n{}", run.tail(30)));
    }
    for r in run.failed() {
        p.warn(format!("guest: check {} failed: {}", r.name, r.detail));
    }
    if args.json {
        return;
    }
    for (cmd, [before, patched, after]) in args.verify_cmds.iter().zip(&v.outputs) {
        eprintln!("$ {cmd}");
        eprintln!("  unpatched:     {}", before.replace('\n', "\n                 "));
        eprintln!("  patched:       {}", patched.replace('\n', "\n                 "));
        eprintln!("  after unload:  {}", after.replace('\n', "\n                 "));
    }
}

/// Signs `module` in place with the target's `scripts/sign-file` (SHA-256).
fn sign(kbuild_dir: &Path, key: &Path, cert: &Path, module: &Path) -> anyhow::Result<()> {
    let tool = kbuild_dir.join("scripts/sign-file");
    anyhow::ensure!(tool.is_file(), "{}: no sign-file in the target's build tree", tool.display());
    let out = std::process::Command::new(&tool)
        .arg("sha256")
        .arg(key)
        .arg(cert)
        .arg(module)
        .output()
        .with_context(|| format!("running {}", tool.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "sign-file {} {}: {}",
        key.display(),
        cert.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Moves the finished module to `dest` atomically: a copy beside it, then a rename.
fn place(built: &Path, dest: &Path) -> anyhow::Result<PathBuf> {
    kpatch_common::fs::copy_atomic(built, dest).with_context(|| format!("writing {}", dest.display()))?;
    Ok(dest.to_path_buf())
}
