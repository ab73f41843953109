//! Proving a livepatch module in a guest: boot the exact target kernel under QEMU, load the
//! module, check that the livepatch core patched every function, run the user's commands with
//! the kernel unpatched, patched and unpatched again, then disable and unload it.

use kpatch_guest::{Guest, GuestRun, TestScript};
use std::path::Path;
use std::time::Duration;

/// What to prove.
pub struct Verification<'a> {
    pub module: &'a Path,
    /// The kernel's module name (`livepatch_fix`), also its /sys/kernel/livepatch directory.
    pub module_name: &'a str,
    /// `(object, function, sympos)` of every patched function.
    pub functions: &'a [(String, String, u64)],
    /// Loadable modules the patch targets, loaded before it.
    pub target_modules: &'a [String],
    /// Shell commands whose output is shown unpatched, patched and unpatched again.
    pub commands: &'a [String],
}

pub struct Verified {
    pub run: GuestRun,
    /// For each command: output before, patched, after unload.
    pub outputs: Vec<[String; 3]>,
}

const PHASES: [&str; 3] = ["before", "patched", "after"];

/// Appends the proof of `v` to the guest script `t`, its check names starting with `prefix`.
/// Each transition may take `transition_timeout` seconds.
pub fn script(
    t: &mut TestScript,
    v: &Verification,
    module_path: &str,
    prefix: &str,
    transition_timeout: u32,
) {
    let name = v.module_name;
    let sys = format!("/sys/kernel/livepatch/{name}");
    let run_cmds = |t: &mut TestScript, phase: &str| {
        for (i, c) in v.commands.iter().enumerate() {
            t.shell(&format!(
                "( {c} ) 2>&1 | while IFS= read -r l; do echo \"KPATCH-RS-OUT {phase} {i} $l\"; done"
            ));
        }
    };
    run_cmds(t, PHASES[0]);
    t.check(&format!("{prefix}load"), &format!("insmod {module_path}"));
    t.check_eventually(
        &format!("{prefix}transition-complete"),
        &format!("[ \"$(cat {sys}/transition 2>/dev/null)\" = 0 ]"),
        transition_timeout,
    );
    t.check(
        &format!("{prefix}enabled"),
        &format!("[ \"$(cat {sys}/enabled)\" = 1 ]"),
    );
    for (obj, func, pos) in v.functions {
        let obj = kpatch_common::canonical_module_name(obj);
        // sysfs names a unique symbol's position 1 (the core's old_sympos 0 means "the only one").
        let pos = (*pos).max(1);
        t.check(
            &format!("{prefix}patched-{obj}-{func}"),
            &format!("[ -d '{sys}/{obj}/{func},{pos}' ]"),
        );
    }
    run_cmds(t, PHASES[1]);
    t.check(
        &format!("{prefix}disable"),
        &format!("echo 0 > {sys}/enabled"),
    );
    t.check_eventually(
        &format!("{prefix}unpatched"),
        &format!("[ ! -d {sys} ]"),
        transition_timeout,
    );
    t.check(&format!("{prefix}unload"), &format!("rmmod {name}"));
    t.check(
        &format!("{prefix}gone"),
        &format!("! grep -q '^{name} ' /proc/modules"),
    );
    run_cmds(t, PHASES[2]);
    t.check(
        &format!("{prefix}dmesg-clean"),
        "! dmesg | grep -E 'WARNING:|Call Trace|BUG:|Oops'",
    );
}

/// Boots `guest` with the module and runs the proof.
pub fn verify(
    mut guest: Guest,
    modules_dir: Option<&Path>,
    v: &Verification,
) -> anyhow::Result<Verified> {
    guest.config.timeout = Duration::from_secs(600);
    let mut t = TestScript::new();
    for m in v.target_modules {
        let dir = modules_dir.ok_or_else(|| {
            anyhow::anyhow!("module {m} is patched but the target's modules are unknown")
        })?;
        // Dependencies first, then the module itself.
        for path in guest.initramfs.add_kernel_module(dir, m)? {
            t.check(
                &format!("insmod-{}", path.rsplit('/').next().unwrap_or(&path)),
                &format!("insmod {path}"),
            );
        }
    }
    let path = guest.initramfs.add_module(v.module)?;
    script(&mut t, v, &path, "", 120);
    let run = guest.run(&t)?;
    let mut outputs = vec![[String::new(), String::new(), String::new()]; v.commands.len()];
    for line in &run.lines {
        let Some(rest) = line.strip_prefix("KPATCH-RS-OUT ") else {
            continue;
        };
        let mut f = rest.splitn(3, ' ');
        let (Some(phase), Some(i), text) = (f.next(), f.next(), f.next().unwrap_or("")) else {
            continue;
        };
        let (Some(p), Ok(i)) = (PHASES.iter().position(|x| *x == phase), i.parse::<usize>()) else {
            continue;
        };
        if let Some(o) = outputs.get_mut(i) {
            if !o[p].is_empty() {
                o[p].push('\n');
            }
            o[p].push_str(text);
        }
    }
    Ok(Verified { run, outputs })
}

/// A check named `label` that loads the modules at the guest paths `paths` in order, each
/// unless it is loaded already (a dependency another target pulled in, or a target shared by
/// two patches), and then requires `name` to be loaded.
pub fn ensure_loaded(t: &mut TestScript, label: &str, name: &str, paths: &[String]) {
    let mut body = String::new();
    for p in paths {
        let m = kpatch_common::names::module_name_from_path(Path::new(p)).unwrap_or_default();
        body.push_str(&format!(
            "grep -q '^{m} ' /proc/modules || insmod {p} || return 1\n"
        ));
    }
    body.push_str(&format!(
        "grep -q '^{} ' /proc/modules",
        kpatch_common::canonical_module_name(name)
    ));
    t.check(label, &body);
}
