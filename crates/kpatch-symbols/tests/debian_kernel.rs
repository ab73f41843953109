//! Against Debian's real 6.1 kernel: decode the kallsyms table that its vmlinuz carries, check
//! it against the image's own export tables and the headers' Module.symvers, and resolve a local
//! name that occurs three times.
//!
//! Downloads the image and headers packages into the kpatch-rs cache, so it runs only with
//! `KPATCH_RS_GUEST_TESTS=1` (set by CI); otherwise each test prints why it is skipped.

mod common;

use std::sync::OnceLock;

use common::{kcrctab, ksymtab, repeated_names_resolve_to_their_own_occurrence};
use kpatch_symbols::{Error, KernelSymbols, Symvers, TranslationUnit, VMLINUX};
use kpatch_target::DebianKernel;
use object::{Object, ObjectSection};

struct Target {
    kernel: DebianKernel,
    symvers: Symvers,
    vmlinux: Vec<u8>,
    symbols: KernelSymbols,
    seqs_present: bool,
}

fn enabled() -> bool {
    if std::env::var("KPATCH_RS_GUEST_TESTS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("skipped: set KPATCH_RS_GUEST_TESTS=1 to fetch Debian's kernel packages and test against them");
    false
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let kernel = DebianKernel::default_target().expect("find Debian's target kernel");
        let path = kernel.vmlinux().expect("fetch and decompress the vmlinuz");
        let vmlinux = std::fs::read(&path).expect("read vmlinux");
        let start = std::time::Instant::now();
        let table =
            kpatch_symbols::kallsyms_table::find_in_image(&vmlinux, &path.display().to_string())
                .expect("decode the embedded kallsyms table");
        eprintln!(
            "{} {}: {} kallsyms entries decoded in {:?}; layout {:?}",
            kernel.abi,
            kernel.version,
            table.entries.len(),
            start.elapsed(),
            table.layout
        );
        let seqs_present = table.seqs_of_names.is_some();
        // Fetched here, once, rather than by tests running side by side.
        let symvers_path = kernel.symvers().expect("fetch headers: Module.symvers");
        let symvers = Symvers::from_path(&symvers_path).expect("parse Module.symvers");
        let symbols = table.into_symbols(&path.display().to_string());
        Target {
            kernel,
            symvers,
            vmlinux,
            symbols,
            seqs_present,
        }
    })
}

#[test]
fn decodes_the_kallsyms_table_of_debians_vmlinuz() {
    if !enabled() {
        return;
    }
    let t = target();
    let k = &t.symbols;
    eprintln!("{} symbols", k.len());
    assert!(k.len() > 50_000, "only {} symbols decoded", k.len());

    let elf = object::File::parse(&*t.vmlinux).unwrap();
    let text = elf.section_by_name(".text").unwrap();
    let first_text = k.resolve(VMLINUX, "_text").expect("_text");
    assert_eq!(
        first_text.address,
        text.address(),
        "_text is the start of .text"
    );

    for name in ["cmdline_proc_show", "meminfo_proc_show"] {
        let r = k.resolve(VMLINUX, name).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.kind, r.sympos), ('t', 0), "{name}");
        assert!(
            text.address() <= r.address && r.address < text.address() + text.size(),
            "{name} in .text"
        );
    }

    // Symbols are in address order, and livepatch numbers same-named ones in that order: the
    // table's name index (kallsyms_seqs_of_names) lists them in the same order.
    assert!(
        k.symbols().windows(2).all(|w| w[0].address <= w[1].address),
        "table sorted by address"
    );
    assert!(t.seqs_present, "Debian 6.1 carries kallsyms_seqs_of_names");
    let mut names: Vec<&str> = k.symbols().iter().map(|s| s.name.as_str()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let occ = k.occurrences(VMLINUX, name);
        assert!(
            occ.windows(2).all(|w| w[0] < w[1]),
            "`{name}`: name order {occ:?} is not table order"
        );
    }

    let c_start = k.occurrences(VMLINUX, "c_start");
    assert_eq!(c_start.len(), 3, "c_start occurrences");
    assert!(c_start.iter().all(|&i| k.symbols()[i].kind == 't'));

    let repeated_t = k.repeated_names(VMLINUX, |s| s.kind == 't');
    let repeated_text = k.repeated_names(VMLINUX, |s| s.is_text());
    let repeated_any = k.repeated_names(VMLINUX, |_| true);
    eprintln!(
        "names occurring more than once: {} among local functions (t), {} among all code (tTwW), {} among all symbols",
        repeated_t.len(),
        repeated_text.len(),
        repeated_any.len()
    );
    assert!(repeated_t.iter().any(|&(n, c)| n == "c_start" && c == 3));
    assert!(repeated_t.len() > 100);
}

#[test]
fn decoded_addresses_match_the_images_export_table() {
    if !enabled() {
        return;
    }
    let t = target();
    let elf = object::File::parse(&*t.vmlinux).unwrap();
    let exports = ksymtab(&elf);
    assert!(exports.len() > 1000, "{} exports", exports.len());
    for (name, address, _) in &exports {
        let occ = t.symbols.occurrences(VMLINUX, name);
        assert!(
            occ.iter()
                .any(|&i| t.symbols.symbols()[i].address == *address),
            "export `{name}` at {address:#x} is not in the decoded table at that address"
        );
    }
    eprintln!(
        "{} exports found in the decoded table at their __ksymtab addresses",
        exports.len()
    );
}

#[test]
fn module_symvers_crcs_match_the_images_kcrctab() {
    if !enabled() {
        return;
    }
    let t = target();
    let symvers = &t.symvers;
    assert!(symvers.len() > 10_000, "{} entries", symvers.len());
    let elf = object::File::parse(&*t.vmlinux).unwrap();
    let exports = kcrctab(&elf);
    for (name, crc) in &exports {
        symvers
            .check_crc(name, *crc, "vmlinux __kcrctab")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(symvers.get(name).unwrap().module, "vmlinux", "{name}");
        // The target's symbol table knows every export symvers attributes to vmlinux.
        assert_eq!(t.symbols.object_of(name, Some(symvers)).unwrap(), VMLINUX);
    }
    let (name, _) = &exports[0];
    let good = symvers.get(name).unwrap().crc;
    let err = symvers.check_crc(name, good ^ 1, "patch.ko").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(name.as_str()) && msg.contains(&format!("{good:#010x}")),
        "{msg}"
    );
    eprintln!(
        "{} CRCs of Module.symvers agree with the image's __kcrctab",
        exports.len()
    );
}

#[test]
fn resolves_c_start_of_fs_proc_consoles_c() {
    if !enabled() {
        return;
    }
    let k = &target().symbols;
    // What the original fs/proc/consoles.o of 6.1 defines.
    let unit = TranslationUnit {
        source: "fs/proc/consoles.c".into(),
        object: VMLINUX.into(),
        symbols: [
            "show_console_dev",
            "c_start",
            "c_next",
            "c_stop",
            "consoles_op",
            "proc_consoles_init",
        ]
        .map(String::from)
        .to_vec(),
    };
    let r = k
        .resolve_in_unit(&unit, "c_start")
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("c_start of fs/proc/consoles.c: {r:?}");
    assert_eq!(r.occurrences, 3);
    assert_eq!(r.sympos, r.position);
    // The chosen occurrence is the one next to show_console_dev, which only consoles.c defines.
    let show = k.resolve(VMLINUX, "show_console_dev").unwrap();
    let chosen = k.occurrences(VMLINUX, "c_start")[r.position - 1];
    let show_index = k
        .symbols()
        .iter()
        .position(|s| s.name == "show_console_dev")
        .unwrap();
    assert!(
        chosen.abs_diff(show_index) <= 4,
        "c_start #{} is far from show_console_dev ({:#x})",
        r.position,
        show.address
    );

    // c_next/c_stop alone do not tell the three seq_file users apart.
    let vague = TranslationUnit {
        symbols: ["c_start", "c_next", "c_stop"].map(String::from).to_vec(),
        ..unit.clone()
    };
    match k.resolve_in_unit(&vague, "c_start") {
        Err(Error::Ambiguous { candidates, .. }) => assert_eq!(candidates.len(), 3),
        other => panic!("expected an ambiguity naming 3 candidates, got {other:?}"),
    }
    // The decompressed vmlinux has no .symtab: that source is refused with the file named.
    let path = target().kernel.vmlinux().unwrap();
    let err = kpatch_symbols::read_vmlinux(&path).unwrap_err();
    assert!(matches!(err, Error::NoSymtab { .. }), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    // ... and a kernel image without one is read through its kallsyms table.
    assert_eq!(
        kpatch_symbols::read_kernel_image(&path).unwrap().len(),
        k.len()
    );

    let err = k
        .resolve_in_unit(&unit, "no_such_function_xyz")
        .unwrap_err();
    assert!(err.to_string().contains("no_such_function_xyz"), "{err}");
}

#[test]
fn every_repeated_local_function_is_told_apart_by_its_neighbours_or_refused() {
    if !enabled() {
        return;
    }
    let (resolved, refused) =
        repeated_names_resolve_to_their_own_occurrence(&target().symbols, VMLINUX);
    eprintln!("repeated local functions: {resolved} occurrences told apart by their neighbours, {refused} refused as ambiguous");
    assert!(
        resolved > 10 * refused,
        "{resolved} resolved, {refused} refused"
    );
}

#[test]
fn reads_a_debian_module_and_checks_its_versions() {
    if !enabled() {
        return;
    }
    let t = target();
    let path = t
        .kernel
        .modules_dir()
        .expect("modules directory")
        .join("kernel/fs/ext4/ext4.ko");
    let data = std::fs::read(&path).expect("ext4.ko");
    let file = path.display().to_string();
    let k = kpatch_symbols::parse_module(&data, &file, "ext4").unwrap();
    assert!(k.len() > 1000, "{} symbols", k.len());
    assert!(k.symbols().iter().all(|s| s.object == "ext4"));
    // Debian strips its modules' FILE symbols: units are told apart by their neighbours, in the
    // module's symbol-table order.
    assert!(k.symbols().iter().all(|s| s.file.is_none()));
    let fill = k.resolve("ext4", "ext4_fill_super").unwrap();
    assert_eq!((fill.kind, fill.sympos), ('t', 0));
    let (resolved, refused) = repeated_names_resolve_to_their_own_occurrence(&k, "ext4");
    eprintln!(
        "ext4.ko repeated local functions: {resolved} told apart, {refused} refused as ambiguous"
    );
    assert!(
        resolved > 0 && resolved >= 2 * refused,
        "{resolved} resolved, {refused} refused"
    );

    // Every CRC the module was built against agrees with the kernel's Module.symvers.
    let versions = kpatch_symbols::modversions_of_elf(&data, &file).unwrap();
    assert!(
        versions.len() > 100,
        "{} __versions entries",
        versions.len()
    );
    let symvers = &t.symvers;
    symvers
        .check_versions(versions.iter().map(|(n, c)| (n.as_str(), *c)), &file)
        .unwrap_or_else(|e| panic!("{e}"));
    let (name, crc) = &versions[1];
    let err = symvers
        .check_crc(name, crc.wrapping_add(1), &file)
        .unwrap_err();
    assert!(
        matches!(err, Error::CrcMismatch { .. }) && err.to_string().contains(&file),
        "{err}"
    );
    eprintln!(
        "ext4.ko: {} symbols, {} __versions entries agree with Module.symvers",
        k.len(),
        versions.len()
    );
}
