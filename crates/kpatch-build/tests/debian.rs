//! End-to-end tests on the real Debian 6.1 source tree. They download linux-source (~140 MB),
//! unpack and prepare it, so they run only with KPATCH_RS_GUEST_TESTS=1 (set by CI), and then
//! must pass. All tests share the cached tree; its lock serializes them.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use kpatch_build::{
    build_object_pairs, journal, BuildError, DebianSource, PatchFile, PreparedTree, SystemRunner,
    TreeOptions,
};
use object::{Object, ObjectSection};
use sha2::{Digest, Sha256};

fn enabled() -> bool {
    if std::env::var("KPATCH_RS_GUEST_TESTS").as_deref() == Ok("1") {
        true
    } else {
        eprintln!("skipped: set KPATCH_RS_GUEST_TESTS=1 to fetch and build the Debian 6.1 source");
        false
    }
}

fn tree() -> PreparedTree {
    let k =
        kpatch_target::DebianKernel::default_target().expect("resolve the default Debian target");
    let src = DebianSource::from_kernel(&k).expect("fetch the Debian kernel packages");
    PreparedTree::debian(
        &SystemRunner,
        &kpatch_target::cache_dir(),
        &src,
        &TreeOptions::default(),
    )
    .expect("prepare the tree")
}

fn write_patch(dir: &Path, name: &str, text: &str) -> PatchFile {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    PatchFile::read(&p, 1).unwrap()
}

fn hash_files(root: &Path, rels: &[&str]) -> Vec<(String, String)> {
    rels.iter()
        .map(|r| {
            (
                r.to_string(),
                format!("{:x}", Sha256::digest(fs::read(root.join(r)).unwrap())),
            )
        })
        .collect()
}

/// `.text.*` sections whose bytes differ between two objects, or that only one has.
fn changed_text_sections(a: &Path, b: &Path) -> BTreeSet<String> {
    let (da, db) = (fs::read(a).unwrap(), fs::read(b).unwrap());
    let (fa, fb) = (
        object::File::parse(&*da).unwrap(),
        object::File::parse(&*db).unwrap(),
    );
    let texts = |f: &object::File| -> Vec<(String, Vec<u8>)> {
        f.sections()
            .filter_map(|s| {
                let n = s.name().ok()?.to_string();
                n.starts_with(".text")
                    .then(|| (n, s.data().unwrap().to_vec()))
            })
            .collect()
    };
    let (ta, tb) = (texts(&fa), texts(&fb));
    let mut out = BTreeSet::new();
    for (n, d) in &ta {
        if tb.iter().find(|(m, _)| m == n).map(|(_, e)| e) != Some(d) {
            out.insert(n.clone());
        }
    }
    for (n, _) in &tb {
        if !ta.iter().any(|(m, _)| m == n) {
            out.insert(n.clone());
        }
    }
    out
}

const CMDLINE_PATCH: &str = "\
--- a/fs/proc/cmdline.c
+++ b/fs/proc/cmdline.c
@@ -6,6 +6,7 @@
 
 static int cmdline_proc_show(struct seq_file *m, void *v)
 {
+\tseq_puts(m, \"kpatch-rs \");
 \tseq_puts(m, saved_command_line);
 \tseq_putc(m, '\\n');
 \treturn 0;
";

#[test]
fn one_line_patch_changes_only_its_function() {
    if !enabled() {
        return;
    }
    let tree = tree();
    let work = tempfile::tempdir().unwrap();
    let patch = write_patch(work.path(), "cmdline.patch", CMDLINE_PATCH);
    let before = hash_files(tree.root(), &["fs/proc/cmdline.c"]);
    let stages = std::cell::RefCell::new(Vec::new());
    let out = kpatch_build::build_object_pairs_with_progress(
        &SystemRunner,
        &tree,
        &patch,
        &work.path().join("build"),
        &|s: &str| stages.borrow_mut().push(s.to_string()),
    )
    .unwrap();
    // The original comes from the object cache when an earlier build left it there.
    let orig_stage = if out.orig_cached == 1 {
        "1 original object from the cache"
    } else {
        "compiling 1 original object"
    };
    assert_eq!(
        stages.into_inner(),
        [
            "selecting units",
            orig_stage,
            "applying the patch",
            "compiling 1 patched object",
            "restoring the tree"
        ]
    );
    assert_eq!(out.pairs.len(), 1, "{:?}", out.pairs);
    let p = &out.pairs[0];
    assert_eq!(p.unit, PathBuf::from("fs/proc/cmdline.c"));
    assert_eq!(p.object, "fs/proc/cmdline.o");
    assert_eq!(p.klp_object, "vmlinux");
    assert_eq!(
        changed_text_sections(&p.orig, &p.patched),
        BTreeSet::from([".text.cmdline_proc_show".to_string()])
    );
    assert_eq!(
        hash_files(tree.root(), &["fs/proc/cmdline.c"]),
        before,
        "the tree is restored"
    );
    assert!(!journal::journal_path(tree.root()).exists());
    assert!(
        !tree.root().join("fs/proc/cmdline.o").exists(),
        "no patched object is left in the tree"
    );
}

#[test]
fn a_cached_original_is_the_object_a_fresh_compile_makes() {
    if !enabled() {
        return;
    }
    let mut tree = tree();
    let work = tempfile::tempdir().unwrap();
    let patch = write_patch(work.path(), "cmdline.patch", CMDLINE_PATCH);
    let first = build_object_pairs(&SystemRunner, &tree, &patch, &work.path().join("a")).unwrap();
    // Now it is cached, whatever it was before.
    let second = build_object_pairs(&SystemRunner, &tree, &patch, &work.path().join("b")).unwrap();
    assert_eq!((second.orig_cached, second.orig_compiled), (1, 0));
    // Without the cache: compiled again, byte for byte the same object.
    let cache = tree.object_cache.take();
    let fresh = build_object_pairs(&SystemRunner, &tree, &patch, &work.path().join("c")).unwrap();
    tree.object_cache = cache;
    assert_eq!((fresh.orig_cached, fresh.orig_compiled), (0, 1));
    let bytes = |o: &kpatch_build::BuildOutput| fs::read(&o.pairs[0].orig).unwrap();
    assert_eq!(
        bytes(&second),
        bytes(&fresh),
        "cached original differs from a fresh compile"
    );
    assert_eq!(bytes(&first), bytes(&fresh));
    // The patched side is never the cached original.
    assert_ne!(fs::read(&second.pairs[0].patched).unwrap(), bytes(&second));
}

#[test]
fn patch_that_does_not_apply_leaves_the_tree_identical() {
    if !enabled() {
        return;
    }
    let tree = tree();
    let work = tempfile::tempdir().unwrap();
    // The first file would apply; the second hunk's context is wrong.
    let text = format!(
        "{CMDLINE_PATCH}--- a/fs/proc/version.c\n+++ b/fs/proc/version.c\n@@ -1,3 +1,3 @@\n-this line is not in version.c\n+x\n context\n context\n"
    );
    let patch = write_patch(work.path(), "bad.patch", &text);
    let files = ["fs/proc/cmdline.c", "fs/proc/version.c"];
    let before = hash_files(tree.root(), &files);
    let listing = |d: &str| -> BTreeSet<String> {
        fs::read_dir(tree.root().join(d))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    let dir_before = listing("fs/proc");
    let err =
        build_object_pairs(&SystemRunner, &tree, &patch, &work.path().join("build")).unwrap_err();
    match &err {
        BuildError::PatchDoesNotApply { output, .. } => {
            assert!(output.contains("FAILED"), "patch's own message: {output}")
        }
        other => panic!("expected PatchDoesNotApply, got {other}"),
    }
    assert_eq!(hash_files(tree.root(), &files), before);
    assert_eq!(
        listing("fs/proc"),
        dir_before,
        "no .rej/.orig or other files appear"
    );
}

#[test]
fn header_patch_selects_its_includers_in_the_module() {
    if !enabled() {
        return;
    }
    let tree = tree();
    let work = tempfile::tempdir().unwrap();
    // fs/ext4/truncate.h is included by four ext4 units; ext4 is a module in Debian's config.
    let patch = write_patch(
        work.path(),
        "truncate.patch",
        "--- a/fs/ext4/truncate.h\n+++ b/fs/ext4/truncate.h\n@@ -12,6 +12,7 @@\n static inline void ext4_truncate_failed_write(struct inode *inode)\n {\n \tstruct address_space *mapping = inode->i_mapping;\n+\tWARN_ON_ONCE(!mapping);\n \n \t/*\n \t * We don't need to call ext4_break_layouts() because the blocks we\n",
    );
    // What the includers really are, independently of the index: grep the ext4 sources.
    let mut expected: Vec<String> = fs::read_dir(tree.root().join("fs/ext4"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .filter(|p| {
            fs::read_to_string(p)
                .unwrap()
                .contains("#include \"truncate.h\"")
        })
        .map(|p| format!("fs/ext4/{}", p.file_name().unwrap().to_str().unwrap()))
        .collect();
    expected.sort();
    assert!((2..=5).contains(&expected.len()), "{expected:?}");
    let expected = expected; // every includer; the filter keeps the callers
    let out = build_object_pairs(&SystemRunner, &tree, &patch, &work.path().join("build")).unwrap();
    let units: Vec<String> = out
        .pairs
        .iter()
        .map(|p| p.unit.display().to_string())
        .collect();
    // The header filter compiles only the includers that use the changed inline; the others
    // are reported as out of its reach.
    let calls = |u: &String| {
        fs::read_to_string(tree.root().join(u))
            .unwrap()
            .contains("ext4_truncate_failed_write(")
    };
    let (callers, others): (Vec<String>, Vec<String>) = expected.into_iter().partition(calls);
    assert_eq!(units, callers);
    for u in &others {
        assert!(
            out.skipped
                .iter()
                .any(|s| s.unit.display().to_string() == *u && s.reason.contains("never uses")),
            "{u} is neither compiled nor reported: {:?}",
            out.skipped
        );
    }
    assert_eq!(out.filter.unused_only, others.len());
    let mut changed_any = false;
    for p in &out.pairs {
        assert_eq!(p.klp_object, "ext4");
        // Code changes exactly in the units that call the patched inline function.
        let calls = fs::read_to_string(tree.root().join(&p.unit))
            .unwrap()
            .contains("ext4_truncate_failed_write(");
        let changed = !changed_text_sections(&p.orig, &p.patched).is_empty();
        assert_eq!(
            changed, calls,
            "{}: text changed = {changed}, calls the function = {calls}",
            p.object
        );
        changed_any |= changed;
    }
    assert!(changed_any);
}

#[test]
fn patch_left_applied_by_a_killed_build_is_restored_on_next_open() {
    if !enabled() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let patch = write_patch(work.path(), "cmdline.patch", CMDLINE_PATCH);
    let before;
    {
        let tree = tree();
        before = hash_files(tree.root(), &["fs/proc/cmdline.c"]);
        let applied = kpatch_build::apply::apply(&SystemRunner, tree.root(), &patch).unwrap();
        // As if the process were killed: the guard never runs.
        std::mem::forget(applied);
        assert_ne!(hash_files(tree.root(), &["fs/proc/cmdline.c"]), before);
    }
    // The next opening restores the tree (ours, or another test's that took the lock first).
    let tree = tree();
    assert!(tree.recovered.len() <= 1, "{:?}", tree.recovered);
    assert_eq!(hash_files(tree.root(), &["fs/proc/cmdline.c"]), before);
    assert!(!journal::journal_path(tree.root()).exists());
}

#[test]
fn patched_code_that_does_not_compile_is_reported_and_the_tree_restored() {
    if !enabled() {
        return;
    }
    let tree = tree();
    let work = tempfile::tempdir().unwrap();
    let patch = write_patch(
        work.path(),
        "broken.patch",
        &CMDLINE_PATCH.replace("seq_puts(m, \"kpatch-rs \");", "this_is_not_c;"),
    );
    assert!(fs::read_to_string(&patch.path)
        .unwrap()
        .contains("this_is_not_c"));
    let before = hash_files(tree.root(), &["fs/proc/cmdline.c"]);
    let err =
        build_object_pairs(&SystemRunner, &tree, &patch, &work.path().join("build")).unwrap_err();
    match &err {
        BuildError::ToolFailed { output, .. } => assert!(
            output.contains("this_is_not_c"),
            "compiler output: {output}"
        ),
        other => panic!("expected ToolFailed, got {other}"),
    }
    assert_eq!(hash_files(tree.root(), &["fs/proc/cmdline.c"]), before);
    assert!(!journal::journal_path(tree.root()).exists());
}

/// Placements of well-known objects, each module confirmed by the image package's `.ko`.
#[test]
fn probe_places_objects_in_vmlinux_and_modules() {
    if !enabled() {
        return;
    }
    let tree = tree();
    let k = kpatch_target::DebianKernel::default_target().unwrap();
    let modules = k.modules_dir().unwrap();
    let cases = [
        ("kernel/fork.o", "vmlinux"),
        ("fs/proc/cmdline.o", "vmlinux"),
        ("lib/string.o", "vmlinux"),
        ("arch/x86/kernel/process_64.o", "vmlinux"),
        ("fs/ext4/inode.o", "ext4"),
        ("net/netfilter/nf_conntrack_core.o", "nf_conntrack"),
        ("drivers/net/virtio_net.o", "virtio_net"),
        ("drivers/gpu/drm/amd/display/dc/core/dc.o", "amdgpu"),
    ];
    let objects: Vec<String> = cases.iter().map(|(o, _)| o.to_string()).collect();
    let scratch = tempfile::tempdir().unwrap();
    let placed =
        kpatch_build::probe::probe(&SystemRunner, &tree.kbuild, &objects, scratch.path()).unwrap();
    for (object, want) in cases {
        let got = placed[object]
            .placement
            .as_ref()
            .map(|p| p.klp_object().to_string());
        assert_eq!(got.as_deref(), Some(want), "{object}");
        if want != "vmlinux" {
            let ko = format!("{want}.ko");
            let found = walk_for(&modules, &ko, &want.replace('_', "-"));
            assert!(found, "{ko} is shipped in {}", modules.display());
        }
    }
    // amdgpu names its display code through `../display`, and only that name compiles.
    assert_eq!(
        placed["drivers/gpu/drm/amd/display/dc/core/dc.o"].target,
        "drivers/gpu/drm/amd/amdgpu/../display/dc/core/dc.o"
    );
    assert_eq!(placed["fs/ext4/inode.o"].target, "fs/ext4/inode.o");
    // Disabled in Debian's config: not built at all.
    let off = vec!["drivers/platform/x86/winmate-fm07-keys.o".to_string()];
    let placed = kpatch_build::probe::probe(
        &SystemRunner,
        &tree.kbuild,
        &off,
        tempfile::tempdir().unwrap().path(),
    )
    .unwrap();
    assert_eq!(placed[&off[0]].placement, None);
}

fn walk_for(dir: &Path, name: &str, alt: &str) -> bool {
    let alt = format!("{alt}.ko");
    fs::read_dir(dir).unwrap().flatten().any(|e| {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            walk_for(&p, name, alt.trim_end_matches(".ko"))
        } else {
            let n = e.file_name();
            n == name || n == alt.as_str()
        }
    })
}

/// `--sourcedir`: a configured tree of the user's, used in place; the objects it had come back.
#[test]
fn user_tree_is_used_in_place_and_keeps_its_objects() {
    if !enabled() {
        return;
    }
    let k = kpatch_target::DebianKernel::default_target().unwrap();
    let vmlinux = k.vmlinux().unwrap();
    // Next to the cache: the same filesystem as the tree, whatever /tmp is.
    let copy = tempfile::tempdir_in(kpatch_target::cache_dir()).unwrap();
    let user = copy.path().join("linux");
    {
        // A copy of the prepared Debian tree stands in for a user's configured tree.
        let tree = tree();
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(tree.root())
            .arg(&user)
            .status()
            .unwrap();
        assert!(st.success());
    }
    fs::write(user.join("fs/proc/cmdline.o"), "the user's own object").unwrap();
    let tree = PreparedTree::user(
        &SystemRunner,
        &user,
        None,
        Some(&vmlinux),
        &TreeOptions::default(),
    )
    .unwrap();
    assert!(tree.is_user_tree && tree.kbuild.kernelrelease.is_none());
    let work = tempfile::tempdir().unwrap();
    let patch = write_patch(work.path(), "cmdline.patch", CMDLINE_PATCH);
    let before = hash_files(&user, &["fs/proc/cmdline.c"]);
    let out = build_object_pairs(&SystemRunner, &tree, &patch, &work.path().join("build")).unwrap();
    assert_eq!(out.pairs.len(), 1);
    assert_eq!(
        changed_text_sections(&out.pairs[0].orig, &out.pairs[0].patched),
        BTreeSet::from([".text.cmdline_proc_show".to_string()])
    );
    assert_eq!(hash_files(&user, &["fs/proc/cmdline.c"]), before);
    assert_eq!(
        fs::read_to_string(user.join("fs/proc/cmdline.o")).unwrap(),
        "the user's own object"
    );
    // A configured tree is not reconfigured when no config is given.
    assert!(tree.timings.get("prepare").is_none());
}

/// 6.1 compiles kernel/sched/rt.c only as part of build_policy.c, which `#include`s it.
#[test]
fn included_c_file_selects_the_unit_that_includes_it() {
    if !enabled() {
        return;
    }
    let tree = tree();
    let work = tempfile::tempdir().unwrap();
    let patch = write_patch(
        work.path(),
        "rt.patch",
        "--- a/kernel/sched/rt.c\n+++ b/kernel/sched/rt.c\n@@ -3041,6 +3041,7 @@\n \tint ret;\n \tstatic DEFINE_MUTEX(mutex);\n \n+\tpr_debug(\"kpatch-rs\\n\");\n \tmutex_lock(&mutex);\n \tret = proc_dointvec(table, write, buffer, lenp, ppos);\n \t/*\n",
    );
    let out = build_object_pairs(&SystemRunner, &tree, &patch, &work.path().join("build")).unwrap();
    let units: Vec<(String, String)> = out
        .pairs
        .iter()
        .map(|p| (p.unit.display().to_string(), p.klp_object.clone()))
        .collect();
    assert_eq!(
        units,
        vec![(
            "kernel/sched/build_policy.c".to_string(),
            "vmlinux".to_string()
        )]
    );
    let changed = changed_text_sections(&out.pairs[0].orig, &out.pairs[0].patched);
    assert!(changed.contains(".text.sched_rr_handler"), "{changed:?}");
}

#[test]
fn compiler_warnings_about_the_patched_code_are_returned() {
    if !enabled() {
        return;
    }
    let tree = tree();
    let work = tempfile::tempdir().unwrap();
    let patch = write_patch(
        work.path(),
        "warn.patch",
        &CMDLINE_PATCH.replace("seq_puts(m, \"kpatch-rs \");", "int kpatch_rs_unused;"),
    );
    let out = build_object_pairs(&SystemRunner, &tree, &patch, &work.path().join("build")).unwrap();
    assert!(
        out.patched_warnings
            .iter()
            .any(|w| w.contains("warning: unused variable") && w.contains("kpatch_rs_unused")),
        "{:?}",
        out.patched_warnings
    );
}
