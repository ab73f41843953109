//! Reading the guest's serial console: sentinel lines printed by the test script and kernel
//! problems printed by the kernel.
//!
//! Sentinels (printed by [`crate::TestScript`]):
//! - `KPATCH-RS-RESULT <name> <ok|fail> <detail...>`: one named check;
//! - `KPATCH-RS-DONE`: the script reached its end (it then runs `poweroff -f`).

/// Prefix of a check result line.
pub const RESULT: &str = "KPATCH-RS-RESULT";
/// The line the script prints when it has run every check.
pub const DONE: &str = "KPATCH-RS-DONE";

/// One named check the guest script reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// A kind of kernel trouble seen on the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// `Kernel panic - not syncing`
    Panic,
    /// `Oops:` or `general protection fault`
    Oops,
    /// `WARNING:` (a WARN() splat)
    Warning,
    /// `BUG:` (e.g. scheduling while atomic, a NULL dereference)
    Bug,
    /// `Call Trace:`
    CallTrace,
}

/// A problem and the console line (0-based index into the log) that showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub line_no: usize,
    pub line: String,
}

/// Makes one raw console line printable: lossy UTF-8, no `\r`, no ANSI escape sequences
/// (SeaBIOS clears the screen with them).
pub fn clean_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // parameters and intermediates, then one final byte in @..~
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// The check result on `line`, if it carries one (kernel output may precede it on the line).
pub fn parse_result(line: &str) -> Option<CheckResult> {
    let at = line.find(RESULT)?;
    let rest = line[at + RESULT.len()..].strip_prefix(' ')?;
    let mut parts = rest.splitn(3, ' ');
    let name = parts.next().filter(|n| !n.is_empty())?.to_string();
    let ok = match parts.next()? {
        "ok" => true,
        "fail" => false,
        _ => return None,
    };
    let detail = parts.next().unwrap_or("").trim().to_string();
    Some(CheckResult { name, ok, detail })
}

/// The kernel problem `line` reports, if any. Sentinel lines are never problems (a check's
/// detail may quote the kernel).
pub fn detect_problem(line: &str) -> Option<ProblemKind> {
    if line.contains(RESULT) || line.contains(DONE) {
        return None;
    }
    if line.contains("Kernel panic - not syncing") {
        Some(ProblemKind::Panic)
    } else if line.contains("Oops:") || line.contains("general protection fault") {
        Some(ProblemKind::Oops)
    } else if line.contains("WARNING:") {
        Some(ProblemKind::Warning)
    } else if line.contains("BUG:") {
        Some(ProblemKind::Bug)
    } else if line.contains("Call Trace:") {
        Some(ProblemKind::CallTrace)
    } else {
        None
    }
}

/// True when `line` is the end sentinel.
pub fn is_done(line: &str) -> bool {
    line.trim_end().ends_with(DONE) && !line.contains(RESULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_escapes_and_carriage_returns() {
        assert_eq!(
            clean_line(b"\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16)\r"),
            "SeaBIOS (version 1.16)"
        );
        assert_eq!(clean_line(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn parses_results() {
        assert_eq!(
            parse_result("KPATCH-RS-RESULT cmdline ok patched by kpatch-rs"),
            Some(CheckResult {
                name: "cmdline".into(),
                ok: true,
                detail: "patched by kpatch-rs".into()
            })
        );
        assert_eq!(
            parse_result("[    2.1] foo KPATCH-RS-RESULT enabled fail rc=1"),
            Some(CheckResult {
                name: "enabled".into(),
                ok: false,
                detail: "rc=1".into()
            })
        );
        assert_eq!(parse_result("KPATCH-RS-RESULT x ok").unwrap().detail, "");
        assert_eq!(parse_result("KPATCH-RS-RESULT x maybe"), None);
        assert_eq!(parse_result("KPATCH-RS-RESULTx ok"), None);
        assert_eq!(parse_result("nothing here"), None);
    }

    #[test]
    fn detects_kernel_problems() {
        let cases = [
            (
                "[    5.1] Kernel panic - not syncing: Attempted to kill init!",
                Some(ProblemKind::Panic),
            ),
            (
                "[    3.0] Oops: 0002 [#1] PREEMPT SMP NOPTI",
                Some(ProblemKind::Oops),
            ),
            (
                "[    3.0] general protection fault, probably for non-canonical address",
                Some(ProblemKind::Oops),
            ),
            (
                "[    2.9] WARNING: CPU: 0 PID: 1 at kernel/livepatch/core.c:1 klp_x+0x1/0x2",
                Some(ProblemKind::Warning),
            ),
            (
                "[    2.9] BUG: kernel NULL pointer dereference, address: 0000000000000000",
                Some(ProblemKind::Bug),
            ),
            ("[    2.9] Call Trace:", Some(ProblemKind::CallTrace)),
            (
                "[    2.9] livepatch: enabling patch 'livepatch_sample'",
                None,
            ),
            ("KPATCH-RS-RESULT dmesg fail WARNING: seen", None),
        ];
        for (line, want) in cases {
            assert_eq!(detect_problem(line), want, "{line}");
        }
    }

    #[test]
    fn done_sentinel() {
        assert!(is_done("KPATCH-RS-DONE"));
        assert!(is_done("[ 1.0] x KPATCH-RS-DONE\t"));
        assert!(!is_done("KPATCH-RS-RESULT KPATCH-RS-DONE ok"));
        assert!(!is_done("KPATCH-RS-DONE-NOT"));
    }
}
