//! Building the output object from what was included: the last phase, which reads the
//! [`Statuses`], the [`Inclusion`] and what [`Trimmed`] kept of the special sections.

use crate::index::{IdxVec, Patched, PatchedSec, PatchedSym};
use crate::kelf::Kelf;
use crate::state::{Inclusion, Status, Statuses, Trimmed};
use crate::DiffError;
use kpatch_arch::{EntrySize, Kind};
use kpatch_elf::consts::*;
use kpatch_elf::{Object, Rela, Section, SectionIndex, SymbolIndex};

type P = Kelf<Patched>;

/// The output object: the included sections (special sections with their kept entries) and
/// symbols, in the patched object's order, an unchanged symbol made an undefined reference, a
/// changed function local; its own `__mcount_loc`, and the namespaces the patched object imports.
pub fn build(
    p: &P,
    st: &Statuses,
    inc: &Inclusion,
    trimmed: &Trimmed,
) -> Result<Object, DiffError> {
    let bug = |reason: String| DiffError::Invalid {
        file: p.file.clone(),
        reason: format!("internal error: {reason}"),
    };
    let regen = &trimmed.regen;
    let mut out = Object::new(p.obj.header.clone());

    // Sections, in their original order.
    let mut sec_map: IdxVec<PatchedSec, Option<SectionIndex>> = p.per_section(None);
    let mut old_of: Vec<PatchedSec> = Vec::new();
    for (i, s) in p.sections() {
        if inc.sec[i] {
            sec_map[i] = Some(SectionIndex(out.sections.len()));
            old_of.push(i);
            let mut s = s.clone();
            if let Some(r) = regen.get(&i) {
                s.data = r.data.clone();
                s.sh_size = s.data.len() as u64;
            } else if let Some(base) = p.base_of[i].filter(|b| regen.contains_key(b)) {
                s.relas = regen[&base].relas.clone();
            }
            out.sections.push(s);
        }
    }

    // Symbols: null, FILE, local functions, other locals, globals (the order kpatch emits).
    let included: Vec<PatchedSym> = p
        .symbols()
        .filter(|&(i, s)| {
            inc.sym[i] && !(s.is_section() && p.sec_of(i).is_some_and(|x| !inc.sec[x]))
        })
        .map(|(i, _)| i)
        .collect();
    let changed_func = |i: PatchedSym| p.sym(i).is_func() && st.sym[i] == Status::Changed;
    let local_after = |i: PatchedSym| p.sym(i).is_local() || changed_func(i);
    let rank = |i: PatchedSym| {
        let s = p.sym(i);
        if s.st_type() == STT_FILE {
            0
        } else if local_after(i) && s.is_func() {
            1
        } else if local_after(i) {
            2
        } else {
            3
        }
    };
    let mut order = included.clone();
    order.sort_by_key(|&i| (rank(i), i));
    let mut sym_map: IdxVec<PatchedSym, Option<SymbolIndex>> = p.per_symbol(None);
    for i in order {
        let mut s = p.sym(i).clone();
        if s.is_section() {
            s.name.clear();
        }
        match p.sec_of(i) {
            Some(sec) if inc.sec[sec] => s.section = sec_map[sec],
            Some(_) => {
                // Defined in the original kernel: an undefined reference the module resolves.
                s.section = None;
                s.st_shndx = SHN_UNDEF;
                s.st_value = 0;
            }
            None => {}
        }
        if changed_func(i) {
            // Patched functions are private to the patch: nothing may link to them by name
            // before the livepatch core has applied their relocations.
            s.set_bind(STB_LOCAL);
        }
        sym_map[i] = Some(SymbolIndex(out.symbols.len()));
        out.symbols.push(s);
    }

    // Fix up indexes inside sections (the copies hold the patched object's).
    let patched_sec = |raw: u32| PatchedSec::from_raw(SectionIndex(raw as usize));
    for (new, sec) in out.sections.iter_mut().enumerate().skip(1) {
        let old = old_of[new - 1];
        if sec.is_rela() {
            let base = p.base_of[old].ok_or_else(|| bug(format!("{} has no base", sec.name)))?;
            sec.sh_info = sec_map[base]
                .ok_or_else(|| {
                    bug(format!(
                        "{} is included without {}",
                        sec.name,
                        p.sec_name(base)
                    ))
                })?
                .0 as u32;
            for r in &mut sec.relas {
                let target = p.target(r);
                r.r_sym = sym_map[target].ok_or_else(|| {
                    bug(format!(
                        "{} references {}, which was not included",
                        sec.name,
                        p.sym_name(target)
                    ))
                })?;
            }
        }
        if sec.sh_flags & SHF_LINK_ORDER != 0 {
            match sec_map.get(patched_sec(sec.sh_link)).copied().flatten() {
                Some(l) => sec.sh_link = l.0 as u32,
                None => {
                    sec.sh_flags &= !SHF_LINK_ORDER;
                    sec.sh_link = 0;
                }
            }
        }
        if sec.is_group() {
            let be = p.obj.header.big_endian;
            let (flags, members) = sec.group_members(be);
            let members: Vec<SectionIndex> = members
                .iter()
                .filter_map(|m| sec_map.get(PatchedSec::from_raw(*m)).copied().flatten())
                .collect();
            sec.set_group_members(be, flags, &members);
            sec.sh_info = sym_map
                .get(PatchedSym::from_raw(SymbolIndex(sec.sh_info as usize)))
                .copied()
                .flatten()
                .map(|s| s.0 as u32)
                .unwrap_or(0);
        }
    }

    add_mcount_loc(p, st, &sym_map, &mut out);
    add_import_namespaces(p, &mut out);
    Ok(out)
}

/// Records the ftrace call site of each new or changed function in `__mcount_loc` (the table's
/// rebuilt per-function section), as recordmcount/objtool did for the original, so ftrace (and so
/// livepatch) can hook them.
fn add_mcount_loc(
    p: &P,
    st: &Statuses,
    sym_map: &IdxVec<PatchedSym, Option<SymbolIndex>>,
    out: &mut Object,
) {
    let Some((name, entry)) =
        p.arch
            .special_sections()
            .iter()
            .find_map(|s| match (s.kind, s.entry_size) {
                (Kind::PerFunction { rebuilt: true }, EntrySize::Fixed(n)) => Some((s.name, n)),
                _ => None,
            })
    else {
        return;
    };
    let ftrace = p.arch.function_entry();
    let mut sites = Vec::new();
    for (i, s) in p.symbols() {
        if !s.is_func() || st.sym[i] == Status::Same || !p.has_fentry[i] {
            continue;
        }
        let (Some(new_sym), Some(sec)) = (sym_map[i], p.sec_of(i)) else {
            continue;
        };
        let Some(new_sec) = out.symbols[new_sym.0].section else {
            continue;
        };
        let Some(rsec) = p.rela_of[sec] else {
            continue;
        };
        let Some(first) = p
            .relas(rsec)
            .iter()
            .filter(|r| r.r_offset >= s.st_value)
            .min_by_key(|r| r.r_offset)
        else {
            continue;
        };
        // The relocation is in the call, after its opcode.
        let Some(call) = first.r_offset.checked_sub(ftrace.call_reloc_at) else {
            continue;
        };
        if first.r_type == ftrace.nop_reloc {
            // An old-style NOP at the ftrace site: make it the call that ftrace expects.
            let text = &mut out.sections[new_sec.0];
            if let Some(bytes) = text
                .data
                .get_mut(call as usize..call as usize + ftrace.call.len())
            {
                bytes.copy_from_slice(ftrace.call);
            }
            if let Some(rs) = out
                .sections
                .iter_mut()
                .find(|x| x.is_rela() && x.sh_info as usize == new_sec.0)
            {
                for r in rs.relas.iter_mut().filter(|r| r.r_offset == first.r_offset) {
                    r.r_type = ftrace.call_reloc;
                }
            }
        }
        sites.push((new_sym, call as i64 - s.st_value as i64));
    }
    if sites.is_empty() {
        return;
    }
    let mcount = SectionIndex(out.sections.len());
    out.sections.push(Section {
        name: name.into(),
        sh_type: SHT_PROGBITS,
        sh_flags: SHF_ALLOC,
        sh_addr: 0,
        sh_addralign: entry,
        sh_entsize: entry,
        sh_link: 0,
        sh_info: 0,
        sh_size: entry * sites.len() as u64,
        data: vec![0; (entry as usize) * sites.len()],
        relas: Vec::new(),
    });
    let relas = sites
        .iter()
        .enumerate()
        .map(|(k, &(sym, addend))| Rela {
            r_offset: entry * k as u64,
            r_sym: sym,
            r_type: p.arch.abs64(),
            r_addend: addend,
        })
        .collect();
    out.sections.push(Section {
        name: format!(".rela{name}"),
        sh_type: SHT_RELA,
        sh_flags: SHF_INFO_LINK,
        sh_addr: 0,
        sh_addralign: 8,
        sh_entsize: 24,
        sh_link: 0,
        sh_info: mcount.0 as u32,
        sh_size: 0,
        data: Vec::new(),
        relas,
    });
}

/// The symbol namespaces the patched object imports (`MODULE_IMPORT_NS`), which the patch module
/// must import too.
fn add_import_namespaces(p: &P, out: &mut Object) {
    let Some(modinfo) = p.section_named(kpatch_arch::sections::MODINFO) else {
        return;
    };
    let data = &p.sec(modinfo).data;
    let mut kept = Vec::new();
    for entry in data.split(|&b| b == 0).filter(|e| !e.is_empty()) {
        let text = String::from_utf8_lossy(entry);
        if text
            .split_once('=')
            .is_some_and(|(k, _)| k == "import_ns" || k.ends_with(".import_ns"))
        {
            kept.extend_from_slice(entry);
            kept.push(0);
        }
    }
    if kept.is_empty() {
        return;
    }
    let src = p.sec(modinfo);
    out.sections.push(Section {
        sh_size: kept.len() as u64,
        data: kept,
        relas: Vec::new(),
        ..src.clone()
    });
}
