//! The differ's two command lines on the shared corpus: `create-diff-object` speaks kpatch's
//! interface (arguments, `<obj>: changed function: <f>` lines, exit codes 0/1/2/3, the
//! `*_STRUCT_SIZE` variables) and `diff` gives a report, `--json` included. Bad input exits 1
//! naming the file, and leaves no output file behind.

use std::path::PathBuf;
use std::process::Command;

fn corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("KPATCH_RS_UNIT_OBJS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/kpatch-unit-objs/x86_64")
        });
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: the shared object corpus is not at {} (set KPATCH_RS_UNIT_OBJS)",
            dir.display()
        );
        None
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kpatch-rs"))
}

fn cdo(
    dir: &std::path::Path,
    name: &str,
    patched: &str,
    out: &std::path::Path,
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut c = bin();
    c.arg("create-diff-object")
        .arg(dir.join(format!("{name}.ORIG.o")))
        .arg(dir.join(patched))
        .args(["vmlinux", "/dev/null", "/dev/null", "livepatch-test"])
        .arg(out);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn create_diff_object_prints_kpatch_lines_and_exit_codes() {
    let Some(dir) = corpus() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.o");
    let r = cdo(&dir, "new-function", "new-function.PATCHED.o", &out, &[]);
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l == "new-function.ORIG.o: changed function: n_tty_write"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l == "new-function.ORIG.o: new function: kpatch_n_tty_write"),
        "{stdout}"
    );
    assert!(out.is_file());
    let n = Command::new("nm").arg(&out).output().unwrap();
    assert!(
        String::from_utf8_lossy(&n.stdout).contains(" t n_tty_write"),
        "changed functions are local in the output"
    );

    let r = cdo(
        &dir,
        "meminfo-init",
        "meminfo-init.PATCHED.FAIL.o",
        &tmp.path().join("init.o"),
        &[],
    );
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("__init"));
    assert!(
        !tmp.path().join("init.o").exists(),
        "no output for a refused change"
    );

    let r = cdo(
        &dir,
        "warn-detect",
        "warn-detect.PATCHED.FAIL.o",
        &tmp.path().join("warn.o"),
        &[],
    );
    assert_eq!(
        r.status.code(),
        Some(3),
        "a __LINE__-only change is no change"
    );
    assert!(!tmp.path().join("warn.o").exists());

    // The *_STRUCT_SIZE variables are honoured (a wrong one makes the entries meaningless).
    let r = cdo(
        &dir,
        "static-call-issue-1165",
        "static-call-issue-1165.PATCHED.o",
        &tmp.path().join("sc.o"),
        &[("JUMP_STRUCT_SIZE", "16")],
    );
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let r = cdo(
        &dir,
        "static-call-issue-1165",
        "static-call-issue-1165.PATCHED.o",
        &tmp.path().join("sc2.o"),
        &[("JUMP_STRUCT_SIZE", "many")],
    );
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("JUMP_STRUCT_SIZE"));
}

#[test]
fn diff_reports_as_json() {
    let Some(dir) = corpus() else { return };
    let r = bin()
        .args(["diff", "--json"])
        .arg(dir.join("function-ptr-new.ORIG.o"))
        .arg(dir.join("function-ptr-new.PATCHED.o"))
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["outcome"], "changed");
    assert_eq!(
        v["report"]["changed_functions"],
        serde_json::json!(["meminfo_proc_open"])
    );
    assert_eq!(
        v["report"]["new_functions"],
        serde_json::json!(["patch_print_something"])
    );
    // Why each function is there: the changed one at its first differing instruction.
    let functions = v["report"]["functions"].as_array().unwrap();
    let changed = functions
        .iter()
        .find(|f| f["name"] == "meminfo_proc_open")
        .unwrap();
    assert_eq!(changed["reason"], "changed");
    assert_eq!(changed["change"]["cause"], "code");
    let at = changed["change"]["at"].as_str().unwrap();
    let offset = changed["change"]["offset"].as_i64().unwrap();
    assert_eq!(at, format!("meminfo_proc_open+{offset:#x}"));
    assert!(functions
        .iter()
        .any(|f| f["name"] == "patch_print_something" && f["reason"] == "new"));
}

#[test]
fn diff_text_says_why_each_function_is_in_the_output() {
    let Some(dir) = corpus() else { return };
    let orig = dir.join("function-ptr-new.ORIG.o");
    let run = |json: bool| {
        let mut c = bin();
        c.arg("diff");
        if json {
            c.arg("--json");
        }
        let r = c
            .arg(&orig)
            .arg(dir.join("function-ptr-new.PATCHED.o"))
            .output()
            .unwrap();
        assert_eq!(r.status.code(), Some(0));
        String::from_utf8(r.stdout).unwrap()
    };
    let v: serde_json::Value = serde_json::from_str(&run(true)).unwrap();
    let d = &v["report"]["functions"][0]["change"];
    let text = run(false);
    let lines: Vec<&str> = text.lines().collect();
    let name = orig.display();
    assert_eq!(
        lines,
        vec![
            format!(
                "{name}: changed function: meminfo_proc_open (at {}: {} {} -> {})",
                d["at"].as_str().unwrap(),
                match d["differs"].as_str().unwrap() {
                    "bytes" => "instruction",
                    "relocation" => "reference",
                    _ => "code",
                },
                d["was"].as_str().unwrap(),
                d["now"].as_str().unwrap()
            ),
            format!("{name}: new function: patch_print_something"),
        ]
    );
}

#[test]
fn bad_input_exits_1_naming_the_file_and_writes_nothing() {
    let Some(dir) = corpus() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let orig = dir.join("meminfo-string.ORIG.o");
    let data = std::fs::read(&orig).unwrap();
    let cut = tmp.path().join("truncated.o");
    std::fs::write(&cut, &data[..data.len() / 3]).unwrap();
    let text = tmp.path().join("notelf.o");
    std::fs::write(&text, "this is not an object\n").unwrap();
    let other = dir.join("cmdline-ubsan.PATCHED.o");
    for (patched, what) in [
        (&cut, "truncated.o"),
        (&text, "notelf.o"),
        (&other, "not the same source"),
    ] {
        let out = tmp.path().join("out.o");
        let r = bin()
            .arg("diff")
            .arg(&orig)
            .arg(patched)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{what}: {stderr}");
        assert!(stderr.contains(what), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!out.exists(), "{what}: an output file was written");
    }
    let r = bin()
        .arg("diff")
        .arg(tmp.path().join("missing.o"))
        .arg(&orig)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("missing.o"));
}
