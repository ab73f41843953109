//! A simulated kernel: sysfs and procfs files in a temporary directory tree, and a livepatch
//! core that moves tasks between states on every [`Kernel::sleep`] (one "tick").
//!
//! A fake made with [`FakeKernel::create_at`] lives in a directory of the caller's and keeps its
//! state there after every change, so that another process can [`FakeKernel::open`] it: the
//! fault tests run the kpatch-rs binary on it (`KPATCH_RS_TEST_FAKE_KERNEL=DIR`), kill it at a
//! step, and run the next command on the kernel the killed one left.

use crate::modinfo::ModuleFile;
use crate::sys::{Kernel, Sig, LIVEPATCH_DIR};
use nix::errno::Errno;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// When a task that blocks a transition lets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Stuck {
    /// Switches on the first tick.
    No,
    /// Switches after this many ticks.
    Ticks(u32),
    /// Switches only when the kernel signals it (`<patch>/signal` written).
    UntilSignal,
    /// Switches only after SIGSTOP then SIGCONT.
    UntilStopCont,
    /// Never switches (a kthread asleep in the function).
    Forever,
}

/// A simulated task (one thread).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FakeTask {
    pub pid: i32,
    pub tid: i32,
    pub comm: String,
    pub kthread: bool,
    /// How it behaves when a transition towards `blocks_target` runs.
    pub stuck: Stuck,
    /// 1: sleeps inside the old function (blocks patching); 0: inside the new one.
    pub blocks_target: i32,
    /// `/proc/<pid>/task/<tid>/stack`; `None` makes the file unreadable.
    pub stack: Option<String>,
    /// Its cgroup v2 path (`/` is the root), as `/proc/<pid>/cgroup` shows it.
    pub cgroup: String,
    /// In uninterruptible sleep (`D`): neither a signal nor the cgroup freezer stops it.
    pub uninterruptible: bool,
    state: i32,
    stopped: bool,
    /// Frozen by the cgroup freezer.
    frozen: bool,
}

impl FakeTask {
    pub fn user(pid: i32, comm: &str) -> Self {
        FakeTask {
            pid,
            tid: pid,
            comm: comm.into(),
            kthread: false,
            stuck: Stuck::No,
            blocks_target: 1,
            stack: Some("[<0>] do_syscall_64+0x5b/0x80\n".into()),
            cgroup: "/".into(),
            uninterruptible: false,
            state: -1,
            stopped: false,
            frozen: false,
        }
    }

    pub fn kthread(pid: i32, comm: &str) -> Self {
        FakeTask {
            kthread: true,
            stack: Some("[<0>] kthread+0xe6/0x110\n".into()),
            ..Self::user(pid, comm)
        }
    }

    /// Blocks transitions towards `target` the way `stuck` says.
    pub fn stuck(mut self, stuck: Stuck, target: i32) -> Self {
        self.stuck = stuck;
        self.blocks_target = target;
        self
    }

    pub fn with_stack(mut self, stack: Option<&str>) -> Self {
        self.stack = stack.map(str::to_string);
        self
    }

    /// Make it thread `tid` of process `pid`.
    pub fn thread_of(mut self, pid: i32) -> Self {
        self.pid = pid;
        self
    }

    /// Put it in cgroup `path` (created with the task; `/` is the root).
    pub fn in_cgroup(mut self, path: &str) -> Self {
        self.cgroup = path.into();
        self
    }

    /// In uninterruptible sleep (`D`): it cannot be stopped or frozen.
    pub fn uninterruptible(mut self) -> Self {
        self.uninterruptible = true;
        self
    }

    /// Parked at the kernel boundary by SIGSTOP or the freezer: its stack holds no patched
    /// function, so an interruptible sleeper there can be switched.
    fn parked(&self) -> bool {
        (self.stopped || self.frozen) && !self.uninterruptible
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Transition {
    patch: String,
    target: i32,
    /// Atomic replace (`kpatch_rs_replace=1` in the module): when patching completes, every
    /// other patch is freed, as the kernel frees the replaced patches.
    replace: bool,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct State {
    clock: Duration,
    release: String,
    tasks: BTreeMap<i32, FakeTask>,
    transition: Option<Transition>,
    signal_attr: bool,
    /// An errno (raw) for the next `finit_module`.
    next_finit_error: Option<i32>,
    /// What the kernel logs as that `finit_module` fails.
    #[serde(default)]
    next_finit_log: Vec<String>,
    /// Module names, newest first (the `/proc/modules` order).
    modules: Vec<String>,
    calls: Vec<String>,
    log: Vec<String>,
    cgroup2: bool,
}

/// The simulated kernel. See the module documentation.
pub struct FakeKernel {
    root: Root,
    st: RefCell<State>,
}

/// Where the tree is: a temporary directory removed with the fake, or the caller's
/// (persistent: the state is saved there too).
enum Root {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

/// The file a persistent fake keeps its state in, at the top of its tree.
const STATE_FILE: &str = ".fake-kernel.json";

fn eio(e: io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32))
}

impl FakeKernel {
    /// A kernel with the livepatch core, running `release`, with no tasks.
    pub fn new(release: &str) -> io::Result<Self> {
        Self::with_root(Root::Temp(tempfile::tempdir()?), release)
    }

    /// A persistent kernel in `dir` (created if needed), running `release`, with no tasks.
    pub fn create_at(dir: &Path, release: &str) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Self::with_root(Root::Kept(dir.to_path_buf()), release)
    }

    /// The persistent kernel in `dir`, as the last process using it left it.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let text = std::fs::read_to_string(dir.join(STATE_FILE))?;
        let st: State = serde_json::from_str(&text)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(FakeKernel {
            root: Root::Kept(dir.to_path_buf()),
            st: RefCell::new(st),
        })
    }

    /// Saves the state of a persistent fake (atomically: a process killed meanwhile leaves the
    /// previous state).
    fn persist(&self) {
        if let Root::Kept(dir) = &self.root {
            let text = serde_json::to_vec(&*self.st.borrow()).unwrap_or_default();
            let _ = kpatch_common::fs::write_atomic(&dir.join(STATE_FILE), &text);
        }
    }

    fn root(&self) -> &Path {
        match &self.root {
            Root::Temp(t) => t.path(),
            Root::Kept(p) => p,
        }
    }

    fn with_root(root: Root, release: &str) -> io::Result<Self> {
        let k = FakeKernel {
            root,
            st: RefCell::new(State {
                clock: Duration::ZERO,
                release: release.into(),
                tasks: BTreeMap::new(),
                transition: None,
                signal_attr: false,
                next_finit_error: None,
                next_finit_log: Vec::new(),
                modules: Vec::new(),
                calls: Vec::new(),
                log: Vec::new(),
                cgroup2: false,
            }),
        };
        std::fs::create_dir_all(k.path(LIVEPATCH_DIR))?;
        std::fs::create_dir_all(k.path("/sys/module"))?;
        std::fs::create_dir_all(k.path("/proc"))?;
        k.sync_modules()?;
        k.persist();
        Ok(k)
    }

    /// A kernel built without `CONFIG_LIVEPATCH`.
    pub fn without_livepatch(release: &str) -> io::Result<Self> {
        let k = Self::new(release)?;
        std::fs::remove_dir(k.path(LIVEPATCH_DIR))?;
        Ok(k)
    }

    /// Where a kernel path lives in the tree.
    pub fn path(&self, p: impl AsRef<Path>) -> PathBuf {
        let p = p.as_ref();
        self.root().join(p.strip_prefix("/").unwrap_or(p))
    }

    /// Simulate a kernel with the `<patch>/signal` attribute (4.18–5.x).
    pub fn set_signal_attr(&self, on: bool) {
        self.st.borrow_mut().signal_attr = on;
        self.persist();
    }

    /// Make the next `finit_module` fail with `errno`.
    pub fn fail_next_finit(&self, errno: Errno) {
        self.st.borrow_mut().next_finit_error = Some(errno as i32);
        self.persist();
    }

    /// Make the next `finit_module` log `lines`, as the kernel does, then fail with `errno`.
    pub fn fail_next_finit_logging(&self, errno: Errno, lines: &[&str]) {
        {
            let mut st = self.st.borrow_mut();
            st.next_finit_error = Some(errno as i32);
            st.next_finit_log = lines.iter().map(|l| l.to_string()).collect();
        }
        self.persist();
    }

    /// Append a kernel log message.
    pub fn log(&self, msg: &str) {
        self.st.borrow_mut().log.push(msg.into());
        self.persist();
    }

    /// Write an arbitrary file into the tree (e.g. `/sys/kernel/security/lockdown`).
    pub fn put_file(&self, p: &str, content: &str) -> io::Result<()> {
        let path = self.path(p);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(path, content)
    }

    /// Add a task.
    pub fn add_task(&self, t: FakeTask) -> io::Result<()> {
        let tid = t.tid;
        self.st.borrow_mut().tasks.insert(tid, t);
        self.sync_task(tid)?;
        self.sync_cgroups()?;
        self.persist();
        Ok(())
    }

    /// Mount a cgroup v2 hierarchy at /sys/fs/cgroup (the root and every task's cgroup).
    pub fn mount_cgroup2(&self) -> io::Result<()> {
        self.st.borrow_mut().cgroup2 = true;
        self.sync_cgroups()?;
        self.persist();
        Ok(())
    }

    /// Sends `sig` to the tasks of process `pid`; returns their tids (none: no such process).
    fn signal(&self, pid: i32, sig: Sig) -> Vec<i32> {
        let mut st = self.st.borrow_mut();
        st.calls
            .push(format!("kill {pid} {}", format!("{sig:?}").to_uppercase()));
        let mut tids = Vec::new();
        for t in st.tasks.values_mut().filter(|t| t.pid == pid) {
            tids.push(t.tid);
            if t.kthread {
                continue; // kernel threads ignore signals
            }
            match sig {
                // Delivered when it wakes, which the simulation never lets happen.
                Sig::Stop if t.uninterruptible => {}
                Sig::Stop => t.stopped = true,
                Sig::Cont => {
                    if t.stopped && t.stuck == Stuck::UntilStopCont {
                        t.stuck = Stuck::No;
                    }
                    t.stopped = false;
                }
            }
        }
        tids
    }

    /// A write to `cgroup.freeze` or `cgroup.procs` of the cgroup at `rel` (under the root).
    fn cgroup_write(&self, rel: &Path, data: &str) -> io::Result<()> {
        let file = rel.file_name().and_then(|f| f.to_str()).unwrap_or("");
        let cg = format!("/{}", rel.parent().unwrap_or(Path::new("")).display());
        if !self.cgroup_dir(&cg).is_dir() {
            return Err(io::Error::from_raw_os_error(Errno::ENOENT as i32));
        }
        match file {
            "cgroup.freeze" if cg != "/" => std::fs::write(self.cgroup_dir(&cg).join(file), data)?,
            "cgroup.procs" => {
                let pid: i32 = data
                    .trim()
                    .parse()
                    .map_err(|_| io::Error::from_raw_os_error(Errno::EINVAL as i32))?;
                let mut st = self.st.borrow_mut();
                let mut found = false;
                for t in st.tasks.values_mut().filter(|t| t.pid == pid) {
                    t.cgroup = cg.clone();
                    found = true;
                }
                if !found {
                    return Err(io::Error::from_raw_os_error(Errno::ESRCH as i32));
                }
                let tids: Vec<i32> = st
                    .tasks
                    .values()
                    .filter(|t| t.pid == pid)
                    .map(|t| t.tid)
                    .collect();
                drop(st);
                for tid in tids {
                    self.sync_task(tid)?;
                }
            }
            _ => return Err(io::Error::from_raw_os_error(Errno::EACCES as i32)),
        }
        self.sync_cgroups()?;
        let tids: Vec<i32> = self.st.borrow().tasks.keys().copied().collect();
        for tid in tids {
            self.sync_task(tid)?;
        }
        Ok(())
    }

    /// Whether a task is frozen by the cgroup freezer.
    pub fn is_frozen(&self, tid: i32) -> bool {
        self.st.borrow().tasks.get(&tid).is_some_and(|t| t.frozen)
    }

    fn cgroup_dir(&self, cg: &str) -> PathBuf {
        self.path(Path::new(crate::freeze::CGROUP_ROOT).join(cg.trim_start_matches('/')))
    }

    /// Rewrites every cgroup's `cgroup.procs` and `cgroup.events` from the tasks, and the
    /// freezer state of each task from the `cgroup.freeze` files of its cgroup and ancestors.
    fn sync_cgroups(&self) -> io::Result<()> {
        if !self.st.borrow().cgroup2 {
            return Ok(());
        }
        let root = self.cgroup_dir("/");
        std::fs::create_dir_all(&root)?;
        let cgroups: Vec<String> = self
            .st
            .borrow()
            .tasks
            .values()
            .map(|t| t.cgroup.clone())
            .collect();
        for cg in &cgroups {
            let d = self.cgroup_dir(cg);
            std::fs::create_dir_all(&d)?;
            if cg != "/" && !d.join("cgroup.freeze").exists() {
                std::fs::write(d.join("cgroup.freeze"), "0\n")?;
            }
        }
        // Every directory under the root is a cgroup.
        let mut dirs = vec![root.clone()];
        let mut i = 0;
        while i < dirs.len() {
            for e in std::fs::read_dir(&dirs[i])?.flatten() {
                if e.path().is_dir() {
                    dirs.push(e.path());
                }
            }
            i += 1;
        }
        let rel = |d: &Path| {
            format!(
                "/{}",
                d.strip_prefix(&root).unwrap_or(Path::new("")).display()
            )
        };
        let freezing = |cg: &str| {
            let mut p = self.cgroup_dir(cg);
            loop {
                if std::fs::read_to_string(p.join("cgroup.freeze")).is_ok_and(|v| v.trim() == "1") {
                    return true;
                }
                if p == root || !p.pop() {
                    return false;
                }
            }
        };
        {
            let mut st = self.st.borrow_mut();
            for t in st.tasks.values_mut() {
                t.frozen = freezing(&t.cgroup) && !t.kthread && !t.uninterruptible;
            }
        }
        for d in &dirs {
            let me = rel(d);
            let st = self.st.borrow();
            let procs: String = st
                .tasks
                .values()
                .filter(|t| t.cgroup == me && t.pid == t.tid)
                .map(|t| format!("{}\n", t.pid))
                .collect();
            std::fs::write(d.join("cgroup.procs"), procs)?;
            if *d != root {
                let below: Vec<&FakeTask> = st
                    .tasks
                    .values()
                    .filter(|t| Path::new(&t.cgroup).starts_with(&me))
                    .collect();
                let populated = !below.is_empty();
                let frozen = freezing(&me) && below.iter().all(|t| t.frozen);
                std::fs::write(
                    d.join("cgroup.events"),
                    format!(
                        "populated {}\nfrozen {}\n",
                        u8::from(populated),
                        u8::from(frozen)
                    ),
                )?;
            }
        }
        Ok(())
    }

    /// Make a task exit.
    pub fn remove_task(&self, tid: i32) -> io::Result<()> {
        let t = self.st.borrow_mut().tasks.remove(&tid);
        if let Some(t) = t {
            let tdir = self.path(format!("/proc/{}/task/{}", t.pid, t.tid));
            std::fs::remove_dir_all(tdir)?;
            if t.pid == t.tid {
                std::fs::remove_dir_all(self.path(format!("/proc/{}", t.pid)))?;
            }
        }
        self.persist();
        Ok(())
    }

    /// The syscalls and sysfs writes seen so far, e.g. `finit_module fix`, `kill 5 STOP`,
    /// `write /sys/kernel/livepatch/fix/enabled 0`, `delete_module fix`.
    pub fn calls(&self) -> Vec<String> {
        self.st.borrow().calls.clone()
    }

    /// The simulated time.
    pub fn clock(&self) -> Duration {
        self.st.borrow().clock
    }

    /// Whether a task is stopped (SIGSTOP without SIGCONT).
    pub fn is_stopped(&self, tid: i32) -> bool {
        self.st.borrow().tasks.get(&tid).is_some_and(|t| t.stopped)
    }

    /// Load a plain (non-livepatch) module `name` directly into the tree.
    pub fn add_plain_module(&self, name: &str) -> io::Result<()> {
        let mdir = self.path(format!("/sys/module/{name}"));
        std::fs::create_dir_all(&mdir)?;
        std::fs::write(mdir.join("refcnt"), "0\n")?;
        std::fs::write(mdir.join("taint"), "\n")?;
        self.st.borrow_mut().modules.insert(0, name.into());
        self.sync_modules()?;
        self.persist();
        Ok(())
    }

    /// Whether a module is loaded.
    pub fn has_module(&self, name: &str) -> bool {
        self.st.borrow().modules.iter().any(|m| m == name)
    }

    fn sync_task(&self, tid: i32) -> io::Result<()> {
        let st = self.st.borrow();
        let Some(t) = st.tasks.get(&tid) else {
            return Ok(());
        };
        let dir = self.path(format!("/proc/{}/task/{}", t.pid, t.tid));
        std::fs::create_dir_all(&dir)?;
        let flags: u64 = if t.kthread { 0x0020_8040 } else { 0x0040_0100 };
        let ppid = if t.kthread { 2 } else { 1 };
        std::fs::write(dir.join("patch_state"), format!("{}\n", t.state))?;
        std::fs::write(dir.join("comm"), format!("{}\n", t.comm))?;
        let letter = if t.uninterruptible {
            'D'
        } else if t.stopped {
            'T'
        } else {
            'S'
        };
        std::fs::write(
            dir.join("stat"),
            format!(
                "{} ({}) {letter} {ppid} 0 0 0 -1 {flags} 0 0 0 0\n",
                t.tid, t.comm
            ),
        )?;
        std::fs::write(dir.join("cgroup"), format!("0::{}\n", t.cgroup))?;
        let stack = dir.join("stack");
        match &t.stack {
            Some(s) => std::fs::write(&stack, s)?,
            None => {
                let _ = std::fs::remove_file(&stack);
            }
        }
        if t.pid == t.tid {
            let pdir = self.path(format!("/proc/{}", t.pid));
            for f in ["patch_state", "comm", "stat", "cgroup"] {
                std::fs::copy(dir.join(f), pdir.join(f))?;
            }
        }
        Ok(())
    }

    fn sync_all_tasks(&self) -> io::Result<()> {
        let tids: Vec<i32> = self.st.borrow().tasks.keys().copied().collect();
        for tid in tids {
            self.sync_task(tid)?;
        }
        Ok(())
    }

    fn sync_modules(&self) -> io::Result<()> {
        let text: String = self
            .st
            .borrow()
            .modules
            .iter()
            .map(|m| format!("{m} 16384 0 - Live 0x0000000000000000 (K)\n"))
            .collect();
        std::fs::write(self.path("/proc/modules"), text)
    }

    fn patch_file(&self, patch: &str, file: &str) -> PathBuf {
        self.path(Path::new(LIVEPATCH_DIR).join(patch).join(file))
    }

    fn set_attr(&self, patch: &str, file: &str, v: i32) -> io::Result<()> {
        std::fs::write(self.patch_file(patch, file), format!("{v}\n"))
    }

    /// Start a transition of `patch` towards `target`: every task starts in the other state.
    fn start_transition(&self, patch: &str, target: i32, replace: bool) -> io::Result<()> {
        {
            let mut st = self.st.borrow_mut();
            for t in st.tasks.values_mut() {
                t.state = 1 - target;
            }
            st.transition = Some(Transition {
                patch: patch.into(),
                target,
                replace,
            });
        }
        self.set_attr(patch, "enabled", target)?;
        self.set_attr(patch, "transition", 1)?;
        self.sync_all_tasks()?;
        // Like the kernel, try to complete at once.
        self.tick()
    }

    /// One pass of the simulated `klp_try_complete_transition`.
    fn tick(&self) -> io::Result<()> {
        let mut switched = Vec::new();
        let done = {
            let mut st = self.st.borrow_mut();
            let Some(tr) = &st.transition else {
                return Ok(());
            };
            let target = tr.target;
            let mut all = true;
            for t in st.tasks.values_mut() {
                if t.state == target {
                    continue;
                }
                let interruptible = matches!(t.stuck, Stuck::UntilSignal | Stuck::UntilStopCont);
                let blocked = t.blocks_target == target
                    && t.stuck != Stuck::No
                    && !(interruptible && t.parked());
                if blocked {
                    if let Stuck::Ticks(n) = t.stuck {
                        t.stuck = if n <= 1 {
                            Stuck::No
                        } else {
                            Stuck::Ticks(n - 1)
                        };
                    }
                    all = false;
                } else {
                    t.state = target;
                    switched.push(t.tid);
                }
            }
            if all {
                st.transition.take()
            } else {
                None
            }
        };
        match done {
            Some(tr) => {
                for t in self.st.borrow_mut().tasks.values_mut() {
                    t.state = -1;
                }
                self.sync_all_tasks()?;
                if tr.target == 1 {
                    self.set_attr(&tr.patch, "transition", 0)?;
                    if tr.replace {
                        for other in std::fs::read_dir(self.path(LIVEPATCH_DIR))? {
                            let other = other?.file_name().to_string_lossy().into_owned();
                            if other != tr.patch {
                                self.free_patch(&other)?;
                            }
                        }
                    }
                } else {
                    self.free_patch(&tr.patch)?;
                }
            }
            None => {
                for tid in switched {
                    self.sync_task(tid)?;
                }
            }
        }
        Ok(())
    }

    /// Like the kernel freeing a disabled or replaced patch: its directory goes, and so does
    /// its reference on the module (which stays loaded).
    fn free_patch(&self, patch: &str) -> io::Result<()> {
        std::fs::remove_dir_all(self.path(Path::new(LIVEPATCH_DIR).join(patch)))?;
        std::fs::write(self.path(format!("/sys/module/{patch}/refcnt")), "0\n")
    }

    fn do_finit(&self, image: &File) -> Result<(), Errno> {
        let failure = self.st.borrow_mut().next_finit_error.take();
        if let Some(e) = failure {
            let lines = std::mem::take(&mut self.st.borrow_mut().next_finit_log);
            for l in lines {
                self.log(&l);
            }
            return Err(Errno::from_raw(e));
        }
        // Like kernel_read_file(): a file open for writing somewhere is refused.
        let flags = nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(image),
            nix::fcntl::FcntlArg::F_GETFL,
        )?;
        if nix::fcntl::OFlag::from_bits_truncate(flags) & nix::fcntl::OFlag::O_ACCMODE
            != nix::fcntl::OFlag::O_RDONLY
        {
            return Err(Errno::ETXTBSY);
        }
        let mut f = image.try_clone().map_err(eio)?;
        let mut data = Vec::new();
        f.rewind()
            .and_then(|()| f.read_to_end(&mut data))
            .map_err(eio)?;
        let m = ModuleFile::from_bytes(Path::new("fake.ko"), data).map_err(|_| Errno::ENOEXEC)?;
        let name = m.name();
        let rel = self.st.borrow().release.clone();
        if m.info.vermagic_release() != Some(rel.as_str()) {
            self.log(&format!(
                "{name}: version magic '{}' should be '{rel} SMP preempt mod_unload modversions '",
                m.info.vermagic().unwrap_or("")
            ));
            return Err(Errno::ENOEXEC);
        }
        if self.has_module(&name) {
            return Err(Errno::EEXIST);
        }
        if m.info.is_livepatch() {
            if !self.path(LIVEPATCH_DIR).exists() {
                return Err(Errno::ENOENT); // unknown symbol klp_enable_patch
            }
            if self.st.borrow().transition.is_some() {
                return Err(Errno::EBUSY);
            }
        }
        {
            let mut st = self.st.borrow_mut();
            st.modules.insert(0, name.clone());
        }
        let mdir = self.path(format!("/sys/module/{name}"));
        std::fs::create_dir_all(&mdir).map_err(eio)?;
        std::fs::write(
            mdir.join("refcnt"),
            if m.info.is_livepatch() { "1\n" } else { "0\n" },
        )
        .map_err(eio)?;
        let taint = if m.info.is_livepatch() {
            "OEK\n"
        } else {
            "OE\n"
        };
        std::fs::write(mdir.join("taint"), taint).map_err(eio)?;
        self.sync_modules().map_err(eio)?;
        if !m.info.is_livepatch() {
            return Ok(());
        }
        let pdir = self.path(Path::new(LIVEPATCH_DIR).join(&name));
        std::fs::create_dir_all(&pdir).map_err(eio)?;
        std::fs::write(pdir.join("force"), "").map_err(eio)?;
        if self.st.borrow().signal_attr {
            std::fs::write(pdir.join("signal"), "").map_err(eio)?;
        }
        for f in m.info.functions() {
            let odir = pdir.join(&f.object);
            // sysfs shows sympos 0 (unique symbol) as 1.
            let pos = f.sympos.max(1);
            std::fs::create_dir_all(odir.join(format!("{},{pos}", f.function))).map_err(eio)?;
            // The ftrace handlers go in before the transition starts.
            std::fs::write(odir.join("patched"), "1\n").map_err(eio)?;
        }
        self.start_transition(&name, 1, m.info.replace() == Some(true))
            .map_err(eio)
    }

    fn do_write(&self, path: &Path, data: &str) -> io::Result<()> {
        if let Ok(rel) = path.strip_prefix(crate::freeze::CGROUP_ROOT) {
            if self.st.borrow().cgroup2 {
                return self.cgroup_write(rel, data);
            }
        }
        let rel = path.strip_prefix(LIVEPATCH_DIR).ok();
        let parts: Vec<String> = rel
            .map(|r| r.iter().map(|c| c.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        if parts.len() == 2 && self.path(path).exists() {
            let patch = &parts[0];
            let einval = || io::Error::from_raw_os_error(Errno::EINVAL as i32);
            match parts[1].as_str() {
                "enabled" => {
                    let want: i32 = data.trim().parse().map_err(|_| einval())?;
                    let cur: i32 = std::fs::read_to_string(self.patch_file(patch, "enabled"))?
                        .trim()
                        .parse()
                        .map_err(|_| einval())?;
                    if want == cur {
                        return Err(einval());
                    }
                    let in_tr = self
                        .st
                        .borrow()
                        .transition
                        .as_ref()
                        .map(|t| t.patch.clone());
                    return match in_tr {
                        Some(p) if p == *patch => {
                            // Reverse: tasks already switched go back; stuck ones are there.
                            if let Some(t) = self.st.borrow_mut().transition.as_mut() {
                                t.target = want;
                            }
                            self.set_attr(patch, "enabled", want)?;
                            self.tick()
                        }
                        Some(_) => Err(io::Error::from_raw_os_error(Errno::EBUSY as i32)),
                        None if want == 0 => self.start_transition(patch, 0, false),
                        None => Err(einval()),
                    };
                }
                "signal" => {
                    for t in self.st.borrow_mut().tasks.values_mut() {
                        if t.stuck == Stuck::UntilSignal {
                            t.stuck = Stuck::No;
                        }
                    }
                    return Ok(());
                }
                "transition" | "stack_order" => {
                    return Err(io::Error::from_raw_os_error(Errno::EACCES as i32))
                }
                _ => {}
            }
        }
        let p = self.path(path);
        if !p.exists() {
            return Err(io::Error::from_raw_os_error(Errno::ENOENT as i32));
        }
        std::fs::write(p, data)
    }
}

impl Kernel for FakeKernel {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(self.path(path))
    }

    fn write(&self, path: &Path, data: &str) -> io::Result<()> {
        self.st
            .borrow_mut()
            .calls
            .push(format!("write {} {}", path.display(), data.trim()));
        let r = self.do_write(path, data);
        self.persist();
        r
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(path))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        self.path(path).exists()
    }

    fn finit_module(&self, image: &File, _params: &str) -> Result<(), Errno> {
        let r = self.do_finit(image);
        let what = match &r {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("{e}"),
        };
        self.st
            .borrow_mut()
            .calls
            .push(format!("finit_module {what}"));
        self.persist();
        r
    }

    fn delete_module(&self, name: &str) -> Result<(), Errno> {
        self.st
            .borrow_mut()
            .calls
            .push(format!("delete_module {name}"));
        if !self.has_module(name) {
            return Err(Errno::ENOENT);
        }
        let refcnt = std::fs::read_to_string(self.path(format!("/sys/module/{name}/refcnt")))
            .map_err(eio)?;
        if refcnt.trim() != "0" {
            return Err(Errno::EAGAIN);
        }
        std::fs::remove_dir_all(self.path(format!("/sys/module/{name}"))).map_err(eio)?;
        self.st.borrow_mut().modules.retain(|m| m != name);
        self.sync_modules().map_err(eio)?;
        self.persist();
        Ok(())
    }

    fn kill(&self, pid: i32, sig: Sig) -> Result<(), Errno> {
        let tids = self.signal(pid, sig);
        for &tid in &tids {
            self.sync_task(tid).map_err(eio)?;
        }
        self.persist();
        if tids.is_empty() {
            Err(Errno::ESRCH)
        } else {
            Ok(())
        }
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        self.st
            .borrow_mut()
            .calls
            .push(format!("mkdir {}", path.display()));
        std::fs::create_dir(self.path(path))?;
        if path.starts_with(crate::freeze::CGROUP_ROOT) {
            std::fs::write(self.path(path).join("cgroup.freeze"), "0\n")?;
            self.sync_cgroups()?;
        }
        self.persist();
        Ok(())
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        self.st
            .borrow_mut()
            .calls
            .push(format!("rmdir {}", path.display()));
        let d = self.path(path);
        if path.starts_with(crate::freeze::CGROUP_ROOT) {
            let me = format!(
                "/{}",
                path.strip_prefix(crate::freeze::CGROUP_ROOT)
                    .unwrap_or(path)
                    .display()
            );
            if self.st.borrow().tasks.values().any(|t| t.cgroup == me) {
                return Err(io::Error::from_raw_os_error(Errno::EBUSY as i32));
            }
            for f in ["cgroup.freeze", "cgroup.procs", "cgroup.events"] {
                let _ = std::fs::remove_file(d.join(f));
            }
        }
        let r = std::fs::remove_dir(d);
        self.persist();
        r
    }

    fn kernel_log(&self) -> io::Result<Vec<(u64, String)>> {
        Ok(self
            .st
            .borrow()
            .log
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u64, l.clone()))
            .collect())
    }

    fn release(&self) -> io::Result<String> {
        Ok(self.st.borrow().release.clone())
    }

    fn now(&self) -> Duration {
        self.st.borrow().clock
    }

    fn runtime_path(&self, path: &Path) -> PathBuf {
        self.path(path)
    }

    fn sleep(&self, d: Duration) {
        self.st.borrow_mut().clock += d;
        // A failure to update the tree shows up as a read error in the code under test.
        let _ = self.tick();
        self.persist();
    }
}
