//! Against any x86_64 kernel image the caller names (not fetched here, so not run by CI): decode
//! its embedded kallsyms table and check the result against the image itself.
//!
//! - `KPATCH_RS_KALLSYMS_IMAGE`: a vmlinuz (bzImage, decompressed here) or an ELF vmlinux without
//!   a symbol table, e.g. Debian's `boot/vmlinuz-6.12.*-amd64`.
//! - `KPATCH_RS_KALLSYMS_SYMVERS` (optional): the same build's `Module.symvers`.
//! - `KPATCH_RS_KALLSYMS_MODULE` (optional): one of the build's modules, uncompressed (`.ko`).

mod common;

use std::collections::HashSet;
use std::path::PathBuf;

use common::{kcrctab, ksymtab, repeated_names_resolve_to_their_own_occurrence};
use kpatch_symbols::kallsyms_table::{find_in_image, KallsymsTable};
use kpatch_symbols::{Symvers, VMLINUX};
use object::{Object, ObjectSection};

struct Image {
    file: String,
    elf: Vec<u8>,
    table: KallsymsTable,
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn image() -> Option<Image> {
    let Some(path) = env_path("KPATCH_RS_KALLSYMS_IMAGE") else {
        eprintln!(
            "skipped: set KPATCH_RS_KALLSYMS_IMAGE to a vmlinuz or vmlinux to decode its kallsyms table"
        );
        return None;
    };
    let data = std::fs::read(&path).expect("read the image");
    let elf = if data.starts_with(b"\x7fELF") {
        data
    } else {
        kpatch_target::bzimage::extract_vmlinux(&path, &data).expect("decompress the vmlinuz")
    };
    let file = path.display().to_string();
    let start = std::time::Instant::now();
    let table = find_in_image(&elf, &file).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "{file}: {} kallsyms entries decoded in {:?}; absolute percpu: {}; relative base {:#x}; {:?}",
        table.entries.len(),
        start.elapsed(),
        table.absolute_percpu,
        table.relative_base,
        table.layout
    );
    Some(Image { file, elf, table })
}

#[test]
fn decodes_the_images_kallsyms_table() {
    let Some(img) = image() else {
        return;
    };
    let t = &img.table;
    assert!(t.entries.len() > 50_000, "only {} symbols", t.entries.len());
    assert!(
        t.entries.windows(2).all(|w| w[0].0 <= w[1].0),
        "sorted by address"
    );
    let elf = object::File::parse(&*img.elf).unwrap();
    let text = elf.section_by_name(".text").unwrap();
    let address_of = |name: &str| {
        let found: Vec<u64> = t
            .entries
            .iter()
            .filter(|e| e.2 == name)
            .map(|e| e.0)
            .collect();
        assert_eq!(found.len(), 1, "`{name}` occurs once");
        found[0]
    };
    assert_eq!(address_of("_text"), text.address(), "_text starts .text");
    assert_eq!(address_of("_stext"), text.address(), "_stext starts .text");
    assert_eq!(
        address_of("_etext"),
        text.address() + text.size(),
        "_etext ends .text"
    );
    if t.absolute_percpu {
        let percpu = elf.section_by_name(".data..percpu").unwrap();
        let first = t.entries.iter().find(|e| e.1 != 'A').unwrap();
        assert_eq!(
            t.relative_base, first.0,
            "the base is the lowest relative address"
        );
        assert!(t
            .entries
            .iter()
            .filter(|e| e.0 < t.relative_base)
            .all(|e| e.1 == 'A' && e.0 <= percpu.address() + percpu.size()));
    }
    // Every export is in the table at the address the image's own __ksymtab gives.
    let exports = ksymtab(&elf);
    assert!(exports.len() > 1000, "{} exports", exports.len());
    let decoded: HashSet<(u64, &str)> = t.entries.iter().map(|e| (e.0, e.2.as_str())).collect();
    for (name, address, _) in &exports {
        assert!(
            decoded.contains(&(*address, name.as_str())),
            "export `{name}` at {address:#x} is not in the decoded table at that address"
        );
    }
    eprintln!(
        "{}: {} exports found at their __ksymtab addresses",
        img.file,
        exports.len()
    );
    let seqs_present = t.seqs_of_names.is_some();
    let k = img.table.into_symbols(&img.file);
    if seqs_present {
        // Livepatch numbers same-named symbols in the name index's order: that is table order.
        let mut names: Vec<&str> = k.symbols().iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let occ = k.occurrences(VMLINUX, name);
            assert!(
                occ.windows(2).all(|w| w[0] < w[1]),
                "`{name}`: name order {occ:?} is not table order"
            );
        }
    }
    let r = k.resolve(VMLINUX, "cmdline_proc_show").unwrap();
    assert_eq!((r.kind, r.sympos), ('t', 0));
    let pfx = k
        .symbols()
        .iter()
        .filter(|s| s.name.starts_with("__pfx_"))
        .count();
    let (resolved, refused) = repeated_names_resolve_to_their_own_occurrence(&k, VMLINUX);
    eprintln!(
        "{}: {pfx} __pfx_ symbols; repeated local functions: {resolved} occurrences told apart by their neighbours, {refused} refused as ambiguous",
        img.file
    );
    assert!(
        resolved > 10 * refused,
        "{resolved} resolved, {refused} refused"
    );
}

#[test]
fn module_symvers_agrees_with_the_image() {
    let Some(symvers_path) = env_path("KPATCH_RS_KALLSYMS_SYMVERS") else {
        eprintln!("skipped: set KPATCH_RS_KALLSYMS_SYMVERS (and KPATCH_RS_KALLSYMS_IMAGE) to the build's Module.symvers");
        return;
    };
    let Some(img) = image() else {
        return;
    };
    let symvers = Symvers::from_path(&symvers_path).unwrap_or_else(|e| panic!("{e}"));
    assert!(symvers.len() > 10_000, "{} entries", symvers.len());
    let elf = object::File::parse(&*img.elf).unwrap();
    let crcs = kcrctab(&elf);
    for (name, crc) in &crcs {
        symvers
            .check_crc(name, *crc, "vmlinux __kcrctab")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(symvers.get(name).unwrap().module, "vmlinux", "{name}");
    }
    // Everything Module.symvers says vmlinux exports is in the decoded table.
    let k = img.table.into_symbols(&img.file);
    let of_vmlinux: Vec<_> = symvers
        .entries()
        .iter()
        .filter(|e| e.module == "vmlinux")
        .collect();
    assert_eq!(of_vmlinux.len(), crcs.len(), "vmlinux exports");
    let globals: HashSet<&str> = k
        .symbols()
        .iter()
        .filter(|s| s.kind.is_ascii_uppercase())
        .map(|s| s.name.as_str())
        .collect();
    for e in &of_vmlinux {
        assert!(
            globals.contains(e.symbol.as_str()),
            "`{}` is not a global symbol of the table",
            e.symbol
        );
    }
    let namespaced = symvers
        .entries()
        .iter()
        .filter(|e| !e.namespace.is_empty())
        .count();
    eprintln!(
        "{}: {} entries ({} of vmlinux, {namespaced} in a namespace); {} CRCs agree with __kcrctab",
        symvers.file,
        symvers.len(),
        of_vmlinux.len(),
        crcs.len()
    );
}

#[test]
fn reads_a_module_of_the_image() {
    let Some(path) = env_path("KPATCH_RS_KALLSYMS_MODULE") else {
        eprintln!("skipped: set KPATCH_RS_KALLSYMS_MODULE to an uncompressed .ko of the build");
        return;
    };
    let data = std::fs::read(&path).expect("read the module");
    let file = path.display().to_string();
    let name = kpatch_common::names::module_name_from_path(&path).expect("a .ko file name");
    let k = kpatch_symbols::parse_module(&data, &file, &name).unwrap_or_else(|e| panic!("{e}"));
    assert!(k.len() > 10, "{} symbols", k.len());
    assert!(k.symbols().iter().all(|s| s.object == name));
    let versions =
        kpatch_symbols::modversions_of_elf(&data, &file).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "{file}: {} symbols ({} functions), {} __versions entries",
        k.len(),
        k.symbols().iter().filter(|s| s.is_text()).count(),
        versions.len()
    );
    let (resolved, refused) = repeated_names_resolve_to_their_own_occurrence(&k, &name);
    eprintln!(
        "{file}: repeated local functions: {resolved} told apart, {refused} refused as ambiguous"
    );
    assert!(
        resolved >= 2 * refused,
        "{resolved} resolved, {refused} refused"
    );
    if let Some(symvers_path) = env_path("KPATCH_RS_KALLSYMS_SYMVERS") {
        let symvers = Symvers::from_path(&symvers_path).unwrap_or_else(|e| panic!("{e}"));
        symvers
            .check_versions(versions.iter().map(|(n, c)| (n.as_str(), *c)), &file)
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{file}: every __versions CRC agrees with {}", symvers.file);
    }
}
