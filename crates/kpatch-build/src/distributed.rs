//! Handing the object compiles to distcc or icecream, with the target's exact compiler.
//!
//! The compiler keeps its name (`CC=gcc-12`, so kbuild's command lines and the prepared tree's
//! state do not change): a directory holding `gcc-12` as a link to `distcc` (or `icecc`) goes
//! first on make's `PATH`, and the tool, called by that name, runs the real `gcc-12` found
//! further down the `PATH` locally and on the helpers. Each distcc helper is then checked: a
//! probe compiled on it alone (no local fallback) must carry the target compiler in its
//! `.comment`, or the build stops with the compiler mismatch, naming the host.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

use crate::compiler;
use crate::error::{io_err, BuildError, Result};
use crate::exec::{Cmd, Runner};

/// Which tool, and its helpers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tool {
    /// distcc; `Some(hosts)`: `DISTCC_HOSTS` for this build, else distcc's own configuration
    /// (`DISTCC_HOSTS`, `~/.distcc/hosts`, `/etc/distcc/hosts`).
    Distcc(Option<String>),
    /// icecream, with its own configuration (scheduler, `ICECC_*` variables).
    Icecc,
}

/// What make needs to compile through the tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distributed {
    pub tool: Tool,
    /// The directory that masquerades as the compiler.
    pub masquerade: PathBuf,
    /// Parallel compiles to ask make for.
    pub jobs: usize,
}

impl Distributed {
    /// The environment for make: the masquerade first on `PATH`, and the hosts.
    pub fn env(&self) -> Vec<(OsString, OsString)> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![self.masquerade.clone()];
        dirs.extend(std::env::split_paths(&path));
        let mut env = vec![(
            OsString::from("PATH"),
            std::env::join_paths(dirs).unwrap_or(path),
        )];
        if let Tool::Distcc(Some(hosts)) = &self.tool {
            env.push(("DISTCC_HOSTS".into(), hosts.into()));
        }
        env
    }
}

fn program(tool: &Tool) -> &'static str {
    match tool {
        Tool::Distcc(_) => "distcc",
        Tool::Icecc => "icecc",
    }
}

/// Sets up `tool` for the compiler `cc` in `dir` (created): the masquerade, the number of
/// jobs (distcc's slots; icecream: `fallback_jobs` × 4), and the check of every distcc host
/// against `target_cc` (the target's `CONFIG_CC_VERSION_TEXT`).
pub fn set_up(
    runner: &dyn Runner,
    tool: Tool,
    cc: &str,
    target_cc: &str,
    dir: &Path,
    fallback_jobs: usize,
) -> Result<Distributed> {
    let prog = program(&tool);
    let real = find_on_path(prog).ok_or_else(|| BuildError::Spawn {
        command: prog.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "not on PATH"),
    })?;
    let masquerade = dir.join("masquerade");
    std::fs::create_dir_all(&masquerade).map_err(io_err(&masquerade))?;
    let link = masquerade.join(cc);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&real, &link).map_err(io_err(&link))?;
    let mut d = Distributed {
        tool,
        masquerade,
        jobs: fallback_jobs.max(1) * 4,
    };
    if let Tool::Distcc(hosts) = &d.tool {
        let mut cmd = Cmd::new("distcc").arg("-j");
        if let Some(h) = hosts {
            cmd = cmd.env("DISTCC_HOSTS", h);
        }
        let out = runner.run_ok(&cmd)?;
        if let Ok(n) = out.stdout.trim().parse::<usize>() {
            d.jobs = n.max(1);
        }
        let hosts = match hosts {
            Some(h) => h.clone(),
            None => runner
                .run_ok(&Cmd::new("distcc").arg("--show-hosts"))?
                .stdout
                .lines()
                .collect::<Vec<_>>()
                .join(" "),
        };
        for host in helper_hosts(&hosts) {
            check_host(runner, &d, cc, target_cc, dir, &host)?;
        }
    }
    Ok(d)
}

/// The remote helpers of a `DISTCC_HOSTS` list: every entry but options and `localhost`.
pub fn helper_hosts(hosts: &str) -> Vec<String> {
    hosts
        .split_whitespace()
        .filter(|h| !h.starts_with('-') && !h.starts_with("localhost"))
        .map(String::from)
        .collect()
}

/// Compiles a probe on `host` alone and checks the compiler it names.
fn check_host(
    runner: &dyn Runner,
    d: &Distributed,
    cc: &str,
    target_cc: &str,
    dir: &Path,
    host: &str,
) -> Result<()> {
    let src = dir.join("probe.c");
    let obj = dir.join("probe.o");
    std::fs::write(&src, "int kpatch_rs_probe(int x) { return x + 1; }\n").map_err(io_err(&src))?;
    let _ = std::fs::remove_file(&obj);
    let mut cmd = Cmd::new(cc)
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .env("DISTCC_FALLBACK", "0");
    for (k, v) in d.env() {
        cmd = cmd.env(k, v);
    }
    cmd = cmd.env("DISTCC_HOSTS", host);
    runner.run_ok(&cmd)?;
    let found = object_compiler(&obj)?;
    if compiler::identity(&found) != compiler::identity(target_cc) {
        return Err(BuildError::CompilerMismatch {
            target: target_cc.to_string(),
            cc: format!("{cc} on distcc host {host}"),
            found,
        });
    }
    Ok(())
}

/// The `GCC: (...)` string of an object's `.comment`.
fn object_compiler(obj: &Path) -> Result<String> {
    let data = std::fs::read(obj).map_err(io_err(obj))?;
    let bad = |reason: String| BuildError::Vmlinux {
        path: obj.to_path_buf(),
        reason,
    };
    let file = object::File::parse(&*data).map_err(|e| bad(e.to_string()))?;
    let comment = file
        .section_by_name(".comment")
        .ok_or_else(|| bad("has no .comment section naming its compiler".into()))?;
    let bytes = comment.data().map_err(|e| bad(e.to_string()))?;
    bytes
        .split(|&b| b == 0)
        .filter_map(|s| std::str::from_utf8(s).ok())
        .find(|s| s.starts_with("GCC:"))
        .map(String::from)
        .ok_or_else(|| bad("its .comment names no GCC".into()))
}

fn find_on_path(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_are_the_hosts_without_options_or_localhost() {
        assert_eq!(
            helper_hosts("--randomize localhost/2 127.0.0.1:3632/4,lzo build1"),
            vec!["127.0.0.1:3632/4,lzo", "build1"]
        );
    }

    #[test]
    fn make_finds_the_masquerade_first() {
        let d = Distributed {
            tool: Tool::Distcc(Some("127.0.0.1/2".into())),
            masquerade: "/w/masquerade".into(),
            jobs: 2,
        };
        let env = d.env();
        let path = env[0].1.to_string_lossy().into_owned();
        assert!(path.starts_with("/w/masquerade:"), "{path}");
        assert_eq!(env[1], ("DISTCC_HOSTS".into(), "127.0.0.1/2".into()));
        let ice = Distributed {
            tool: Tool::Icecc,
            ..d
        };
        assert_eq!(ice.env().len(), 1);
    }
}
