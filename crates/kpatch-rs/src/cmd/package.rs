//! `kpatch-rs package MODULE.ko...`: one Debian package per livepatch module (see kpatch-deb's
//! `patch`); `kpatch-rs package --tool`: kpatch-rs itself with its systemd unit.

use anyhow::Context;
use kpatch_common::exec::SystemRunner;
use kpatch_deb::patch::{patch_package, PatchPackageOptions};
use kpatch_deb::tool::{tool_package, ToolPackageOptions, BINARY_PATH};
use kpatch_kernel::modinfo::ModuleFile;
use kpatch_kernel::store::{unit_body, DEFAULT_STATE_DIR};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 every package written, 1 error (the message names the module or \
the tool that failed; no package is left half-written).\n\n\
A patch package is named livepatch-PATCH-ABI (PATCH from `build --name`), has the patch's version \
(`build --patch-version`, default 1), depends on linux-image-ABI (signed or unsigned, at the exact \
version the module was built for) and on kpatch-rs, and carries the description, CVE numbers and \
source checksum recorded in the module. Installing it installs the module for boot and, when ABI \
runs, loads it; a newer version takes over from the older one with no moment unpatched; removing \
it unloads and uninstalls it."
)]
pub struct Args {
    /// Livepatch modules (.ko, .ko.xz, .ko.zst, .ko.gz), one package each.
    #[arg(required_unless_present = "tool", conflicts_with = "tool")]
    pub modules: Vec<PathBuf>,
    /// Write kpatch-rs's own package (this executable, or --binary, and its systemd unit).
    #[arg(long)]
    pub tool: bool,
    /// With --tool: the kpatch-rs executable to package.
    #[arg(long, requires = "tool", value_name = "FILE")]
    pub binary: Option<PathBuf>,
    /// The package version (default: the module's patch version; with --tool, kpatch-rs's).
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
    /// The Maintainer field (default: $DEBFULLNAME <$DEBEMAIL>, else kpatch-rs <root@localhost>).
    #[arg(long, value_name = "NAME <EMAIL>")]
    pub maintainer: Option<String>,
    /// Where the packages go.
    #[arg(short = 'o', long, value_name = "DIR", default_value = ".")]
    pub output: PathBuf,
}

fn maintainer(args: &Args) -> String {
    if let Some(m) = &args.maintainer {
        return m.clone();
    }
    match (std::env::var("DEBFULLNAME"), std::env::var("DEBEMAIL")) {
        (Ok(n), Ok(e)) if !n.is_empty() && !e.is_empty() => format!("{n} <{e}>"),
        (_, Ok(e)) if e.contains('<') => e,
        _ => "kpatch-rs <root@localhost>".into(),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    for deb in write_packages(&args)? {
        println!("{}", deb.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the packages; returns their paths.
pub fn write_packages(args: &Args) -> anyhow::Result<Vec<PathBuf>> {
    if args.tool {
        let binary = match &args.binary {
            Some(b) => b.clone(),
            None => std::env::current_exe().context("locating the kpatch-rs executable")?,
        };
        let opts = ToolPackageOptions {
            binary,
            version: args
                .version
                .clone()
                .unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
            maintainer: maintainer(args),
            unit: unit_body(Path::new(BINARY_PATH), Path::new(DEFAULT_STATE_DIR)),
        };
        let deb = tool_package(&opts, &SystemRunner)?;
        return Ok(vec![deb.build(&args.output, &SystemRunner)?]);
    }
    let opts = PatchPackageOptions {
        version: args.version.clone(),
        maintainer: maintainer(args),
        tool_version: env!("CARGO_PKG_VERSION").into(),
    };
    // Every package is made before any is written, so that a bad module writes none.
    let debs = args
        .modules
        .iter()
        .map(|m| {
            let module = ModuleFile::read(m)?;
            Ok(patch_package(m, &module.info, &opts)?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    debs.iter()
        .map(|d| Ok(d.build(&args.output, &SystemRunner)?))
        .collect()
}
