//! `kpatch-rs targets`: the Debian kernels `build` can target from this machine.

use kpatch_target::targets::{offered, Offered};
use kpatch_target::{version, Store};
use serde::Serialize;
use std::process::ExitCode;

const ABOUT: &str = "\
Lists every Debian amd64 kernel whose image package apt offers (both lines, 6.1.0-NN-* and
6.12.NNN+debNN-*, every flavour: amd64, cloud-amd64, rt-amd64), newest first. `build --kernel
ABI` can target each one whose exact source version the archive still has; the others are
marked `source missing` (the archive keeps old images longer than their sources). `cached`
marks kernels whose prepared source tree is already in the cache.";

#[derive(clap::Args)]
#[command(before_long_help = ABOUT, after_help = "Exit codes: 0 listed, 1 error (apt failed).")]
pub struct Args {
    /// Only this line (6.1 or 6.12).
    #[arg(long)]
    pub line: Option<String>,
    /// Only this flavour (amd64, cloud-amd64, rt-amd64).
    #[arg(long)]
    pub flavour: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    offered: Offered,
    cached: bool,
    running: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::system();
    let running = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let rows: Vec<Row> = offered(&store)?
        .into_iter()
        .filter(|o| args.line.as_ref().is_none_or(|l| *l == o.line))
        .filter(|o| args.flavour.as_ref().is_none_or(|f| *f == o.flavour))
        .map(|o| Row {
            cached: store
                .root()
                .join("src")
                .join(&o.abi)
                .join(".kpatch-rs-prepared")
                .is_file(),
            running: o.abi == running,
            offered: o,
        })
        .collect();
    super::emit(&mut std::io::stdout(), args.json, &rows, |rows| {
        render(rows, version::is_debian_abi(&running))
    })?;
    Ok(ExitCode::SUCCESS)
}

fn render(rows: &[Row], running_is_debian: bool) -> String {
    let mut s = format!("{:<30} {:<22} {}\n", "ABI", "VERSION", "SOURCE");
    for r in rows {
        let source = if r.offered.source {
            "available"
        } else {
            "missing"
        };
        let mut notes = Vec::new();
        if r.cached {
            notes.push("cached");
        }
        if r.running {
            notes.push("running");
        }
        s.push_str(
            format!(
                "{:<30} {:<22} {:<15} {}\n",
                r.offered.abi,
                r.offered.version,
                source,
                notes.join(", ")
            )
            .trim_end(),
        );
        s.push('\n');
    }
    let buildable = rows.iter().filter(|r| r.offered.source).count();
    s.push_str(&format!(
        "{} kernels, {buildable} with their source in the archive",
        rows.len()
    ));
    if !running_is_debian {
        s.push_str(
            "; the running kernel is not a Debian one (build targets the newest 6.1 by default)",
        );
    }
    s.push('\n');
    s
}
