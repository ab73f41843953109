//! A patch that only moves lines changes no function: a blank line at the top of a file builds to "the patch changes no function" (exit 3), though `__LINE__` (WARN/BUG, the
//! bug table, assertions, `__FILE__:__LINE__` strings) sits below it. The sample of
//! scripts/line-shift-sweep.sh that CI runs: vmlinux files with WARN/BUG and a module whose
//! assertions pass `__LINE__` as an argument (xfs). Gated by KPATCH_RS_GUEST_TESTS=1.

use std::process::Command;

const FILES: &[&str] = &["fs/proc/inode.c", "kernel/sys.c", "fs/xfs/xfs_inode.c"];

#[test]
fn a_blank_line_at_the_top_of_a_file_changes_no_function() {
    if std::env::var("KPATCH_RS_GUEST_TESTS").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set KPATCH_RS_GUEST_TESTS=1 to fetch Debian's kernel and compile objects"
        );
        return;
    }
    let k = kpatch_target::DebianKernel::default_target().expect("the default target");
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for f in FILES {
        // A blank line before the first one (no context: it applies to any version of the file).
        let patch = dir.path().join(format!("{}.patch", f.replace('/', "_")));
        std::fs::write(&patch, format!("--- a/{f}\n+++ b/{f}\n@@ -0,0 +1 @@\n+\n")).unwrap();
        let r = Command::new(env!("CARGO_BIN_EXE_kpatch-rs"))
            .args(["build", "--kernel", &k.abi, "-o"])
            .arg(dir.path())
            .arg(&patch)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&r.stderr);
        eprintln!("{f}: exit {:?}", r.status.code());
        if r.status.code() != Some(3) || !stderr.contains("the patch changes no function") {
            failures.push(format!("{f}: exit {:?}:\n{stderr}", r.status.code()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
