use anyhow::Context;
use kpatch_common::names::module_name_from_arg;
use kpatch_kernel::report::{EXIT_CODES_HELP, EXIT_OK};
use kpatch_kernel::store::{remove_unit, Store, DEFAULT_STATE_DIR, DEFAULT_UNIT_DIR};
use kpatch_kernel::Kernel;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct Args {
    /// The installed patch's name (its file name, as kpatch takes it, is accepted too).
    pub name: String,
    /// Uninstall from this kernel release (default: the running kernel).
    #[arg(short = 'k', long = "kernel-version", value_name = "KVER")]
    pub kernel_version: Option<String>,
    /// Directory of installed patches.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Where the systemd unit is; it is removed with the last installed patch.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_UNIT_DIR)]
    pub unit_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let k = super::this_kernel()?;
    let code = run_with(&*k, &args, &mut std::io::stdout())?;
    Ok(ExitCode::from(code))
}

pub fn run_with(k: &dyn Kernel, args: &Args, out: &mut dyn std::io::Write) -> anyhow::Result<u8> {
    if args.name.contains('/') {
        anyhow::bail!("{}: give the patch name without a path", args.name);
    }
    let kernel = match &args.kernel_version {
        Some(v) => v.clone(),
        None => k
            .release()
            .context("reading the running kernel's release")?,
    };
    let name = module_name_from_arg(&args.name);
    let store = Store::new(&args.state_dir);
    let removed = match store.uninstall(&kernel, &name) {
        Ok(r) => r,
        Err(e) => {
            // The boot unit of an uninstall killed before it removed the unit.
            if store.list().is_ok_and(|l| l.is_empty()) {
                remove_unit(&args.unit_dir)?;
            }
            return Err(e.into());
        }
    };
    writeln!(out, "uninstalled {} ({kernel})", removed.name)?;
    if store.list()?.is_empty() {
        kpatch_common::fault::kill_point("uninstall:before-unit");
        remove_unit(&args.unit_dir)?;
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpatch_kernel::fake::FakeKernel;

    #[test]
    fn uninstall_running_kernel_default_and_unit_removed_with_last() {
        let rel = "6.1.0-50-amd64";
        let k = FakeKernel::new(rel).unwrap();
        let state = k.path("/var/lib/kpatch-rs");
        let units = k.path("/etc/systemd/system");
        crate::cmd::load::tests::install(&state, rel, "p1");
        crate::cmd::load::tests::install(&state, "6.1.0-49-amd64", "p1");
        kpatch_kernel::store::install_unit(&units, std::path::Path::new("/bin/kpatch-rs"), &state)
            .unwrap();
        let mut args = Args {
            name: "p1.ko".into(),
            kernel_version: None,
            state_dir: state.clone(),
            unit_dir: units.clone(),
        };
        run_with(&k, &args, &mut Vec::new()).unwrap();
        assert!(!state.join(rel).exists());
        assert!(
            units.join("kpatch-rs.service").exists(),
            "another kernel still has a patch"
        );
        let e = run_with(&k, &args, &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("no installed patch named p1"), "{e}");
        args.kernel_version = Some("6.1.0-49-amd64".into());
        run_with(&k, &args, &mut Vec::new()).unwrap();
        assert!(!units.join("kpatch-rs.service").exists());
    }
}
