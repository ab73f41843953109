//! The seam through which external programs (make, patch, tar, gcc, sign-file) run: a
//! [`Cmd`] is handed to a [`Runner`]; [`SystemRunner`] runs it, tests substitute a fake.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// One command line to run: program, arguments, working directory and environment changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmd {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub dir: Option<PathBuf>,
    /// Variables set for the command.
    pub env: Vec<(OsString, OsString)>,
    /// Variables removed from the command's environment.
    pub env_remove: Vec<OsString>,
}

impl Cmd {
    pub fn new(program: impl Into<OsString>) -> Self {
        Cmd {
            program: program.into(),
            ..Default::default()
        }
    }
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }
    pub fn dir(mut self, d: impl Into<PathBuf>) -> Self {
        self.dir = Some(d.into());
        self
    }
    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn env_remove(mut self, k: impl Into<OsString>) -> Self {
        self.env_remove.push(k.into());
        self
    }
    /// The arguments as strings (lossy), for tests and messages.
    pub fn arg_strings(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.dir {
            write!(f, "(cd {}) ", d.display())?;
        }
        write!(f, "{}", self.program.to_string_lossy())?;
        for a in &self.args {
            let a = a.to_string_lossy();
            if a.contains(' ') || a.is_empty() {
                write!(f, " '{a}'")?;
            } else {
                write!(f, " {a}")?;
            }
        }
        Ok(())
    }
}

/// What a finished command left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdOutput {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    /// Exit code 0.
    pub fn ok() -> Self {
        CmdOutput {
            code: Some(0),
            ..Default::default()
        }
    }
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    /// `exit status N`, or `killed by a signal`.
    pub fn status(&self) -> String {
        match self.code {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".into(),
        }
    }
    /// stdout and stderr together, for error messages.
    pub fn combined(&self) -> String {
        let mut s = self.stdout.clone();
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str(&self.stderr);
        s.trim_end().to_string()
    }
}

/// A command that could not run, or failed.
#[derive(Debug)]
pub enum RunError {
    /// The program could not be started.
    Spawn {
        command: String,
        source: std::io::Error,
    },
    /// It ran and did not exit 0 ([`Runner::run_ok`]).
    Failed {
        command: String,
        status: String,
        output: String,
    },
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Spawn { command, source } => write!(f, "cannot run `{command}`: {source}"),
            RunError::Failed {
                command,
                status,
                output,
            } => write!(f, "`{command}` failed ({status}):\n{output}"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Spawn { source, .. } => Some(source),
            RunError::Failed { .. } => None,
        }
    }
}

/// How many lines of output a [`RunError::Failed`] keeps.
pub const FAILED_OUTPUT_LINES: usize = 60;

/// Runs external commands. Tests substitute a fake.
pub trait Runner: Send + Sync {
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError>;

    /// Runs `cmd` and turns a non-zero exit into [`RunError::Failed`] with the last
    /// [`FAILED_OUTPUT_LINES`] lines of its output.
    fn run_ok(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        let out = self.run(cmd)?;
        if out.success() {
            Ok(out)
        } else {
            Err(RunError::Failed {
                command: cmd.to_string(),
                status: out.status(),
                output: tail(&out.combined(), FAILED_OUTPUT_LINES),
            })
        }
    }

    /// [`run`](Self::run), calling `line` with each line the command prints on stdout as it
    /// prints it (progress). The default runs the command to its end first.
    fn run_lines(&self, cmd: &Cmd, line: &mut dyn FnMut(&str)) -> Result<CmdOutput, RunError> {
        let out = self.run(cmd)?;
        out.stdout.lines().for_each(&mut *line);
        Ok(out)
    }
}

/// Runs commands on the host with stdin closed and output captured.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

fn command(cmd: &Cmd) -> Command {
    let mut c = Command::new(&cmd.program);
    c.args(&cmd.args).stdin(Stdio::null());
    if let Some(d) = &cmd.dir {
        c.current_dir(d);
    }
    for k in &cmd.env_remove {
        c.env_remove(k);
    }
    for (k, v) in &cmd.env {
        c.env(k, v);
    }
    c
}

impl Runner for SystemRunner {
    fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        let out = command(cmd).output().map_err(|source| RunError::Spawn {
            command: cmd.to_string(),
            source,
        })?;
        Ok(CmdOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn run_lines(&self, cmd: &Cmd, line: &mut dyn FnMut(&str)) -> Result<CmdOutput, RunError> {
        use std::io::{BufRead, Read};
        let spawn_err = |source| RunError::Spawn {
            command: cmd.to_string(),
            source,
        };
        let mut child = command(cmd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        let mut err_pipe = child.stderr.take().expect("stderr is piped");
        // stderr is drained beside stdout, so that neither pipe fills up and blocks the child.
        let stderr = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err_pipe.read_to_end(&mut buf);
            buf
        });
        let mut stdout = String::new();
        let reader = std::io::BufReader::new(child.stdout.take().expect("stdout is piped"));
        for l in reader.split(b'\n') {
            let l = String::from_utf8_lossy(&l.map_err(spawn_err)?).into_owned();
            line(&l);
            stdout.push_str(&l);
            stdout.push('\n');
        }
        let status = child.wait().map_err(spawn_err)?;
        let stderr = stderr.join().unwrap_or_default();
        Ok(CmdOutput {
            code: status.code(),
            stdout,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_and_runs_commands() {
        let cmd = Cmd::new("sh")
            .arg("-c")
            .arg("echo out; echo err >&2; [ -z \"$HOME\" ] && exit 3")
            .env_remove("HOME");
        assert_eq!(
            cmd.to_string(),
            "sh -c 'echo out; echo err >&2; [ -z \"$HOME\" ] && exit 3'"
        );
        let out = SystemRunner.run(&cmd).unwrap();
        assert_eq!((out.code, out.combined().as_str()), (Some(3), "out\nerr"));
        let e = SystemRunner.run_ok(&cmd).unwrap_err().to_string();
        assert!(
            e.starts_with("`sh -c") && e.contains("failed (exit status 3):\nout\nerr"),
            "{e}"
        );
        let e = SystemRunner
            .run(&Cmd::new("/nonexistent/tool"))
            .unwrap_err();
        assert!(matches!(e, RunError::Spawn { .. }), "{e}");
        assert_eq!(
            SystemRunner.run_ok(&Cmd::new("true").dir("/")).unwrap(),
            CmdOutput::ok()
        );
    }

    #[test]
    fn lines_are_seen_as_they_come_and_output_is_kept() {
        let cmd = Cmd::new("sh")
            .arg("-c")
            .arg("echo one; echo two; echo e >&2; exit 4");
        let mut seen = Vec::new();
        let out = SystemRunner
            .run_lines(&cmd, &mut |l| seen.push(l.to_string()))
            .unwrap();
        assert_eq!(seen, vec!["one", "two"]);
        assert_eq!(out, SystemRunner.run(&cmd).unwrap());
        assert_eq!(out.code, Some(4));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
