//! `kpatch-rs status`: the running kernel's patches for a person or a monitoring script (the
//! verdict is the exit status).

use kpatch_kernel::status::{status, Status, STATUS_EXIT_CODES_HELP};
use kpatch_kernel::store::{Store, DEFAULT_STATE_DIR};
use kpatch_kernel::{Kernel, RealKernel};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(after_help = STATUS_EXIT_CODES_HELP)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Directory of installed patches.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let code = run_with(&RealKernel::new(), &args, &mut std::io::stdout())?;
    Ok(ExitCode::from(code))
}

pub fn run_with(k: &dyn Kernel, args: &Args, out: &mut dyn std::io::Write) -> anyhow::Result<u8> {
    let s = status(k, &Store::new(&args.state_dir))?;
    super::emit(out, args.json, &s, render)?;
    Ok(s.exit_code)
}

pub fn render(s: &Status) -> String {
    let mut t = format!(
        "kernel: {}{}\nstate: {}\n",
        s.kernel,
        if s.livepatch {
            ""
        } else {
            " (no livepatch support)"
        },
        s.state.describe()
    );
    let level: Vec<String> = s
        .patch_level
        .iter()
        .map(|l| match l.version {
            Some(v) => format!("{} {v}", l.name),
            None => l.name.clone(),
        })
        .collect();
    t.push_str(&format!(
        "effective patch level: {}\n",
        if level.is_empty() {
            "none".into()
        } else {
            level.join(", ")
        }
    ));
    for p in &s.pending {
        t.push_str(&format!("  pending: {p}\n"));
    }
    if let Some(tr) = &s.transition {
        t.push_str(&format!(
            "transition in progress: {tr} (see `kpatch-rs list`)\n"
        ));
    }
    t.push_str("\npatches:\n");
    if s.patches.is_empty() {
        t.push_str("  (none)\n");
    }
    for p in &s.patches {
        let loaded = p.loaded.unwrap_or("not loaded");
        let boot = if p.installed.is_some() {
            "installed for boot"
        } else {
            "not installed for boot"
        };
        t.push_str(&format!("  {} [{loaded}, {boot}]\n", p.module));
        if let Some(n) = &p.name {
            let v = p
                .version
                .map(|v| format!(" version {v}"))
                .unwrap_or_default();
            t.push_str(&format!("    patch: {n}{v}\n"));
        }
        if let Some(d) = &p.description {
            t.push_str(&format!("    description: {d}\n"));
        }
        if !p.cves.is_empty() {
            t.push_str(&format!("    CVEs: {}\n", p.cves.join(", ")));
        }
        if let Some(sha) = &p.patch_sha256 {
            t.push_str(&format!("    source sha256: {sha}\n"));
        }
    }
    if !s.other_kernels.is_empty() {
        t.push_str("\ninstalled for other kernels:\n");
        for i in &s.other_kernels {
            t.push_str(&format!("  {} ({})\n", i.name, i.kernel));
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpatch_common::modinfo::{MODINFO_CVES, MODINFO_PATCH_NAME, MODINFO_PATCH_VERSION};
    use kpatch_kernel::fake::{FakeKernel, FakeTask};
    use kpatch_kernel::modinfo::{build_test_module, ModuleFile};
    use kpatch_kernel::ops::{self, Options};
    use kpatch_kernel::watch::Recorder;

    #[test]
    fn text_and_json_and_the_exit_status() {
        let rel = "6.1.0-57-amd64";
        let k = FakeKernel::new(rel).unwrap();
        k.add_task(FakeTask::user(1, "init")).unwrap();
        let state = k.path("/var/lib/kpatch-rs");
        let args = Args {
            json: false,
            state_dir: state.clone(),
        };
        let mut out = Vec::new();
        assert_eq!(run_with(&k, &args, &mut out).unwrap(), 3);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("state: no patch applied\neffective patch level: none\n"));
        let f = k.path("/src/livepatch_fix_v2.ko");
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        let vermagic = format!("{rel} SMP ");
        std::fs::write(
            &f,
            build_test_module(&[
                ("name", "livepatch_fix_v2"),
                ("livepatch", "Y"),
                ("vermagic", &vermagic),
                ("description", "proc: cumulative"),
                (MODINFO_PATCH_NAME, "fix"),
                (MODINFO_PATCH_VERSION, "2"),
                (MODINFO_CVES, "CVE-2099-1001,CVE-2099-2001"),
            ]),
        )
        .unwrap();
        let m = ModuleFile::read(&f).unwrap();
        Store::new(&state).install(&m, rel).unwrap();
        let mut out = Vec::new();
        assert_eq!(run_with(&k, &args, &mut out).unwrap(), 2);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("state: pending\n"), "{text}");
        assert!(
            text.contains("  pending: livepatch_fix_v2 is installed for boot but not loaded\n"),
            "{text}"
        );
        ops::load(&k, &m, &Options::default(), &mut Recorder::default()).unwrap();
        let mut out = Vec::new();
        assert_eq!(run_with(&k, &args, &mut out).unwrap(), 0);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "state: up to date\neffective patch level: fix 2\n\npatches:\n  livepatch_fix_v2 [enabled, installed for boot]\n    patch: fix version 2\n    description: proc: cumulative\n    CVEs: CVE-2099-1001, CVE-2099-2001\n"
            ),
            "{text}"
        );
        let json = Args { json: true, ..args };
        let mut out = Vec::new();
        assert_eq!(run_with(&k, &json, &mut out).unwrap(), 0);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["state"], "up-to-date");
        assert_eq!(v["exit_code"], 0);
        assert_eq!(v["patch_level"][0]["version"], 2);
        assert_eq!(v["patches"][0]["cves"][1], "CVE-2099-2001");
    }
}
