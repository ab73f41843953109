//! The guest's `/init`: a busybox shell script that runs a batch of named checks in one boot,
//! reports each with a sentinel line, and powers the guest off.

use crate::console::{DONE, RESULT};

#[derive(Debug, Clone)]
enum Step {
    Shell(String),
    Check { name: String, body: String },
}

/// A batch of steps run in order by the guest's `/init`.
///
/// - [`shell`](Self::shell): commands run as-is; their output goes to the console.
/// - [`check`](Self::check): a named check whose body runs in a subshell with stdout and
///   stderr captured; it passes when the body's exit status is 0. It prints
///   `KPATCH-RS-RESULT <name> ok <output>` or `KPATCH-RS-RESULT <name> fail rc=<n> <output>`
///   (output joined on one line, cut to 300 characters). Side effects on the kernel (insmod,
///   writes to sysfs) persist; shell variables and `cd` do not.
///
/// After the last step the script prints `KPATCH-RS-DONE` and runs `poweroff -f`.
#[derive(Debug, Clone, Default)]
pub struct TestScript {
    steps: Vec<Step>,
}

/// A check name as it appears in the sentinel: whitespace and shell-special characters become `_`.
pub fn sanitize_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-:/".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

impl TestScript {
    pub fn new() -> Self {
        Self::default()
    }

    /// Shell commands run as they are.
    pub fn shell(&mut self, commands: &str) -> &mut Self {
        self.steps.push(Step::Shell(commands.to_string()));
        self
    }

    /// A named check: `body` is shell; it passes when its exit status is 0.
    pub fn check(&mut self, name: &str, body: &str) -> &mut Self {
        self.steps.push(Step::Check {
            name: sanitize_name(name),
            body: body.to_string(),
        });
        self
    }

    /// A named check that polls the shell condition `condition` every 0.1 s until it holds,
    /// failing after `seconds`.
    pub fn check_eventually(&mut self, name: &str, condition: &str, seconds: u32) -> &mut Self {
        let tries = seconds.max(1) * 10;
        let body = format!(
            "krs_i=0\nuntil {condition}; do\n  krs_i=$((krs_i+1))\n  if [ $krs_i -ge {tries} ]; then echo \"still false after {seconds}s: {}\"; return 1; fi\n  sleep 0.1\ndone",
            condition.replace('"', "'")
        );
        self.check(name, &body)
    }

    /// Sends the guest file `guest_path` to the host as `name`; read it back with
    /// [`GuestRun::file`](crate::GuestRun::file). Fine for a few MB (gzip + base64 over the
    /// serial console).
    pub fn send_file(&mut self, name: &str, guest_path: &str) -> &mut Self {
        self.shell(&crate::transfer::emit_command(
            &sanitize_name(name),
            guest_path,
        ))
    }

    /// The names of the checks, in order.
    pub fn check_names(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Check { name, .. } => Some(name.as_str()),
                Step::Shell(_) => None,
            })
            .collect()
    }

    /// The `/init` script text: mounts, the steps, `KPATCH-RS-DONE`, `poweroff -f`.
    pub fn render(&self) -> String {
        format!(
            "{PRELUDE}{}echo {DONE}\nsync\npoweroff -f\n",
            self.render_steps()
        )
    }

    /// The steps alone (the check runner's function, then each step), for a script of another
    /// system to source or embed: no mounts, no end sentinel, no power-off.
    pub fn render_steps(&self) -> String {
        let mut s = format!(
            r#"krs_run() {{
  krs_name=$1; shift
  krs_out=$("$@" 2>&1 </dev/null)
  krs_rc=$?
  krs_detail=$(printf '%s' "$krs_out" | tr '\n\r' '  ' | cut -c1-300)
  if [ $krs_rc -eq 0 ]; then
    echo "{RESULT} $krs_name ok $krs_detail"
  else
    echo "{RESULT} $krs_name fail rc=$krs_rc $krs_detail"
  fi
}}
"#
        );
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                Step::Shell(cmds) => {
                    s.push_str(cmds);
                    s.push('\n');
                }
                Step::Check { name, body } => {
                    s.push_str(&format!(
                        "krs_check_{i}() {{\n{body}\n}}\nkrs_run {name} krs_check_{i}\n"
                    ));
                }
            }
        }
        s
    }
}

const PRELUDE: &str = r#"#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
echo KPATCH-RS-BOOTED
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::{is_done, parse_result};

    /// Runs the rendered script with the host's sh, with mount/poweroff stubbed out.
    fn run_on_host(script: &TestScript) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        for stub in ["mount", "poweroff", "sync"] {
            let p = dir.path().join(stub);
            std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let text = script.render().replace(
            "export PATH=/bin:/sbin:/usr/bin:/usr/sbin",
            &format!("export PATH={}:$PATH", dir.path().display()),
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(text)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn rendered_script_reports_each_check_and_done() {
        let mut t = TestScript::new();
        t.shell("touch /tmp/krs-never-mind 2>/dev/null; true");
        t.check("passes", "echo one; echo two");
        t.check("fails with space", "echo bad >&2; return 3");
        t.check_eventually("eventually", "[ -n \"$HOME$PATH\" ]", 1);
        t.check_eventually("never", "false", 1);
        let lines = run_on_host(&t);
        let results: Vec<_> = lines.iter().filter_map(|l| parse_result(l)).collect();
        assert_eq!(results.len(), 4, "{lines:?}");
        assert_eq!(
            (
                results[0].name.as_str(),
                results[0].ok,
                results[0].detail.as_str()
            ),
            ("passes", true, "one two")
        );
        assert_eq!(
            (
                results[1].name.as_str(),
                results[1].ok,
                results[1].detail.as_str()
            ),
            ("fails_with_space", false, "rc=3 bad")
        );
        assert!(results[2].ok);
        assert!(
            !results[3].ok && results[3].detail.contains("still false after 1s"),
            "{:?}",
            results[3]
        );
        assert!(is_done(lines.last().unwrap()), "{lines:?}");
        assert_eq!(
            t.check_names(),
            ["passes", "fails_with_space", "eventually", "never"]
        );
    }

    #[test]
    fn script_starts_with_shebang_and_ends_with_poweroff() {
        let r = TestScript::new().render();
        assert!(r.starts_with("#!/bin/sh\n"));
        assert!(r.trim_end().ends_with("poweroff -f"));
    }
}
