//! Booting a kernel under `qemu-system-x86_64 -accel tcg` and watching its serial console.

use crate::console::{self, CheckResult, Problem};
use crate::GuestError;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How to boot one guest.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    /// The kernel for `-kernel`: the ELF `vmlinux` (QEMU boots it through its PVH note,
    /// ~3 s under TCG) or the bzImage `vmlinuz`.
    pub kernel: PathBuf,
    /// The cpio for `-initrd` (see [`crate::Initramfs`]).
    pub initramfs: PathBuf,
    pub memory_mb: u32,
    pub cpus: u32,
    /// The kernel command line.
    pub append: String,
    /// Wall-clock limit for the whole run; QEMU's process group is killed after it.
    pub timeout: Duration,
    /// The QEMU binary (a seam: tests put a fake here).
    pub qemu: PathBuf,
    /// More QEMU arguments, appended last.
    pub extra_args: Vec<String>,
    /// When set, the console log is written there (also on timeout).
    pub log_file: Option<PathBuf>,
    /// Let a reboot inside the guest restart it (no `-no-reboot`). A kernel panic then ends
    /// the run at once, instead of rebooting into it again.
    pub allow_reboot: bool,
    /// How TCG runs the guest's CPUs on the host (`-accel tcg,thread=...`).
    pub tcg_thread: TcgThread,
}

/// QEMU's `-accel tcg,thread=` setting.
///
/// Multi-threaded TCG (QEMU 7.2, Debian 12's) can keep running a stale translation of kernel
/// text that another vCPU has rewritten. With 128 processes calling uname(2) on two vCPUs,
/// switching the kernel's own function tracer on and off on `__x64_sys_newuname` (no livepatch
/// module loaded) left both vCPUs taking an `int3` at `__x64_sys_newuname+0x0` whose memory
/// already read `0f 1f 44 00 00` again; the kernel's int3 handler sees no breakpoint there and
/// retries the instruction, forever (soft lockup). That hung about half of the runs, and none
/// of seven with `Single`. A guest that rewrites code its vCPUs are running hot needs `Single`;
/// it halves the guest's throughput when both vCPUs are busy (the soak's cycles took three
/// times as long), so it is not the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TcgThread {
    /// One host thread per guest CPU (QEMU's default for x86 guests on an x86 host).
    #[default]
    Multi,
    /// All guest CPUs take turns on one host thread. The guest still has every CPU, with
    /// preemption and IPIs between them; only the host runs them one at a time, so a CPU's
    /// write to kernel text is seen by the others before they run again.
    Single,
}

/// The default kernel command line: serial console, reboot (so QEMU exits, with
/// `-no-reboot`) at once on panic, and console log level 5 so WARN() splats (KERN_WARNING)
/// reach the console.
/// `no_timer_check`: under TCG on a loaded host the IO-APIC timer check can time out and panic the
/// guest ("IO-APIC + timer doesn't work!"); the timer works, only the check is too impatient.
pub const DEFAULT_APPEND: &str = "console=ttyS0 panic=-1 loglevel=5 no_timer_check";

impl GuestConfig {
    pub fn new(kernel: impl Into<PathBuf>, initramfs: impl Into<PathBuf>) -> Self {
        GuestConfig {
            kernel: kernel.into(),
            initramfs: initramfs.into(),
            memory_mb: 512,
            cpus: 1,
            append: DEFAULT_APPEND.into(),
            timeout: Duration::from_secs(180),
            qemu: "qemu-system-x86_64".into(),
            extra_args: vec![],
            log_file: None,
            allow_reboot: false,
            tcg_thread: TcgThread::default(),
        }
    }

    /// The QEMU arguments. `-nodefaults` drops the default NIC and VGA (no iPXE ROM to
    /// load); the only device used is the serial port, on stdio; the monitor is off.
    pub fn args(&self) -> Vec<String> {
        let accel = match self.tcg_thread {
            TcgThread::Multi => "tcg",
            TcgThread::Single => "tcg,thread=single",
        };
        let mut a: Vec<String> = [
            "-accel",
            accel,
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-serial",
            "stdio",
            "-monitor",
            "none",
        ]
        .iter()
        .filter(|s| !(self.allow_reboot && **s == "-no-reboot"))
        .map(|s| s.to_string())
        .collect();
        a.extend([
            "-m".into(),
            self.memory_mb.to_string(),
            "-smp".into(),
            self.cpus.to_string(),
            "-kernel".into(),
            self.kernel.display().to_string(),
            "-initrd".into(),
            self.initramfs.display().to_string(),
            "-append".into(),
            self.append.clone(),
        ]);
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// What one boot printed and what it means.
#[derive(Debug, Clone, Default)]
pub struct GuestRun {
    /// Every console line, cleaned ([`console::clean_line`]).
    pub lines: Vec<String>,
    /// The check results, in the order printed.
    pub results: Vec<CheckResult>,
    /// The script printed `KPATCH-RS-DONE`.
    pub done: bool,
    /// Kernel panics, Oopses, WARNINGs, BUGs and Call Traces seen.
    pub problems: Vec<Problem>,
    /// From QEMU's start to its exit (or the timeout).
    pub elapsed: Duration,
    /// From QEMU's start to the script's first line (`KPATCH-RS-BOOTED`): the boot time.
    pub booted_after: Option<Duration>,
    /// QEMU's exit status (None when it was killed on timeout).
    pub exit_status: Option<ExitStatus>,
    /// What QEMU printed on stderr.
    pub stderr: String,
}

impl GuestRun {
    pub fn result(&self, name: &str) -> Option<&CheckResult> {
        self.results.iter().find(|r| r.name == name)
    }

    /// `Ok` when the script finished, every check of `script` ran and passed, and the console
    /// shows no kernel problem; else what went wrong, with the console log.
    pub fn verdict(&self, script: &crate::TestScript) -> Result<(), String> {
        if !self.done {
            return Err(format!("script did not finish:\n{}", self.tail(60)));
        }
        for name in script.check_names() {
            match self.result(name) {
                None => return Err(format!("no result for {name}:\n{}", self.log())),
                Some(r) if !r.ok => {
                    return Err(format!("check {name} failed: {}\n{}", r.detail, self.log()))
                }
                Some(_) => {}
            }
        }
        if !self.problems.is_empty() {
            return Err(format!(
                "kernel problems: {:#?}\n{}",
                self.problems,
                self.log()
            ));
        }
        Ok(())
    }

    /// Checks that reported `fail`.
    pub fn failed(&self) -> Vec<&CheckResult> {
        self.results.iter().filter(|r| !r.ok).collect()
    }

    /// A file the script sent with [`TestScript::send_file`](crate::TestScript::send_file).
    pub fn file(&self, name: &str) -> Result<Vec<u8>, GuestError> {
        crate::transfer::extract_file(&self.lines, &crate::script::sanitize_name(name)).map_err(
            |what| GuestError::Transfer {
                name: name.to_string(),
                what,
            },
        )
    }

    /// The whole console log.
    pub fn log(&self) -> String {
        self.lines.join("\n")
    }

    /// The last `n` console lines.
    pub fn tail(&self, n: usize) -> String {
        self.lines[self.lines.len().saturating_sub(n)..].join("\n")
    }

    /// Feeds one raw console line through the analysis.
    pub(crate) fn push_raw(&mut self, raw: &[u8], since_start: Duration) {
        let line = console::clean_line(raw);
        if self.booted_after.is_none() && line.contains("KPATCH-RS-BOOTED") {
            self.booted_after = Some(since_start);
        }
        if let Some(r) = console::parse_result(&line) {
            self.results.push(r);
        }
        if console::is_done(&line) {
            self.done = true;
        }
        if let Some(kind) = console::detect_problem(&line) {
            self.problems.push(Problem {
                kind,
                line_no: self.lines.len(),
                line: line.clone(),
            });
        }
        self.lines.push(line);
    }
}

/// Kills QEMU's whole process group when dropped (timeout, error, or panic in the caller).
struct Reaper {
    child: Child,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

enum Event {
    Line(Vec<u8>),
    Eof,
}

/// Boots the guest and reads its console until QEMU exits. Returns
/// [`GuestError::Timeout`] (with the partial run) if it is still running after
/// `cfg.timeout`; QEMU and everything it started are killed then, and also if this
/// function unwinds.
pub fn boot(cfg: &GuestConfig) -> Result<GuestRun, GuestError> {
    let start = Instant::now();
    let mut child = Command::new(&cfg.qemu)
        .args(cfg.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| GuestError::Spawn {
            program: cfg.qemu.clone(),
            source: e,
        })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut reaper = Reaper { child };

    let (tx, rx) = mpsc::channel();
    if let Some(out) = stdout {
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            loop {
                let mut buf = Vec::new();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.send(Event::Line(buf)).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Event::Eof);
        });
    }
    let err_thread = stderr.map(|mut e| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let mut bytes = Vec::new();
            let _ = e.read_to_end(&mut bytes);
            s.push_str(&String::from_utf8_lossy(&bytes));
            s
        })
    });

    let mut run = GuestRun::default();
    let deadline = start + cfg.timeout;
    let mut timed_out = false;
    let mut panicked = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::Line(raw)) => {
                run.push_raw(&raw, start.elapsed());
                panicked = run
                    .problems
                    .last()
                    .is_some_and(|p| p.kind == console::ProblemKind::Panic);
                if cfg.allow_reboot && panicked {
                    // It would reboot into the same run; keep what it printed, and stop it.
                    break;
                }
            }
            Ok(Event::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
        }
    }
    if timed_out || (cfg.allow_reboot && panicked) {
        drop(reaper); // kill the group, reap QEMU
    } else {
        // stdout closed: QEMU is exiting; give it the rest of the deadline.
        loop {
            match reaper.child.try_wait() {
                Ok(Some(st)) => {
                    run.exit_status = Some(st);
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    timed_out = true;
                    break;
                }
            }
        }
        drop(reaper);
    }
    run.elapsed = start.elapsed();
    if let Some(t) = err_thread {
        run.stderr = t.join().unwrap_or_default();
    }
    if let Some(path) = &cfg.log_file {
        std::fs::write(path, run.log() + "\n").map_err(|e| GuestError::io(path, e))?;
    }
    if timed_out {
        return Err(GuestError::Timeout {
            after: cfg.timeout,
            tail: run.tail(30),
            run: Box::new(run),
        });
    }
    if run.lines.is_empty() && !run.exit_status.is_some_and(|s| s.success()) {
        return Err(GuestError::Qemu {
            status: run.exit_status.map(|s| s.to_string()).unwrap_or_default(),
            stderr: run.stderr.trim().to_string(),
        });
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::ProblemKind;
    use std::os::unix::fs::PermissionsExt;

    /// A fake `qemu-system-x86_64`: a shell script that prints `body`'s output.
    fn fake_qemu(dir: &std::path::Path, body: &str) -> PathBuf {
        let p = dir.join("fake-qemu");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn cfg(qemu: PathBuf, timeout_ms: u64) -> GuestConfig {
        let mut c = GuestConfig::new("/k/vmlinux", "/k/initrd.cpio");
        c.qemu = qemu;
        c.timeout = Duration::from_millis(timeout_ms);
        c
    }

    #[test]
    fn args_carry_the_config() {
        let mut c = GuestConfig::new("/k/vmlinux", "/k/i.cpio");
        c.memory_mb = 256;
        c.extra_args = vec!["-cpu".into(), "max".into()];
        let a = c.args();
        let pair = |k: &str| a.iter().position(|x| x == k).map(|i| a[i + 1].as_str());
        assert_eq!(pair("-accel"), Some("tcg"));
        assert_eq!(pair("-m"), Some("256"));
        assert_eq!(pair("-kernel"), Some("/k/vmlinux"));
        assert_eq!(pair("-initrd"), Some("/k/i.cpio"));
        assert_eq!(pair("-append"), Some(DEFAULT_APPEND));
        assert!(a.contains(&"-no-reboot".to_string()));
        assert_eq!(&a[a.len() - 2..], ["-cpu", "max"]);
        assert!(!a.iter().any(|x| x.contains("kvm")));
        c.tcg_thread = TcgThread::Single;
        let a = c.args();
        let pair = |k: &str| a.iter().position(|x| x == k).map(|i| a[i + 1].as_str());
        assert_eq!(pair("-accel"), Some("tcg,thread=single"));
    }

    #[test]
    fn collects_results_problems_and_done() {
        let dir = tempfile::tempdir().unwrap();
        let q = fake_qemu(
            dir.path(),
            r#"printf '\033c\033[2JSeaBIOS\r\n'
echo "[ 1.0] Linux version 6.1.0"
echo KPATCH-RS-BOOTED
echo "KPATCH-RS-RESULT a ok fine"
echo "[ 2.0] WARNING: CPU: 0 PID: 1 at x.c:1 f+0x0/0x1"
echo "[ 2.0] Call Trace:"
echo "KPATCH-RS-RESULT b fail rc=1 nope"
echo KPATCH-RS-DONE
echo "qemu says bye" >&2
exit 0"#,
        );
        let mut c = cfg(q, 10_000);
        c.log_file = Some(dir.path().join("console.log"));
        let run = boot(&c).unwrap();
        assert_eq!(run.lines[0], "SeaBIOS");
        assert!(run.done);
        assert!(run.booted_after.is_some());
        assert!(run.result("a").unwrap().ok);
        assert_eq!(run.failed().len(), 1);
        let kinds: Vec<_> = run.problems.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, [ProblemKind::Warning, ProblemKind::CallTrace]);
        assert_eq!(run.lines[run.problems[0].line_no], run.problems[0].line);
        assert_eq!(run.stderr.trim(), "qemu says bye");
        assert!(run.exit_status.unwrap().success());
        let log = std::fs::read_to_string(dir.path().join("console.log")).unwrap();
        assert!(log.contains("KPATCH-RS-DONE"));
    }

    #[test]
    fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        // a grandchild that would outlive a plain kill of the direct child
        let q = fake_qemu(
            dir.path(),
            &format!(
                "sleep 300 &\necho $! > {}\necho started\nwait",
                pidfile.display()
            ),
        );
        let t0 = Instant::now();
        let err = boot(&cfg(q, 700)).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(10));
        match err {
            GuestError::Timeout { run, tail, .. } => {
                assert_eq!(run.lines, ["started"]);
                assert!(tail.contains("started"));
                assert!(run.exit_status.is_none());
            }
            e => panic!("{e}"),
        }
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // killed, and reaped by init or turned zombie: /proc/<pid>/stat is gone or says Z
        std::thread::sleep(Duration::from_millis(200));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "grandchild still alive: {stat}"
        );
    }

    #[test]
    fn with_reboots_allowed_a_panic_ends_the_run() {
        let dir = tempfile::tempdir().unwrap();
        // A guest that panics and would then reboot forever.
        let q = fake_qemu(
            dir.path(),
            "echo '[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs'\nsleep 300",
        );
        let mut c = cfg(q, 60_000);
        c.allow_reboot = true;
        assert!(!c.args().contains(&"-no-reboot".to_string()));
        let t0 = Instant::now();
        let run = boot(&c).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        assert_eq!(run.problems[0].kind, ProblemKind::Panic);
        assert!(!run.done);
    }

    #[test]
    fn qemu_failure_without_output_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let q = fake_qemu(dir.path(), "echo 'qemu: could not load kernel' >&2; exit 1");
        let err = boot(&cfg(q, 10_000)).unwrap_err().to_string();
        assert!(err.contains("could not load kernel"), "{err}");
        let missing = cfg(dir.path().join("no-such-qemu"), 1000);
        assert!(matches!(boot(&missing), Err(GuestError::Spawn { .. })));
    }
}
