//! Debian packages and the apt repository that carries them to a fleet:
//!
//! - [`patch`]: one package per livepatch module, named after the patch and the kernel ABI,
//!   depending on that exact kernel package; its maintainer scripts hand the dpkg protocol to
//!   `kpatch-rs maintscript` (install for boot, load, take over from an older version, unload);
//! - [`tool`]: kpatch-rs itself, with its systemd unit;
//! - [`repo`]: a flat apt repository (`Packages`, `Release`, `InRelease`) indexed by
//!   dpkg-scanpackages and apt-ftparchive and signed by gpg;
//! - [`control`]: the control file, package names and versions;
//! - [`deb`]: a package's tree, built by `dpkg-deb --build`.
//!
//! External programs run through kpatch-common's [`Runner`](kpatch_common::exec::Runner).

pub mod control;
pub mod deb;
mod error;
pub mod patch;
pub mod repo;
pub mod tool;

pub use control::Control;
pub use deb::Deb;
pub use error::DebError;
