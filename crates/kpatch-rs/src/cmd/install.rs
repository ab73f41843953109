use anyhow::Context;
use kpatch_kernel::modinfo::ModuleFile;
use kpatch_kernel::report::{EXIT_CODES_HELP, EXIT_OK};
use kpatch_kernel::store::{
    install_unit, remove_unit, Store, DEFAULT_STATE_DIR, DEFAULT_UNIT_DIR, UNIT_NAME,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct Args {
    /// The patch module file (.ko, .ko.xz, .ko.zst). It is copied to
    /// <state-dir>/<kernel>/ with its SHA-256 recorded beside it (NAME.ko.sha256), which
    /// `load --all` checks at boot. Installing the same file again completes an install that
    /// was interrupted.
    pub module: PathBuf,
    /// Install for this kernel release (default: the one the module was built for, from its
    /// vermagic); must match the module's vermagic.
    #[arg(short = 'k', long = "kernel-version", value_name = "KVER")]
    pub kernel_version: Option<String>,
    /// Directory of installed patches.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Where to write and enable the systemd unit that runs `load --all` at boot.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_UNIT_DIR)]
    pub unit_dir: PathBuf,
    /// Do not write the systemd unit.
    #[arg(long)]
    pub no_unit: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("locating the kpatch-rs executable")?;
    let code = run_with(&args, &exe, &mut std::io::stdout())?;
    Ok(ExitCode::from(code))
}

pub fn run_with(args: &Args, exe: &Path, out: &mut dyn std::io::Write) -> anyhow::Result<u8> {
    let module = ModuleFile::read(&args.module)?;
    let name = module.name();
    if !module.info.is_livepatch() {
        anyhow::bail!(
            "{}: module {name} is not a livepatch module (no livepatch=Y in .modinfo)",
            args.module.display()
        );
    }
    let built_for = module
        .info
        .vermagic_release()
        .with_context(|| format!("{}: no vermagic in .modinfo", args.module.display()))?;
    let kernel = args.kernel_version.as_deref().unwrap_or(built_for);
    if kernel != built_for {
        anyhow::bail!(
            "{}: module {name} was built for kernel {built_for}, not {kernel}",
            args.module.display()
        );
    }
    let store = Store::new(&args.state_dir);
    // The unit goes first (with nothing new to load it is harmless), so that the module's
    // rename into place is the one step that makes the patch load at boot.
    let had_unit = args.unit_dir.join(UNIT_NAME).exists();
    let mut unit = None;
    let result = store.install_with(&module, kernel, &mut || {
        if !args.no_unit {
            unit = Some(install_unit(&args.unit_dir, exe, &args.state_dir)?);
        }
        Ok(())
    });
    let installed = match result {
        Ok(i) => i,
        Err(e) => {
            // Nothing half-done: a unit this install wrote goes again if nothing is installed.
            if unit.is_some() && !had_unit && store.list().is_ok_and(|l| l.is_empty()) {
                let _ = remove_unit(&args.unit_dir);
            }
            return Err(e.into());
        }
    };
    writeln!(
        out,
        "installed {name} ({kernel}) as {}",
        installed.path.display()
    )?;
    if let Some(unit) = unit {
        writeln!(out, "boot loading enabled: {}", unit.display())?;
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpatch_kernel::fake::FakeKernel;
    use kpatch_kernel::modinfo::build_test_module;

    #[test]
    fn install_checks_kernel_and_writes_unit() {
        // The fake kernel is only used for its temporary tree here.
        let k = FakeKernel::new("6.1.0-50-amd64").unwrap();
        let f = k.path("/src/fix-a.ko");
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(
            &f,
            build_test_module(&[
                ("name", "fix_a"),
                ("livepatch", "Y"),
                ("vermagic", "6.1.0-50-amd64 SMP "),
            ]),
        )
        .unwrap();
        let mut args = Args {
            module: f.clone(),
            kernel_version: Some("6.1.0-49-amd64".into()),
            state_dir: k.path("/var/lib/kpatch-rs"),
            unit_dir: k.path("/etc/systemd/system"),
            no_unit: false,
        };
        let e = run_with(&args, Path::new("/usr/bin/kpatch-rs"), &mut Vec::new()).unwrap_err();
        assert!(
            e.to_string()
                .contains("built for kernel 6.1.0-50-amd64, not 6.1.0-49-amd64"),
            "{e}"
        );
        args.kernel_version = None;
        let mut out = Vec::new();
        run_with(&args, Path::new("/usr/bin/kpatch-rs"), &mut out).unwrap();
        assert!(k
            .path("/var/lib/kpatch-rs/6.1.0-50-amd64/fix_a.ko")
            .is_file());
        let unit =
            std::fs::read_to_string(k.path("/etc/systemd/system/kpatch-rs.service")).unwrap();
        assert!(
            unit.contains("ExecStart=/usr/bin/kpatch-rs load --all"),
            "{unit}"
        );
        // Again: complete already, nothing changes.
        run_with(&args, Path::new("/usr/bin/kpatch-rs"), &mut Vec::new()).unwrap();
        // Another module of that name is refused.
        let mut bytes = std::fs::read(&f).unwrap();
        bytes.extend_from_slice(b"other");
        std::fs::write(&f, bytes).unwrap();
        let e = run_with(&args, Path::new("/usr/bin/kpatch-rs"), &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("already installed"), "{e}");
    }
}
