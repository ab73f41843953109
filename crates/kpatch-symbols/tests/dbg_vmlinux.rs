//! Against a vmlinux that has both a symbol table and its kallsyms table (a self-built kernel,
//! or Debian's `-dbg` one): the symbol table read as kallsyms would read it must give the same
//! symbols in the same order, and FILE-based resolution must agree with the kallsyms one.
//!
//! Runs when `KPATCH_RS_DBG_VMLINUX` names such a vmlinux (Debian's is in
//! `linux-image-<abi>-dbg`, 858 MB to download, so CI does not fetch it).

use std::collections::HashMap;

use kpatch_symbols::{Error, KernelSymbols, TranslationUnit, VMLINUX};

fn dbg_vmlinux() -> Option<(KernelSymbols, KernelSymbols)> {
    let Some(path) = std::env::var_os("KPATCH_RS_DBG_VMLINUX") else {
        eprintln!("skipped: set KPATCH_RS_DBG_VMLINUX to a vmlinux with .symtab (e.g. from linux-image-<abi>-dbg)");
        return None;
    };
    let path = std::path::PathBuf::from(path);
    let data = std::fs::read(&path).expect("read the -dbg vmlinux");
    let file = path.display().to_string();
    let symtab = kpatch_symbols::parse_vmlinux(&data, &file).expect(".symtab");
    let kallsyms = kpatch_symbols::parse_kallsyms_image(&data, &file).expect("embedded kallsyms");
    Some((symtab, kallsyms))
}

#[test]
fn symtab_in_kallsyms_order_matches_the_kallsyms_table() {
    let Some((symtab, kallsyms)) = dbg_vmlinux() else {
        return;
    };
    eprintln!(
        "{} symtab symbols, {} kallsyms symbols",
        symtab.len(),
        kallsyms.len()
    );
    let key = |s: &kpatch_symbols::KernelSymbol| (s.address, s.kind, s.name.clone());
    let a: Vec<_> = symtab.symbols().iter().map(key).collect();
    // 6.12's table also lists its own parts (kallsyms_names, ...); the symtab reader leaves
    // them out, as 6.1's scripts/kallsyms did. No patch refers to them.
    let b: Vec<_> = kallsyms
        .symbols()
        .iter()
        .filter(|s| !(s.kind == 'D' && s.name.starts_with("kallsyms_")))
        .map(key)
        .collect();
    let mut in_kallsyms: HashMap<&(u64, char, String), usize> = HashMap::new();
    for x in &b {
        *in_kallsyms.entry(x).or_default() += 1;
    }
    let mut extra = Vec::new();
    for x in &a {
        match in_kallsyms.get_mut(x) {
            Some(n) if *n > 0 => *n -= 1,
            _ => extra.push(x),
        }
    }
    let missing: Vec<_> = in_kallsyms
        .iter()
        .filter(|(_, &n)| n > 0)
        .map(|(k, _)| *k)
        .collect();
    if !extra.is_empty() || !missing.is_empty() {
        let mut kinds: HashMap<char, usize> = HashMap::new();
        extra
            .iter()
            .for_each(|x| *kinds.entry(x.1).or_default() += 1);
        panic!(
            "{} symtab symbols are not in kallsyms (by type {kinds:?}; e.g. {:x?}), {} kallsyms symbols not in symtab (e.g. {:x?})",
            extra.len(),
            &extra[..extra.len().min(12)],
            missing.len(),
            &missing[..missing.len().min(12)]
        );
    }
    let first_diff = a.iter().zip(&b).position(|(x, y)| x != y);
    if let Some(i) = first_diff {
        let lo = i.saturating_sub(3);
        panic!(
            "first difference at {i}:\n symtab   {:x?}\n kallsyms {:x?}",
            &a[lo..(i + 4).min(a.len())],
            &b[lo..(i + 4).min(b.len())]
        );
    }
    assert_eq!(a.len(), b.len());
}

/// Every repeated local symbol (types `KPATCH_RS_DBG_KINDS`, default all local ones), resolved for its real translation unit (the symbols of its
/// FILE block): through FILE symbols it must be found; through the kallsyms table alone, found
/// at the same position or refused as ambiguous, never another occurrence.
#[test]
fn kallsyms_resolution_agrees_with_file_symbols() {
    let Some((symtab, kallsyms)) = dbg_vmlinux() else {
        return;
    };
    let mut groups: HashMap<u32, Vec<String>> = HashMap::new();
    for s in symtab.symbols() {
        if let Some(g) = s.file_group {
            groups.entry(g).or_default().push(s.name.clone());
        }
    }
    let (mut by_file, mut file_refused, mut agreed, mut refused) = (0, 0, 0, 0);
    let kinds = std::env::var("KPATCH_RS_DBG_KINDS").unwrap_or_else(|_| "tdbr".into());
    // `__pfx_` padding symbols (6.12) are no patch's target: they are not counted.
    let padding = |n: &str| n.starts_with("__pfx_");
    for (name, _) in symtab.repeated_names(VMLINUX, |s| kinds.contains(s.kind) && !padding(&s.name))
    {
        for (p, &i) in symtab.occurrences(VMLINUX, name).iter().enumerate() {
            let s = &symtab.symbols()[i];
            let (Some(g), Some(file)) = (s.file_group, s.file.clone()) else {
                continue;
            };
            let tu = TranslationUnit {
                source: file,
                object: VMLINUX.into(),
                symbols: groups[&g].clone(),
            };
            match symtab.resolve_in_unit(&tu, name) {
                Ok(r) => {
                    assert_eq!(
                        r.position,
                        p + 1,
                        "FILE resolution of `{name}` in {}",
                        tu.source
                    );
                    by_file += 1;
                }
                Err(Error::Ambiguous { .. }) => file_refused += 1,
                Err(e) => panic!("{e}"),
            }
            match kallsyms.resolve_in_unit(&tu, name) {
                Ok(r) => {
                    assert_eq!(
                        r.position,
                        p + 1,
                        "kallsyms resolution of `{name}` in {}",
                        tu.source
                    );
                    agreed += 1;
                }
                Err(e @ (Error::Ambiguous { .. } | Error::NoMatchingBlock { .. })) => {
                    if std::env::var_os("KPATCH_RS_SHOW_AMBIGUOUS").is_some() {
                        eprintln!("{e}");
                    }
                    refused += 1
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    eprintln!(
        "repeated local symbols (types {kinds}) of real units: FILE symbols resolve {by_file} (refuse {file_refused}); \
         the kallsyms table alone resolves {agreed} the same way and refuses {refused} (ambiguous or no block)"
    );
    assert!(by_file > 0 && agreed > 0);
}

/// A module's repeated locals: resolved through the FILE symbols of its `-dbg` copy, and through
/// symbol-table neighbours in the shipped (FILE-less) copy, the answers agree or the second
/// refuses. Runs when `KPATCH_RS_DBG_KO` and `KPATCH_RS_KO` name the two copies of one module.
#[test]
fn module_resolution_without_file_symbols_agrees_with_the_dbg_copy() {
    let (Some(dbg), Some(shipped)) = (
        std::env::var_os("KPATCH_RS_DBG_KO"),
        std::env::var_os("KPATCH_RS_KO"),
    ) else {
        eprintln!("skipped: set KPATCH_RS_DBG_KO and KPATCH_RS_KO to the -dbg and shipped copies of one module");
        return;
    };
    let object = "m";
    let read = |p: &std::ffi::OsStr| {
        let data = std::fs::read(p).unwrap();
        kpatch_symbols::parse_module(&data, &p.to_string_lossy(), object).unwrap()
    };
    let (with_file, without) = (read(&dbg), read(&shipped));
    let names = |k: &KernelSymbols| {
        k.symbols()
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&with_file),
        names(&without),
        "both copies list the same symbols in the same order"
    );
    let (mut agreed, mut refused) = (0, 0);
    for (name, _) in with_file.repeated_names(object, |s| s.is_local()) {
        for (p, &i) in with_file.occurrences(object, name).iter().enumerate() {
            let s = &with_file.symbols()[i];
            let (Some(g), Some(file)) = (s.file_group, s.file.clone()) else {
                continue;
            };
            let symbols = with_file
                .file_group(g)
                .iter()
                .map(|&j| with_file.symbols()[j].name.clone())
                .collect();
            let tu = TranslationUnit {
                source: file,
                object: object.into(),
                symbols,
            };
            assert_eq!(
                with_file
                    .resolve_in_unit(&tu, name)
                    .map(|r| r.position)
                    .ok(),
                Some(p + 1),
                "`{name}` by FILE"
            );
            match without.resolve_in_unit(&tu, name) {
                Ok(r) => {
                    assert_eq!(r.position, p + 1, "`{name}` of {} by neighbours", tu.source);
                    agreed += 1;
                }
                Err(Error::Ambiguous { .. } | Error::NoMatchingBlock { .. }) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }
    eprintln!("module's repeated locals: {agreed} resolved by neighbours as FILE symbols say, {refused} refused");
    assert!(agreed > 0);
}
