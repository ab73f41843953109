//! `kpatch-rs diff ORIG.o PATCHED.o -o OUT.o`: compare two builds of one translation unit and
//! write the changed and new functions.

use anyhow::Context;
use kpatch_diff::{DiffError, Outcome, Report};
use kpatch_elf::Object;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(
    after_help = "Prints one line per function of the output, with why it is there:\n  \
  ORIG.o: changed function: foo (at foo+0x1a: instruction 83 c0 01 -> 83 c0 02)\n  \
  ORIG.o: new function: bar\n  \
  ORIG.o: carried function: foo.cold (a piece of foo)\n\
The place is objtool's (function+offset of the first instruction that differs); --json gives the same as \
report.functions.\n\
Exit status: 0 output written, 1 error (bad input), 2 the change cannot be live-patched, 3 nothing changed."
)]
pub struct Args {
    /// The translation unit compiled from the original source.
    pub orig: PathBuf,
    /// The same translation unit compiled from the patched source.
    pub patched: PathBuf,
    /// Where to write the object holding the changed and new functions.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Special-section entry size, e.g. `__jump_table=16` (repeatable); found from the
    /// relocations when not given.
    #[arg(long = "entry-size", value_name = "SECTION=BYTES")]
    pub entry_sizes: Vec<String>,
    /// Print every section's and symbol's status to stderr.
    #[arg(short, long)]
    pub debug: bool,
}

/// What one diff produced, for the binary's commands.
pub enum Diffed {
    Written(Report),
    NoChange(Report),
    Refused(DiffError),
}

/// Reads both objects, diffs them, and writes the output atomically when there is one.
pub fn run_diff(
    orig: &Path,
    patched: &Path,
    output: Option<&Path>,
    options: &kpatch_diff::Options,
) -> anyhow::Result<Diffed> {
    let o = Object::read(orig)?;
    let p = Object::read(patched)?;
    let on = orig.display().to_string();
    let pn = patched.display().to_string();
    match kpatch_diff::diff(o, &on, p, &pn, options) {
        Ok(Outcome::Changed {
            output: obj,
            report,
        }) => {
            if let Some(out) = output {
                obj.write_to_path(out)
                    .with_context(|| format!("writing {}", out.display()))?;
            }
            Ok(Diffed::Written(report))
        }
        Ok(Outcome::NoChange { report }) => Ok(Diffed::NoChange(report)),
        Err(e @ DiffError::Unpatchable { .. }) => Ok(Diffed::Refused(e)),
        Err(e) => Err(e.into()),
    }
}

pub fn parse_entry_sizes(specs: &[String]) -> anyhow::Result<Vec<(String, u64)>> {
    specs
        .iter()
        .map(|s| {
            let (name, size) = s
                .split_once('=')
                .with_context(|| format!("--entry-size {s}: expected SECTION=BYTES"))?;
            let size: u64 = size
                .parse()
                .with_context(|| format!("--entry-size {s}: {size} is not a number"))?;
            anyhow::ensure!(size > 0, "--entry-size {s}: the size must be positive");
            Ok((name.to_string(), size))
        })
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let options = kpatch_diff::Options {
        entry_sizes: parse_entry_sizes(&args.entry_sizes)?,
        debug: args.debug,
        ..Default::default()
    };
    let result = run_diff(&args.orig, &args.patched, args.output.as_deref(), &options)?;
    let (code, report, refused) = match &result {
        Diffed::Written(r) => (0, Some(r), None),
        Diffed::NoChange(r) => (3, Some(r), None),
        Diffed::Refused(e) => (2, None, Some(e)),
    };
    if args.json {
        let value = serde_json::json!({
            "outcome": match code { 0 => "changed", 3 => "no-change", _ => "refused" },
            "report": report,
            "refused": refused.map(|e| e.to_string()),
            "output": (code == 0).then(|| args.output.as_ref().map(|p| p.display().to_string())).flatten(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        let name = args.orig.display();
        if let Some(r) = report {
            // Every function of the output, with why it is there.
            for f in &r.functions {
                println!("{name}: {f}");
            }
            for w in &r.warnings {
                println!("{name}: warning: {w}");
            }
            if code == 3 {
                println!("{name}: no changed functions");
            }
        }
        if let Some(e) = refused {
            eprintln!("kpatch-rs: {e}");
        }
    }
    Ok(ExitCode::from(code))
}
