//! Compiling a set of objects in a prepared tree and keeping copies of them.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{io_err, BuildError, Result};
use crate::exec::Runner;
use crate::kbuild::Kbuild;

/// Removes the in-tree objects so make rebuilds them whatever their timestamps say.
pub fn remove_objects(tree: &Path, objects: &[String]) -> Result<()> {
    for o in objects {
        let p = tree.join(o);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BuildError::Io { path: p, source: e }),
        }
    }
    Ok(())
}

/// Objects a (user's, already built) tree had before this build, kept aside and put back
/// with their old timestamps when dropped, so the build leaves the tree's objects as it
/// found them.
#[derive(Debug)]
pub struct SavedObjects {
    tree: PathBuf,
    dir: PathBuf,
    saved: Vec<(String, std::time::SystemTime)>,
}

impl SavedObjects {
    pub fn save(tree: &Path, objects: &[String], dir: &Path) -> Result<Self> {
        let mut saved = Vec::new();
        for o in objects {
            let src = tree.join(o);
            let Ok(meta) = fs::metadata(&src) else {
                continue;
            };
            let dst = dir.join(o);
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            fs::copy(&src, &dst).map_err(io_err(&src))?;
            saved.push((o.clone(), meta.modified().map_err(io_err(&src))?));
        }
        Ok(SavedObjects {
            tree: tree.to_path_buf(),
            dir: dir.to_path_buf(),
            saved,
        })
    }

    pub fn len(&self) -> usize {
        self.saved.len()
    }

    pub fn is_empty(&self) -> bool {
        self.saved.is_empty()
    }

    fn restore(&mut self) -> Result<()> {
        for (o, mtime) in self.saved.drain(..) {
            let (src, dst) = (self.dir.join(&o), self.tree.join(&o));
            fs::copy(&src, &dst).map_err(io_err(&dst))?;
            fs::File::options()
                .write(true)
                .open(&dst)
                .and_then(|f| f.set_modified(mtime))
                .map_err(io_err(&dst))?;
        }
        Ok(())
    }
}

impl Drop for SavedObjects {
    fn drop(&mut self) {
        let _ = self.restore();
    }
}

/// Builds `objects` with one make run and copies each to `dest/<object>`. Returns the
/// compiler's diagnostics (the `warning:`/`note:` lines it printed and their context).
pub fn compile(
    runner: &dyn Runner,
    kbuild: &Kbuild,
    objects: &[String],
    dest: &Path,
) -> Result<Vec<String>> {
    compile_in_order(runner, kbuild, objects, dest, &mut |_| {})
}

/// How many objects one make run gets when they are built in order: enough to keep the jobs
/// busy, few enough that the first ones are done first.
pub fn chunk_size(kbuild: &Kbuild) -> usize {
    (kbuild.jobs.max(1) * 8).max(16)
}

/// [`compile`], in the order given (chunks of [`chunk_size`], one make run each, since make
/// orders a run's goals its own way), calling `done` with the number of objects built so far
/// as kbuild reports each one (its `  CC      fs/proc/cmdline.o` lines).
pub fn compile_in_order(
    runner: &dyn Runner,
    kbuild: &Kbuild,
    objects: &[String],
    dest: &Path,
    done: &mut dyn FnMut(usize),
) -> Result<Vec<String>> {
    let tree = &kbuild.tree;
    remove_objects(tree, objects)?;
    let mut warnings = Vec::new();
    let mut built = 0;
    for chunk in objects.chunks(chunk_size(kbuild)) {
        crate::interrupt::check()?;
        let wanted: std::collections::HashSet<&str> = chunk.iter().map(String::as_str).collect();
        let run = runner.run_lines(
            &kbuild.make_objects(chunk.iter().map(String::as_str)),
            &mut |line| {
                if line.starts_with("  ")
                    && line
                        .split_whitespace()
                        .last()
                        .is_some_and(|w| wanted.contains(w))
                {
                    built += 1;
                    done(built);
                }
            },
        )?;
        if !run.success() {
            return Err(crate::exec::RunError::Failed {
                command: kbuild
                    .make_objects(chunk.iter().map(String::as_str))
                    .to_string(),
                status: run.status(),
                output: kpatch_common::exec::tail(
                    &run.combined(),
                    kpatch_common::exec::FAILED_OUTPUT_LINES,
                ),
            }
            .into());
        }
        warnings.extend(diagnostics(&run.stderr));
        for o in chunk {
            let src = tree.join(o);
            if !src.is_file() {
                return Err(BuildError::MissingObject {
                    tree: tree.clone(),
                    object: o.clone(),
                });
            }
            let dst = dest.join(o);
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            fs::copy(&src, &dst).map_err(io_err(&src))?;
        }
    }
    Ok(warnings)
}

/// Preprocesses the C units of `objects` (`fs/proc/cmdline.o` → kbuild's `fs/proc/cmdline.i`,
/// with the object's own flags) with one make run and moves each output to
/// `dest/<object>.i`. Returns the objects whose output is there (a unit that fails to
/// preprocess is left out; make goes on with the others).
pub fn preprocess(
    runner: &dyn Runner,
    kbuild: &Kbuild,
    objects: &[String],
    dest: &Path,
) -> Result<Vec<String>> {
    let tree = &kbuild.tree;
    let goals: Vec<String> = objects.iter().map(|o| i_of(o)).collect();
    remove_objects(tree, &goals)?;
    runner
        .run(&kbuild.make_objects(std::iter::once("-k").chain(goals.iter().map(String::as_str))))?;
    let mut out = Vec::new();
    for (o, i) in objects.iter().zip(&goals) {
        let src = tree.join(i);
        // kbuild's command file of the .i is of no use afterwards.
        let _ = fs::remove_file(cmd_file(tree, i));
        if !src.is_file() {
            continue;
        }
        let dst = dest.join(format!("{o}.i"));
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        if fs::rename(&src, &dst).is_err() {
            fs::copy(&src, &dst).map_err(io_err(&src))?;
            fs::remove_file(&src).map_err(io_err(&src))?;
        }
        out.push(o.clone());
    }
    Ok(out)
}

/// `fs/proc/cmdline.o` → `fs/proc/cmdline.i`.
fn i_of(object: &str) -> String {
    format!("{}.i", object.strip_suffix(".o").unwrap_or(object))
}

/// gcc's diagnostics in make's stderr: everything but make's own lines.
pub fn diagnostics(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("make"))
        .map(String::from)
        .collect()
}

/// kbuild's saved command file of an object: `fs/proc/.cmdline.o.cmd`.
pub fn cmd_file(tree: &Path, object: &str) -> PathBuf {
    let (dir, name) = object.rsplit_once('/').unwrap_or(("", object));
    tree.join(dir).join(format!(".{name}.cmd"))
}

/// Whether the compiler's dependency list in a `.o.cmd` file names `header`.
pub fn deps_mention(cmd_text: &str, header: &Path) -> bool {
    let Some(h) = header.to_str() else {
        return false;
    };
    let suffix = format!("/{h}");
    cmd_text
        .lines()
        .skip_while(|l| !l.starts_with("deps_"))
        .flat_map(|l| l.split_whitespace())
        .any(|tok| tok == h || tok.ends_with(&suffix))
}

/// From a `.o.cmd` command line: `Some(module)` when kbuild compiled the object for a module
/// (`-DMODULE`, with the module from `-DKBUILD_MODNAME`), `None` for a built-in object. The
/// line is `cmd_<object> := ...` up to 6.1, `savedcmd_<object> := ...` from 6.2 on.
pub fn compiled_for_module(cmd_text: &str) -> Option<String> {
    let line = cmd_text
        .lines()
        .find(|l| l.starts_with("cmd_") || l.starts_with("savedcmd_"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    if !words.contains(&"-DMODULE") {
        return None;
    }
    let name = words
        .iter()
        .find_map(|w| w.strip_prefix("-DKBUILD_MODNAME="))?;
    Some(
        name.trim_matches(|c| c == '\'' || c == '"' || c == '\\')
            .to_string(),
    )
}

/// Whether the last compile of `object` read `header`.
pub fn object_depends_on(tree: &Path, object: &str, header: &Path) -> Result<bool> {
    let p = cmd_file(tree, object);
    let text = fs::read_to_string(&p).map_err(io_err(&p))?;
    Ok(deps_mention(&text, header))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_drop_makes_own_lines() {
        let e = "make[1]: Entering directory '/t'\nfs/proc/cmdline.c: In function 'f':\nfs/proc/cmdline.c:9:13: warning: unused variable 'x' [-Wunused-variable]\n    9 |         int x;\n\nmake[1]: Leaving directory '/t'\n";
        assert_eq!(
            diagnostics(e),
            vec![
                "fs/proc/cmdline.c: In function 'f':",
                "fs/proc/cmdline.c:9:13: warning: unused variable 'x' [-Wunused-variable]",
                "    9 |         int x;"
            ]
        );
    }

    #[test]
    fn saved_objects_come_back_with_their_timestamps() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        fs::create_dir_all(tree.join("fs/proc")).unwrap();
        fs::write(tree.join("fs/proc/a.o"), "users object").unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        fs::File::options()
            .write(true)
            .open(tree.join("fs/proc/a.o"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let objs = vec!["fs/proc/a.o".to_string(), "fs/proc/b.o".to_string()];
        let saved = SavedObjects::save(&tree, &objs, &t.path().join("saved")).unwrap();
        assert_eq!(saved.len(), 1);
        fs::write(tree.join("fs/proc/a.o"), "ours").unwrap();
        drop(saved);
        assert_eq!(
            fs::read_to_string(tree.join("fs/proc/a.o")).unwrap(),
            "users object"
        );
        assert_eq!(
            fs::metadata(tree.join("fs/proc/a.o"))
                .unwrap()
                .modified()
                .unwrap(),
            old
        );
        assert!(!tree.join("fs/proc/b.o").exists());
    }

    #[test]
    fn module_flags_are_read_from_the_command_line() {
        let m = "cmd_fs/ext4/inode.o := gcc-12 -DMODULE -DKBUILD_BASENAME='\"inode\"' -DKBUILD_MODNAME='\"ext4\"' -c -o fs/ext4/inode.o\n";
        assert_eq!(compiled_for_module(m).as_deref(), Some("ext4"));
        let b = "cmd_fs/proc/cmdline.o := gcc-12 -DKBUILD_BASENAME='\"cmdline\"' -DKBUILD_MODNAME='\"proc\"' -c\n";
        assert_eq!(compiled_for_module(b), None);
    }

    #[test]
    fn regression_6_12_module_objects_were_taken_for_vmlinux_ones() {
        // Since 6.2 kbuild writes `savedcmd_`: zram_drv.o was "compiled for vmlinux".
        let m = "savedcmd_drivers/block/zram/zram_drv.o := gcc-12 -Wp,-MMD,drivers/block/zram/.zram_drv.o.d -DMODULE -DKBUILD_BASENAME='\"zram_drv\"' -DKBUILD_MODNAME='\"zram\"' -c\n";
        assert_eq!(compiled_for_module(m).as_deref(), Some("zram"));
    }

    #[test]
    fn dependency_lists_are_read() {
        let text = "cmd_fs/proc/cmdline.o := gcc-12 -Wp,-MMD,fs/proc/.cmdline.o.d -include ./include/linux/kconfig.h\n\nsource_fs/proc/cmdline.o := fs/proc/cmdline.c\n\ndeps_fs/proc/cmdline.o := \\\n  include/linux/kconfig.h \\\n    $(wildcard include/config/CPU_BIG_ENDIAN) \\\n  include/linux/seq_file.h \\\n\nfs/proc/cmdline.o: $(deps_fs/proc/cmdline.o)\n";
        assert!(deps_mention(text, Path::new("include/linux/seq_file.h")));
        assert!(!deps_mention(text, Path::new("include/linux/fs.h")));
        // The command line before deps_ does not count.
        assert!(!deps_mention(text, Path::new("fs/proc/.cmdline.o.d")));
        assert_eq!(
            cmd_file(Path::new("/t"), "fs/proc/cmdline.o"),
            PathBuf::from("/t/fs/proc/.cmdline.o.cmd")
        );
    }
}
