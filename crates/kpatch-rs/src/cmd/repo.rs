//! `kpatch-rs repo DIR [DEB...]`: add packages to a flat apt repository and rewrite its indexes
//! (see kpatch-deb's `repo`).

use kpatch_common::exec::SystemRunner;
use kpatch_deb::repo::{update, RepoOptions, SignWith, KEYRING};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 the repository is updated, 1 error (the message names the \
file or the tool that failed; the indexes are as before).\n\n\
Hosts use it as `deb [signed-by=/etc/apt/keyrings/kpatch-rs.gpg] URI ./`, URI being where DIR is \
served (http://, or file:/ for a local copy), with DIR's kpatch-rs-archive-keyring.gpg as that \
keyring. Without --sign the repository has no InRelease, and apt accepts it only with [trusted=yes]."
)]
pub struct Args {
    /// The repository directory (made when missing).
    pub dir: PathBuf,
    /// Packages to add to its pool (the same file twice is fine; another file under the name of
    /// one already there is refused).
    pub debs: Vec<PathBuf>,
    /// Sign Release (InRelease, Release.gpg) with this gpg key, and export its public key
    /// beside them.
    #[arg(long, value_name = "KEY")]
    pub sign: Option<String>,
    /// gpg's home directory for --sign.
    #[arg(long, value_name = "DIR", requires = "sign")]
    pub gnupg_home: Option<PathBuf>,
    /// The Release file's Origin.
    #[arg(long, default_value = "kpatch-rs")]
    pub origin: String,
    /// The Release file's Label.
    #[arg(long, default_value = "kpatch-rs livepatches")]
    pub label: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let opts = RepoOptions {
        origin: args.origin.clone(),
        label: args.label.clone(),
        sign: args.sign.as_ref().map(|key| SignWith {
            key: key.clone(),
            gnupg_home: args.gnupg_home.clone(),
        }),
    };
    let r = update(&args.dir, &args.debs, &opts, &SystemRunner)?;
    for a in &r.added {
        println!("{}", a.display());
    }
    let signed = match &r.keyring {
        Some(_) => format!("signed; hosts' keyring: {KEYRING}"),
        None => "not signed".into(),
    };
    eprintln!(
        "kpatch-rs: {}: {} package(s) indexed, {signed}",
        r.dir.display(),
        r.entries
    );
    Ok(ExitCode::SUCCESS)
}
