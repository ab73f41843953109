//! The last step on the linked `.ko`: placeholders become livepatch symbols and their relocations
//! move into `.klp.rela.<object>.<section>` sections; then the module is checked against the
//! target (vermagic, CRCs of the vmlinux exports it uses, nothing left undefined but those).

use crate::names;
use crate::plan::Plan;
use crate::ModuleError;
use kpatch_common::klp::{klp_rela_name, SHF_RELA_LIVEPATCH, SHN_LIVEPATCH};
use kpatch_common::modinfo::ModInfo;
use kpatch_elf::consts::*;
use kpatch_elf::{Object, Section, SectionIndex};
use std::collections::{HashMap, HashSet};

/// Flags of a livepatch relocation section: kept in memory (`SHF_ALLOC`, the livepatch core
/// reads it after loading), `sh_info` names a section, and `SHF_RELA_LIVEPATCH` so that the module
/// loader leaves it to the livepatch core.
pub const KLP_RELA_FLAGS: u64 = SHF_ALLOC | SHF_INFO_LINK | SHF_RELA_LIVEPATCH;

/// Rewrites the linked module `ko` (named `file` in errors) as described in the module docs.
pub fn convert_klp(ko: &mut Object, plan: &Plan, file: &str) -> Result<(), ModuleError> {
    let by_placeholder: HashMap<&str, usize> = plan
        .klp_symbols
        .iter()
        .enumerate()
        .map(|(i, k)| (k.placeholder.as_str(), i))
        .collect();
    // Symbol index -> klp symbol.
    let mut klp_of: HashMap<usize, usize> = HashMap::new();
    for (i, s) in ko.symbols_iter() {
        if let Some(&k) = by_placeholder.get(s.name.as_str()) {
            if !s.is_undefined() {
                return Err(ModuleError::BadModule {
                    file: file.into(),
                    reason: format!(
                        "placeholder `{}` (for `{}`) is defined in the linked module",
                        s.name, plan.klp_symbols[k].name
                    ),
                });
            }
            klp_of.insert(i.0, k);
        }
    }

    // Move the relocations.
    let mut klp_sections: HashMap<(String, usize), SectionIndex> = HashMap::new();
    let mut moved: Vec<(String, usize, Vec<kpatch_elf::Rela>)> = Vec::new();
    for si in 1..ko.sections.len() {
        if !ko.sections[si].is_rela() || ko.sections[si].sh_flags & SHF_RELA_LIVEPATCH != 0 {
            continue;
        }
        if !ko.sections[si]
            .relas
            .iter()
            .any(|r| klp_of.contains_key(&r.r_sym.0))
        {
            continue;
        }
        let target = ko.sections[si].sh_info as usize;
        let target_sec = ko
            .sections
            .get(target)
            .ok_or_else(|| ModuleError::BadModule {
                file: file.into(),
                reason: format!(
                    "relocation section `{}` applies to section {target}, which does not exist",
                    ko.sections[si].name
                ),
            })?;
        let target_name = target_sec.name.clone();
        let target_alloc = target_sec.is_alloc();
        let relas = std::mem::take(&mut ko.sections[si].relas);
        let mut keep = Vec::with_capacity(relas.len());
        let mut per_object: Vec<(String, Vec<kpatch_elf::Rela>)> = Vec::new();
        for r in relas {
            match klp_of.get(&r.r_sym.0) {
                None => keep.push(r),
                Some(&k) => {
                    let ks = &plan.klp_symbols[k];
                    if !target_alloc {
                        return Err(ModuleError::KlpInNonAllocSection {
                            tu: file.into(),
                            section: target_name.clone(),
                            symbol: ks.name.clone(),
                        });
                    }
                    match per_object.iter_mut().find(|(o, _)| *o == ks.rela_object) {
                        Some((_, v)) => v.push(r),
                        None => per_object.push((ks.rela_object.clone(), vec![r])),
                    }
                }
            }
        }
        ko.sections[si].relas = keep;
        for (object, relas) in per_object {
            moved.push((object, target, relas));
        }
    }
    for (object, target, relas) in moved {
        let idx = match klp_sections.get(&(object.clone(), target)) {
            Some(&i) => i,
            None => {
                let mut s = Section::new(
                    klp_rela_name(&object, &ko.sections[target].name),
                    SHT_RELA,
                    KLP_RELA_FLAGS,
                );
                s.sh_info = target as u32;
                s.sh_addralign = 8;
                s.sh_entsize = 24;
                let i = ko.add_section(s);
                klp_sections.insert((object, target), i);
                i
            }
        };
        ko.sections[idx.0].relas.extend(relas);
    }

    // Rename the placeholders.
    for (&si, &k) in &klp_of {
        let ks = &plan.klp_symbols[k];
        let s = &mut ko.symbols[si];
        s.name = ks.klp_name();
        s.set_bind(STB_GLOBAL);
        s.st_shndx = SHN_LIVEPATCH;
        s.section = None;
        s.st_value = 0;
        s.st_size = 0;
    }
    ko.sort_symbols_locals_first();
    Ok(())
}

/// The module's `.modinfo` (empty when it has none).
pub fn modinfo(ko: &Object) -> ModInfo {
    let Some(i) = ko.section_by_name(kpatch_common::modinfo::SECTION) else {
        return ModInfo::default();
    };
    ModInfo::from_section(&ko.section(i).data)
}

/// `(symbol, crc)` of `__versions` (64-bit little-endian `struct modversion_info`).
pub fn versions(ko: &Object, file: &str) -> Result<Vec<(String, u32)>, ModuleError> {
    let Some(i) = ko.section_by_name("__versions") else {
        return Ok(Vec::new());
    };
    kpatch_symbols::parse_modversions(&ko.section(i).data, file).map_err(|e| {
        ModuleError::BadModule {
            file: file.into(),
            reason: e.to_string(),
        }
    })
}

/// Checks the converted module against the target: vermagic, CRCs, no stray undefined symbols.
pub fn check_module(
    ko: &Object,
    plan: &Plan,
    target_release: &str,
    file: &str,
) -> Result<(), ModuleError> {
    let info = modinfo(ko);
    let Some(vermagic) = info.vermagic().map(str::to_string) else {
        return Err(ModuleError::NoVermagic { file: file.into() });
    };
    if vermagic.split_whitespace().next() != Some(target_release) {
        return Err(ModuleError::Vermagic {
            file: file.into(),
            found: vermagic,
            expected: target_release.into(),
        });
    }
    if !info.is_livepatch() {
        return Err(ModuleError::BadModule {
            file: file.into(),
            reason: "no `livepatch=Y` in .modinfo".into(),
        });
    }

    let versions = versions(ko, file)?;
    let by_name: HashMap<&str, u32> = versions.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    for import in &plan.imports {
        let Some(target_crc) = import.crc else {
            continue;
        };
        match by_name.get(import.name.as_str()) {
            None => {
                return Err(ModuleError::CrcMissing {
                    file: file.into(),
                    symbol: import.name.clone(),
                    target_crc,
                })
            }
            Some(&module_crc) if module_crc != target_crc => {
                return Err(ModuleError::CrcMismatch {
                    file: file.into(),
                    symbol: import.name.clone(),
                    module_crc,
                    target_crc,
                })
            }
            Some(_) => {}
        }
    }

    // Whatever is still undefined must be a vmlinux export the module loader can resolve (known
    // from the plan, or versioned by modpost, like the glue's `klp_enable_patch`).
    if versions.is_empty() {
        return Ok(());
    }
    let exports: HashSet<&str> = plan.imports.iter().map(|i| i.name.as_str()).collect();
    for (_, s) in ko.symbols_iter() {
        if s.is_undefined()
            && s.st_bind() != STB_WEAK
            && !s.name.is_empty()
            && !exports.contains(s.name.as_str())
            && !by_name.contains_key(s.name.as_str())
        {
            return Err(ModuleError::UnresolvedInModule {
                file: file.into(),
                symbol: s.name.clone(),
            });
        }
    }
    if let Some((_, s)) = ko
        .symbols_iter()
        .find(|(_, s)| s.name.starts_with(names::KLP_PLACEHOLDER_PREFIX))
    {
        return Err(ModuleError::UnresolvedInModule {
            file: file.into(),
            symbol: s.name.clone(),
        });
    }
    Ok(())
}
