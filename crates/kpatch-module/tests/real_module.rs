//! Builds real livepatch modules against the Debian target's headers (downloads packages).
//! Enabled by KPATCH_RS_GUEST_TESTS=1; skipped with a message otherwise.

use kpatch_common::klp::{SHF_RELA_LIVEPATCH, SHN_LIVEPATCH};
use kpatch_elf::consts::*;
use kpatch_elf::Object;
use kpatch_module::*;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::*;

const CMDLINE_EXPORTS_ONLY: &str = r#"
#include <linux/seq_file.h>

int cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_puts(m, "kpatch-rs\n");
	return 0;
}
"#;

/// Every marker of the shipped headers, and a system call patched with KPATCH_SYSCALL_DEFINE2.
const HEADERS_USER: &str = r#"
#include <linux/kernel.h>
#include <linux/syscalls.h>
#include "kpatch-macros.h"
#include "kpatch-syscall.h"

static int pre(patch_object *obj) { return 0; }
static void post(patch_object *obj) { }
static void pre_un(patch_object *obj) { }
static void post_un(patch_object *obj) { }
KPATCH_PRE_PATCH_CALLBACK(pre);
KPATCH_POST_PATCH_CALLBACK(post);
KPATCH_PRE_UNPATCH_CALLBACK(pre_un);
KPATCH_POST_UNPATCH_CALLBACK(post_un);

int kpatch_rs_ignored(void) { return 1; }
KPATCH_IGNORE_FUNCTION(kpatch_rs_ignored);
KPATCH_IGNORE_SECTION(".text.unlikely");
int kpatch_rs_forced(int x) { KPATCH_PRINTK("kpatch-rs %d\n", x); return x; }
KPATCH_FORCE_UNSAFE(kpatch_rs_forced);

KPATCH_SYSCALL_DEFINE2(kpatch_rs_test, int, a, unsigned long, b)
{
	return a + b;
}
"#;

fn readelf(args: &[&str], ko: &Path) -> String {
    let out = Command::new("readelf")
        .args(args)
        .arg(ko)
        .output()
        .expect("readelf");
    assert!(
        out.status.success(),
        "readelf {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let out_dir = std::env::var_os("KPATCH_RS_MODULE_TEST_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| work.path().to_path_buf());
    let out = out_dir.join("livepatch-cmdline.ko");
    let started = std::time::Instant::now();
    let built = build_module(
        &options(&t, "cmdline", &out),
        vec![cmdline_tu(diff)],
        &t.resolver,
        &SystemRunner,
    )
    .expect("build module");
    eprintln!(
        "built {} in {:.1}s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(built.module_name, "livepatch_cmdline");

    let ko = Object::read(&out).unwrap();
    let rela = ko
        .section_by_name(".klp.rela.vmlinux..text.cmdline_proc_show")
        .expect("klp rela section");
    let rela = ko.section(rela);
    assert_eq!(
        rela.sh_flags,
        SHF_ALLOC | SHF_INFO_LINK | SHF_RELA_LIVEPATCH
    );
    assert_eq!(
        ko.section(kpatch_elf::SectionIndex(rela.sh_info as usize))
            .name,
        ".text.cmdline_proc_show"
    );
    let names: Vec<&str> = rela.relas.iter().map(|r| ko.symbol_name(r.r_sym)).collect();
    assert_eq!(names, [".klp.sym.vmlinux.saved_command_line,0"]);
    let sym = ko
        .symbols
        .iter()
        .find(|s| s.name == ".klp.sym.vmlinux.saved_command_line,0")
        .unwrap();
    assert_eq!((sym.st_shndx, sym.st_bind()), (SHN_LIVEPATCH, STB_GLOBAL));
    // seq_printf stays a normal relocation, versioned with the target's CRC.
    let versions = finalize::versions(&ko, "ko").unwrap();
    let crc = versions
        .iter()
        .find(|(n, _)| n == "seq_printf")
        .expect("seq_printf in __versions")
        .1;
    let target_crc = t.resolver.symvers.get("seq_printf").unwrap().crc;
    assert_eq!(crc, target_crc);
    let info = finalize::modinfo(&ko);
    let get = |k: &str| info.get(k);
    assert_eq!(get("livepatch"), Some("Y"));
    assert_eq!(get("name"), Some("livepatch_cmdline"));
    assert_eq!(get("kpatch_rs_kernel"), Some(t.release.as_str()));
    assert_eq!(
        get("kpatch_rs_functions"),
        Some("vmlinux:cmdline_proc_show,0")
    );
    // Both callback records are linked in and reachable from the glue.
    for cb in ["__kpatch_rs_cb_pre_patch_0", "__kpatch_rs_cb_post_patch_0"] {
        assert!(
            ko.symbols
                .iter()
                .any(|s| s.name == cb && s.section.is_some()),
            "{cb} missing"
        );
    }
    assert!(ko.section_by_name(".kpatch.force").is_none());
    assert_eq!(
        get("vermagic").and_then(|v| v.split_whitespace().next()),
        Some(t.release.as_str())
    );
    // binutils agrees.
    let sections = readelf(&["-SW"], &out);
    assert!(
        sections.contains(".klp.rela.vmlinux..text.cmdline_proc_show"),
        "{sections}"
    );
    let syms = readelf(&["-sW"], &out);
    assert!(
        syms.lines()
            .any(|l| l.contains(".klp.sym.vmlinux.saved_command_line,0") && l.contains("GLOBAL")),
        "{syms}"
    );
}

#[test]
fn exports_only_module_has_no_klp_sections_and_refusals_leave_no_module() {
    if !enabled() {
        return;
    }
    let t = target();
    let work = tempfile::tempdir().unwrap();
    let diff = compile(
        &t,
        &work.path().join("src"),
        "cmdline",
        CMDLINE_EXPORTS_ONLY,
    );
    let out = work.path().join("livepatch-plain.ko");
    build_module(
        &options(&t, "plain", &out),
        vec![cmdline_tu(diff.clone())],
        &t.resolver,
        &SystemRunner,
    )
    .expect("build module");
    let ko = Object::read(&out).unwrap();
    assert!(
        ko.sections.iter().all(|s| !s.name.starts_with(".klp.")),
        "unexpected .klp section"
    );
    assert!(ko
        .symbols
        .iter()
        .all(|s| !s.name.starts_with(".klp.") && !s.name.starts_with("__kpatch_rs_klp_")));

    // A resolver whose target disagrees about seq_puts' CRC: refused, naming both CRCs.
    struct WrongCrc<'a>(&'a KernelResolver);
    impl SymbolResolver for WrongCrc<'_> {
        fn resolve(
            &self,
            tu: &TuContext<'_>,
            name: &str,
            local: bool,
        ) -> Result<Resolution, ResolveError> {
            match self.0.resolve(tu, name, local)? {
                Resolution::Export {
                    object: _,
                    crc: Some(c),
                    namespace,
                } if name == "seq_puts" => Ok(Resolution::Export {
                    object: "vmlinux".into(),
                    crc: Some(c ^ 1),
                    namespace,
                }),
                r => Ok(r),
            }
        }
        fn function_sympos(&self, tu: &TuContext<'_>, name: &str) -> Result<u64, ResolveError> {
            self.0.function_sympos(tu, name)
        }
    }
    let bad = work.path().join("livepatch-badcrc.ko");
    let err = build_module(
        &options(&t, "badcrc", &bad),
        vec![cmdline_tu(diff.clone())],
        &WrongCrc(&t.resolver),
        &SystemRunner,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ModuleError::CrcMismatch { .. }) && msg.contains("seq_puts"),
        "{msg}"
    );
    assert!(!bad.exists());

    // Headers of another release are refused before anything is built.
    let mut o = options(&t, "other", &work.path().join("livepatch-other.ko"));
    o.glue.target_release = "6.1.0-1-amd64".into();
    let err = build_module(&o, vec![cmdline_tu(diff)], &t.resolver, &SystemRunner).unwrap_err();
    assert!(matches!(err, ModuleError::HeadersVersion { .. }), "{err}");
    assert!(
        err.to_string().contains("6.1.0-1-amd64") && err.to_string().contains(&t.release),
        "{err}"
    );
}

#[test]
fn shipped_headers_compile_against_the_target() {
    if !enabled() {
        return;
    }
    let t = target();
    let work = tempfile::tempdir().unwrap();
    let o = compile(&t, &work.path().join("src"), "markers", HEADERS_USER);
    let size = |name: &str| {
        let i = o
            .section_by_name(name)
            .unwrap_or_else(|| panic!("no section {name}"));
        o.section(i).sh_size
    };
    for kind in kpatch_module::CallbackKind::ALL {
        assert_eq!(
            size(&kind.section()),
            plan::CALLBACK_RECORD_SIZE,
            "{}",
            kind.section()
        );
    }
    assert_eq!(size(".kpatch.ignore.functions"), 8);
    assert_eq!(size(".kpatch.ignore.sections"), 8);
    assert_eq!(size(".kpatch.force"), 8);
    let has = |n: &str| o.symbols.iter().any(|s| s.name == n && s.section.is_some());
    let names: Vec<&str> = o
        .symbols
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| n.contains("kpatch_rs_test"))
        .collect();
    assert!(
        has("__x64_sys_kpatch_rs_test"),
        "x64 entry point missing: {names:?}"
    );
    assert!(
        has("__ia32_sys_kpatch_rs_test"),
        "ia32 entry point missing (Debian has IA32_EMULATION): {names:?}"
    );
    // No tracing metadata or error-injection entries.
    assert!(!o
        .symbols
        .iter()
        .any(|s| s.name.contains("__syscall_meta") || s.name.contains("_eil_addr_")));
    assert!(o.section_by_name("_error_injection_whitelist").is_none());
}

const VERSION_PATCHED: &str = r#"
#include <linux/seq_file.h>

extern char *saved_command_line;
extern const char linux_proc_banner[];

int version_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%.20s [%s]\n", linux_proc_banner, saved_command_line);
	return 0;
}
"#;

#[test]
fn two_units_share_one_livepatch_symbol_after_linking() {
    if !enabled() {
        return;
    }
    let t = target();
    let work = tempfile::tempdir().unwrap();
    let cmdline = compile(&t, &work.path().join("a"), "cmdline", CMDLINE_PATCHED);
    let version = compile(&t, &work.path().join("b"), "version", VERSION_PATCHED);
    let version_tu = TuInput {
        name: "fs/proc/version.o".into(),
        source: Some("fs/proc/version.c".into()),
        object: "vmlinux".into(),
        original: version.clone(),
        diff: version,
        changed: vec!["version_proc_show".into()],
        new: vec![],
    };
    let out = work.path().join("livepatch-two.ko");
    let built = build_module(
        &options(&t, "two", &out),
        vec![cmdline_tu(cmdline), version_tu],
        &t.resolver,
        &SystemRunner,
    )
    .expect("build");
    assert_eq!(built.plan.functions.len(), 2);
    let ko = Object::read(&out).unwrap();
    let scl: Vec<usize> = ko
        .symbols
        .iter()
        .enumerate()
        .filter(|(_, s)| s.name == ".klp.sym.vmlinux.saved_command_line,0")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(scl.len(), 1, "one livepatch symbol for both units");
    for f in ["cmdline_proc_show", "version_proc_show"] {
        let relas = names_of(&ko, &format!(".klp.rela.vmlinux..text.{f}"));
        assert!(
            relas
                .iter()
                .any(|n| n == ".klp.sym.vmlinux.saved_command_line,0"),
            "{f}: {relas:?}"
        );
    }
    assert!(names_of(&ko, ".klp.rela.vmlinux..text.version_proc_show")
        .iter()
        .any(|n| n == ".klp.sym.vmlinux.linux_proc_banner,0"));
    let info = finalize::modinfo(&ko);
    let funcs = info.get("kpatch_rs_functions");
    assert_eq!(
        funcs,
        Some("vmlinux:cmdline_proc_show,0,vmlinux:version_proc_show,0")
    );
}

fn names_of(o: &Object, section: &str) -> Vec<String> {
    let i = o
        .section_by_name(section)
        .unwrap_or_else(|| panic!("no section {section}"));
    o.section(i)
        .relas
        .iter()
        .map(|r| o.symbol_name(r.r_sym).to_string())
        .collect()
}
