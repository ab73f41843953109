//! A patch of a module (ext4) in a guest: the replacement `ext4_statfs` reads ext4's file-local
//! `ext4_li_info` through a `.klp.rela.ext4.*` relocation, which the livepatch core can apply only
//! when ext4 is loaded. The patch module is loaded before ext4 (late module patching), then ext4;
//! the object must become patched. Gated by KPATCH_RS_GUEST_TESTS=1.

mod common;
use common::*;
use kpatch_elf::consts::*;
use kpatch_elf::Object;
use kpatch_guest::{Guest, TestScript};
use kpatch_module::{build_module, KernelResolver, TuInput};
use std::time::Duration;

const EXT4_PATCHED: &str = r#"
#include <linux/fs.h>
#include <linux/printk.h>
#include <linux/statfs.h>

extern void *ext4_li_info;

int ext4_statfs(struct dentry *dentry, struct kstatfs *buf)
{
	pr_warn("kpatch-rs-test: ext4_statfs li_info=%d\n", ext4_li_info != NULL);
	return -ENOSYS;
}
"#;

const SYSFS: &str = "/sys/kernel/livepatch/livepatch_ext4";

#[test]
fn module_patch_applies_when_the_module_loads_after_the_patch() {
    if !enabled() {
        return;
    }
    let t = target();
    let modules_dir = t.kernel.modules_dir().unwrap();

    // The resolver knows vmlinux and ext4.
    let ext4_ko = modules_dir.join("kernel/fs/ext4/ext4.ko");
    let data = std::fs::read(&ext4_ko).unwrap();
    let ext4 = kpatch_symbols::parse_module(&data, &ext4_ko.display().to_string(), "ext4").unwrap();
    let mut all = t.resolver.symbols.symbols().to_vec();
    all.extend(ext4.symbols().iter().cloned());
    let resolver = KernelResolver::new(
        kpatch_symbols::KernelSymbols::new("vmlinux+ext4", all),
        t.resolver.symvers.clone(),
    );

    let work = tempfile::tempdir().unwrap();
    let mut diff = compile(&t, &work.path().join("src"), "super", EXT4_PATCHED);
    // As the differ hands it over: a static of the original unit is an undefined local.
    let i = diff
        .symbols
        .iter()
        .position(|s| s.name == "ext4_li_info")
        .expect("ext4_li_info referenced");
    diff.symbols[i].set_bind(STB_LOCAL);
    diff.sort_symbols_locals_first();
    let tu = TuInput {
        name: "fs/ext4/super.o".into(),
        source: Some("fs/ext4/super.c".into()),
        object: "ext4".into(),
        original: diff.clone(),
        diff,
        changed: vec!["ext4_statfs".into()],
        new: vec![],
    };
    let ko = work.path().join("livepatch-ext4.ko");
    build_module(
        &options(&t, "ext4", &ko),
        vec![tu],
        &resolver,
        &kpatch_module::SystemRunner,
    )
    .expect("build module");
    let o = Object::read(&ko).unwrap();
    // gcc may place the function in .text.unlikely.ext4_statfs (it only logs): find its section.
    let f = o
        .symbols
        .iter()
        .find(|s| s.name == "ext4_statfs" && s.section.is_some())
        .expect("ext4_statfs defined");
    let text = o.section(f.section.unwrap()).name.clone();
    let klp: Vec<&str> = o
        .sections
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| n.starts_with(".klp"))
        .collect();
    assert_eq!(
        klp,
        [format!(".klp.rela.ext4.{text}")],
        "livepatch relocation sections"
    );
    let rela = o.section_by_name(klp[0]).unwrap();
    let names: Vec<&str> = o
        .section(rela)
        .relas
        .iter()
        .map(|r| o.symbol_name(r.r_sym))
        .collect();
    assert_eq!(names, [".klp.sym.ext4.ext4_li_info,0"]);

    let mut guest = Guest::for_kernel(&t.kernel).unwrap_or_else(|e| panic!("{e}"));
    guest.config.timeout = Duration::from_secs(300);
    let order = guest
        .initramfs
        .add_kernel_module(&modules_dir, "ext4")
        .unwrap_or_else(|e| panic!("{e}"));
    let patch = guest.initramfs.add_module(&ko).unwrap();
    let mut s = TestScript::new();
    s.check("insmod-patch", &format!("insmod {patch}"));
    s.check_eventually(
        "transition-done",
        &format!("[ \"$(cat {SYSFS}/transition)\" = 0 ]"),
        60,
    );
    s.check(
        "ext4-not-yet",
        &format!("[ \"$(cat {SYSFS}/ext4/patched)\" = 0 ]"),
    );
    for m in &order {
        s.check(&format!("insmod-{m}"), &format!("insmod {m}"));
    }
    s.check_eventually(
        "ext4-patched",
        &format!("[ \"$(cat {SYSFS}/ext4/patched)\" = 1 ]"),
        60,
    );
    s.check(
        "function-listed",
        &format!("[ -d {SYSFS}/ext4/ext4_statfs,1 ]"),
    );
    s.check("disable", &format!("echo 0 > {SYSFS}/enabled"));
    s.check_eventually("unpatched", &format!("[ ! -e {SYSFS} ]"), 60);
    s.check("rmmod", "rmmod livepatch_ext4");
    s.check("dmesg-clean", "! dmesg | grep -E 'WARNING:|Call Trace|BUG:|Oops|general protection|livepatch: .*(failed|not found|invalid)'");
    let run = guest.run(&s).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "guest: script after {:?}, total {:?}",
        run.booted_after.unwrap_or_default(),
        run.elapsed
    );
    run.verdict(&s).unwrap_or_else(|e| panic!("{e}"));
}
