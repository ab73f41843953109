//! Helpers for the tiny-kernel tests: a small self-built kernel tree, built once by
//! `scripts/tiny-kernel.sh` from Debian's linux-source tarball and cached under the tool cache.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// A built kernel tree usable as `kpatch-rs build --sourcedir`.
pub struct TinyKernel {
    pub tree: PathBuf,
}

impl TinyKernel {
    pub fn config(&self) -> PathBuf {
        self.tree.join(".config")
    }

    pub fn vmlinux(&self) -> PathBuf {
        self.tree.join("vmlinux")
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `<cache>/tiny/<linux-source package version>`: built by the script on first use (it holds an
/// flock while building, so concurrent callers wait for one build), reused afterwards.
pub fn tiny_kernel() -> TinyKernel {
    let k = kpatch_target::DebianKernel::default_target()
        .unwrap_or_else(|e| panic!("the default Debian kernel: {e}"));
    let tarball = k
        .source_tarball()
        .unwrap_or_else(|e| panic!("linux-source tarball of {}: {e}", k.version));
    let dest = kpatch_target::cache_dir().join("tiny").join(&k.version);
    let start = Instant::now();
    let out = Command::new("bash")
        .arg(repo().join("scripts/tiny-kernel.sh"))
        .arg(&tarball)
        .arg(&dest)
        .output()
        .expect("running bash scripts/tiny-kernel.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/tiny-kernel.sh {} {} failed ({:?}):\n{stderr}",
        tarball.display(),
        dest.display(),
        out.status
    );
    eprintln!(
        "tiny kernel at {} ready after {:.1} s\n{stderr}",
        dest.display(),
        start.elapsed().as_secs_f64()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        dest.display().to_string()
    );
    TinyKernel { tree: dest }
}
