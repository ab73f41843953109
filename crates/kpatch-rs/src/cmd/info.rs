use anyhow::Context;
use kpatch_common::names::module_name_from_arg;
use kpatch_kernel::modinfo::{ModuleFile, PatchedFunction};
use kpatch_kernel::patches::{check_livepatch, loaded_patches, LoadedPatch};
use kpatch_kernel::report::{EXIT_CODES_HELP, EXIT_OK};
use kpatch_kernel::store::{Installed, Store, DEFAULT_STATE_DIR};
use kpatch_kernel::Kernel;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct Args {
    /// A patch module file, or the name of a loaded or installed patch.
    pub module: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Directory of installed patches.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Serialize)]
pub struct Info {
    pub name: String,
    /// The module file described (given, or installed for the running kernel).
    pub file: Option<PathBuf>,
    /// The kernel release the patch was built for.
    pub target_kernel: Option<String>,
    pub vermagic: Option<String>,
    pub livepatch: bool,
    /// SHA-256 of the source patch, as `build` recorded it.
    pub patch_sha256: Option<String>,
    /// What the patch does and the CVE numbers it fixes, as `build` recorded them.
    pub description: Option<String>,
    pub cves: Vec<String>,
    pub functions: Vec<PatchedFunction>,
    /// Every `.modinfo` field, in file order.
    pub modinfo: Vec<(String, String)>,
    /// The patch's state in the running kernel, if loaded.
    pub loaded: Option<LoadedPatch>,
    /// Where it is installed (any kernel).
    pub installed: Vec<Installed>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let k = super::this_kernel()?;
    let code = run_with(&*k, &args, &mut std::io::stdout())?;
    Ok(ExitCode::from(code))
}

pub fn gather(k: &dyn Kernel, arg: &str, state_dir: &Path) -> anyhow::Result<Info> {
    let store = Store::new(state_dir);
    let release = k
        .release()
        .context("reading the running kernel's release")?;
    let path = Path::new(arg);
    let file = if path.is_file() {
        Some(ModuleFile::read(path)?)
    } else {
        let name = module_name_from_arg(arg);
        match store.find(&release, &name)? {
            Some(i) => Some(ModuleFile::read(&i.path)?),
            None => None,
        }
    };
    let name = match &file {
        Some(f) => f.name(),
        None => module_name_from_arg(arg),
    };
    let loaded = if check_livepatch(k).is_ok() {
        loaded_patches(k)?.into_iter().find(|p| p.name == name)
    } else {
        None
    };
    let installed: Vec<Installed> = store
        .list()?
        .into_iter()
        .filter(|i| i.name == name)
        .collect();
    if file.is_none() && loaded.is_none() {
        anyhow::bail!(
            "{arg}: no such file, no loaded patch {name}, and not installed for {release} in {}",
            store.kernel_dir(&release).display()
        );
    }
    let mut functions = file
        .as_ref()
        .map(|f| f.info.functions())
        .unwrap_or_default();
    if functions.is_empty() {
        if let Some(p) = &loaded {
            for o in &p.objects {
                for (f, pos) in &o.functions {
                    functions.push(PatchedFunction {
                        object: o.name.clone(),
                        function: f.clone(),
                        sympos: *pos,
                    });
                }
            }
        }
    }
    let get = |key: &str| {
        file.as_ref()
            .and_then(|f| f.info.get(key).map(str::to_string))
    };
    Ok(Info {
        name,
        file: file.as_ref().map(|f| f.path.clone()),
        // A loaded patch without its file was accepted by the running kernel's vermagic check.
        target_kernel: match &file {
            Some(f) => f.info.target_kernel().map(str::to_string),
            None => Some(release),
        },
        vermagic: get("vermagic").map(|v| v.trim().to_string()),
        livepatch: file.as_ref().map(|f| f.info.is_livepatch()).unwrap_or(true),
        patch_sha256: get(kpatch_kernel::MODINFO_PATCH_SHA256),
        description: file
            .as_ref()
            .and_then(|f| f.info.description().map(str::to_string)),
        cves: file.as_ref().map(|f| f.info.cves()).unwrap_or_default(),
        functions,
        modinfo: file.map(|f| f.info.fields).unwrap_or_default(),
        loaded,
        installed,
    })
}

pub fn render(i: &Info) -> String {
    let unknown = || "(unknown)".to_string();
    let mut s = format!("Patch information for {}:\n", i.name);
    if let Some(f) = &i.file {
        s.push_str(&format!("file:          {}\n", f.display()));
    }
    s.push_str(&format!(
        "target kernel: {}\n",
        i.target_kernel.clone().unwrap_or_else(unknown)
    ));
    if let Some(v) = &i.vermagic {
        s.push_str(&format!("vermagic:      {v}\n"));
    }
    s.push_str(&format!(
        "livepatch:     {}\n",
        if i.livepatch { "yes" } else { "no" }
    ));
    s.push_str(&format!(
        "patch sha256:  {}\n",
        i.patch_sha256.clone().unwrap_or_else(unknown)
    ));
    if let Some(d) = &i.description {
        s.push_str(&format!("description:   {d}\n"));
    }
    if !i.cves.is_empty() {
        s.push_str(&format!("CVEs:          {}\n", i.cves.join(", ")));
    }
    let state = match &i.loaded {
        Some(p) => p.state().to_string(),
        None => "not loaded".into(),
    };
    s.push_str(&format!("state:         {state}\n"));
    for inst in &i.installed {
        s.push_str(&format!(
            "installed:     {} ({})\n",
            inst.path.display(),
            inst.kernel
        ));
    }
    s.push_str(&format!("functions ({}):\n", i.functions.len()));
    for f in &i.functions {
        s.push_str(&format!("    {}:{},{}\n", f.object, f.function, f.sympos));
    }
    s
}

pub fn run_with(k: &dyn Kernel, args: &Args, out: &mut dyn std::io::Write) -> anyhow::Result<u8> {
    let info = gather(k, &args.module, &args.state_dir)?;
    super::emit(out, args.json, &info, render)?;
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpatch_kernel::fake::{FakeKernel, FakeTask};
    use kpatch_kernel::modinfo::build_test_module;
    use kpatch_kernel::ops::{self, Options};
    use kpatch_kernel::watch::Recorder;
    use kpatch_kernel::{MODINFO_FUNCTIONS, MODINFO_KERNEL, MODINFO_PATCH_SHA256};

    #[test]
    fn info_for_file_and_loaded_name() {
        let rel = "6.1.0-50-amd64";
        let k = FakeKernel::new(rel).unwrap();
        k.add_task(FakeTask::user(1, "init")).unwrap();
        let f = k.path("/tmp/fix-a.ko");
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        let vermagic = format!("{rel} SMP mod_unload ");
        std::fs::write(
            &f,
            build_test_module(&[
                ("name", "fix_a"),
                ("livepatch", "Y"),
                ("vermagic", &vermagic),
                (MODINFO_KERNEL, rel),
                (MODINFO_PATCH_SHA256, "5d41402abc4b2a76b9719d911017c592"),
                ("description", "proc: a fix"),
                (kpatch_common::modinfo::MODINFO_CVES, "CVE-2099-1001"),
                (
                    MODINFO_FUNCTIONS,
                    "vmlinux:cmdline_proc_show,0,ext4:ext4_fill_super,2",
                ),
            ]),
        )
        .unwrap();
        let state = k.path("/var/lib/kpatch-rs");
        let args = Args {
            module: f.to_str().unwrap().into(),
            json: false,
            state_dir: state.clone(),
        };
        let mut out = Vec::new();
        run_with(&k, &args, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("target kernel: 6.1.0-50-amd64\n"), "{text}");
        assert!(
            text.contains("patch sha256:  5d41402abc4b2a76b9719d911017c592\n"),
            "{text}"
        );
        assert!(text.contains("state:         not loaded\n"), "{text}");
        assert!(
            text.contains("description:   proc: a fix\nCVEs:          CVE-2099-1001\n"),
            "{text}"
        );
        assert!(text.contains("    ext4:ext4_fill_super,2\n"), "{text}");

        let m = ModuleFile::read(&f).unwrap();
        ops::load(&k, &m, &Options::default(), &mut Recorder::default()).unwrap();
        // By name: no file installed, so the functions come from sysfs.
        let args = Args {
            module: "fix_a".into(),
            json: true,
            state_dir: state,
        };
        let mut out = Vec::new();
        run_with(&k, &args, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["loaded"]["enabled"], true);
        assert_eq!(v["loaded"]["stack_order"], 1);
        assert_eq!(v["target_kernel"], rel);
        assert_eq!(v["functions"].as_array().unwrap().len(), 2);
        assert_eq!(v["patch_sha256"], serde_json::Value::Null);

        let args = Args {
            module: "nope".into(),
            json: false,
            state_dir: k.path("/var/lib/kpatch-rs"),
        };
        let e = run_with(&k, &args, &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("no loaded patch nope"), "{e}");
    }
}
