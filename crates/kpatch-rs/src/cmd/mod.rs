//! One file per subcommand. Each exposes `Args` (clap) and `run(Args) -> anyhow::Result<ExitCode>`.

pub mod build;
pub mod create_diff_object;
pub mod diff;
pub mod info;
pub mod install;
pub mod list;
pub mod load;
pub mod signal;
pub mod uninstall;
pub mod unload;
