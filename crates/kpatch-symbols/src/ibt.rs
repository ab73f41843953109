//! The functions whose ENDBR the kernel seals at boot under IBT (`CONFIG_X86_KERNEL_IBT`).
//!
//! objtool lists, in `.ibt_endbr_seal`, every function entry ENDBR whose address nothing takes:
//! one `s32` per entry, relative to the entry itself. At boot (and at module load, for a
//! module's own list) the kernel overwrites each with a NOP, so an indirect call to such a
//! function faults. Code a patch adds must then not take their addresses.

use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};

use crate::elf_file::parse;
use crate::Error;

/// Section objtool writes the seal list into.
pub const IBT_ENDBR_SEAL: &str = ".ibt_endbr_seal";

/// The addresses of the ENDBRs a linked kernel image (vmlinux) seals at boot; empty when the
/// image has no `.ibt_endbr_seal` (no IBT).
pub fn sealed_endbr_addresses(image: &[u8], file: &str) -> Result<Vec<u64>, Error> {
    let elf = parse(image, file)?;
    let Some(sec) = elf.section_by_name(IBT_ENDBR_SEAL) else {
        return Ok(Vec::new());
    };
    let data = sec.data().map_err(|e| Error::Elf {
        file: file.to_string(),
        reason: format!("{IBT_ENDBR_SEAL}: {e}"),
    })?;
    if data.len() % 4 != 0 {
        return Err(Error::Elf {
            file: file.to_string(),
            reason: format!(
                "{IBT_ENDBR_SEAL}: {} bytes, not a whole number of 4-byte entries",
                data.len()
            ),
        });
    }
    Ok(data
        .chunks_exact(4)
        .enumerate()
        .map(|(i, c)| {
            let rel = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            (sec.address() + 4 * i as u64).wrapping_add_signed(i64::from(rel))
        })
        .collect())
}

/// The names of the functions a relocatable module (`.ko`) seals as it loads: the targets of
/// its `.ibt_endbr_seal` relocations (each a PC-relative reference to a function's ENDBR).
pub fn sealed_module_functions(ko: &[u8], file: &str) -> Result<Vec<String>, Error> {
    let elf = parse(ko, file)?;
    let Some(sec) = elf.section_by_name(IBT_ENDBR_SEAL) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (_, r) in sec.relocations() {
        let RelocationTarget::Symbol(si) = r.target() else {
            continue;
        };
        let Ok(sym) = elf.symbol_by_index(si) else {
            continue;
        };
        // PC-relative: the ENDBR is at symbol + addend + 4 (the addend's -4 bias undone), i.e.
        // at the function's own address for a reference to the function or its section.
        let at = sym
            .address()
            .wrapping_add_signed(r.addend())
            .wrapping_add(4);
        let Some(section) = sym.section_index() else {
            continue;
        };
        let func = elf.symbols().find(|s| {
            s.section_index() == Some(section)
                && s.kind() == object::SymbolKind::Text
                && s.address() == at
                && !s.name().unwrap_or("").is_empty()
        });
        if let Some(f) = func.and_then(|f| f.name().ok().map(str::to_string)) {
            out.push(f);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::write::{Object as WObject, Relocation, StandardSection, Symbol, SymbolSection};
    use object::{Architecture, BinaryFormat, Endianness, SymbolFlags, SymbolKind, SymbolScope};

    #[test]
    fn a_modules_seal_list_names_its_functions() {
        let mut o = WObject::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let text = o.section_id(StandardSection::Text);
        o.append_section_data(text, &[0x90; 64], 16);
        let mut func = |name: &str, at: u64| {
            o.add_symbol(Symbol {
                name: name.as_bytes().to_vec(),
                value: at,
                size: 16,
                kind: SymbolKind::Text,
                scope: SymbolScope::Compilation,
                weak: false,
                section: SymbolSection::Section(text),
                flags: SymbolFlags::None,
            })
        };
        let _sealed = func("only_called", 16);
        let _open = func("address_taken", 32);
        let seal = o.add_section(
            Vec::new(),
            IBT_ENDBR_SEAL.as_bytes().to_vec(),
            object::SectionKind::ReadOnlyData,
        );
        o.append_section_data(seal, &[0; 4], 1);
        let text_sym = o.section_symbol(text);
        o.add_relocation(
            seal,
            Relocation {
                offset: 0,
                symbol: text_sym,
                addend: 16 - 4,
                flags: object::RelocationFlags::Elf {
                    r_type: object::elf::R_X86_64_PC32,
                },
            },
        )
        .unwrap();
        let bytes = o.write().unwrap();
        assert_eq!(
            sealed_module_functions(&bytes, "m.ko").unwrap(),
            ["only_called"]
        );
        // No seal list: nothing sealed (a kernel without IBT).
        let plain = WObject::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little)
            .write()
            .unwrap();
        assert!(sealed_module_functions(&plain, "p.ko").unwrap().is_empty());
        assert!(sealed_endbr_addresses(&plain, "p").unwrap().is_empty());
    }
}
