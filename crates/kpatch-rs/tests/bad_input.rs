//! Bad module files given to `load`, `info` and `install` of the real binary (on a persistent
//! fake kernel, `KPATCH_RS_TEST_FAKE_KERNEL`): truncated, corrupted, foreign, compressed wrong,
//! a decompression bomb, a livepatch module for another kernel. Each gets a clear error that
//! names the file, no crash, and nothing changes: nothing handed to the kernel, nothing
//! written to the install directory or the unit directory.
//!
//! Bad patch files are refused by `build` before anything is built (kpatch-build's
//! `livepatch` and `patchfile` tests, and the `patch_parser` fuzz target).

use kpatch_kernel::fake::{FakeKernel, FakeTask};
use kpatch_kernel::modinfo::build_test_module;
use kpatch_kernel::MODINFO_FUNCTIONS;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const REL: &str = "6.1.0-50-amd64";

fn good_module(release: &str) -> Vec<u8> {
    let vermagic = format!("{release} SMP preempt mod_unload modversions ");
    build_test_module(&[
        ("livepatch", "Y"),
        ("name", "fix_a"),
        ("vermagic", &vermagic),
        (MODINFO_FUNCTIONS, "vmlinux:cmdline_proc_show,0"),
        ("license", "GPL"),
    ])
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut enc = xz2::write::XzEncoder::new(Vec::new(), 1);
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// The bad files, each with what its error must say besides the file's name.
fn bad_files(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let good = good_module(REL);
    let mut cases: Vec<(&str, Vec<u8>, &'static str)> = vec![
        ("empty.ko", Vec::new(), "not an ELF module"),
        ("text.ko", b"obj-m += fix.o\n".to_vec(), "not an ELF module"),
        ("header-only.ko", good[..64].to_vec(), ""),
        ("half.ko", good[..good.len() / 2].to_vec(), ""),
        ("last-byte-cut.ko", good[..good.len() - 1].to_vec(), ""),
        (
            "elf32.ko",
            {
                let mut b = good.clone();
                b[4] = 1; // EI_CLASS: ELFCLASS32
                b
            },
            "32-bit",
        ),
        (
            "big-endian.ko",
            {
                let mut b = good.clone();
                b[5] = 2; // EI_DATA: ELFDATA2MSB
                b
            },
            "big-endian",
        ),
        (
            "aarch64.ko",
            {
                let mut b = good.clone();
                b[18..20].copy_from_slice(&183u16.to_le_bytes()); // e_machine: EM_AARCH64
                b
            },
            "ELF machine 183",
        ),
        (
            "executable.ko",
            {
                let mut b = good.clone();
                b[16..18].copy_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
                b
            },
            "not a relocatable object",
        ),
        (
            "shoff-past-end.ko",
            {
                let mut b = good.clone();
                b[40..48].copy_from_slice(&(u64::MAX / 2).to_le_bytes()); // e_shoff
                b
            },
            "malformed module",
        ),
        (
            "no-modinfo.ko",
            {
                // The name of .modinfo in .shstrtab made another.
                let mut b = good.clone();
                let pos = b
                    .windows(9)
                    .rposition(|w| w == b".modinfo\0")
                    .expect(".modinfo in .shstrtab");
                b[pos + 1] = b'X';
                b
            },
            "no .modinfo section",
        ),
        (
            "corrupt.ko.xz",
            xz(&good)[..40].to_vec(),
            "cannot decompress",
        ),
        (
            "bomb.ko.zst",
            zstd::stream::encode_all(&vec![0u8; (256 << 20) + 4096][..], 3).unwrap(),
            "decompresses to more than 256 MiB",
        ),
        (
            "not-elf.ko.xz",
            xz(b"just text, compressed"),
            "not an ELF module",
        ),
        (
            "plain-module.ko",
            build_test_module(&[
                ("name", "fix_a"),
                (
                    "vermagic",
                    &format!("{REL} SMP preempt mod_unload modversions "),
                ),
            ]),
            "not a livepatch module",
        ),
        (
            "other-kernel.ko",
            good_module("6.1.0-49-amd64"),
            "built for kernel 6.1.0-49-amd64",
        ),
    ];
    if let Ok(exe) = std::fs::read("/bin/true") {
        cases.push(("bin-true.ko", exe, "not a relocatable object"));
    }
    cases
        .into_iter()
        .map(|(name, bytes, says)| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            (p, says)
        })
        .collect()
}

#[test]
fn bad_modules_get_a_clear_error_naming_the_file_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let kdir = tmp.path().join("kernel");
    let k = FakeKernel::create_at(&kdir, REL).unwrap();
    k.add_task(FakeTask::user(1, "init")).unwrap();
    drop(k);
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let state = tmp.path().join("state");
    let units = tmp.path().join("units");
    let files = bad_files(&src);
    let mut tried = 0;
    for (file, says) in &files {
        let f = file.to_str().unwrap();
        let name = file.file_name().unwrap().to_str().unwrap();
        let commands: Vec<Vec<&str>> = vec![
            vec!["load", f],
            vec!["info", f],
            vec![
                "install",
                f,
                "--kernel-version",
                REL,
                "--state-dir",
                state.to_str().unwrap(),
                "--unit-dir",
                units.to_str().unwrap(),
            ],
        ];
        for args in commands {
            // `info` describes a module for another kernel, or one that is no livepatch,
            // without error: that is what it is for.
            let informative = args[0] == "info"
                && (says.starts_with("built for kernel") || says.starts_with("not a livepatch"));
            let out = Command::new(env!("CARGO_BIN_EXE_kpatch-rs"))
                .args(&args)
                .env("KPATCH_RS_TEST_FAKE_KERNEL", &kdir)
                .output()
                .unwrap();
            tried += 1;
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            if informative {
                assert_eq!(out.status.code(), Some(0), "{name} {args:?}: {stderr}");
                let shown = if says.starts_with("built for") {
                    "target kernel: 6.1.0-49-amd64"
                } else {
                    "livepatch:     no"
                };
                assert!(stdout.contains(shown), "{name}: {stdout}");
                continue;
            }
            assert_eq!(
                out.status.code(),
                Some(1),
                "{name} {args:?}: no crash, exit 1: {stderr}"
            );
            let first = stderr.lines().next().unwrap_or_default();
            assert!(
                first.starts_with("kpatch-rs: error: ") && first.contains(f),
                "{name} {args:?}: the error names the file: {stderr}"
            );
            assert!(first.contains(says), "{name} {args:?}: {stderr}");
        }
    }
    let k = FakeKernel::open(&kdir).unwrap();
    assert!(
        k.calls().is_empty(),
        "nothing reached the kernel: {:?}",
        k.calls()
    );
    let leftovers: Vec<_> = std::fs::read_dir(&state)
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.iter().all(|p| p.file_name().unwrap() == ".lock"),
        "nothing installed: {leftovers:?}"
    );
    assert!(!units.exists(), "no unit written");
    eprintln!(
        "bad inputs: {} module files x load, info, install = {tried} runs",
        files.len()
    );
}
