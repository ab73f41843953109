//! One file per subcommand. Each exposes `Args` (clap) and `run(Args) -> anyhow::Result<ExitCode>`.

pub mod build;
pub mod create_diff_object;
pub mod diff;
pub mod info;
pub mod install;
pub mod list;
pub mod load;
pub mod maintscript;
pub mod package;
pub mod repo;
pub mod signal;
pub mod status;
pub mod targets;
pub mod uninstall;
pub mod unload;
pub mod verify;

/// The variable of the fault tests' hidden hook: the directory of a persistent
/// [`kpatch_kernel::FakeKernel`] that the commands use instead of the running kernel (see
/// `crates/kpatch-rs/tests/faults.rs`). Nothing else reads it.
pub const FAKE_KERNEL_VAR: &str = "KPATCH_RS_TEST_FAKE_KERNEL";

/// The running kernel, or under [`FAKE_KERNEL_VAR`] the fake one named there.
pub fn this_kernel() -> anyhow::Result<Box<dyn kpatch_kernel::Kernel>> {
    use anyhow::Context;
    match std::env::var_os(FAKE_KERNEL_VAR) {
        Some(dir) => Ok(Box::new(
            kpatch_kernel::FakeKernel::open(std::path::Path::new(&dir))
                .with_context(|| format!("{FAKE_KERNEL_VAR}={}", dir.to_string_lossy()))?,
        )),
        None => Ok(Box::new(kpatch_kernel::RealKernel::new())),
    }
}

/// Writes a read command's result: pretty JSON with `--json`, else its text rendering.
pub fn emit<T: serde::Serialize>(
    out: &mut dyn std::io::Write,
    json: bool,
    value: &T,
    render: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, value)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", render(value))?;
    }
    Ok(())
}
