//! Drives the front half of the build pipeline from the command line (used by
//! scripts/bench-build.sh until `kpatch-rs build` is wired):
//!
//! build-objects [--kernel 6.1.0-56-amd64] --patch P --work W [--jobs N]
//!     (Debian kernel through kpatch-target; default: the running or newest Debian kernel)
//! build-objects --cache DIR --kernelrelease 6.1.0-56-amd64 --tarball T --config C
//!               [--symvers S] [--vmlinux V] --patch P --work W [--jobs N]
//! build-objects --sourcedir DIR [--config C] [--vmlinux V] --patch P --work W
//!
//! Prints each stage's time on stderr and the object pairs as JSON on stdout.
//! `--stop-after filter`: only select the units and run the header filters; prints the units
//! left to compile.

use std::path::PathBuf;
use std::process::ExitCode;

use kpatch_build::{
    build_object_pairs_with_progress, interrupt, DebianSource, PatchFile, PreparedTree,
    SystemRunner, TreeOptions,
};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("build-objects: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut opt = std::collections::HashMap::new();
    while let Some(k) = args.next() {
        let v = args.next().ok_or(format!("{k} needs a value"))?;
        opt.insert(k.trim_start_matches('-').to_string(), v);
    }
    let path = |k: &str| opt.get(k).map(PathBuf::from);
    let need = |k: &str| path(k).ok_or(format!("--{k} is required"));
    interrupt::install()?;
    // A Debian kernel from the cache gets the flags `kpatch-rs build` gives it (the
    // patch-author headers), so both find the tree prepared the same way.
    let extra_kcflags = if opt.contains_key("sourcedir") || opt.contains_key("tarball") {
        Vec::new()
    } else {
        let dir = kpatch_build::livepatch::patch_author_headers()?;
        vec![format!("-I{}", dir.display())]
    };
    let opts = TreeOptions {
        cc: opt.get("cc").cloned(),
        jobs: opt.get("jobs").map(|j| j.parse()).transpose()?,
        extra_kcflags,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let tree = match path("sourcedir") {
        Some(dir) => PreparedTree::user(
            &SystemRunner,
            &dir,
            path("config").as_deref(),
            path("vmlinux").as_deref(),
            &opts,
        )?,
        None if !opt.contains_key("tarball") => {
            let k = match opt.get("kernel") {
                Some(abi) => kpatch_target::DebianKernel::named(abi)?,
                None => kpatch_target::DebianKernel::default_target()?,
            };
            let t = std::time::Instant::now();
            let src = DebianSource::from_kernel(&k)?;
            eprintln!("target {} ({})", k.abi, k.version);
            eprintln!("stage fetch: {:.1} s", t.elapsed().as_secs_f64());
            let cache = path("cache").unwrap_or_else(kpatch_target::cache_dir);
            PreparedTree::debian(&SystemRunner, &cache, &src, &opts)?
        }
        None => {
            let src = DebianSource {
                kernelrelease: opt
                    .get("kernelrelease")
                    .cloned()
                    .ok_or("--kernelrelease is required")?,
                source_tarball: need("tarball")?,
                config: need("config")?,
                symvers: path("symvers"),
                vmlinux: path("vmlinux"),
                featureset: None,
            };
            PreparedTree::debian(&SystemRunner, &need("cache")?, &src, &opts)?
        }
    };
    for (stage, d) in &tree.timings.0 {
        eprintln!("stage {stage}: {:.1} s", d.as_secs_f64());
    }
    eprintln!(
        "stage tree-ready: {:.1} s (total for opening the tree)",
        t.elapsed().as_secs_f64()
    );
    for e in &tree.recovered {
        eprintln!("restored from an interrupted build: {e:?}");
    }
    let patch = PatchFile::read(&need("patch")?, 1)?;
    if opt.get("stop-after").map(String::as_str) == Some("filter") {
        let (units, out) = kpatch_build::pipeline::select_and_filter(
            &SystemRunner,
            &tree,
            &patch,
            &need("work")?,
            &|s: &str| eprintln!("{s} ..."),
        )?;
        for (stage, d) in &out.timings.0 {
            eprintln!("stage {stage}: {:.1} s", d.as_secs_f64());
        }
        let f = &out.filter;
        eprintln!(
            "header filter: {} includers built in this config ({} other candidates skipped), {} identical, {} unused-only, {} not preprocessed, {} kept",
            f.header_units, out.skipped.len() - f.identical - f.unused_only, f.identical, f.unused_only, f.not_preprocessed, f.kept
        );
        for u in &units {
            println!("{}", u.unit.display());
        }
        return Ok(());
    }
    let out = build_object_pairs_with_progress(
        &SystemRunner,
        &tree,
        &patch,
        &need("work")?,
        &|s: &str| eprintln!("{s} ..."),
    )?;
    for (stage, d) in &out.timings.0 {
        eprintln!("stage {stage}: {:.1} s", d.as_secs_f64());
    }
    eprintln!(
        "original objects: {} from the cache, {} compiled",
        out.orig_cached, out.orig_compiled
    );
    let f = &out.filter;
    eprintln!(
        "header filter: {} includers, {} identical, {} unused-only, {} not preprocessed, {} kept",
        f.header_units, f.identical, f.unused_only, f.not_preprocessed, f.kept
    );
    for l in &out.patch.inexact {
        eprintln!("patch: {l}");
    }
    for w in &out.patched_warnings {
        eprintln!("compiler: {w}");
    }
    for s in &out.skipped {
        eprintln!("skipped {}: {}", s.unit.display(), s.reason);
    }
    for i in &out.ignored {
        eprintln!("ignored {}", i.display());
    }
    println!("{}", serde_json::to_string_pretty(&out.pairs)?);
    Ok(())
}
