//! Every line and flavour of Debian kernel, end to end: `kpatch-rs targets` lists them, and the
//! same one-file patch is built with `--verify` for an older 6.1 ABI, the newest 6.12 (IBT,
//! CALL_PADDING, call-depth tracking, zstd image, .ko.xz modules) and the newest 6.1 cloud
//! kernel (lz4 image). On 6.12 a patch that takes the address of a function the kernel seals at
//! boot is refused; QEMU's TCG does not enforce IBT, so the refusal is what is tested. Gated by
//! KPATCH_RS_GUEST_TESTS=1 (downloads packages, prepares trees, boots QEMU guests).

use std::path::PathBuf;
use std::process::{Command, Output};

fn gated() -> bool {
    if std::env::var("KPATCH_RS_GUEST_TESTS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("skipped: set KPATCH_RS_GUEST_TESTS=1 to fetch Debian's kernels, compile and boot QEMU guests");
    false
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kpatch_rs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kpatch-rs"))
        .args(args)
        .output()
        .unwrap()
}

/// `kpatch-rs targets --json`: (abi, version, line, flavour, source).
fn targets() -> Vec<(String, String, String, String, bool)> {
    let out = kpatch_rs(&["targets", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap().to_string();
            (
                s("abi"),
                s("version"),
                s("line"),
                s("flavour"),
                t["source"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// The newest kernel of `line` and `flavour` whose source the archive has, skipping `skip`
/// versions (newest first).
fn pick(line: &str, flavour: &str, skip: usize) -> String {
    let all = targets();
    let mut versions: Vec<&(String, String, String, String, bool)> = all
        .iter()
        .filter(|t| t.2 == line && t.3 == flavour && t.4)
        .collect();
    versions.dedup_by(|a, b| a.1 == b.1);
    let t = versions
        .get(skip)
        .unwrap_or_else(|| panic!("no {line} {flavour} kernel #{skip} with its source: {all:?}"));
    t.0.clone()
}

/// Builds examples/cmdline-string.patch for `abi` with --verify and checks /proc/cmdline in the
/// guest: unpatched, patched, unpatched again. Returns the output directory (the module is in
/// it) and the build's JSON summary.
fn build_and_verify(abi: &str) -> (tempfile::TempDir, serde_json::Value) {
    let out = tempfile::tempdir().unwrap();
    let patch = repo().join("examples/cmdline-string.patch");
    let r = kpatch_rs(&[
        "build",
        "--kernel",
        abi,
        patch.to_str().unwrap(),
        "--verify",
        "--json",
        "--verify-cmd",
        "cat /proc/cmdline",
        "-o",
        out.path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(
        r.status.success(),
        "{abi}: build failed ({:?}):\n{stderr}",
        r.status
    );
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["kernel"], abi);
    assert_eq!(v["verified"], true, "{abi}:\n{stderr}");
    assert_eq!(v["functions"][0][1], "cmdline_proc_show", "{abi}");
    let o = &v["verification"]["outputs"][0];
    let (before, patched, after) = (
        o["unpatched"].as_str().unwrap(),
        o["patched"].as_str().unwrap(),
        o["after_unload"].as_str().unwrap(),
    );
    assert!(
        !before.contains("kpatch-rs=live")
            && patched.trim_end().ends_with("kpatch-rs=live")
            && after == before,
        "{abi}: {o}"
    );
    let secs: f64 = v["elapsed"].as_f64().unwrap();
    eprintln!("{abi}: built and verified in {secs:.1} s");
    (out, v)
}

#[test]
fn targets_lists_both_lines_and_every_flavour() {
    if !gated() {
        return;
    }
    let all = targets();
    for line in ["6.1", "6.12"] {
        for flavour in ["amd64", "cloud-amd64", "rt-amd64"] {
            assert!(
                all.iter().any(|t| t.2 == line && t.3 == flavour),
                "no {line} {flavour} kernel listed"
            );
        }
    }
    assert!(
        all.iter().any(|t| t.4)
            && all
                .iter()
                .all(|t| kpatch_target::version::is_debian_abi(&t.0))
    );
}

#[test]
fn an_older_6_1_abi_builds_and_verifies() {
    if gated() {
        build_and_verify(&pick("6.1", "amd64", 1));
    }
}

#[test]
fn the_newest_6_12_builds_and_verifies() {
    if gated() {
        build_and_verify(&pick("6.12", "amd64", 0));
    }
}

#[test]
fn the_newest_6_1_cloud_kernel_builds_and_verifies() {
    if gated() {
        build_and_verify(&pick("6.1", "cloud-amd64", 0));
    }
}

/// The rt flavour is built from the source with Debian's PREEMPT_RT series applied: without it
/// the module said `preempt` to a `preempt_rt` kernel, which refused it.
#[test]
fn the_newest_6_1_rt_kernel_builds_with_its_preempt_rt_series_and_verifies() {
    if !gated() {
        return;
    }
    let abi = pick("6.1", "rt-amd64", 0);
    let (out, _) = build_and_verify(&abi);
    let ko = out.path().join("livepatch-cmdline-string.ko");
    let data = std::fs::read(&ko).unwrap();
    let info = kpatch_guest::kmod::modinfo(&ko, &data).unwrap();
    let vermagic = info.vermagic().unwrap_or_default().to_string();
    assert!(
        vermagic.starts_with(&format!("{abi} SMP preempt_rt ")),
        "{}: vermagic {vermagic:?}",
        ko.display()
    );
}

#[test]
fn ibt_taking_a_sealed_functions_address_is_refused_on_6_12() {
    if !gated() {
        return;
    }
    let abi = pick("6.12", "amd64", 0);
    let out = tempfile::tempdir().unwrap();
    let patch = repo().join("crates/kpatch-rs/tests/data/ibt-sealed-address.patch");
    let r = kpatch_rs(&[
        "build",
        "--kernel",
        &abi,
        patch.to_str().unwrap(),
        "-o",
        out.path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cmdline_proc_show+0x")
            && stderr.contains("`do_truncate` (vmlinux)")
            && stderr.contains("seals at boot"),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(out.path()).unwrap().next().is_none(),
        "a refused build left files behind"
    );
}
