//! Selecting what the output holds: the changed functions and, transitively, what they need.
//!
//! A function or object that is unchanged is not carried: references to it stay undefined and
//! resolve to the running kernel's copy. A section symbol always brings its section, since a
//! reference through it cannot be resolved outside this object.

use crate::compare::Status;
use crate::correlate::State;
use crate::kelf::Kelf;
use crate::Report;
use kpatch_arch::sections;
use kpatch_elf::consts::*;
use kpatch_elf::{SectionIndex, SymbolIndex};

pub struct Inclusion {
    pub sec: Vec<bool>,
    pub sym: Vec<bool>,
}

impl Inclusion {
    pub fn new(p: &Kelf) -> Inclusion {
        Inclusion {
            sec: vec![false; p.obj.sections.len()],
            sym: vec![false; p.obj.symbols.len()],
        }
    }

    /// Includes a section, its section symbol, its relocation section and, recursively, what
    /// those relocations reference.
    pub fn section(&mut self, p: &Kelf, st: &State, sec: SectionIndex) {
        let mut work = Vec::new();
        self.section_into(p, sec, &mut work);
        self.drain(p, st, work);
    }

    /// Includes a symbol and, if it is a section symbol or its section is not the same as the
    /// original's, its section.
    pub fn symbol(&mut self, p: &Kelf, st: &State, sym: SymbolIndex) {
        self.drain(p, st, vec![sym]);
    }

    fn section_into(&mut self, p: &Kelf, sec: SectionIndex, work: &mut Vec<SymbolIndex>) {
        if self.sec[sec.0] {
            return;
        }
        self.sec[sec.0] = true;
        if let Some(ss) = p.secsym[sec.0] {
            self.sym[ss.0] = true;
        }
        // The x86 padding symbol travels with its function.
        for &s in &p.by_offset[sec.0] {
            if p.is_padding_symbol(&p.obj.symbols[s.0].name) {
                self.sym[s.0] = true;
            }
        }
        if let Some(r) = p.rela_of[sec.0] {
            self.sec[r.0] = true;
            work.extend(p.obj.sections[r.0].relas.iter().map(|r| r.r_sym));
        }
    }

    fn drain(&mut self, p: &Kelf, st: &State, mut work: Vec<SymbolIndex>) {
        while let Some(sym) = work.pop() {
            if self.sym[sym.0] {
                continue;
            }
            self.sym[sym.0] = true;
            let s = &p.obj.symbols[sym.0];
            if let Some(sec) = s.section {
                if s.is_section() || st.sym_status[sym.0] != Status::Same {
                    self.section_into(p, sec, &mut work);
                }
            }
        }
    }
}

pub fn include_all(
    o: &Kelf,
    p: &Kelf,
    st: &State,
    inc: &mut Inclusion,
    report: &mut Report,
    options: &crate::Options,
) {
    // Standard elements: tables, .rodata (switch tables), string literals.
    for (i, s) in p.obj.sections_iter() {
        let n = s.name.as_str();
        if sections::is_always_carried(n) || sections::is_string_literals(n) {
            inc.section(p, st, i);
        }
    }
    for (i, s) in p.obj.symbols_iter() {
        if s.section
            .is_some_and(|sec| sections::is_string_literals(p.sec_name(sec)))
        {
            inc.sym[i.0] = true;
        }
    }
    // The changed functions.
    for (i, s) in p.obj.symbols_iter() {
        if s.is_func() && st.sym_status[i.0] == Status::Changed {
            inc.symbol(p, st, i);
            if !options.kpatch_compat {
                include_rejoining_children(o, p, st, inc, i);
            }
        }
        if s.st_type() == STT_FILE {
            inc.sym[i.0] = true;
        }
    }
    // Patch callbacks.
    for (i, s) in p.obj.sections_iter() {
        let base = p.base_of[i.0].map(|b| p.sec_name(b)).unwrap_or(&s.name);
        if !sections::is_callbacks(base) {
            continue;
        }
        inc.sec[i.0] = true;
        if s.is_rela() {
            if let Some(r) = s.relas.first() {
                let name = p.sym_name(r.r_sym).to_string();
                report.callbacks.push(name);
                inc.symbol(p, st, r.r_sym);
            }
            for r in s.relas.iter().skip(1) {
                inc.symbol(p, st, r.r_sym);
            }
        } else if let Some(ss) = p.secsym[i.0] {
            inc.sym[ss.0] = true;
        }
    }
    for (i, s) in p.obj.symbols_iter() {
        if s.is_object()
            && s.section
                .is_some_and(|sec| sections::is_callbacks(p.sec_name(sec)))
        {
            inc.sym[i.0] = false;
        }
    }
    // Functions forced through KPATCH_FORCE_UNSAFE.
    for (i, s) in p.obj.sections_iter() {
        let base = p.base_of[i.0].map(|b| p.sec_name(b)).unwrap_or(&s.name);
        if base != sections::FORCE {
            continue;
        }
        inc.sec[i.0] = true;
        if s.is_rela() {
            report
                .forced
                .extend(s.relas.iter().map(|r| p.sym_name(r.r_sym).to_string()));
        } else if let Some(ss) = p.secsym[i.0] {
            inc.sym[ss.0] = true;
        }
    }
    for (i, s) in p.obj.symbols_iter() {
        if s.name.starts_with(sections::FORCE_SYMBOL_PREFIX) {
            inc.sym[i.0] = false;
        }
    }
    // New global functions and data.
    for (i, s) in p.obj.symbols_iter() {
        if s.st_bind() == STB_GLOBAL && s.section.is_some() && st.sym_status[i.0] == Status::New {
            report.new_globals.push(s.name.clone());
            inc.symbol(p, st, i);
        }
    }
}

/// The top-level functions with `status` that the output includes, in symbol order.
pub fn functions_with(p: &Kelf, st: &State, inc: &Inclusion, status: Status) -> Vec<String> {
    p.obj
        .symbols_iter()
        .filter(|(i, s)| {
            inc.sym[i.0]
                && s.section.is_some()
                && s.is_func()
                && is_patch_target(p, st, *i)
                && !p.is_padding_symbol(&s.name)
                && st.sym_status[i.0] == status
        })
        .map(|(_, s)| s.name.clone())
        .collect()
}

/// A function the livepatch core replaces on its own: a top-level function, or a child
/// (`foo.part.0`) with its own ftrace entry whose parent is not being replaced.
pub fn is_patch_target(p: &Kelf, st: &State, sym: SymbolIndex) -> bool {
    match p.parent[sym.0] {
        None => true,
        Some(parent) => p.has_fentry[sym.0] && st.sym_status[parent.0] == Status::Same,
    }
}

/// A `.cold` (or `.part`) child without an ftrace entry of its own is a piece of its parent:
/// it jumps back into it. Left out because its bytes are the same, the kernel's copy would
/// jump back into the kernel's *old* parent and run the old code from there. So a changed parent
/// carries every such child that rejoins it at a place after which the parent changed.
fn include_rejoining_children(
    o: &Kelf,
    p: &Kelf,
    st: &State,
    inc: &mut Inclusion,
    parent: SymbolIndex,
) {
    let Some(psec) = p.obj.symbols[parent.0].section else {
        return;
    };
    for &child in &p.children[parent.0] {
        if p.has_fentry[child.0]
            || inc.sym[child.0] && p.obj.symbols[child.0].section.is_some_and(|s| inc.sec[s.0])
        {
            continue;
        }
        let Some(csec) = p.obj.symbols[child.0].section else {
            continue;
        };
        let Some(crela) = p.rela_of[csec.0] else {
            continue;
        };
        let code = &p.obj.sections[csec.0].data;
        let rejoin_points: Vec<i64> = p.obj.sections[crela.0]
            .relas
            .iter()
            .filter(|x| x.r_sym == parent || p.obj.symbols[x.r_sym.0].section == Some(psec))
            .map(|x| {
                let bias = if p.arch.is_pc_relative(x.r_type) {
                    p.arch.pc_rel_bias(code, x.r_offset).unwrap_or(4)
                } else {
                    0
                };
                (p.obj.symbols[x.r_sym.0].st_value as i64)
                    .saturating_add(x.r_addend)
                    .saturating_add(bias)
            })
            .collect();
        if rejoin_points
            .iter()
            .any(|&at| tail_differs(o, p, st, parent, at))
        {
            inc.sym[child.0] = false;
            inc.section(p, st, csec);
            inc.sym[child.0] = true;
            include_rejoining_children(o, p, st, inc, child);
        }
    }
}

/// Whether the parent's code from offset `at` of its section on differs between the kernel's
/// copy and the patched one (bytes, or where its relocations point).
fn tail_differs(o: &Kelf, p: &Kelf, st: &State, parent: SymbolIndex, at: i64) -> bool {
    let (Some(psec), Some(osym)) = (p.obj.symbols[parent.0].section, st.sym_twin[parent.0]) else {
        return true;
    };
    let Some(osec) = o.obj.symbols[osym.0].section else {
        return true;
    };
    let at = at.max(0) as u64;
    p.code_range(psec, at, u64::MAX) != o.code_range(osec, at, u64::MAX)
}
