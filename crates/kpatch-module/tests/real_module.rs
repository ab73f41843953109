//! Builds real livepatch modules against the Debian target's headers (downloads packages).
//! Enabled by KPATCH_RS_GUEST_TESTS=1; skipped with a message otherwise.

use kpatch_elf::consts::*;
use kpatch_elf::Object;
use kpatch_module::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn enabled() -> bool {
    if std::env::var("KPATCH_RS_GUEST_TESTS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("skipped: set KPATCH_RS_GUEST_TESTS=1 to download the Debian target and build real modules");
    false
}

struct Target {
    release: String,
    kbuild_dir: PathBuf,
    resolver: KernelResolver,
}

fn target() -> Target {
    let k = kpatch_target::DebianKernel::default_target().expect("default Debian target");
    let kbuild_dir = k.kbuild_dir().expect("headers");
    let symvers = kpatch_symbols::Symvers::from_path(&k.symvers().expect("Module.symvers")).expect("parse Module.symvers");
    let symbols = kpatch_symbols::read_kallsyms_image(&k.vmlinux().expect("vmlinux")).expect("kallsyms of vmlinux");
    Target { release: k.abi.clone(), kbuild_dir, resolver: KernelResolver::new(symbols, symvers) }
}

/// Compiles `source` as `<name>.o` with the target's kbuild flags plus per-function sections,
/// the way the differ's input objects are compiled.
fn compile(t: &Target, dir: &Path, name: &str, source: &str) -> Object {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{name}.c")), source).unwrap();
    std::fs::write(dir.join("Kbuild"), format!("obj-m := {name}.o\nccflags-y := -ffunction-sections -fdata-sections\n")).unwrap();
    let out = Command::new("make")
        .arg("-C")
        .arg(&t.kbuild_dir)
        .arg(format!("M={}", dir.display()))
        .arg("CC=gcc-12")
        .arg(format!("{name}.o"))
        .output()
        .expect("run make");
    assert!(out.status.success(), "compile failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Object::read(&dir.join(format!("{name}.o"))).unwrap()
}

const CMDLINE_PATCHED: &str = r#"
#include <linux/fs.h>
#include <linux/init.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>

extern char *saved_command_line;

int cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s kpatch-rs=1\n", saved_command_line);
	return 0;
}
"#;

const CMDLINE_EXPORTS_ONLY: &str = r#"
#include <linux/seq_file.h>

int cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_puts(m, "kpatch-rs\n");
	return 0;
}
"#;

fn tu(diff: Object) -> TuInput {
    TuInput {
        name: "fs/proc/cmdline.o".into(),
        source: Some("fs/proc/cmdline.c".into()),
        object: "vmlinux".into(),
        original: diff.clone(),
        diff,
        changed: vec!["cmdline_proc_show".into()],
        new: vec![],
    }
}

fn options(t: &Target, name: &str, out: &Path) -> ModuleOptions {
    ModuleOptions {
        patch_name: name.into(),
        glue: GlueOptions { target_release: t.release.clone(), patch_sha256: "00".repeat(32), replace: true },
        kbuild: KbuildOptions { kbuild_dir: t.kbuild_dir.clone(), cc: "gcc-12".into(), jobs: 2 },
        output: out.to_path_buf(),
        work_dir: None,
    }
}

fn readelf(args: &[&str], ko: &Path) -> String {
    let out = Command::new("readelf").args(args).arg(ko).output().expect("readelf");
    assert!(out.status.success(), "readelf {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn builds_cmdline_module_with_klp_relocation() {
    if !enabled() {
        return;
    }
    let t = target();
    let work = tempfile::tempdir().unwrap();
    let diff = compile(&t, &work.path().join("src"), "cmdline", CMDLINE_PATCHED);
    // KPATCH_RS_MODULE_TEST_OUT=<dir> keeps the module for inspection (or for a guest).
    let out_dir = std::env::var_os("KPATCH_RS_MODULE_TEST_OUT").map(PathBuf::from).unwrap_or_else(|| work.path().to_path_buf());
    let out = out_dir.join("livepatch-cmdline.ko");
    let started = std::time::Instant::now();
    let built = build_module(&options(&t, "cmdline", &out), vec![tu(diff)], &t.resolver, &SystemRunner).expect("build module");
    eprintln!("built {} in {:.1}s", out.display(), started.elapsed().as_secs_f64());
    assert_eq!(built.module_name, "livepatch_cmdline");

    let ko = Object::read(&out).unwrap();
    let rela = ko.section_by_name(".klp.rela.vmlinux..text.cmdline_proc_show").expect("klp rela section");
    let rela = ko.section(rela);
    assert_eq!(rela.sh_flags, SHF_ALLOC | SHF_INFO_LINK | SHF_RELA_LIVEPATCH);
    assert_eq!(ko.section(kpatch_elf::SectionIndex(rela.sh_info as usize)).name, ".text.cmdline_proc_show");
    let names: Vec<&str> = rela.relas.iter().map(|r| ko.symbol_name(r.r_sym)).collect();
    assert_eq!(names, [".klp.sym.vmlinux.saved_command_line,0"]);
    let sym = ko.symbols.iter().find(|s| s.name == ".klp.sym.vmlinux.saved_command_line,0").unwrap();
    assert_eq!((sym.st_shndx, sym.st_bind()), (SHN_LIVEPATCH, STB_GLOBAL));
    // seq_printf stays a normal relocation, versioned with the target's CRC.
    let versions = finalize::versions(&ko, "ko").unwrap();
    let crc = versions.iter().find(|(n, _)| n == "seq_printf").expect("seq_printf in __versions").1;
    let target_crc = t.resolver.symvers.get("seq_printf").unwrap().crc;
    assert_eq!(crc, target_crc);
    let info = finalize::modinfo(&ko);
    let get = |k: &str| info.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(get("livepatch"), Some("Y"));
    assert_eq!(get("name"), Some("livepatch_cmdline"));
    assert_eq!(get("kpatch_rs_kernel"), Some(t.release.as_str()));
    assert_eq!(get("kpatch_rs_functions"), Some("vmlinux:cmdline_proc_show,0"));
    assert_eq!(get("vermagic").and_then(|v| v.split_whitespace().next()), Some(t.release.as_str()));
    // binutils agrees.
    let sections = readelf(&["-SW"], &out);
    assert!(sections.contains(".klp.rela.vmlinux..text.cmdline_proc_show"), "{sections}");
    let syms = readelf(&["-sW"], &out);
    assert!(syms.lines().any(|l| l.contains(".klp.sym.vmlinux.saved_command_line,0") && l.contains("GLOBAL")), "{syms}");
}

#[test]
fn exports_only_module_has_no_klp_sections_and_refusals_leave_no_module() {
    if !enabled() {
        return;
    }
    let t = target();
    let work = tempfile::tempdir().unwrap();
    let diff = compile(&t, &work.path().join("src"), "cmdline", CMDLINE_EXPORTS_ONLY);
    let out = work.path().join("livepatch-plain.ko");
    build_module(&options(&t, "plain", &out), vec![tu(diff.clone())], &t.resolver, &SystemRunner).expect("build module");
    let ko = Object::read(&out).unwrap();
    assert!(ko.sections.iter().all(|s| !s.name.starts_with(".klp.")), "unexpected .klp section");
    assert!(ko.symbols.iter().all(|s| !s.name.starts_with(".klp.") && !s.name.starts_with("__kpatch_rs_klp_")));

    // A resolver whose target disagrees about seq_puts' CRC: refused, naming both CRCs.
    struct WrongCrc<'a>(&'a KernelResolver);
    impl SymbolResolver for WrongCrc<'_> {
        fn resolve(&self, tu: &TuContext<'_>, name: &str, local: bool) -> Result<Resolution, ResolveError> {
            match self.0.resolve(tu, name, local)? {
                Resolution::VmlinuxExport { crc: Some(c) } if name == "seq_puts" => Ok(Resolution::VmlinuxExport { crc: Some(c ^ 1) }),
                r => Ok(r),
            }
        }
        fn function_sympos(&self, tu: &TuContext<'_>, name: &str) -> Result<u64, ResolveError> {
            self.0.function_sympos(tu, name)
        }
    }
    let bad = work.path().join("livepatch-badcrc.ko");
    let err = build_module(&options(&t, "badcrc", &bad), vec![tu(diff.clone())], &WrongCrc(&t.resolver), &SystemRunner).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModuleError::CrcMismatch { .. }) && msg.contains("seq_puts"), "{msg}");
    assert!(!bad.exists());

    // Headers of another release are refused before anything is built.
    let mut o = options(&t, "other", &work.path().join("livepatch-other.ko"));
    o.glue.target_release = "6.1.0-1-amd64".into();
    let err = build_module(&o, vec![tu(diff)], &t.resolver, &SystemRunner).unwrap_err();
    assert!(matches!(err, ModuleError::HeadersVersion { .. }), "{err}");
    assert!(err.to_string().contains("6.1.0-1-amd64") && err.to_string().contains(&t.release), "{err}");
}
