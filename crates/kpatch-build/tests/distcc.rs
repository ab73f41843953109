//! Compiles handed to distcc: a distccd on 127.0.0.1 only, started by the test. The helper check
//! compiles a probe there (cheap, always run where distcc and gcc-12 are installed); the kernel
//! build through distcc is gated by KPATCH_RS_GUEST_TESTS=1 (it compiles kernel objects).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use kpatch_build::distributed::{self, Tool};
use kpatch_build::error::BuildError;
use kpatch_build::exec::{Cmd, Runner};
use kpatch_build::SystemRunner;

const CC: &str = "gcc-12";

fn have(prog: &str) -> bool {
    Command::new(prog)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A distccd on 127.0.0.1, killed when dropped.
struct Daemon {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        // A free port: bind, read it, release it for distccd.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // distccd started as root works as the `distccd` user: its log must be writable by it.
        use std::os::unix::fs::PermissionsExt;
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o777)).unwrap();
        let log = logs.join("distccd.log");
        std::fs::write(&log, "").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
        let child = Command::new("distccd")
            .args([
                "--daemon",
                "--no-detach",
                "--allow",
                "127.0.0.1",
                "--listen",
                "127.0.0.1",
            ])
            .arg("--port")
            .arg(port.to_string())
            .arg("--log-file")
            .arg(&log)
            .args(["--log-level", "info", "--jobs", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("distccd starts");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Daemon { child, port, log }
    }
    fn hosts(&self) -> String {
        format!("127.0.0.1:{}/2", self.port)
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// How many compiles the helper has logged, once it has logged `at_least` (distccd writes
    /// its line after the client already has the object), or after 10 s.
    fn compiles(&self, at_least: usize) -> usize {
        let count = || self.log().matches("COMPILE_OK").count();
        for _ in 0..200 {
            if count() >= at_least {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        count()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM: distccd then stops the workers it forked (SIGKILL would leave them).
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

fn version_line(cc: &str) -> String {
    SystemRunner
        .run_ok(&Cmd::new(cc).arg("--version"))
        .unwrap()
        .stdout
        .lines()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn compiles_go_to_the_helper_and_a_helper_with_another_compiler_is_refused() {
    if !(have("distcc") && have(CC)) || Command::new("distccd").arg("--help").output().is_err() {
        eprintln!(
            "skipped: distcc, distccd or {CC} is not installed (scripts/setup.sh installs them)"
        );
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(t.path());
    let target = version_line(CC);
    let d = distributed::set_up(
        &SystemRunner,
        Tool::Distcc(Some(daemon.hosts())),
        CC,
        &target,
        &t.path().join("d"),
        1,
    )
    .unwrap();
    assert_eq!(d.jobs, 2, "distcc's slots for {}", daemon.hosts());
    // The probe ran on the helper.
    assert_eq!(daemon.compiles(1), 1, "{}", daemon.log());

    // A compile under make's environment goes through the masquerade to the helper.
    let src = t.path().join("unit.c");
    std::fs::write(&src, "int unit(void) { return 42; }\n").unwrap();

    let mut cmd = Cmd::new(CC)
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(t.path().join("unit.o"))
        .env("DISTCC_FALLBACK", "0");
    for (k, v) in d.env() {
        cmd = cmd.env(k, v);
    }
    SystemRunner.run_ok(&cmd).unwrap();
    assert_eq!(daemon.compiles(2), 2, "{}", daemon.log());

    // The same helper, against a target built with another compiler.
    let e = distributed::set_up(
        &SystemRunner,
        Tool::Distcc(Some(daemon.hosts())),
        CC,
        "gcc-13 (Debian 13.3.0-1) 13.3.0",
        &t.path().join("e"),
        1,
    )
    .unwrap_err();
    assert!(matches!(e, BuildError::CompilerMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{}", daemon.port)) && msg.contains("13.3.0-1"),
        "{msg}"
    );
}

#[test]
fn a_kernel_patch_builds_through_distcc() {
    if std::env::var("KPATCH_RS_GUEST_TESTS").as_deref() != Ok("1") {
        eprintln!("skipped: set KPATCH_RS_GUEST_TESTS=1 to compile kernel objects through distcc");
        return;
    }
    if !(have("distcc") && have(CC)) {
        panic!("distcc and {CC} are needed (scripts/setup.sh installs them)");
    }
    let t = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(t.path());
    let patch =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/cmdline-string.patch");
    let opts = kpatch_build::livepatch::LivepatchOptions {
        patches: vec![patch],
        target: kpatch_build::livepatch::TargetSpec::Debian(None),
        name: "distcc".into(),
        jobs: None,
        output_dir: t.path().join("out"),
        debug: false,
        replace: true,
        skip_compiler_check: false,
        sign: None,
        description: None,
        cves: Vec::new(),
        patch_version: None,
        distributed: Some(Tool::Distcc(Some(daemon.hosts()))),
    };
    let out = kpatch_build::livepatch::build_livepatch(&opts, &SystemRunner, &()).unwrap();
    let kpatch_build::livepatch::Outcome::Built(lp) = out else {
        panic!("not built: {out:?}");
    };
    assert!(
        lp.functions()
            .iter()
            .any(|(_, f, _)| f == "cmdline_proc_show"),
        "{:?}",
        lp.functions()
    );
    // The patched unit was compiled on the helper (the probe is the other job).
    daemon.compiles(2);
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("COMPILE_OK") && l.contains("cmdline")),
        "{log}"
    );
}
