use super::load::WatchArgs;
use anyhow::Context;
use kpatch_kernel::ops;
use kpatch_kernel::patches::loaded_patches;
use kpatch_kernel::report::{EXIT_CODES_HELP, EXIT_NOTHING, EXIT_OK};
use kpatch_kernel::watch::Observer;
use kpatch_kernel::Kernel;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(after_help = EXIT_CODES_HELP, after_long_help = super::load::const_format_help())]
pub struct Args {
    /// Name of the loaded patch (a module file name such as fix-1.ko is accepted too).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub name: Option<String>,
    /// Unload every loaded patch, the most recently loaded first.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Print one JSON object per patch on stdout (see `load --help`).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::load::run_on_this_kernel(&args.watch, |k, opts, obs, out, journal| {
        run_with_options(k, &args, opts, obs, out, journal)
    })
}

/// `fix-1.ko`, `/x/fix-1.ko.xz` and `fix_1` all name the patch `fix_1`.
fn patch_name(arg: &str) -> String {
    kpatch_common::names::module_name_from_arg(arg)
}

#[cfg(test)]
pub fn run_with(
    k: &dyn Kernel,
    args: &Args,
    obs: &mut dyn Observer,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<u8> {
    run_with_options(
        k,
        args,
        args.watch.options()?,
        obs,
        out,
        &mut crate::freezing::Journal::default(),
    )
}

pub fn run_with_options(
    k: &dyn Kernel,
    args: &Args,
    opts: kpatch_kernel::ops::Options,
    obs: &mut dyn Observer,
    out: &mut dyn std::io::Write,
    journal: &mut crate::freezing::Journal,
) -> anyhow::Result<u8> {
    let names: Vec<String> = if args.all {
        let mut v: Vec<String> = loaded_patches(k)?.into_iter().map(|p| p.name).collect();
        v.reverse(); // top of the stack first
        if v.is_empty() {
            let _ = writeln!(out, "no patches loaded");
            return Ok(EXIT_NOTHING);
        }
        v
    } else {
        vec![patch_name(args.name.as_deref().unwrap_or_default())]
    };
    for name in names {
        let (code, _) = super::load::journaled(
            |o| ops::unload(k, &name, &opts, o),
            opts.freeze,
            obs,
            journal,
            "unpatched and removed",
            args.json,
            out,
        )
        .with_context(|| format!("unloading {name}"))?;
        if code != EXIT_OK {
            return Ok(code);
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use kpatch_kernel::fake::{FakeKernel, FakeTask};
    use kpatch_kernel::watch::Recorder;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn unload_all_top_first_then_nothing_to_do() {
        let rel = "6.1.0-50-amd64";
        let k = FakeKernel::new(rel).unwrap();
        k.add_task(FakeTask::user(1, "init")).unwrap();
        let state = k.path("/var/lib/kpatch-rs");
        for n in ["b_first", "a_second"] {
            crate::cmd::load::tests::install(&state, rel, n);
        }
        let load =
            crate::cmd::load::tests::parse(&["--all", "--state-dir", state.to_str().unwrap()]);
        // File name order: a_second loads first, so it is at the bottom of the stack.
        crate::cmd::load::run_with(&k, &load, &mut Recorder::default(), &mut Vec::new()).unwrap();
        let args = Cli::try_parse_from(["unload", "--all"]).unwrap().args;
        let code = run_with(&k, &args, &mut Recorder::default(), &mut Vec::new()).unwrap();
        assert_eq!(code, EXIT_OK);
        let deletes: Vec<String> = k
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("delete_module"))
            .collect();
        assert_eq!(
            deletes,
            vec!["delete_module b_first", "delete_module a_second"]
        );
        let code = run_with(&k, &args, &mut Recorder::default(), &mut Vec::new()).unwrap();
        assert_eq!(code, EXIT_NOTHING);
        assert_eq!(patch_name("/x/fix-1.ko.xz"), "fix_1");
    }
}
