//! The object differ: kpatch's `create-diff-object` job.
//!
//! Given one translation unit compiled twice with `-ffunction-sections -fdata-sections`
//! (original and patched), [`diff`] finds what changed and builds an object that holds the
//! changed and new functions with everything they need: their `.cold`/`.part` children, new data
//! and strings, patch callbacks, and the special-section entries (`__bug_table`, `__jump_table`,
//! `.altinstructions`, ...) that belong to them. Everything else the patched code references is
//! left as an undefined symbol for the module generator to resolve against the target kernel.
//!
//! The steps, each in its own module: [`kelf`] derives per-object tables (bundled symbols,
//! children, relocation sections); `correlate` pairs sections and symbols across the two objects;
//! `compare` marks each as same, changed or new; `include` selects what the output needs;
//! `special` trims the special sections; `verify` refuses what cannot be live-patched; `output`
//! builds the object.

mod compare;
mod correlate;
mod include;
pub mod kelf;
mod names;
mod output;
mod special;
mod verify;

use kelf::Kelf;
use kpatch_elf::Object;
use serde::Serialize;

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
    let mut o = Kelf::new(orig, orig_name, arch)?;
    let mut p = Kelf::new(patched, patched_name, arch)?;
    o.replace_section_symbols();
    p.replace_section_symbols();
    check_same_source(&o, &p)?;

    let mut st = correlate::correlate(&o, &mut p)?;
    let mut report = Report::default();
    compare::compare(&o, &p, &mut st, &mut report, options)?;
    let mut inc = include::Inclusion::new(&p);
    include::include_all(&o, &p, &st, &mut inc, &mut report, options);
    let regen = special::process(&p, &mut st, &mut inc, options)?;
    if options.debug {
        debug_dump(&p, &st, &inc);
    }
    verify::verify(&o, &p, &st, &inc)?;
    report.changed_functions = include::functions_with(&p, &st, &inc, compare::Status::Changed);
    report.new_functions = include::functions_with(&p, &st, &inc, compare::Status::New);
    if report.is_empty() {
        return Ok(Outcome::NoChange { report });
    }
    let output = output::build(&p, &st, &inc, &regen)?;
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
fn check_same_source(o: &Kelf, p: &Kelf) -> Result<(), DiffError> {
    let file_of = |k: &Kelf| {
        k.obj
            .symbols_iter()
            .find(|(_, s)| s.st_type() == kpatch_elf::consts::STT_FILE)
            .map(|(_, s)| s.name.clone())
    };
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

fn debug_dump(p: &Kelf, st: &correlate::State, inc: &include::Inclusion) {
    for (i, s) in p.obj.sections_iter() {
        if st.sec_status[i.0] != compare::Status::Same || inc.sec[i.0] {
            eprintln!(
                "section [{}] {} {:?}{}",
                i.0,
                s.name,
                st.sec_status[i.0],
                if inc.sec[i.0] { " included" } else { "" }
            );
        }
    }
    for (i, _) in p.obj.symbols_iter() {
        if st.sym_status[i.0] != compare::Status::Same || inc.sym[i.0] {
            eprintln!(
                "symbol [{}] {} {:?}{}",
                i.0,
                p.sym_name(i),
                st.sym_status[i.0],
                if inc.sym[i.0] { " included" } else { "" }
            );
        }
    }
}
