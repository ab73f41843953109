//! Debian target kernels for kpatch-rs.
//!
//! Everything is fetched with `apt-get download` and unpacked with `dpkg-deb -x` into the
//! kpatch-rs cache ([`cache_dir`]); nothing is ever installed into the system.
//!
//! Cache layout (under `cache_dir()/debian/`):
//! - `<pkg>_<version>/`: one unpacked package (image, source), created by an atomic rename.
//! - `linux-headers-<abi>_<version>/`: one root holding `linux-headers-<abi>`,
//!   `linux-headers-<base>-common` and `linux-kbuild-<major.minor>` together, fixed up so
//!   that `make -C <root>/usr/src/linux-headers-<abi> M=<dir> modules` works (see [`headers`]).
//! - `vmlinux/<abi>_<version>/vmlinux`: the ELF decompressed out of the bzImage.

pub mod apt;
pub mod bzimage;
mod cache;
mod error;
pub mod featureset;
pub mod headers;
mod kernel;
pub mod modules;
pub mod store;
pub mod targets;
pub mod version;

pub use apt::{PackageTools, SourceLists, SystemApt};
pub use cache::{cache_dir, cache_dir_from};
pub use error::TargetError;
pub use featureset::FeaturesetSeries;
pub use kernel::DebianKernel;
pub use store::Store;
