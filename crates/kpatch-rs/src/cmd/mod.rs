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
