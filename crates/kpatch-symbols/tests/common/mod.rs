//! What the tests against real kernel images share: the image's own export tables, to check
//! decoded addresses and Module.symvers CRCs against, and a check of local-symbol resolution.

use kpatch_symbols::{Error, KernelSymbols, TranslationUnit};
use object::{Object, ObjectSection};

/// `(name, address, section)` of every entry of `__ksymtab` and `__ksymtab_gpl` (x86_64 PREL32
/// layout: `struct kernel_symbol { int value_offset, name_offset, namespace_offset; }`), in table
/// order.
pub fn ksymtab(elf: &object::File<'_>) -> Vec<(String, u64, &'static str)> {
    let strings = elf
        .section_by_name("__ksymtab_strings")
        .expect("__ksymtab_strings");
    let (str_addr, str_data) = (strings.address(), strings.data().unwrap());
    let mut out = Vec::new();
    for name in ["__ksymtab", "__ksymtab_gpl"] {
        let sec = elf.section_by_name(name).expect(name);
        let (base, data) = (sec.address(), sec.data().unwrap());
        assert_eq!(data.len() % 12, 0, "{name} size");
        for (i, e) in data.chunks_exact(12).enumerate() {
            let at = base + 12 * i as u64;
            let value_off = i32::from_le_bytes(e[0..4].try_into().unwrap());
            let name_off = i32::from_le_bytes(e[4..8].try_into().unwrap());
            let value = at.wrapping_add(value_off as i64 as u64);
            let name_at = (at + 4).wrapping_add(name_off as i64 as u64) - str_addr;
            let s = &str_data[name_at as usize..];
            let s = &s[..s.iter().position(|&b| b == 0).unwrap()];
            out.push((String::from_utf8(s.to_vec()).unwrap(), value, name));
        }
    }
    out
}

/// `(name, crc)` of every export, `__kcrctab` and `__kcrctab_gpl` being parallel to
/// [`ksymtab`]'s two tables.
pub fn kcrctab(elf: &object::File<'_>) -> Vec<(String, u32)> {
    let mut crcs = std::collections::HashMap::new();
    for sec in ["__kcrctab", "__kcrctab_gpl"] {
        let data = elf.section_by_name(sec).expect(sec).data().unwrap();
        let values: Vec<u32> = data
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        crcs.insert(sec, values);
    }
    let mut next = std::collections::HashMap::<&str, usize>::new();
    ksymtab(elf)
        .into_iter()
        .map(|(name, _, table)| {
            let crc_table = if table == "__ksymtab" {
                "__kcrctab"
            } else {
                "__kcrctab_gpl"
            };
            let i = next.entry(crc_table).or_default();
            let crc = crcs[crc_table][*i];
            *i += 1;
            (name, crc)
        })
        .collect()
}

/// For every occurrence of every local function name that `object` has more than once, a unit
/// made of the code symbols around it resolves to that occurrence, or is refused as ambiguous;
/// never to another one. Returns (resolved, refused).
pub fn repeated_names_resolve_to_their_own_occurrence(
    k: &KernelSymbols,
    object: &str,
) -> (usize, usize) {
    let syms = k.symbols();
    let (mut resolved, mut refused) = (0, 0);
    for (name, _) in k.repeated_names(object, |s| s.kind == 't') {
        for (p, &i) in k.occurrences(object, name).iter().enumerate() {
            if syms[i].kind != 't' {
                continue;
            }
            // A unit as its object file would list it: the code symbols around the occurrence.
            let around = &syms[i.saturating_sub(3)..(i + 4).min(syms.len())];
            let symbols = around
                .iter()
                .filter(|s| s.is_text())
                .map(|s| s.name.clone())
                .collect();
            let tu = TranslationUnit {
                source: format!("unit-of-{name}-{}", p + 1),
                object: object.into(),
                symbols,
            };
            match k.resolve_in_unit(&tu, name) {
                Ok(r) => {
                    assert_eq!(
                        r.position,
                        p + 1,
                        "`{name}` #{} resolved to #{}",
                        p + 1,
                        r.position
                    );
                    resolved += 1;
                }
                Err(e @ Error::Ambiguous { .. }) => {
                    if std::env::var_os("KPATCH_RS_SHOW_AMBIGUOUS").is_some() {
                        eprintln!("{e}");
                    }
                    refused += 1
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    (resolved, refused)
}
