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
mod why;

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
    /// Why each function of the output is there (its `__pfx_` padding symbol aside), in
    /// output order.
    pub functions: Vec<FunctionReason>,
}

/// Why a function is in the output.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FunctionReason {
    pub name: String,
    #[serde(flatten)]
    pub why: Why,
    /// Named by `KPATCH_FORCE_UNSAFE`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
}

/// What the differ decided about a function of the output.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Why {
    /// The patch replaces it: something in it changed.
    Changed { change: Change },
    /// The patch adds it.
    New,
    /// A `.cold`/`.part` piece of `parent` without an ftrace entry of its own, carried with it.
    Child { parent: String },
    /// A patch callback of this kind (`pre_patch`, `post_patch`, ...).
    Callback { kind: String },
    /// The same as the kernel's, carried because included code references it through its
    /// section.
    Referenced,
}

/// What changed in a changed function.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "cause", rename_all = "kebab-case")]
pub enum Change {
    /// Its code: the first instruction that differs.
    Code(CodeDifference),
    /// Its `.cold`/`.part` child `child` changed, which has no ftrace entry of its own (where the
    /// child first differs, when its own code did).
    Child {
        child: String,
        difference: Option<CodeDifference>,
    },
    /// It moved between text subsections (`.text.unlikely.foo` to `.text.foo`) or out of an
    /// ignored section.
    Moved { from: String, to: String },
    /// Its code is the same, its entries in a special section (`__jump_table`, `__bug_table`,
    /// ...) are not; `at` is the site of the first entry that differs.
    SpecialEntries { section: String, at: Option<String> },
    /// Its code is the same; it reads `object`, a read-only table that changed (and gets a new
    /// copy).
    ReadOnlyData { object: String },
    /// Its section differs in a way no instruction shows (its size).
    Section,
}

/// The first instruction in which a function differs from its original.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CodeDifference {
    /// Where, as objtool names a place: `func+0x1a`.
    pub at: String,
    /// Bytes from the function's start.
    pub offset: i64,
    pub differs: Differs,
    /// What the original holds there and what the patched one does: the instruction's bytes
    /// (`83 c0 01`), or the relocation's target (`ext-0x4`, a string by its text), or `nothing`.
    pub was: String,
    pub now: String,
}

/// What differs in an instruction.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Differs {
    /// Its bytes.
    Bytes,
    /// Where one of its relocations points (or one has a relocation there and the other not).
    Relocation,
    /// One version ends before it.
    Length,
}

impl std::fmt::Display for CodeDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let what = match self.differs {
            Differs::Bytes => "instruction",
            Differs::Relocation => "reference",
            Differs::Length => "code",
        };
        write!(f, "at {}: {what} {} -> {}", self.at, self.was, self.now)
    }
}

impl Why {
    /// What the report calls such a function: `changed function`, `new function`, `carried
    /// function`, `callback`.
    pub fn label(&self) -> &'static str {
        match self {
            Why::Changed { .. } => "changed function",
            Why::New => "new function",
            Why::Child { .. } | Why::Referenced => "carried function",
            Why::Callback { .. } => "callback",
        }
    }

    /// The reason in a few words (`at foo+0x1a: reference ext-0x4 -> ext2-0x4`), where there
    /// is more to say than the label.
    pub fn detail(&self) -> Option<String> {
        Some(match self {
            Why::Changed { change } => match change {
                Change::Code(d) => d.to_string(),
                Change::Child { child, difference } => match difference {
                    Some(d) => format!("its piece {child} changed {d}"),
                    None => format!("its piece {child} changed"),
                },
                Change::Moved { from, to } => format!("moved from {from} to {to}"),
                Change::SpecialEntries { section, at } => match at {
                    Some(at) => format!("its {section} entry at {at} differs"),
                    None => format!("its {section} entries differ"),
                },
                Change::ReadOnlyData { object } => {
                    format!("reads {object}, a read-only object that changed")
                }
                Change::Section => "its section differs".to_string(),
            },
            Why::New => return None,
            Why::Child { parent } => format!("a piece of {parent}"),
            Why::Callback { kind } => kind.clone(),
            Why::Referenced => "referenced by included code".to_string(),
        })
    }
}

impl std::fmt::Display for FunctionReason {
    /// One line: `changed function: foo (at foo+0x1a: reference ext-0x4 -> ext2-0x4)`, with
    /// `forced` for `KPATCH_FORCE_UNSAFE`.
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}: {}", self.why.label(), self.name)?;
        match (self.why.detail(), self.forced) {
            (Some(d), true) => write!(f, " ({d}; forced by KPATCH_FORCE_UNSAFE)"),
            (Some(d), false) => write!(f, " ({d})"),
            (None, true) => write!(f, " (forced by KPATCH_FORCE_UNSAFE)"),
            (None, false) => Ok(()),
        }
    }
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
    let options = &kelf::checked_options(&o, &p, options, &mut report.warnings);

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
    // 7. why: the reason for each function of the output, from what the phases decided.
    report.functions = why::reasons(&o, &p, &twins, &statuses, &inc, &report);
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
