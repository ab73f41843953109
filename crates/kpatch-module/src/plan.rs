//! From the differ's objects to link-ready objects and a plan for the glue and the final `.ko`.
//!
//! For every translation unit:
//! - `.kpatch.ignore.*`, `.kpatch.force` (consumed by the differ), `.debug*` and `.discard*`
//!   sections go;
//! - each changed function gets a global alias `__kpatch_rs_func_<n>` (what the glue's
//!   `klp_func.new_func` points at) and its own symbol becomes local, so that no global of the
//!   patch module carries a kernel function's name (two patched objects may each define a
//!   global of the same name; the glue, which includes kernel headers, could not declare it
//!   with its real prototype-free type either);
//! - each callback record gets a global `__kpatch_rs_cb_<kind>_<n>` the glue reads;
//! - every undefined symbol the unit uses is resolved: a vmlinux export stays a normal
//!   relocation (modpost versions it); anything else — a local of the unit, an unexported
//!   global, a module's symbol — is redirected to an undefined weak placeholder
//!   `__kpatch_rs_klp_<n>`, one per distinct livepatch symbol of the whole patch.
//!
//! Placeholders travel through kbuild unchanged (modpost does not report undefined weak symbols,
//! and `ld -r` merges equal names across units), so the final `.ko` holds every livepatch
//! relocation at its final place, in the merged sections; [`crate::finalize`] then moves them into
//! `.klp.rela.*` sections and renames the placeholders to `.klp.sym.*`.

use crate::names::{self, VMLINUX};
use crate::resolver::{source_file_name, Resolution, ResolveError, SymbolResolver, TuContext};
use crate::ModuleError;
use kpatch_arch::{sections, Entries};
use kpatch_elf::consts::*;
use kpatch_elf::{Object, Symbol, SymbolIndex};
use std::collections::{HashMap, HashSet};

/// One translation unit as the differ hands it over.
#[derive(Debug, Clone)]
pub struct TuInput {
    /// The unit's name in messages (its object path, e.g. `fs/proc/cmdline.o`).
    pub name: String,
    /// Source path (e.g. `fs/proc/cmdline.c`); `None`: the original object's `STT_FILE` name.
    pub source: Option<String>,
    /// `vmlinux` or the module the unit belongs to (`-` or `_` spelling).
    pub object: String,
    /// The diff object: changed and new functions, their data, trimmed special sections.
    pub diff: Object,
    /// The unit compiled from the unpatched source.
    pub original: Object,
    /// Functions that replace kernel functions of the same name.
    pub changed: Vec<String>,
    /// Functions new to the kernel (informational).
    pub new: Vec<String>,
}

/// The four livepatch callbacks (`struct klp_callbacks`), in the order of
/// [`sections::CALLBACK_KINDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallbackKind {
    PrePatch,
    PostPatch,
    PreUnpatch,
    PostUnpatch,
}

impl CallbackKind {
    pub const ALL: [CallbackKind; 4] = [
        CallbackKind::PrePatch,
        CallbackKind::PostPatch,
        CallbackKind::PreUnpatch,
        CallbackKind::PostUnpatch,
    ];

    /// The `klp_callbacks` field name, also the suffix of the section name.
    pub fn field(self) -> &'static str {
        sections::CALLBACK_KINDS[self as usize]
    }

    /// `.kpatch.callbacks.<field>`, where the kpatch-macros.h records are.
    pub fn section(self) -> String {
        format!("{}{}", sections::CALLBACKS_PREFIX, self.field())
    }
}

/// Size of one callback record on a 64-bit target: a function pointer and an object-name pointer.
pub const CALLBACK_RECORD_SIZE: u64 = 16;

/// A function the patch replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchedFunction {
    pub object: String,
    pub name: String,
    /// `klp_func.old_sympos`.
    pub sympos: u64,
    /// The global alias of the new version, declared by the glue.
    pub alias: String,
    pub tu: String,
}

/// A symbol the livepatch core resolves, and the placeholder that stands for it until finalize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KlpSymbol {
    pub placeholder: String,
    /// The object of the `.klp.rela.<object>.*` sections that refer to it: `vmlinux` for a vmlinux
    /// symbol (applied when the patch module loads), else the patched module.
    pub rela_object: String,
    /// The object that defines the symbol.
    pub object: String,
    pub name: String,
    pub sympos: u64,
    /// First unit that needs it, for messages.
    pub tu: String,
}

impl KlpSymbol {
    /// `.klp.sym.<object>.<name>,<sympos>`.
    pub fn klp_name(&self) -> String {
        kpatch_common::klp::klp_sym_name(&self.object, &self.name, self.sympos)
    }
}

/// A callback record found in a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    pub object: String,
    pub kind: CallbackKind,
    /// The global the glue declares (`struct kpatch_<kind>_callback`).
    pub symbol: String,
    pub tu: String,
}

/// An export (of vmlinux or of another module) the patch uses through a normal relocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub name: String,
    /// The exporter: `vmlinux` or a module (kernel spelling), which the patch then depends on.
    pub object: String,
    pub crc: Option<u32>,
    /// Symbol namespace of the export (the glue adds `MODULE_IMPORT_NS`).
    pub namespace: Option<String>,
    pub tu: String,
}

/// A unit ready to be linked.
#[derive(Debug, Clone)]
pub struct PreparedTu {
    pub name: String,
    pub object: String,
    pub diff: Object,
}

/// Everything glue generation, the kbuild step and finalize need.
#[derive(Debug, Clone)]
pub struct Plan {
    pub tus: Vec<PreparedTu>,
    pub functions: Vec<PatchedFunction>,
    pub klp_symbols: Vec<KlpSymbol>,
    pub callbacks: Vec<Callback>,
    pub imports: Vec<Import>,
    /// What the plan left out on purpose, for the user (inert tracepoints, ...).
    pub notes: Vec<String>,
}

impl Plan {
    /// The patched objects, vmlinux first, then modules in order of first appearance.
    pub fn objects(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        if self.functions.iter().any(|f| f.object == VMLINUX)
            || self.callbacks.iter().any(|c| c.object == VMLINUX)
        {
            out.push(VMLINUX);
        }
        for o in self
            .functions
            .iter()
            .map(|f| f.object.as_str())
            .chain(self.callbacks.iter().map(|c| c.object.as_str()))
        {
            if !out.contains(&o) {
                out.push(o);
            }
        }
        out
    }
}

/// Sections that do not go into the module: the differ's markers, debug information, and
/// `.discard*` (the module linker script discards them; dropping them first keeps symbols only
/// they use from reaching modpost as undefined).
fn dropped_section(name: &str) -> bool {
    sections::is_differ_marker(name) || sections::is_debug(name) || sections::is_discard(name)
}

/// Resolves every unit's symbols and rewrites the diff objects for linking (see the module docs).
pub fn plan(inputs: Vec<TuInput>, resolver: &dyn SymbolResolver) -> Result<Plan, ModuleError> {
    let mut planner = Planner::new(resolver, provided_globals(&inputs));
    for (tu_index, input) in inputs.into_iter().enumerate() {
        planner.add_tu(tu_index, input)?;
    }
    if planner.plan.functions.is_empty() && planner.plan.callbacks.is_empty() {
        return Err(ModuleError::NothingToPatch);
    }
    Ok(planner.plan)
}

/// Globals the patch itself defines (new functions and data), except the changed functions,
/// whose callers in other units keep reaching the kernel's (patched) copy.
fn provided_globals(inputs: &[TuInput]) -> HashSet<String> {
    let mut provided = HashSet::new();
    for tu in inputs {
        let changed: HashSet<&str> = tu.changed.iter().map(String::as_str).collect();
        for (_, s) in tu.diff.symbols_iter() {
            if s.section.is_some()
                && !s.is_local()
                && !s.name.is_empty()
                && !changed.contains(s.name.as_str())
            {
                provided.insert(s.name.clone());
            }
        }
    }
    provided
}

/// A relocation to redirect to a placeholder: relocation section, entry, placeholder, and the
/// type of the symbol it referred to.
type Redirect = (usize, usize, String, u8);

/// The resolver's answers in one unit, by `(name, local)`.
type ResolutionCache = HashMap<(String, bool), Result<Resolution, ResolveError>>;

/// The plan as the units are added, with what must be unique across units.
struct Planner<'r> {
    resolver: &'r dyn SymbolResolver,
    provided: HashSet<String>,
    plan: Plan,
    /// `(rela object, object, name, sympos)` -> index in `plan.klp_symbols`.
    klp_index: HashMap<(String, String, String, u64), usize>,
    /// `(object, function, sympos)` -> the unit that patches it.
    func_seen: HashMap<(String, String, u64), String>,
    /// `(object, kind)` -> the unit that has the callback.
    cb_seen: HashMap<(String, CallbackKind), String>,
    import_seen: HashSet<String>,
}

impl<'r> Planner<'r> {
    fn new(resolver: &'r dyn SymbolResolver, provided: HashSet<String>) -> Self {
        Planner {
            resolver,
            provided,
            plan: Plan {
                tus: Vec::new(),
                functions: Vec::new(),
                klp_symbols: Vec::new(),
                callbacks: Vec::new(),
                imports: Vec::new(),
                notes: Vec::new(),
            },
            klp_index: HashMap::new(),
            func_seen: HashMap::new(),
            cb_seen: HashMap::new(),
            import_seen: HashSet::new(),
        }
    }

    /// One unit, in the steps of the module docs.
    fn add_tu(&mut self, tu_index: usize, input: TuInput) -> Result<(), ModuleError> {
        let tu_name = input.name.clone();
        let object = names::normalize_object(&tu_name, &input.object)?;
        let source = input
            .source
            .clone()
            .or_else(|| source_file_name(&input.original))
            .unwrap_or_else(|| tu_name.clone());
        let mut diff = input.diff;
        diff.remove_sections(|_, s| dropped_section(&s.name))
            .map_err(|e| ModuleError::elf(&tu_name, e))?;
        let ctx = TuContext {
            name: &tu_name,
            source: &source,
            object: &object,
            original: &input.original,
        };

        self.alias_changed_functions(&ctx, &mut diff, &input.changed)?;
        self.add_callbacks(&ctx, tu_index, &mut diff)?;
        if object != VMLINUX {
            self.drop_module_keyed_entries(&ctx, &mut diff);
        }
        let redirects = self.resolve_undefined(&ctx, &diff)?;
        redirect_to_placeholders(&mut diff, redirects);
        remove_unreferenced_undefined(&mut diff, &tu_name)?;
        diff.sort_symbols_locals_first();
        self.plan.tus.push(PreparedTu {
            name: tu_name,
            object,
            diff,
        });
        Ok(())
    }

    /// Changed functions: an alias for the glue, their own symbol made local.
    fn alias_changed_functions(
        &mut self,
        ctx: &TuContext,
        diff: &mut Object,
        changed: &[String],
    ) -> Result<(), ModuleError> {
        let (tu_name, object) = (ctx.name, ctx.object);
        for func in changed {
            names::check_symbol_name(tu_name, func)?;
            let Some(index) = diff
                .symbols
                .iter()
                .position(|s| s.name == *func && s.section.is_some() && s.is_func())
            else {
                return Err(ModuleError::ChangedFunctionMissing {
                    tu: tu_name.into(),
                    function: func.clone(),
                });
            };
            let sympos = self.resolver.function_sympos(ctx, func).map_err(|e| {
                ModuleError::FunctionNotInTarget {
                    tu: tu_name.into(),
                    function: func.clone(),
                    object: e.object,
                    reason: e.reason,
                }
            })?;
            if let Some(first) = self
                .func_seen
                .insert((object.into(), func.clone(), sympos), tu_name.into())
            {
                return Err(ModuleError::DuplicateFunction {
                    function: func.clone(),
                    object: object.into(),
                    first,
                    second: tu_name.into(),
                });
            }
            let alias = format!("{}{}", names::FUNC_ALIAS_PREFIX, self.plan.functions.len());
            let orig = diff.symbols[index].clone();
            let mut a = Symbol::new(alias.clone(), STB_GLOBAL, STT_FUNC);
            a.section = orig.section;
            a.st_value = orig.st_value;
            a.st_size = orig.st_size;
            diff.symbols[index].set_bind(STB_LOCAL);
            diff.symbols[index].st_other = STV_DEFAULT;
            diff.add_symbol(a);
            self.plan.functions.push(PatchedFunction {
                object: object.into(),
                name: func.clone(),
                sympos,
                alias,
                tu: tu_name.into(),
            });
        }
        Ok(())
    }

    /// Callback records: at most one of each kind per unit and per object, each given a
    /// global for the glue.
    fn add_callbacks(
        &mut self,
        ctx: &TuContext,
        tu_index: usize,
        diff: &mut Object,
    ) -> Result<(), ModuleError> {
        let (tu_name, object) = (ctx.name, ctx.object);
        for kind in CallbackKind::ALL {
            let Some(sec) = diff.section_by_name(&kind.section()) else {
                continue;
            };
            let size = diff
                .section(sec)
                .sh_size
                .max(diff.section(sec).data.len() as u64);
            if size == 0 {
                continue;
            }
            if !size.is_multiple_of(CALLBACK_RECORD_SIZE) {
                return Err(ModuleError::BadCallbackSection {
                    tu: tu_name.into(),
                    section: kind.section(),
                    size,
                    entry: CALLBACK_RECORD_SIZE,
                });
            }
            let count = (size / CALLBACK_RECORD_SIZE) as usize;
            if count > 1 {
                return Err(ModuleError::MultipleCallbacksInTu {
                    tu: tu_name.into(),
                    kind: kind.field().into(),
                    count,
                });
            }
            if let Some(first) = self.cb_seen.insert((object.into(), kind), tu_name.into()) {
                return Err(ModuleError::DuplicateCallback {
                    kind: kind.field().into(),
                    object: object.into(),
                    first,
                    second: tu_name.into(),
                });
            }
            let symbol = format!("{}{}_{}", names::CALLBACK_PREFIX, kind.field(), tu_index);
            let mut s = Symbol::new(symbol.clone(), STB_GLOBAL, STT_OBJECT);
            s.section = Some(sec);
            s.st_size = CALLBACK_RECORD_SIZE;
            diff.add_symbol(s);
            self.plan.callbacks.push(Callback {
                object: object.into(),
                kind,
                symbol,
                tu: tu_name.into(),
            });
        }
        Ok(())
    }

    /// Jump labels keyed by a tracepoint of the module being patched: livepatch resolves the
    /// key only after the module loader has set up __jump_table, so the entry cannot stay.
    /// Dropped, the tracepoint in the patched code stays off (inert), as kpatch does.
    /// Static call sites keyed in the module are dropped likewise: the call then goes
    /// through the static call's trampoline, which stays correct.
    fn drop_module_keyed_entries(&mut self, ctx: &TuContext, diff: &mut Object) {
        let (tu_name, object) = (ctx.name, ctx.object);
        let resolver = self.resolver;
        let in_module = |name: &str| {
            !matches!(
                resolver.resolve(ctx, name, false),
                Ok(Resolution::Export { .. })
            )
        };
        for key in drop_module_keyed_entries(diff, "__jump_table", |n| {
            n.starts_with("__tracepoint_") && in_module(n)
        }) {
            self.plan.notes.push(format!("{tu_name}: tracepoint {key} of module {object} stays off in the patched code (its jump label cannot be kept)"));
        }
        for key in drop_module_keyed_entries(diff, ".static_call_sites", in_module) {
            self.plan.notes.push(format!("{tu_name}: static call {key} of module {object} is called through its trampoline in the patched code"));
        }
    }

    /// Every undefined symbol the unit's relocations use: an export becomes an import, anything
    /// else a livepatch symbol, whose relocations are returned to be redirected to its
    /// placeholder.
    fn resolve_undefined(
        &mut self,
        ctx: &TuContext,
        diff: &Object,
    ) -> Result<Vec<Redirect>, ModuleError> {
        let mut cache = ResolutionCache::new();
        let mut redirects = Vec::new();
        for (si, sec) in diff.sections_iter() {
            let Some(target) = sec.rela_target() else {
                continue;
            };
            for (ri, r) in sec.relas.iter().enumerate() {
                let sym = diff.symbol(r.r_sym);
                if !sym.is_undefined() || r.r_sym.0 == 0 {
                    continue;
                }
                let Some(res) = self.resolution(ctx, r.r_sym, sym, &mut cache)? else {
                    continue;
                };
                self.check_sealed(ctx, diff, target, r.r_offset, &sym.name, &res)?;
                match res {
                    Resolution::Export {
                        object,
                        crc,
                        namespace,
                    } => self.import(ctx, &sym.name, object, crc, namespace),
                    Resolution::Klp { object, sympos } => {
                        let target_sec = diff.section(target);
                        let placeholder =
                            self.klp_symbol(ctx, target_sec, &sym.name, &object, sympos)?;
                        redirects.push((si.0, ri, placeholder, sym.st_type()));
                    }
                }
            }
        }
        Ok(redirects)
    }

    /// How the target provides undefined symbol `sym` (index `index`); `None` when nothing needs
    /// doing: the patch defines it itself, or it is a weak reference to something the target
    /// lacks (it stays weak: the module loader resolves it to 0, as the kernel's own weak
    /// references are).
    fn resolution(
        &self,
        ctx: &TuContext,
        index: SymbolIndex,
        sym: &Symbol,
        cache: &mut ResolutionCache,
    ) -> Result<Option<Resolution>, ModuleError> {
        if sym.name.is_empty() {
            return Err(ModuleError::UnnamedUndefined {
                tu: ctx.name.into(),
                index: index.0,
            });
        }
        let local = sym.is_local();
        if !local && self.provided.contains(&sym.name) {
            return Ok(None);
        }
        let res = cache
            .entry((sym.name.clone(), local))
            .or_insert_with(|| self.resolver.resolve(ctx, &sym.name, local))
            .clone();
        match res {
            Ok(r) => Ok(Some(r)),
            Err(_) if sym.st_bind() == STB_WEAK => Ok(None),
            Err(e) => Err(ModuleError::SymbolNotInTarget {
                tu: ctx.name.into(),
                symbol: sym.name.clone(),
                object: e.object,
                reason: e.reason,
            }),
        }
    }

    /// Refuses taking the address of a function the target seals at boot under IBT (its ENDBR
    /// becomes a NOP: an indirect call to it would fault).
    fn check_sealed(
        &self,
        ctx: &TuContext,
        diff: &Object,
        target: kpatch_elf::SectionIndex,
        r_offset: u64,
        name: &str,
        res: &Resolution,
    ) -> Result<(), ModuleError> {
        let (Resolution::Export { object, .. } | Resolution::Klp { object, .. }) = res;
        if self.resolver.is_sealed(object, name) && takes_address(diff, target, r_offset) {
            return Err(ModuleError::SealedFunctionAddress {
                tu: ctx.name.into(),
                site: site_name(diff, target, r_offset),
                symbol: name.into(),
                object: object.clone(),
            });
        }
        Ok(())
    }

    /// An export the patch uses through a normal relocation, recorded once.
    fn import(
        &mut self,
        ctx: &TuContext,
        name: &str,
        exporter: String,
        crc: Option<u32>,
        namespace: Option<String>,
    ) {
        if self.import_seen.insert(name.to_string()) {
            self.plan.imports.push(Import {
                name: name.to_string(),
                object: exporter,
                crc,
                namespace,
                tu: ctx.name.into(),
            });
        }
    }

    /// The placeholder of livepatch symbol `name` of `sym_object`, used from section `target_sec`
    /// of the unit, after the checks that it can be one.
    fn klp_symbol(
        &mut self,
        ctx: &TuContext,
        target_sec: &kpatch_elf::Section,
        name: &str,
        sym_object: &str,
        sympos: u64,
    ) -> Result<String, ModuleError> {
        let (tu_name, object) = (ctx.name, ctx.object);
        let sym_object = names::normalize_object(tu_name, sym_object)?;
        if object == VMLINUX && sym_object != VMLINUX {
            return Err(ModuleError::VmlinuxUsesModuleSymbol {
                tu: tu_name.into(),
                symbol: name.into(),
                object: sym_object,
            });
        }
        let rela_object = if sym_object == VMLINUX {
            VMLINUX.to_string()
        } else {
            object.to_string()
        };
        if !target_sec.is_alloc() {
            return Err(ModuleError::KlpInNonAllocSection {
                tu: tu_name.into(),
                section: target_sec.name.clone(),
                symbol: name.into(),
            });
        }
        if sections::is_read_at_load(&target_sec.name) && rela_object != VMLINUX {
            return Err(ModuleError::SpecialSectionKlp {
                tu: tu_name.into(),
                section: target_sec.name.clone(),
                symbol: name.into(),
                object: sym_object,
            });
        }
        names::check_symbol_name(tu_name, name)?;
        let key = (
            rela_object.clone(),
            sym_object.clone(),
            name.to_string(),
            sympos,
        );
        let klp_symbols = &mut self.plan.klp_symbols;
        let n = *self.klp_index.entry(key).or_insert_with(|| {
            klp_symbols.push(KlpSymbol {
                placeholder: format!("{}{}", names::KLP_PLACEHOLDER_PREFIX, klp_symbols.len()),
                rela_object,
                object: sym_object,
                name: name.to_string(),
                sympos,
                tu: tu_name.into(),
            });
            klp_symbols.len() - 1
        });
        Ok(klp_symbols[n].placeholder.clone())
    }
}

/// Points each redirected relocation at its placeholder: an undefined weak symbol, one per
/// placeholder in the unit, typed as the symbol it stands for when that is a function or object.
fn redirect_to_placeholders(diff: &mut Object, redirects: Vec<Redirect>) {
    let mut placeholder_syms: HashMap<String, SymbolIndex> = HashMap::new();
    for (si, ri, placeholder, st_type) in redirects {
        let idx = *placeholder_syms
            .entry(placeholder.clone())
            .or_insert_with(|| {
                let st_type = if matches!(st_type, STT_FUNC | STT_OBJECT) {
                    st_type
                } else {
                    STT_NOTYPE
                };
                diff.add_symbol(Symbol::new(placeholder, STB_WEAK, st_type))
            });
        diff.sections[si].relas[ri].r_sym = idx;
    }
}

/// Removes the undefined symbols nothing refers to any more (the originals of the placeholders).
fn remove_unreferenced_undefined(diff: &mut Object, tu_name: &str) -> Result<(), ModuleError> {
    let mut referenced = vec![false; diff.symbols.len()];
    for s in &diff.sections {
        for r in &s.relas {
            referenced[r.r_sym.0] = true;
        }
    }
    diff.remove_symbols(|i, s| s.is_undefined() && !referenced[i.0])
        .map_err(|e| ModuleError::elf(tu_name, e))
}

/// Whether the relocation at `r_offset` of section `target` takes the address of its symbol:
/// anything in code but the operand of a direct call or jump, and any reference from data. The
/// kernel's own tables (special sections) point into code for the kernel's use, not for
/// indirect calls.
fn takes_address(diff: &Object, target: kpatch_elf::SectionIndex, r_offset: u64) -> bool {
    let sec = diff.section(target);
    if sec.sh_flags & SHF_EXECINSTR != 0 {
        let Some(arch) = kpatch_arch::for_machine(diff.header.e_machine) else {
            return true;
        };
        return !arch.is_direct_branch(&sec.data, r_offset);
    }
    !sections::is_read_at_load(&sec.name)
}

/// `func+0x1a` for an offset inside a function (or object) of `target`, else `section+0x1a`.
fn site_name(diff: &Object, target: kpatch_elf::SectionIndex, offset: u64) -> String {
    diff.symbols_iter()
        .filter(|(_, s)| {
            s.section == Some(target)
                && !s.name.is_empty()
                && matches!(s.st_type(), STT_FUNC | STT_OBJECT)
        })
        .find(|(_, s)| s.st_value <= offset && offset < s.st_value + s.st_size.max(1))
        .map(|(_, s)| format!("{}+{:#x}", s.name, offset - s.st_value))
        .unwrap_or_else(|| format!("{}+{offset:#x}", diff.section(target).name))
}

/// Removes the entries of special section `section` whose key (the relocation at the key field
/// of the architecture's layout) points to an undefined symbol that `drop` selects. The entries
/// are split as the differ split them (the size found from their relocations). Returns the
/// dropped keys.
fn drop_module_keyed_entries(
    diff: &mut Object,
    section: &str,
    drop: impl Fn(&str) -> bool,
) -> Vec<String> {
    let Some(spec) =
        kpatch_arch::for_machine(diff.header.e_machine).and_then(|a| a.special_section(section))
    else {
        return Vec::new();
    };
    let Some(sec) = diff.section_by_name(section) else {
        return Vec::new();
    };
    let Some(rs) = diff
        .sections_iter()
        .find(|(_, s)| s.rela_target() == Some(sec))
        .map(|(i, _)| i)
    else {
        return Vec::new();
    };
    let relas = diff.sections[rs.0].relas.as_slice();
    let Some(size) = spec.entry_size.find(None, diff, sec, Some(relas)) else {
        return Vec::new();
    };
    let Some(key) = spec.layout(size).and_then(|l| l.key) else {
        return Vec::new();
    };
    let entries = Entries::new(&diff.sections[sec.0], relas, size);
    let mut dropped = Vec::new();
    let kept = entries.keep(|e| {
        let Some(k) = e.field_rela(Some(key)).map(|r| diff.symbol(r.r_sym)) else {
            return true;
        };
        let gone = k.is_undefined() && drop(&k.name);
        if gone {
            dropped.push(k.name.clone());
        }
        !gone
    });
    if !dropped.is_empty() {
        diff.sections[sec.0].sh_size = kept.data.len() as u64;
        diff.sections[sec.0].data = kept.data;
        diff.sections[rs.0].relas = kept.relas;
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpatch_elf::{Header, Rela, Section};

    const R_X86_64_64: u32 = 1;
    const R_X86_64_PC32: u32 = 2;
    const R_X86_64_PC64: u32 = 24;

    /// A diff object with function `f` and special section `name`: one entry of `size` bytes per
    /// key, each with relocations `(offset in the entry, type, to the key?)`.
    fn diff_with(name: &str, size: u64, layout: &[(u64, u32, bool)], keys: &[&str]) -> Object {
        let mut o = Object::new(Header {
            e_machine: EM_X86_64,
            e_flags: 0,
            ei_osabi: 0,
            ei_abiversion: 0,
            big_endian: false,
        });
        let text = o.add_section(Section::new(
            ".text.f",
            SHT_PROGBITS,
            SHF_ALLOC | SHF_EXECINSTR,
        ));
        let mut f = Symbol::new("f", STB_LOCAL, STT_FUNC);
        f.section = Some(text);
        let f = o.add_symbol(f);
        let keys: Vec<SymbolIndex> = keys
            .iter()
            .map(|k| o.add_symbol(Symbol::new(*k, STB_GLOBAL, STT_OBJECT)))
            .collect();
        let mut table = Section::new(name, SHT_PROGBITS, SHF_ALLOC | SHF_WRITE);
        table.sh_size = size * keys.len() as u64;
        table.data = (0..table.sh_size).map(|b| b as u8).collect();
        let table = o.add_section(table);
        let mut rela = Section::new(format!(".rela{name}"), SHT_RELA, SHF_INFO_LINK);
        rela.sh_info = table.0 as u32;
        for (k, &key) in keys.iter().enumerate() {
            for &(at, r_type, to_key) in layout {
                let r_sym = if to_key { key } else { f };
                rela.relas.push(Rela {
                    r_offset: k as u64 * size + at,
                    r_sym,
                    r_type,
                    r_addend: k as i64,
                });
            }
        }
        o.add_section(rela);
        o
    }

    fn relas_of(o: &Object, name: &str) -> Vec<(u64, String, i64)> {
        let sec = o.section_by_name(name).unwrap();
        let rela = o
            .sections
            .iter()
            .find(|s| s.rela_target() == Some(sec))
            .unwrap();
        rela.relas
            .iter()
            .map(|r| (r.r_offset, o.symbol(r.r_sym).name.clone(), r.r_addend))
            .collect()
    }

    #[test]
    fn module_keyed_jump_entries_are_dropped_by_their_key_field() {
        // struct jump_entry { s32 code; s32 target; long key; }
        let jump = [
            (0, R_X86_64_PC32, false),
            (4, R_X86_64_PC32, false),
            (8, R_X86_64_PC64, true),
        ];
        let mut o = diff_with(
            "__jump_table",
            16,
            &jump,
            &["__tracepoint_a", "vm_key", "__tracepoint_b"],
        );
        let dropped =
            drop_module_keyed_entries(&mut o, "__jump_table", |n| n.starts_with("__tracepoint_"));
        assert_eq!(dropped, ["__tracepoint_a", "__tracepoint_b"]);
        let sec = o.section_by_name("__jump_table").unwrap();
        assert_eq!(o.section(sec).sh_size, 16);
        assert_eq!(o.section(sec).data, (16..32).collect::<Vec<u8>>());
        assert_eq!(
            relas_of(&o, "__jump_table"),
            [
                (0, "f".into(), 1),
                (4, "f".into(), 1),
                (8, "vm_key".into(), 1)
            ]
        );

        // The absolute layout of older kernels: three pointers, the key at 16.
        let jump = [
            (0, R_X86_64_64, false),
            (8, R_X86_64_64, false),
            (16, R_X86_64_64, true),
        ];
        let mut o = diff_with("__jump_table", 24, &jump, &["vm_key", "__tracepoint_a"]);
        let dropped =
            drop_module_keyed_entries(&mut o, "__jump_table", |n| n.starts_with("__tracepoint_"));
        assert_eq!(dropped, ["__tracepoint_a"]);
        assert_eq!(
            relas_of(&o, "__jump_table"),
            [
                (0, "f".into(), 0),
                (8, "f".into(), 0),
                (16, "vm_key".into(), 0)
            ]
        );
    }

    #[test]
    fn module_keyed_static_call_sites_are_dropped_and_others_kept() {
        // struct static_call_site { s32 addr; s32 key; }
        let site = [(0, R_X86_64_PC32, false), (4, R_X86_64_PC32, true)];
        let mut o = diff_with(".static_call_sites", 8, &site, &["__SCK__vm", "__SCK__mod"]);
        let dropped =
            drop_module_keyed_entries(&mut o, ".static_call_sites", |n| n == "__SCK__mod");
        assert_eq!(dropped, ["__SCK__mod"]);
        assert_eq!(
            relas_of(&o, ".static_call_sites"),
            [(0, "f".into(), 0), (4, "__SCK__vm".into(), 0)]
        );
        // Nothing to drop: nothing changes.
        let before = o.clone();
        assert!(drop_module_keyed_entries(&mut o, ".static_call_sites", |_| false).is_empty());
        assert_eq!(o, before);
        // A section the table does not know, or an object without the section: nothing.
        assert!(drop_module_keyed_entries(&mut o, "__jump_table", |_| true).is_empty());
    }
}
