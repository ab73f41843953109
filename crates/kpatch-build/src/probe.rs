//! Which objects the target configuration builds, and where they end up (vmlinux or which
//! module), as kbuild itself evaluates the Makefiles.
//!
//! kbuild builds a single object by descending from the tree root through every directory
//! Makefile on the way (`make fs/proc/x.o` reads `Kbuild`, `fs/Makefile`, `fs/proc/Makefile`,
//! each with `scripts/Makefile.lib`). We ask for a goal that does not exist,
//! `<dir>/kpatch-rs-probe.o`, and give make an extra makefile through `MAKEFILES` that makes the
//! goal depend on a recipe writing each level's evaluated lists (`real-obj-y`, `real-obj-m`,
//! `lib-y`, composite objects, and whether the level's built-ins reach vmlinux
//! (`need-builtin`) and its modules are built (`need-modorder`)) to a file. Nothing is compiled.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;

use crate::error::{io_err, Result};
use crate::exec::Runner;
use crate::kbuild::{module_name_fix, normalize, Kbuild};

const PROBE_NAME: &str = "kpatch-rs-probe.o";

/// The make fragment read by every make process of the probe run.
const HOOK: &str = r#"
kpatch-rs-goals := $(filter %/kpatch-rs-probe.o,$(MAKECMDGOALS))
ifneq ($(kpatch-rs-goals),)
define kpatch-rs-nl


endef
$(kpatch-rs-goals): kpatch-rs-dump
%/kpatch-rs-probe.o: ; @:
.PHONY: kpatch-rs-dump
kpatch-rs-dump:
	$(if $(filter %scripts/Makefile.build,$(MAKEFILE_LIST)),$(file >$(KPATCH_RS_PROBE_OUT)/$(subst /,@,$(obj)).level,obj=$(obj)$(kpatch-rs-nl)need-builtin=$(need-builtin)$(kpatch-rs-nl)need-modorder=$(need-modorder)$(kpatch-rs-nl)real-obj-y=$(real-obj-y)$(kpatch-rs-nl)real-obj-m=$(real-obj-m)$(kpatch-rs-nl)lib-y=$(lib-y)$(kpatch-rs-nl)subdir-ym=$(subdir-ym)$(kpatch-rs-nl)$(foreach m,$(multi-obj-y) $(multi-obj-m),multi=$(patsubst $(obj)/%,%,$m)=$(call suffix-search,$(patsubst $(obj)/%,%,$m),.o,-objs -y -m)$(kpatch-rs-nl))))@:
endif
"#;

/// Where an object is linked in the target configuration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Placement {
    Vmlinux,
    /// The module's name as the kernel knows it (`ext4`, `nf_conntrack`).
    Module(String),
}

impl Placement {
    /// The klp object name: `vmlinux` or the module name.
    pub fn klp_object(&self) -> &str {
        match self {
            Placement::Vmlinux => kpatch_common::VMLINUX,
            Placement::Module(m) => m,
        }
    }
}

/// One directory level as kbuild evaluated it (paths relative to the tree root).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Level {
    pub obj: String,
    pub need_builtin: bool,
    pub need_modorder: bool,
    pub real_obj_y: BTreeSet<String>,
    pub real_obj_m: BTreeSet<String>,
    pub lib_y: BTreeSet<String>,
    /// Subdirectories kbuild descends into from this level.
    pub subdir_ym: BTreeSet<String>,
    /// Composite object (relative to the tree) → its parts.
    pub multi: BTreeMap<String, BTreeSet<String>>,
    /// kbuild's own spelling of the objects it names with `..`, by their normal path:
    /// amdgpu's `drivers/gpu/drm/amd/amdgpu/../display/dc/core/dc.o`. Only under that name does
    /// the level that defines the object (and its `-I` flags) build it.
    pub spelled: BTreeMap<String, String>,
}

impl Level {
    /// Parses one dump written by the hook.
    pub fn parse(text: &str) -> Option<Level> {
        let mut l = Level::default();
        let mut raw_multi: Vec<(String, Vec<String>)> = Vec::new();
        // make's foreach joins its items with a space, so every composite after the first
        // starts with one.
        for line in text.lines().map(str::trim_start) {
            let (k, v) = match line.split_once('=') {
                Some(kv) => kv,
                None => continue,
            };
            match k {
                "obj" => l.obj = v.trim().to_string(),
                "need-builtin" => l.need_builtin = !v.trim().is_empty(),
                "need-modorder" => l.need_modorder = !v.trim().is_empty(),
                "real-obj-y" => l.real_obj_y = words(v),
                "real-obj-m" => l.real_obj_m = words(v),
                "lib-y" => l.lib_y = words(v),
                "subdir-ym" => l.subdir_ym = words(v),
                "multi" => {
                    let (name, parts) = v.split_once('=')?;
                    raw_multi.push((
                        name.trim().to_string(),
                        parts.split_whitespace().map(String::from).collect(),
                    ));
                }
                _ => {}
            }
        }
        if l.obj.is_empty() {
            return None;
        }
        let prefix = if l.obj == "." {
            String::new()
        } else {
            format!("{}/", l.obj)
        };
        // real-obj-y/m and lib-y already carry the directory prefix; composite parts do not.
        for (name, parts) in raw_multi {
            let parts = parts
                .iter()
                .map(|p| normalize(&format!("{prefix}{p}")))
                .collect();
            l.multi.insert(normalize(&format!("{prefix}{name}")), parts);
        }
        for p in l.real_obj_y.iter().chain(&l.real_obj_m).chain(&l.lib_y) {
            let n = normalize(p);
            if n != *p {
                l.spelled.insert(n, p.clone());
            }
        }
        l.real_obj_y = l.real_obj_y.iter().map(|p| normalize(p)).collect();
        l.real_obj_m = l.real_obj_m.iter().map(|p| normalize(p)).collect();
        l.lib_y = l.lib_y.iter().map(|p| normalize(p)).collect();
        l.subdir_ym = l.subdir_ym.iter().map(|p| normalize(p)).collect();
        Some(l)
    }
}

fn words(v: &str) -> BTreeSet<String> {
    v.split_whitespace().map(String::from).collect()
}

/// Decides where `object` (`fs/ext4/inode.o`) is linked given the evaluated levels;
/// `None` when the configuration does not build it.
pub fn classify(levels: &[Level], object: &str) -> Option<Placement> {
    let object = normalize(object);
    for l in levels {
        if l.need_builtin && (l.real_obj_y.contains(&object) || l.lib_y.contains(&object)) {
            return Some(Placement::Vmlinux);
        }
    }
    for l in levels {
        if l.need_modorder && l.real_obj_m.contains(&object) {
            let composite = l
                .multi
                .iter()
                .find(|(_, parts)| parts.contains(&object))
                .map(|(name, _)| name.clone());
            let module = composite.unwrap_or_else(|| object.clone());
            let base = module.rsplit('/').next().unwrap_or(&module);
            let base = base.strip_suffix(".o").unwrap_or(base);
            return Some(Placement::Module(module_name_fix(base)));
        }
    }
    None
}

/// The make goal that builds `object` (its path relative to the tree): kbuild's own spelling
/// when a level names it through `..`, else the object itself.
pub fn make_target(levels: &[Level], object: &str) -> String {
    let n = normalize(object);
    levels
        .iter()
        .find_map(|l| l.spelled.get(&n).cloned())
        .unwrap_or_else(|| object.to_string())
}

/// What the probe found for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    /// Where it is linked; `None` when the configuration does not build it.
    pub placement: Option<Placement>,
    /// The make goal that builds it ([`make_target`]).
    pub target: String,
}

/// Evaluates the Makefiles on the way to every object's directory and classifies each object.
/// `scratch` is an empty directory the probe may write to.
pub fn probe(
    runner: &dyn Runner,
    kbuild: &Kbuild,
    objects: &[String],
    scratch: &Path,
) -> Result<HashMap<String, Probed>> {
    let out_dir = scratch.join("levels");
    fs::create_dir_all(&out_dir).map_err(io_err(&out_dir))?;
    let hook = scratch.join("probe.mk");
    fs::write(&hook, HOOK).map_err(io_err(&hook))?;
    let goals: BTreeSet<String> = objects.iter().map(|o| probe_goal(dir_of(o))).collect();
    let mut levels = run_probe(runner, kbuild, &goals, &hook, &out_dir)?;
    // Composite objects may take parts from outside their directory (amdgpu's
    // `../display/...`): such an object's own directory is no kbuild level. Evaluate the
    // subdirectories of the deepest level on its path as well, preferring those that share
    // its next path component.
    let unplaced: Vec<&String> = objects
        .iter()
        .filter(|o| classify(&levels, o).is_none())
        .collect();
    let seen: BTreeSet<String> = levels.iter().map(|l| l.obj.clone()).collect();
    let mut more = BTreeSet::new();
    for o in unplaced {
        for d in sibling_candidates(&levels, o) {
            if !seen.contains(&d) {
                more.insert(probe_goal(&d));
            }
        }
    }
    if !more.is_empty() {
        levels = run_probe(runner, kbuild, &more, &hook, &out_dir)?;
    }
    Ok(objects
        .iter()
        .map(|o| {
            let probed = Probed {
                placement: classify(&levels, o),
                target: make_target(&levels, o),
            };
            (o.clone(), probed)
        })
        .collect())
}

fn dir_of(object: &str) -> &str {
    object.rsplit_once('/').map(|(d, _)| d).unwrap_or(".")
}

fn probe_goal(dir: &str) -> String {
    if dir == "." || dir.is_empty() {
        PROBE_NAME.to_string()
    } else {
        format!("{dir}/{PROBE_NAME}")
    }
}

fn is_under(path: &str, dir: &str) -> bool {
    dir == "." || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// Subdirectories of the deepest evaluated level above `object` where a composite holding it
/// may be defined: those sharing the object's next path component, else all of them.
pub fn sibling_candidates(levels: &[Level], object: &str) -> Vec<String> {
    let Some(deepest) = levels
        .iter()
        .filter(|l| is_under(object, &l.obj))
        .max_by_key(|l| l.obj.len())
    else {
        return Vec::new();
    };
    let rest = if deepest.obj == "." {
        object
    } else {
        &object[deepest.obj.len() + 1..]
    };
    let next = rest.split('/').next().unwrap_or("");
    let prefix = if deepest.obj == "." {
        format!("{next}/")
    } else {
        format!("{}/{next}/", deepest.obj)
    };
    let sharing: Vec<String> = deepest
        .subdir_ym
        .iter()
        .filter(|d| d.starts_with(&prefix))
        .cloned()
        .collect();
    if sharing.is_empty() {
        deepest.subdir_ym.iter().cloned().collect()
    } else {
        sharing
    }
}

fn run_probe(
    runner: &dyn Runner,
    kbuild: &Kbuild,
    goals: &BTreeSet<String>,
    hook: &Path,
    out_dir: &Path,
) -> Result<Vec<Level>> {
    let cmd = kbuild
        .make_objects(goals)
        .env("MAKEFILES", hook)
        .env("KPATCH_RS_PROBE_OUT", out_dir);
    runner.run_ok(&cmd)?;
    let mut levels = Vec::new();
    for e in fs::read_dir(out_dir).map_err(io_err(out_dir))? {
        let p = e.map_err(io_err(out_dir))?.path();
        let text = fs::read_to_string(&p).map_err(io_err(&p))?;
        if let Some(l) = Level::parse(&text) {
            levels.push(l);
        }
    }
    Ok(levels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_classify_builtin_composite_and_modules() {
        let root = Level::parse("obj=.\nneed-builtin=1\nneed-modorder=1\nreal-obj-y=fs/built-in.a\nreal-obj-m=fs/modules.order\nlib-y=\n").unwrap();
        let fs_ = Level::parse("obj=fs\nneed-builtin=1\nneed-modorder=1\nreal-obj-y=fs/proc/built-in.a fs/open.o\nreal-obj-m=fs/ext4/modules.order fs/binfmt_misc.o\nlib-y=\n").unwrap();
        let proc_ = Level::parse("obj=fs/proc\nneed-builtin=1\nneed-modorder=1\nreal-obj-y=fs/proc/cmdline.o fs/proc/base.o\nreal-obj-m=\nlib-y=\nmulti=proc.o=cmdline.o base.o\n multi=other.o=x.o\n").unwrap();
        let ext4 = Level::parse("obj=fs/ext4\nneed-builtin=\nneed-modorder=1\nreal-obj-y=\nreal-obj-m=fs/ext4/inode.o fs/ext4/sub/x.o\nlib-y=\nmulti=ext4.o=inode.o sub/x.o\n").unwrap();
        assert_eq!(
            proc_.multi["fs/proc/proc.o"],
            ["fs/proc/cmdline.o", "fs/proc/base.o"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        );
        let levels = vec![root, fs_, proc_, ext4];
        assert_eq!(
            classify(&levels, "fs/proc/cmdline.o"),
            Some(Placement::Vmlinux)
        );
        assert_eq!(classify(&levels, "fs/open.o"), Some(Placement::Vmlinux));
        assert_eq!(
            classify(&levels, "fs/ext4/inode.o"),
            Some(Placement::Module("ext4".into()))
        );
        assert_eq!(
            classify(&levels, "fs/ext4/sub/x.o"),
            Some(Placement::Module("ext4".into()))
        );
        assert_eq!(
            classify(&levels, "fs/binfmt_misc.o"),
            Some(Placement::Module("binfmt_misc".into()))
        );
        assert_eq!(classify(&levels, "fs/proc/nommu.o"), None);
    }

    #[test]
    fn builtins_of_a_directory_reached_only_as_module_are_not_in_vmlinux() {
        let l = Level::parse("obj=drivers/x\nneed-builtin=\nneed-modorder=1\nreal-obj-y=drivers/x/a.o\nreal-obj-m=drivers/x/b-c.o\n").unwrap();
        assert_eq!(classify(std::slice::from_ref(&l), "drivers/x/a.o"), None);
        assert_eq!(
            classify(&[l], "drivers/x/b-c.o"),
            Some(Placement::Module("b_c".into()))
        );
    }

    #[test]
    fn siblings_sharing_the_next_component_are_preferred() {
        let drm = Level::parse("obj=drivers/gpu/drm\nneed-builtin=1\nsubdir-ym=drivers/gpu/drm/amd/amdgpu drivers/gpu/drm/i915 drivers/gpu/drm/amd/amdxcp\n").unwrap();
        let gpu = Level::parse("obj=drivers/gpu\nsubdir-ym=drivers/gpu/drm\n").unwrap();
        let levels = vec![gpu, drm];
        assert_eq!(
            sibling_candidates(&levels, "drivers/gpu/drm/amd/display/dc/core/dc.o"),
            vec![
                "drivers/gpu/drm/amd/amdgpu".to_string(),
                "drivers/gpu/drm/amd/amdxcp".to_string()
            ]
        );
        assert_eq!(
            sibling_candidates(&levels, "drivers/gpu/drm/other/x.o").len(),
            3
        );
        assert!(sibling_candidates(&levels, "fs/x.o").is_empty());
    }

    #[test]
    fn composite_parts_in_other_directories_are_normalized() {
        let l = Level::parse("obj=drivers/gpu/amdgpu\nneed-builtin=1\nneed-modorder=1\nreal-obj-y=\nreal-obj-m=drivers/gpu/amdgpu/../display/dc.o\nmulti=amdgpu.o=../display/dc.o\n").unwrap();
        assert_eq!(
            classify(std::slice::from_ref(&l), "drivers/gpu/display/dc.o"),
            Some(Placement::Module("amdgpu".into()))
        );
    }

    #[test]
    fn regression_amdgpu_display_objects_are_built_under_kbuilds_own_name() {
        // `make drivers/gpu/drm/amd/display/dc/virtual/virtual_link_encoder.o` fails
        // ("dm_services.h: No such file"): amdgpu's Makefile names the object through
        // `../display` and only there adds the display directories to the include path.
        let l = Level::parse("obj=drivers/gpu/amdgpu\nneed-builtin=1\nneed-modorder=1\nreal-obj-y=\nreal-obj-m=drivers/gpu/amdgpu/../display/dc.o drivers/gpu/amdgpu/amdgpu_drv.o\nmulti=amdgpu.o=../display/dc.o amdgpu_drv.o\n").unwrap();
        assert_eq!(
            make_target(std::slice::from_ref(&l), "drivers/gpu/display/dc.o"),
            "drivers/gpu/amdgpu/../display/dc.o"
        );
        assert_eq!(
            make_target(std::slice::from_ref(&l), "drivers/gpu/amdgpu/amdgpu_drv.o"),
            "drivers/gpu/amdgpu/amdgpu_drv.o"
        );
        assert_eq!(make_target(&[l], "fs/proc/cmdline.o"), "fs/proc/cmdline.o");
    }

    /// A miniature kbuild (top Makefile descending into directory Makefiles through a
    /// Makefile.build) checks that the hook dumps every level it passes.
    #[test]
    fn hook_dumps_each_level_of_a_synthetic_tree() {
        if std::process::Command::new("make")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: make is not installed");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let w = |p: &str, s: &str| {
            let f = root.join(p);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, s).unwrap();
        };
        w("include/config/auto.conf", "CONFIG_A=y\nCONFIG_B=m\n");
        // Our own minimal stand-in for kbuild's Makefile.build + Makefile.lib.
        w("scripts/Makefile.build", "\
src := $(obj)
obj-y :=
obj-m :=
include include/config/auto.conf
include $(src)/Makefile
suffix-search = $(strip $(foreach s, $3, $($(1:%$(strip $2)=%$s))))
subdir-ym := $(patsubst %/,%,$(filter %/,$(obj-y) $(obj-m)))
multi-obj-m := $(foreach m,$(obj-m),$(if $(call suffix-search,$m,.o,-y),$m))
real-obj-y := $(addprefix $(obj)/,$(filter-out %/,$(obj-y)))
real-obj-m := $(addprefix $(obj)/,$(foreach m,$(filter-out %/,$(obj-m)),$(or $(call suffix-search,$m,.o,-y),$m)))
goals := $(filter $(obj)/%,$(MAKECMDGOALS))
sub-goals := $(foreach d,$(subdir-ym),$(filter $(obj)/$d/%,$(goals)))
$(sub-goals): descend ; @:
descend: ; $(foreach d,$(subdir-ym),$(if $(filter $(obj)/$d/%,$(goals)),$(MAKE) -f scripts/Makefile.build obj=$(obj)/$d need-builtin=1 need-modorder=1 $(filter $(obj)/$d/%,$(goals));))
");
        w("Makefile", "$(MAKECMDGOALS): descend ; @:\ndescend: ; $(MAKE) -f scripts/Makefile.build obj=fs need-builtin=1 need-modorder=1 $(MAKECMDGOALS)\n");
        w(
            "fs/Makefile",
            "obj-$(CONFIG_A) += a.o proc/\nobj-$(CONFIG_B) += ext/\nobj-$(CONFIG_C) += off.o\n",
        );
        w("fs/proc/Makefile", "obj-y += cmdline.o\n");
        w(
            "fs/ext/Makefile",
            "obj-$(CONFIG_B) += ext-mod.o\next-mod-y := inode.o super.o\n",
        );
        let mut k = Kbuild::new(root, "cc", None);
        k.jobs = 1;
        let scratch = tempfile::tempdir().unwrap();
        let objs: Vec<String> = ["fs/a.o", "fs/off.o", "fs/proc/cmdline.o", "fs/ext/inode.o"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = probe(&crate::exec::SystemRunner, &k, &objs, scratch.path()).unwrap();
        assert_eq!(r["fs/a.o"].placement, Some(Placement::Vmlinux));
        assert_eq!(r["fs/off.o"].placement, None);
        assert_eq!(r["fs/proc/cmdline.o"].placement, Some(Placement::Vmlinux));
        assert_eq!(
            r["fs/ext/inode.o"].placement,
            Some(Placement::Module("ext_mod".into()))
        );
    }
}
