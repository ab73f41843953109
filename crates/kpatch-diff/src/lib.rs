//! The object differ: kpatch's `create-diff-object` job.
//!
//! Given one translation unit compiled twice with `-ffunction-sections -fdata-sections`
//! (original and patched), [`diff`] finds what changed and builds an object that holds the
//! changed and new functions with everything they need: their `.cold`/`.part` children, new data
//! and strings, patch callbacks, and the special-section entries (`__bug_table`, `__jump_table`,
//! `.altinstructions`, ...) that belong to them. Everything else the patched code references is
//! left as an undefined symbol for the module generator to resolve against the target kernel.
//!
//! The phases, each in its own module, run in the order [`diff`] shows; each reads what the
//! phases before it wrote (the `state` module's parts) and writes its own part. `kelf` derives
//! per-object tables first (bundled symbols, children, relocation sections), with indexes typed
//! by their object ([`index`]). Section-name classes and the arch's special-section table are in
//! `kpatch_arch`.

mod compare;
mod correlate;
mod include;
pub mod index;
mod kelf;
mod names;
mod output;
mod special;
mod state;
mod verify;

use index::{Orig, Patched};
use kelf::Kelf;
use kpatch_elf::Object;
use serde::Serialize;
use state::{Inclusion, Status, Statuses, Trimmed};

/// What the patch author and the pipeline can tune.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Special-section entry sizes given by the caller (kpatch's `*_STRUCT_SIZE` variables),
    /// by section name. Sections not listed have their size found from their relocations.
    pub entry_sizes: Vec<(String, u64)>,
    /// Print each section's and symbol's status and inclusion to stderr.
    pub debug: bool,
    /// Reproduce kpatch's create-diff-object exactly, gaps included: an unchanged `.cold` child
    /// of a changed function is then left out even when it jumps back into code that changed
    /// (kpatch-rs carries it by default). For `create-diff-object` and the parity tests.
    pub kpatch_compat: bool,
}

impl Options {
    /// The entry size given for special section `name`.
    pub fn entry_size(&self, name: &str) -> Option<u64> {
        self.entry_sizes
            .iter()
            .find(|(n, _)| n == name)
            .map(|e| e.1)
    }
}

/// Why the differ stopped.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// The objects cannot be compared or are malformed (kpatch exit 1).
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
    /// The change cannot be live-patched (kpatch exit 2). Each reason names the section or symbol.
    #[error("{file}: the change cannot be live-patched:\n  {}", reasons.join("\n  "))]
    Unpatchable { file: String, reasons: Vec<String> },
}

impl DiffError {
    /// kpatch's exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            DiffError::Invalid { .. } => 1,
            DiffError::Unpatchable { .. } => 2,
        }
    }
}

/// The differ's findings about one object pair.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Report {
    /// Functions whose code changed (top-level functions; `.cold`/`.part` children are carried
    /// with their parents).
    pub changed_functions: Vec<String>,
    /// Functions the patch adds.
    pub new_functions: Vec<String>,
    /// New global data or functions the patch exports to other objects.
    pub new_globals: Vec<String>,
    /// Patch callbacks found (`pre_patch`, `post_patch`, `pre_unpatch`, `post_unpatch`).
    pub callbacks: Vec<String>,
    /// Functions marked with `KPATCH_FORCE_UNSAFE`.
    pub forced: Vec<String>,
    /// Sections and functions ignored through `KPATCH_IGNORE_*`.
    pub ignored: Vec<String>,
    /// Notes that do not stop the build (a static local assumed new, ...).
    pub warnings: Vec<String>,
    /// Every function symbol defined in the output.
    pub output_functions: Vec<String>,
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.changed_functions.is_empty()
            && self.new_globals.is_empty()
            && self.callbacks.is_empty()
    }
}

/// The outcome of a diff.
#[derive(Debug)]
pub enum Outcome {
    /// Something changed: the output object and what went into it.
    Changed { output: Box<Object>, report: Report },
    /// Nothing that needs patching changed (kpatch exit 3).
    NoChange { report: Report },
}

/// Compares `orig` and `patched` (named `orig_name`/`patched_name` in messages).
pub fn diff(
    orig: Object,
    orig_name: &str,
    patched: Object,
    patched_name: &str,
    options: &Options,
) -> Result<Outcome, DiffError> {
    let arch =
        kpatch_arch::for_machine(orig.header.e_machine).ok_or_else(|| DiffError::Invalid {
            file: orig_name.into(),
            reason: format!(
                "unsupported architecture (e_machine {})",
                orig.header.e_machine
            ),
        })?;
    if orig.header != patched.header {
        return Err(DiffError::Invalid {
            file: patched_name.into(),
            reason: format!(
                "ELF header differs from {orig_name}'s: the two objects were not built alike"
            ),
        });
    }
    let mut o: Kelf<Orig> = Kelf::new(orig, orig_name, arch)?;
    let mut p: Kelf<Patched> = Kelf::new(patched, patched_name, arch)?;
    o.replace_section_symbols();
    p.replace_section_symbols();
    check_same_source(&o, &p)?;
    let mut report = Report::default();

    // The phases. Each needs what the ones before it found, in this order:
    // 1. correlate: pair each patched section and symbol with its original (its twin) and give
    //    it the original's name. Everything after compares twins.
    let twins = correlate::correlate(&o, &mut p, &mut report)?;
    // 2. compare: each patched section and symbol is the same as its twin, changed, or new
    //    (its eight passes and their order: `compare`'s module documentation).
    let statuses = compare::compare(&o, &p, &twins, &mut report, options)?;
    // 3. include: the changed functions, and what they reference that is not the same
    //    (unchanged things stay references to the kernel's copies).
    let inc = include::include(&o, &p, &twins, &statuses, &mut report, options);
    // 4. special: the special sections keep only the entries of included code, and bring what
    //    those reference. After 3: whether an entry stays depends on what is included.
    let (inc, trimmed) = special::trim(&p, &statuses, inc, options)?;
    if options.debug {
        debug_dump(&p, &statuses, &inc, &trimmed);
    }
    // 5. verify: refuse a change that nothing included carries. After 4: a special section
    //    that kept no entry carries nothing, whatever changed in it.
    verify::verify(&o, &p, &twins, &statuses, &inc, &trimmed)?;
    report.changed_functions = include::functions_with(&p, &statuses, &inc, Status::Changed);
    report.new_functions = include::functions_with(&p, &statuses, &inc, Status::New);
    if report.is_empty() {
        return Ok(Outcome::NoChange { report });
    }
    // 6. output: the object of what was included.
    let output = output::build(&p, &statuses, &inc, &trimmed)?;
    report.output_functions = output
        .symbols_iter()
        .filter(|(_, s)| s.is_func() && s.section.is_some())
        .map(|(_, s)| s.name.clone())
        .collect();
    Ok(Outcome::Changed {
        output: Box::new(output),
        report,
    })
}

/// Two objects of different translation units share almost no function names; refuse them
/// before reporting every function as new.
fn check_same_source(o: &Kelf<Orig>, p: &Kelf<Patched>) -> Result<(), DiffError> {
    fn file_of<S>(k: &Kelf<S>) -> Option<String> {
        k.obj
            .symbols_iter()
            .find(|(_, s)| s.st_type() == kpatch_elf::consts::STT_FILE)
            .map(|(_, s)| s.name.clone())
    }
    match (file_of(o), file_of(p)) {
        (Some(a), Some(b)) if a != b => Err(DiffError::Invalid {
            file: p.file.clone(),
            reason: format!(
                "compiled from '{b}' but {} was compiled from '{a}': not the same source",
                o.file
            ),
        }),
        _ => Ok(()),
    }
}

/// What each phase decided about each section and symbol that is not plainly the same.
fn debug_dump(p: &Kelf<Patched>, st: &Statuses, inc: &Inclusion, trimmed: &Trimmed) {
    for (i, s) in p.sections() {
        let status = trimmed.section_status(st, i);
        if status != Status::Same || inc.sec[i] {
            eprintln!(
                "section [{}] {} {:?}{}",
                i.get(),
                s.name,
                status,
                if inc.sec[i] { " included" } else { "" }
            );
        }
    }
    for (i, _) in p.symbols() {
        if st.sym[i] != Status::Same || inc.sym[i] {
            eprintln!(
                "symbol [{}] {} {:?}{}",
                i.get(),
                p.sym_name(i),
                st.sym[i],
                if inc.sym[i] { " included" } else { "" }
            );
        }
    }
}
