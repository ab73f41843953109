//! Helpers of the gated tests that build real modules against the Debian target's headers.
#![allow(dead_code)]

use kpatch_elf::Object;
use kpatch_module::*;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn enabled() -> bool {
    if std::env::var("KPATCH_RS_GUEST_TESTS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!(
        "skipped: set KPATCH_RS_GUEST_TESTS=1 to download the Debian target and build real modules"
    );
    false
}

pub struct Target {
    pub kernel: kpatch_target::DebianKernel,
    pub release: String,
    pub kbuild_dir: PathBuf,
    pub resolver: KernelResolver,
}

pub fn target() -> Target {
    let kernel = kpatch_target::DebianKernel::default_target().expect("default Debian target");
    let kbuild_dir = kernel.kbuild_dir().expect("headers");
    let symvers = kpatch_symbols::Symvers::from_path(&kernel.symvers().expect("Module.symvers"))
        .expect("parse Module.symvers");
    let symbols = kpatch_symbols::read_kallsyms_image(&kernel.vmlinux().expect("vmlinux"))
        .expect("kallsyms of vmlinux");
    Target {
        release: kernel.abi.clone(),
        kbuild_dir,
        resolver: KernelResolver::new(symbols, symvers),
        kernel,
    }
}

/// Compiles `source` as `<name>.o` with the target's kbuild flags plus per-function and per-data
/// sections (as the differ's input objects are compiled), with the shipped headers on the
/// include path.
pub fn compile(t: &Target, dir: &Path, name: &str, source: &str) -> Object {
    std::fs::create_dir_all(dir).unwrap();
    let inc = headers::install_headers(&dir.join("kpatch-include")).unwrap();
    std::fs::write(dir.join(format!("{name}.c")), source).unwrap();
    std::fs::write(
        dir.join("Kbuild"),
        format!(
            "obj-m := {name}.o\nccflags-y := -ffunction-sections -fdata-sections -I{}\n",
            inc.display()
        ),
    )
    .unwrap();
    let out = Command::new("make")
        .arg("-C")
        .arg(&t.kbuild_dir)
        .arg(format!("M={}", dir.display()))
        .arg("CC=gcc-12")
        .arg(format!("{name}.o"))
        .output()
        .expect("run make");
    assert!(
        out.status.success(),
        "compile failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Object::read(&dir.join(format!("{name}.o"))).unwrap()
}

/// A replacement `cmdline_proc_show` that reads the unexported `saved_command_line` (a
/// livepatch relocation), prints with the exported `seq_printf`, and has pre- and post-patch
/// callbacks that log markers.
pub const CMDLINE_PATCHED: &str = r#"
#include <linux/fs.h>
#include <linux/init.h>
#include <linux/printk.h>
#include <linux/seq_file.h>
#include "kpatch-macros.h"

extern char *saved_command_line;

int cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s kpatch-rs=1\n", saved_command_line);
	return 0;
}

static int kpatch_rs_test_pre(patch_object *obj)
{
	pr_warn("kpatch-rs-test: pre-patch %s\n", obj->name ? obj->name : "vmlinux");
	return 0;
}
KPATCH_PRE_PATCH_CALLBACK(kpatch_rs_test_pre);

static void kpatch_rs_test_post(patch_object *obj)
{
	pr_warn("kpatch-rs-test: post-patch %s\n", obj->name ? obj->name : "vmlinux");
}
KPATCH_POST_PATCH_CALLBACK(kpatch_rs_test_post);
KPATCH_FORCE_UNSAFE(cmdline_proc_show);
"#;

pub fn cmdline_tu(diff: Object) -> TuInput {
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

pub fn options(t: &Target, name: &str, out: &Path) -> ModuleOptions {
    ModuleOptions {
        patch_name: name.into(),
        glue: GlueOptions {
            target_release: t.release.clone(),
            patch_sha256: "00".repeat(32),
            replace: true,
            metadata: Default::default(),
        },
        kbuild: KbuildOptions {
            kbuild_dir: t.kbuild_dir.clone(),
            cc: "gcc-12".into(),
            jobs: 2,
        },
        output: out.to_path_buf(),
        work_dir: None,
    }
}
