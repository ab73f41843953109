use kpatch_kernel::patches::{
    check_livepatch, is_enabled, loaded_patches, transition_patch, LoadedPatch,
};
use kpatch_kernel::report::{format_blockers, EXIT_CODES_HELP, EXIT_OK};
use kpatch_kernel::store::{Installed, Store, DEFAULT_STATE_DIR};
use kpatch_kernel::tasks::{find_blockers, Blocker};
use kpatch_kernel::Kernel;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Directory of installed patches.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Serialize)]
pub struct Transition {
    pub patch: String,
    /// 1: patching, 0: unpatching.
    pub target: i32,
    pub blockers: Vec<Blocker>,
}

#[derive(Serialize)]
pub struct Listing {
    pub running_kernel: String,
    /// Whether the running kernel has the livepatch core.
    pub livepatch: bool,
    /// Bottom of the stack first.
    pub loaded: Vec<LoadedPatch>,
    pub transition: Option<Transition>,
    /// Loads and unloads running now, or killed before they finished (the next load or unload
    /// undoes what those left).
    pub operations: Vec<kpatch_kernel::opjournal::Pending>,
    pub installed: Vec<Installed>,
    /// What a killed install or uninstall left in the install directory (never loaded; the
    /// next install or uninstall removes it).
    pub leftovers: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let k = super::this_kernel()?;
    let code = run_with(&*k, &args, &mut std::io::stdout())?;
    Ok(ExitCode::from(code))
}

pub fn gather(k: &dyn Kernel, state_dir: &std::path::Path) -> anyhow::Result<Listing> {
    let livepatch = check_livepatch(k).is_ok();
    let (loaded, transition) = if livepatch {
        let loaded = loaded_patches(k)?;
        let transition = match transition_patch(k)? {
            Some(patch) => {
                let target = i32::from(is_enabled(k, &patch).unwrap_or(true));
                Some(Transition {
                    blockers: find_blockers(k, target, true),
                    patch,
                    target,
                })
            }
            None => None,
        };
        (loaded, transition)
    } else {
        (Vec::new(), None)
    };
    let store = Store::new(state_dir);
    let installed = store.list()?;
    let mut kernels: Vec<&str> = installed.iter().map(|i| i.kernel.as_str()).collect();
    let release = k.release().unwrap_or_default();
    kernels.push(&release);
    kernels.sort_unstable();
    kernels.dedup();
    let mut leftovers = Vec::new();
    for kernel in kernels {
        leftovers.extend(store.leftovers(kernel)?);
    }
    Ok(Listing {
        running_kernel: release.clone(),
        livepatch,
        loaded,
        transition,
        operations: kpatch_kernel::opjournal::pending(k),
        installed,
        leftovers,
    })
}

pub fn render(l: &Listing) -> String {
    let mut s = String::from("Loaded patch modules:\n");
    if !l.livepatch {
        s.push_str("(the running kernel has no livepatch support)\n");
    } else if l.loaded.is_empty() {
        s.push_str("(none)\n");
    }
    for p in &l.loaded {
        let order = p
            .stack_order
            .map(|o| format!(" stack {o}"))
            .unwrap_or_default();
        s.push_str(&format!("{} [{}]{order}\n", p.name, p.state()));
        for o in &p.objects {
            let funcs: Vec<String> = o
                .functions
                .iter()
                .map(|(f, pos)| format!("{f},{pos}"))
                .collect();
            let state = if o.patched { "patched" } else { "not patched" };
            s.push_str(&format!("    {} [{state}]: {}\n", o.name, funcs.join(" ")));
        }
    }
    if let Some(t) = &l.transition {
        let verb = if t.target == 1 {
            "patching"
        } else {
            "unpatching"
        };
        s.push_str(&format!(
            "\nTransition in progress: {} ({verb}); tasks not yet switched: {}\n",
            t.patch,
            t.blockers.len()
        ));
        s.push_str(&format_blockers(&t.blockers));
    }
    for p in &l.operations {
        s.push_str(&format!("\n{}\n", p.describe()));
    }
    s.push_str("\nInstalled patch modules:\n");
    if l.installed.is_empty() {
        s.push_str("(none)\n");
    }
    for i in &l.installed {
        s.push_str(&format!("{} ({})\n", i.name, i.kernel));
    }
    if !l.leftovers.is_empty() {
        s.push_str(
            "\nLeft by an interrupted install or uninstall (never loaded; removed by the next one):\n",
        );
        for p in &l.leftovers {
            s.push_str(&format!("{}\n", p.display()));
        }
    }
    s
}

pub fn run_with(k: &dyn Kernel, args: &Args, out: &mut dyn std::io::Write) -> anyhow::Result<u8> {
    let listing = gather(k, &args.state_dir)?;
    super::emit(out, args.json, &listing, render)?;
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpatch_kernel::fake::{FakeKernel, FakeTask, Stuck};
    use kpatch_kernel::modinfo::{build_test_module, ModuleFile};
    use kpatch_kernel::ops::{self, Options};
    use kpatch_kernel::watch::Recorder;

    #[test]
    fn lists_loaded_transition_and_installed() {
        let rel = "6.1.0-50-amd64";
        let k = FakeKernel::new(rel).unwrap();
        k.add_task(FakeTask::user(1, "init")).unwrap();
        let state = k.path("/var/lib/kpatch-rs");
        crate::cmd::load::tests::install(&state, rel, "fix_b");
        let f = k.path("/tmp/fix_a.ko");
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        let vermagic = format!("{rel} SMP mod_unload ");
        std::fs::write(
            &f,
            build_test_module(&[
                ("name", "fix_a"),
                ("livepatch", "Y"),
                ("vermagic", &vermagic),
                (
                    kpatch_kernel::MODINFO_FUNCTIONS,
                    "vmlinux:cmdline_proc_show,0",
                ),
            ]),
        )
        .unwrap();
        let m = ModuleFile::read(&f).unwrap();
        ops::load(&k, &m, &Options::default(), &mut Recorder::default()).unwrap();
        // A task that blocks unpatching, and an unload started by hand.
        k.add_task(FakeTask::kthread(42, "holder").stuck(Stuck::Forever, 0))
            .unwrap();
        k.write(
            std::path::Path::new("/sys/kernel/livepatch/fix_a/enabled"),
            "0",
        )
        .unwrap();

        let args = Args {
            json: false,
            state_dir: state.clone(),
        };
        let mut out = Vec::new();
        run_with(&k, &args, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "fix_a [disabling] stack 1\n    vmlinux [patched]: cmdline_proc_show,1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("Transition in progress: fix_a (unpatching); tasks not yet switched: 1"),
            "{text}"
        );
        assert!(
            text.contains("42 holder [kernel thread], still patched"),
            "{text}"
        );
        assert!(
            text.contains("Installed patch modules:\nfix_b (6.1.0-50-amd64)\n"),
            "{text}"
        );

        let args = Args {
            json: true,
            state_dir: state,
        };
        let mut out = Vec::new();
        run_with(&k, &args, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["loaded"][0]["name"], "fix_a");
        assert_eq!(v["loaded"][0]["transition"], true);
        assert_eq!(v["transition"]["blockers"][0]["tid"], 42);
        assert_eq!(v["installed"][0]["name"], "fix_b");
        assert_eq!(v["livepatch"], true);
    }
}
