//! The integration corpus (tests/integration at the repository root): real source patches against
//! Debian's 6.1 kernel, each built by `kpatch-rs build` and proven in a guest, on the default 6.1
//! kernel and on the newest 6.12 one (there, a patch that does not apply to 6.12's source is
//! listed as such and skipped; `NAME.functions-6.12` replaces `NAME.functions` where the two
//! lines compile differently). For every patch
//! `NAME.patch` the directory holds either `NAME.check` (a busybox shell script that exits 0 only
//! while the patch is in effect) or `NAME.refuse` (a text the build's error must contain: the
//! patch must be refused with exit status 2). Optional: `NAME.module` (the loadable module the
//! patch changes), `NAME.dmesg` (lines the kernel log must show, e.g. from callbacks),
//! `NAME.functions` (exactly the functions the module must patch, one a line).
//!
//! One guest boot proves every built module in turn (check fails, load, check passes, unload,
//! check fails again; a module patch also with its target loaded after the livepatch module),
//! then the cumulative module built from every working patch together. A table of the outcomes
//! and build times is printed and written to `$CARGO_TARGET_TMPDIR/integration-corpus.txt`.
//! Gated by KPATCH_RS_GUEST_TESTS=1 (downloads packages, compiles, boots QEMU).

use kpatch_guest::{Guest, GuestRun, TestScript};
use kpatch_target::DebianKernel;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn gated() -> bool {
    if std::env::var("KPATCH_RS_GUEST_TESTS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("skipped: set KPATCH_RS_GUEST_TESTS=1 to fetch Debian's kernel, compile and boot QEMU guests");
    false
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/integration")
}

/// What one patch of the corpus expects.
#[derive(Debug, Clone, Default)]
struct Case {
    name: String,
    patch: PathBuf,
    check: Option<String>,
    refuse: Option<String>,
    module: Option<String>,
    dmesg: Vec<String>,
    functions: Option<Vec<String>>,
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The corpus, or with `selected` only the patches KPATCH_RS_CORPUS names (when set), with the
/// `.functions-<line>` files of kernel line `line` where they exist.
fn corpus_for(selected: bool, line: &str) -> Vec<Case> {
    let mut cases = corpus(selected);
    for c in &mut cases {
        let f = corpus_dir().join(format!("{}.functions-{line}", c.name));
        if f.exists() {
            c.functions = Some(read_lines(&f));
        }
    }
    cases
}

/// The corpus, or with `selected` only the patches KPATCH_RS_CORPUS names (when set).
fn corpus(selected: bool) -> Vec<Case> {
    let dir = corpus_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".patch")
                .map(String::from)
        })
        .collect();
    names.sort();
    // KPATCH_RS_CORPUS=a,b runs only those patches (to work on one patch).
    if let Some(only) = std::env::var("KPATCH_RS_CORPUS").ok().filter(|_| selected) {
        let only: Vec<&str> = only.split(',').map(str::trim).collect();
        names.retain(|n| only.contains(&n.as_str()));
    }
    names
        .into_iter()
        .map(|name| {
            let f = |ext: &str| dir.join(format!("{name}.{ext}"));
            let case = Case {
                patch: f("patch"),
                check: std::fs::read_to_string(f("check")).ok(),
                refuse: read_lines(&f("refuse")).into_iter().next(),
                module: read_lines(&f("module")).into_iter().next(),
                dmesg: read_lines(&f("dmesg")),
                functions: f("functions").exists().then(|| read_lines(&f("functions"))),
                name,
            };
            assert!(
                case.check.is_some() != case.refuse.is_some(),
                "{}: a corpus patch needs exactly one of .check and .refuse",
                case.name
            );
            case
        })
        .collect()
}

/// One run of `kpatch-rs build`.
struct Build {
    code: Option<i32>,
    json: Option<serde_json::Value>,
    stderr: String,
    seconds: f64,
}

impl Build {
    fn module(&self) -> Option<(PathBuf, String)> {
        let j = self.json.as_ref()?;
        Some((
            PathBuf::from(j["module"].as_str()?),
            j["module_name"].as_str()?.to_string(),
        ))
    }

    fn functions(&self) -> Vec<String> {
        let Some(j) = &self.json else {
            return Vec::new();
        };
        j["functions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f[1].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The last lines of stderr, on one line, for the table.
    fn reason(&self) -> String {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        lines[lines.len().saturating_sub(2)..].join(" / ")
    }
}

fn build(kernel: &str, patches: &[&Path], name: &str, out: &Path) -> Build {
    let start = Instant::now();
    let r = Command::new(env!("CARGO_BIN_EXE_kpatch-rs"))
        .arg("build")
        .args(["--kernel", kernel])
        .args(patches)
        .args(["--name", name, "--json", "-o"])
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("running kpatch-rs build: {e}"));
    Build {
        code: r.status.code(),
        json: serde_json::from_slice(&r.stdout).ok(),
        stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// The outcome of one patch's build, judged against what the corpus expects.
fn judge_build(case: &Case, b: &Build) -> Result<String, String> {
    if let Some(reason) = &case.refuse {
        return match b.code {
            Some(2) if b.stderr.contains(reason.as_str()) => Ok(format!("refused: {reason}")),
            Some(2) => Err(format!("refused without '{reason}': {}", b.reason())),
            c => Err(format!(
                "exit {c:?}, expected a refusal (2) with '{reason}': {}",
                b.reason()
            )),
        };
    }
    if b.code != Some(0) {
        return Err(format!("exit {:?}: {}", b.code, b.reason()));
    }
    let Some((path, _)) = b.module() else {
        return Err("no module in the JSON summary".into());
    };
    if !path.is_file() {
        return Err(format!("{} was not written", path.display()));
    }
    let functions = b.functions();
    if let Some(expected) = &case.functions {
        let (mut got, mut want) = (functions.clone(), expected.clone());
        got.sort();
        want.sort();
        if got != want {
            return Err(format!("patches {got:?}, expected exactly {want:?}"));
        }
    }
    Ok(format!("built: {}", functions.join(",")))
}

/// Guest-side steps: the check scripts live under /integration in the initramfs.
struct Steps<'a> {
    t: &'a mut TestScript,
}

const PROBLEMS: &str = "WARNING:|Call Trace|BUG:|Oops|general protection";

impl Steps<'_> {
    fn check_passes(&mut self, label: &str, case: &str) {
        // Traced, so that a failure shows which command of the check failed.
        self.t
            .check(label, &format!("sh -x /integration/{case}.check"));
    }

    fn check_fails(&mut self, label: &str, case: &str) {
        self.t.check(
            label,
            &format!("if sh /integration/{case}.check >/dev/null 2>&1; then echo 'the check passes without the patch'; return 1; fi"),
        );
    }

    fn load(&mut self, prefix: &str, path: &str, module: &str) {
        let sys = format!("/sys/kernel/livepatch/{module}");
        self.t
            .check(&format!("{prefix}:load"), &format!("insmod {path}"));
        self.t.check_eventually(
            &format!("{prefix}:transition"),
            &format!("[ \"$(cat {sys}/transition 2>/dev/null)\" = 0 ]"),
            120,
        );
        self.t.check(
            &format!("{prefix}:enabled"),
            &format!("[ \"$(cat {sys}/enabled)\" = 1 ]"),
        );
    }

    fn unload(&mut self, prefix: &str, module: &str) {
        let sys = format!("/sys/kernel/livepatch/{module}");
        self.t.check(
            &format!("{prefix}:disable"),
            &format!("echo 0 > {sys}/enabled"),
        );
        self.t.check_eventually(
            &format!("{prefix}:disabled"),
            &format!("[ ! -d {sys} ]"),
            120,
        );
        self.t.check(
            &format!("{prefix}:unload"),
            &format!("rmmod {module} && ! grep -q '^{module} ' /proc/modules"),
        );
    }

    fn ensure_loaded(&mut self, label: &str, name: &str, paths: &[String]) {
        let mut body = String::new();
        for p in paths {
            let m = p
                .rsplit('/')
                .next()
                .unwrap_or(p)
                .trim_end_matches(".ko")
                .replace('-', "_");
            body.push_str(&format!(
                "grep -q '^{m} ' /proc/modules || insmod {p} || return 1\n"
            ));
        }
        body.push_str(&format!(
            "grep -q '^{} ' /proc/modules",
            name.replace('-', "_")
        ));
        self.t.check(label, &body);
    }

    fn kernel_log(&mut self, prefix: &str, lines: &[String]) {
        for (i, l) in lines.iter().enumerate() {
            self.t.check(
                &format!("{prefix}:dmesg-{i}"),
                &format!("dmesg | grep -qF '{}'", l.replace('\'', "'\\''")),
            );
        }
        self.t.check(
            &format!("{prefix}:dmesg-clean"),
            &format!("! dmesg | grep -E '{PROBLEMS}'"),
        );
    }
}

/// The guest result of the checks whose names start with `prefix:`.
fn judge_guest(run: &GuestRun, prefix: &str, expected: &[String]) -> Result<String, String> {
    let mine: Vec<_> = run
        .results
        .iter()
        .filter(|r| r.name.starts_with(&format!("{prefix}:")))
        .collect();
    let failed: Vec<String> = mine
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{} ({})", r.name, r.detail))
        .collect();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|e| !mine.iter().any(|r| &r.name == *e))
        .collect();
    if !failed.is_empty() {
        return Err(failed.join("; "));
    }
    if !missing.is_empty() {
        return Err(format!("did not run: {missing:?}"));
    }
    Ok(format!("{} checks ok", mine.len()))
}

struct Row {
    patch: String,
    build: Result<String, String>,
    seconds: f64,
    guest: Option<Result<String, String>>,
}

fn table(rows: &[Row]) -> String {
    let mut s = String::from("| patch | build | seconds | guest |\n|---|---|---|---|\n");
    for r in rows {
        let b = match &r.build {
            Ok(m) => format!("ok ({m})"),
            Err(e) => format!("FAIL ({e})"),
        };
        let g = match &r.guest {
            None => "-".to_string(),
            Some(Ok(m)) => format!("pass ({m})"),
            Some(Err(e)) => format!("FAIL ({e})"),
        };
        s.push_str(&format!(
            "| {} | {} | {:.1} | {} |\n",
            r.patch,
            b.replace('|', "/"),
            r.seconds,
            g.replace('|', "/")
        ));
    }
    s
}

#[test]
fn every_corpus_patch_builds_or_is_refused_and_works_in_one_guest_boot() {
    if !gated() {
        return;
    }
    let kernel = DebianKernel::default_target().expect("the default target kernel");
    run_corpus(&kernel, false);
}

#[test]
fn the_corpus_on_the_newest_6_12_kernel_in_one_guest_boot() {
    if !gated() {
        return;
    }
    let store = kpatch_target::Store::system();
    let newest = kpatch_target::targets::offered(&store)
        .expect("the kernels apt offers")
        .into_iter()
        .find(|t| t.line == "6.12" && t.flavour == "amd64" && t.source)
        .expect("a 6.12 kernel whose source the archive has");
    let kernel = DebianKernel::new(&newest.abi, &newest.version, store).unwrap();
    run_corpus(&kernel, true);
}

/// Builds every patch of the corpus for `kernel`, and proves them in one boot of it. With
/// `other_line`, a patch that does not apply to this kernel's source is skipped, not failed.
fn run_corpus(kernel: &DebianKernel, other_line: bool) {
    let line = kpatch_target::version::parse_abi(&kernel.abi)
        .expect("a Debian ABI")
        .major_minor;
    let mut cases = corpus_for(true, &line);
    if std::env::var("KPATCH_RS_CORPUS").is_err() {
        assert!(
            cases.len() >= 12,
            "the corpus has only {} patches",
            cases.len()
        );
    }
    let out = tempfile::tempdir().unwrap();

    // Every patch on its own, one after the other (the kernel tree is shared and locked).
    let mut builds = BTreeMap::new();
    let mut skipped = Vec::new();
    for case in &cases {
        eprintln!("building {} for {} ...", case.name, kernel.abi);
        let b = build(
            &kernel.abi,
            &[case.patch.as_path()],
            &case.name,
            &out.path().join(&case.name),
        );
        if other_line && b.code == Some(1) && b.stderr.contains("does not apply to") {
            eprintln!("  does not apply to {}: skipped", kernel.abi);
            skipped.push(case.name.clone());
            continue;
        }
        let verdict = judge_build(case, &b);
        eprintln!("  {:.1} s: {verdict:?}", b.seconds);
        builds.insert(case.name.clone(), (b, verdict));
    }
    cases.retain(|c| !skipped.contains(&c.name));

    // Every patch that built, as one cumulative module.
    let working: Vec<&Case> = cases
        .iter()
        .filter(|c| c.check.is_some() && builds[&c.name].1.is_ok())
        .collect();
    let cumulative = (!working.is_empty()).then(|| {
        let patches: Vec<&Path> = working.iter().map(|c| c.patch.as_path()).collect();
        eprintln!(
            "building the cumulative module from {} patches ...",
            patches.len()
        );
        let b = build(
            &kernel.abi,
            &patches,
            "cumulative",
            &out.path().join("cumulative"),
        );
        let verdict = if b.code == Some(0) && b.module().is_some() {
            Ok(format!(
                "{} patches, {} functions",
                patches.len(),
                b.functions().len()
            ))
        } else {
            Err(format!("exit {:?}: {}", b.code, b.reason()))
        };
        eprintln!("  {:.1} s: {verdict:?}", b.seconds);
        (b, verdict)
    });

    // One boot for all of it.
    let modules_dir = kernel.modules_dir().expect("the target's modules");
    let mut guest = Guest::for_kernel(kernel).unwrap_or_else(|e| panic!("{e}"));
    guest.config.timeout = Duration::from_secs(1800);
    let mut t = TestScript::new();
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut target_paths: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for case in &working {
        guest.initramfs.file(
            &format!("/integration/{}.check", case.name),
            0o755,
            case.check.clone().unwrap().into_bytes(),
        );
        if let Some(m) = &case.module {
            if !target_paths.contains_key(m) {
                let paths = guest
                    .initramfs
                    .add_kernel_module(&modules_dir, m)
                    .unwrap_or_else(|e| panic!("{e}"));
                target_paths.insert(m.clone(), paths);
            }
        }
    }
    let before = t.check_names().len();
    for case in &working {
        let (b, _) = &builds[&case.name];
        let (path, module) = b.module().unwrap();
        let guest_path = guest
            .initramfs
            .add_module(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        let n = case.name.as_str();
        let first = t.check_names().len();
        t.shell("dmesg -c >/dev/null");
        let mut s = Steps { t: &mut t };
        if let Some(m) = &case.module {
            s.ensure_loaded(&format!("{n}:target-loaded-first"), m, &target_paths[m]);
        }
        s.check_fails(&format!("{n}:unpatched"), n);
        s.load(n, &guest_path, &module);
        s.check_passes(&format!("{n}:patched"), n);
        s.unload(n, &module);
        s.check_fails(&format!("{n}:unpatched-again"), n);
        if let Some(m) = &case.module {
            // The target module loaded after the livepatch module: the livepatch core patches it
            // as it loads; disabling the patch unpatches the still-loaded module.
            let target = m.replace('-', "_");
            s.t.check(
                &format!("{n}:target-unload"),
                &format!("rmmod {target} && ! grep -q '^{target} ' /proc/modules"),
            );
            s.load(&format!("{n}:before-target"), &guest_path, &module);
            s.ensure_loaded(&format!("{n}:target-loaded-after"), m, &target_paths[m]);
            s.check_passes(&format!("{n}:patched-on-target-load"), n);
            // The target unloaded while patched (the core reverts it as it goes), then loaded
            // again (patched again as it loads).
            s.t.check(
                &format!("{n}:target-unload-while-patched"),
                &format!("rmmod {target} && ! grep -q '^{target} ' /proc/modules"),
            );
            s.ensure_loaded(&format!("{n}:target-reloaded"), m, &target_paths[m]);
            s.check_passes(&format!("{n}:patched-on-target-reload"), n);
            s.unload(&format!("{n}:before-target"), &module);
            s.check_fails(&format!("{n}:target-unpatched"), n);
        }
        s.kernel_log(n, &case.dmesg);
        expected.insert(
            n.to_string(),
            t.check_names()[first..]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
    }
    if let Some((b, Ok(_))) = &cumulative {
        let (path, module) = b.module().unwrap();
        let guest_path = guest
            .initramfs
            .add_module(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        let first = t.check_names().len();
        t.shell("dmesg -c >/dev/null");
        let mut s = Steps { t: &mut t };
        for (m, paths) in &target_paths {
            s.ensure_loaded(&format!("cumulative:target-{m}"), m, paths);
        }
        for case in &working {
            s.check_fails(&format!("cumulative:unpatched-{}", case.name), &case.name);
        }
        s.load("cumulative", &guest_path, &module);
        for case in &working {
            s.check_passes(&format!("cumulative:patched-{}", case.name), &case.name);
        }
        s.unload("cumulative", &module);
        for case in &working {
            s.check_fails(
                &format!("cumulative:unpatched-again-{}", case.name),
                &case.name,
            );
        }
        let lines: Vec<String> = working.iter().flat_map(|c| c.dmesg.clone()).collect();
        s.kernel_log("cumulative", &lines);
        expected.insert(
            "cumulative".into(),
            t.check_names()[first..]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
    }
    let run = (t.check_names().len() > before).then(|| {
        eprintln!("booting the guest for {} checks ...", t.check_names().len());
        let run = guest.run(&t).unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "guest: booted after {:?}, ran {:?}",
            run.booted_after.unwrap_or_default(),
            run.elapsed
        );
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("integration-corpus-{}-console.log", kernel.abi));
        if std::fs::write(&log, run.log()).is_ok() {
            eprintln!("guest console log: {}", log.display());
        }
        run
    });

    let mut rows = Vec::new();
    for case in &cases {
        let (b, verdict) = &builds[&case.name];
        let guest = match (&run, expected.get(&case.name)) {
            (Some(run), Some(names)) => Some(judge_guest(run, &case.name, names)),
            _ => None,
        };
        rows.push(Row {
            patch: case.name.clone(),
            build: verdict.clone(),
            seconds: b.seconds,
            guest,
        });
    }
    if let Some((b, verdict)) = &cumulative {
        let guest = match (&run, expected.get("cumulative")) {
            (Some(run), Some(names)) => Some(judge_guest(run, "cumulative", names)),
            _ => None,
        };
        rows.push(Row {
            patch: "cumulative".into(),
            build: verdict.clone(),
            seconds: b.seconds,
            guest,
        });
    }
    let text = table(&rows);
    let passed = rows
        .iter()
        .filter(|r| r.build.is_ok() && r.guest.as_ref().is_none_or(|g| g.is_ok()))
        .count();
    let summary = format!(
        "{} ({}):\n{text}\n{passed} of {} rows pass ({} patches built; not applicable to this kernel: {})\n",
        kernel.abi,
        kernel.version,
        rows.len(),
        cases.len(),
        if skipped.is_empty() { "none".to_string() } else { skipped.join(", ") }
    );
    println!("{summary}");
    let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("integration-corpus-{}.txt", kernel.abi));
    let _ = std::fs::write(&file, &summary);

    if let Some(run) = &run {
        assert!(
            run.done,
            "the guest script did not finish:\n{}",
            run.tail(60)
        );
        assert!(
            run.problems.is_empty(),
            "kernel problems on the console: {:#?}\n{}",
            run.problems,
            run.tail(60)
        );
    }
    assert!(cumulative.is_some(), "no patch of the corpus built");
    assert_eq!(passed, rows.len(), "some corpus patches failed:\n{summary}");
}

/// Needs nothing but the repository: the corpus files are what the guest test expects.
#[test]
fn corpus_files_are_well_formed() {
    let cases = corpus(false);
    assert!(
        cases.len() >= 12,
        "the corpus has only {} patches",
        cases.len()
    );
    assert!(
        cases.iter().filter(|c| c.refuse.is_some()).count() >= 2,
        "the corpus needs refused patches"
    );
    assert!(
        cases.iter().any(|c| c.module.is_some()),
        "the corpus needs a loadable-module patch"
    );
    for c in &cases {
        let text = std::fs::read_to_string(&c.patch).unwrap();
        let files: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("--- "))
            .collect();
        assert!(!files.is_empty(), "{}: not a unified diff", c.name);
        for f in &files {
            assert!(
                f.starts_with("a/") && !f.contains('\t'),
                "{}: '--- {f}': paths must be a/... without timestamps",
                c.name
            );
        }
        for l in text.lines().filter_map(|l| l.strip_prefix("+++ ")) {
            assert!(
                l.starts_with("b/") && !l.contains('\t'),
                "{}: '+++ {l}': paths must be b/... without timestamps",
                c.name
            );
        }
        if let Some(check) = &c.check {
            let r = Command::new("sh")
                .args(["-n", "-c", check])
                .output()
                .unwrap();
            assert!(
                r.status.success(),
                "{}.check is not valid sh: {}",
                c.name,
                String::from_utf8_lossy(&r.stderr)
            );
        }
        if let Some(m) = &c.module {
            assert!(
                m.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-'),
                "{}.module: '{m}'",
                c.name
            );
        }
    }
}
