//! Resolution of same-named symbols on synthetic targets: a vmlinux-like ELF with FILE symbols,
//! and /proc/kallsyms text laid out like Debian 6.1's (three `c_start`).

use kpatch_symbols::{
    parse_module, parse_proc_kallsyms, parse_vmlinux, Error, Symvers, TranslationUnit, VMLINUX,
};
use object::write::{Object, Symbol, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
};

fn unit(source: &str, object: &str, symbols: &[&str]) -> TranslationUnit {
    TranslationUnit {
        source: source.into(),
        object: object.into(),
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
    }
}

struct Builder {
    obj: Object<'static>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            obj: Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little),
        }
    }
    fn section(&mut self, name: &str, kind: SectionKind, size: usize) -> object::write::SectionId {
        let id = self.obj.add_section(vec![], name.as_bytes().to_vec(), kind);
        if kind == SectionKind::UninitializedData {
            self.obj.append_section_bss(id, size as u64, 16);
        } else {
            self.obj.append_section_data(id, &vec![0u8; size], 16);
        }
        id
    }
    fn file(&mut self, name: &str) {
        self.obj.add_file_symbol(name.as_bytes().to_vec());
    }
    fn sym(
        &mut self,
        name: &str,
        value: u64,
        kind: SymbolKind,
        scope: SymbolScope,
        weak: bool,
        section: SymbolSection,
    ) {
        self.obj.add_symbol(Symbol {
            name: name.as_bytes().to_vec(),
            value,
            size: 0x10,
            kind,
            scope,
            weak,
            section,
            flags: SymbolFlags::None,
        });
    }
}

/// A vmlinux in miniature: three translation units define `c_start`, two of them in a `proc.c`.
fn vmlinux() -> Vec<u8> {
    let mut b = Builder::new();
    let text = b.section(".text", SectionKind::Text, 0x1000);
    let rodata = b.section(".rodata", SectionKind::ReadOnlyData, 0x1000);
    let bss = b.section(".bss", SectionKind::UninitializedData, 0x1000);
    let percpu = b.section(".data..percpu", SectionKind::Data, 0x100);
    let debug = b.section(".debug_info", SectionKind::Debug, 0x100);
    let t = |s| SymbolSection::Section(s);
    let local = SymbolScope::Compilation;
    let f = SymbolKind::Text;
    let d = SymbolKind::Data;

    b.file("proc.c"); // arch/x86/kernel/cpu/proc.c
    b.sym("show_cpuinfo", 0x10, f, local, false, t(text));
    b.sym("c_start", 0x20, f, local, false, t(text));
    b.sym("c_next", 0x30, f, local, false, t(text));
    b.sym("c_stop", 0x40, f, local, false, t(text));
    b.sym("counter", 0x10, d, local, false, t(bss));
    b.file("consoles.c"); // fs/proc/consoles.c
    b.sym("show_console_dev", 0x100, f, local, false, t(text));
    b.sym("c_next", 0x120, f, local, false, t(text));
    b.sym("c_stop", 0x130, f, local, false, t(text));
    b.sym("c_start", 0x110, f, local, false, t(text));
    b.sym("consoles_op", 0x40, d, local, false, t(rodata));
    b.sym(".Ltmp0", 0x140, f, local, false, t(text));
    b.sym("debug_thing", 0x0, d, local, false, t(debug));
    b.file("proc.c"); // crypto/proc.c
    b.sym("c_show", 0x200, f, local, false, t(text));
    b.sym("c_start", 0x210, f, local, false, t(text));
    b.sym("c_next", 0x220, f, local, false, t(text));
    b.sym("c_stop", 0x230, f, local, false, t(text));
    b.sym("counter", 0x20, d, local, false, t(bss));
    b.sym(
        "proc_tty_register_driver",
        0x300,
        f,
        SymbolScope::Linkage,
        false,
        t(text),
    );
    b.sym(
        "arch_weak_hook",
        0x310,
        f,
        SymbolScope::Linkage,
        true,
        t(text),
    );
    // Per-CPU symbols: everything in [__per_cpu_start, __per_cpu_end] becomes absolute.
    for (name, value) in [
        ("__per_cpu_start", 0x0),
        ("fixed_percpu_data", 0x0),
        ("__per_cpu_end", 0x8),
    ] {
        b.sym(name, value, d, SymbolScope::Linkage, false, t(percpu));
    }
    b.sym(
        "printk",
        0,
        f,
        SymbolScope::Linkage,
        false,
        SymbolSection::Undefined,
    );
    b.sym(
        "__abs_thing",
        0x1234,
        SymbolKind::Data,
        SymbolScope::Linkage,
        false,
        SymbolSection::Absolute,
    );
    b.obj.write().unwrap()
}

#[test]
fn vmlinux_symbols_are_in_kallsyms_order_with_their_files() {
    let k = kpatch_symbols::parse_kernel_image(&vmlinux(), "vmlinux").unwrap();
    let names: Vec<&str> = k.symbols().iter().map(|s| s.name.as_str()).collect();
    for gone in [".Ltmp0", "debug_thing", "printk", "__abs_thing"] {
        assert!(!names.contains(&gone), "{gone} is not a kallsyms symbol");
    }
    assert!(k.symbols().windows(2).all(|w| w[0].address <= w[1].address));
    let kind = |n: &str| k.symbols()[k.occurrences(VMLINUX, n)[0]].kind;
    assert_eq!(kind("show_cpuinfo"), 't');
    assert_eq!(kind("consoles_op"), 'r');
    assert_eq!(kind("counter"), 'b');
    assert_eq!(kind("proc_tty_register_driver"), 'T');
    assert_eq!(kind("arch_weak_hook"), 'W');
    assert_eq!(kind("fixed_percpu_data"), 'A');
    assert_eq!(kind("__per_cpu_end"), 'A');
    assert_eq!(kind("show_console_dev"), 't');
    let c_start = k.occurrences(VMLINUX, "c_start");
    let files: Vec<_> = c_start
        .iter()
        .map(|&i| k.symbols()[i].file.clone().unwrap())
        .collect();
    assert_eq!(files, ["proc.c", "consoles.c", "proc.c"]);
    assert_eq!(
        k.symbols()[k.occurrences(VMLINUX, "proc_tty_register_driver")[0]].file,
        None
    );
}

#[test]
fn file_symbols_pick_the_units_occurrence() {
    let k = parse_vmlinux(&vmlinux(), "vmlinux").unwrap();
    let consoles = unit("fs/proc/consoles.c", VMLINUX, &["c_start"]);
    let r = k.resolve_in_unit(&consoles, "c_start").unwrap();
    assert_eq!(
        (r.position, r.sympos, r.occurrences, r.address),
        (2, 2, 3, 0x110)
    );

    // Two FILE blocks named proc.c: the unit's other symbols decide.
    let crypto = unit(
        "crypto/proc.c",
        VMLINUX,
        &["c_show", "c_start", "c_next", "c_stop"],
    );
    let r = k.resolve_in_unit(&crypto, "c_start").unwrap();
    assert_eq!((r.sympos, r.address), (3, 0x210));
    let cpu = unit(
        "arch/x86/kernel/cpu/proc.c",
        VMLINUX,
        &["show_cpuinfo", "c_start", "c_next", "counter"],
    );
    assert_eq!(k.resolve_in_unit(&cpu, "c_start").unwrap().sympos, 1);
    assert_eq!(k.resolve_in_unit(&cpu, "counter").unwrap().sympos, 1);
    assert_eq!(k.resolve_in_unit(&crypto, "counter").unwrap().sympos, 2);

    // proc.c with nothing else to go on: refused, naming both proc.c occurrences.
    let bare = unit("arch/x86/kernel/cpu/proc.c", VMLINUX, &["c_start"]);
    match k.resolve_in_unit(&bare, "c_start") {
        Err(Error::Ambiguous {
            symbol, candidates, ..
        }) => {
            assert_eq!(symbol, "c_start");
            assert_eq!(candidates.len(), 3);
            let msg = k.resolve_in_unit(&bare, "c_start").unwrap_err().to_string();
            assert!(
                msg.contains("0x20") && msg.contains("0x210") && msg.contains("proc.c"),
                "{msg}"
            );
        }
        other => panic!("expected ambiguity, got {other:?}"),
    }

    // A unit whose file has no c_start: never another file's.
    let elsewhere = unit("fs/proc/stat.c", VMLINUX, &["c_start", "show_stat"]);
    let err = k.resolve_in_unit(&elsewhere, "c_start").unwrap_err();
    assert!(matches!(err, Error::NoMatchingBlock { .. }), "{err}");
    let unique_elsewhere = unit("fs/proc/stat.c", VMLINUX, &["show_console_dev"]);
    assert!(k
        .resolve_in_unit(&unique_elsewhere, "show_console_dev")
        .is_err());

    // Globals have no FILE; unique ones resolve to sympos 0.
    let r = k
        .resolve_in_unit(&consoles, "proc_tty_register_driver")
        .unwrap();
    assert_eq!((r.sympos, r.kind), (0, 'T'));
    let err = k.resolve_in_unit(&consoles, "missing_fn").unwrap_err();
    assert_eq!(
        err.to_string(),
        "symbol `missing_fn` not found in vmlinux (symbols from vmlinux)"
    );
}

/// Like Debian 6.1's /proc/kallsyms around the three `c_start`, plus a module.
const KALLSYMS: &str = "\
ffffffff8104c4e0 t umwait_syscore_resume
ffffffff8104c500 t c_stop
ffffffff8104c510 t show_cpuinfo
ffffffff8104c960 t c_start
ffffffff8104c9b0 t c_next
ffffffff8104c9c0 T init_ia32_feat_ctl
ffffffff81410560 T proc_tty_unregister_driver
ffffffff814105a0 t cmdline_proc_show
ffffffff814105d0 t c_next
ffffffff814105f0 t show_console_dev
ffffffff81410750 t c_stop
ffffffff81410760 t c_start
ffffffff814107a0 t cpuinfo_open
ffffffff814bae50 t c_show
ffffffff814bb000 t c_next
ffffffff814bb020 t c_stop
ffffffff814bb040 t c_start
ffffffff814bb070 T crypto_aead_setauthsize
ffffffffc0a00000 t c_start\t[seqmod]
ffffffffc0a00010 t seqmod_show\t[seqmod]
ffffffffc0b00000 T shared_name\t[mod_a]
ffffffffc0c00000 T shared_name\t[mod_b]
";

#[test]
fn kallsyms_neighbours_pick_the_units_occurrence() {
    let k = parse_proc_kallsyms(KALLSYMS, "/proc/kallsyms").unwrap();
    let consoles = unit(
        "fs/proc/consoles.c",
        VMLINUX,
        &[
            "show_console_dev",
            "c_start",
            "c_next",
            "c_stop",
            "consoles_op",
            "proc_consoles_init",
        ],
    );
    let r = k.resolve_in_unit(&consoles, "c_start").unwrap();
    assert_eq!((r.sympos, r.address), (2, 0xffffffff81410760));
    let cpu = unit(
        "arch/x86/kernel/cpu/proc.c",
        VMLINUX,
        &["show_cpuinfo", "c_start", "c_next", "c_stop"],
    );
    assert_eq!(k.resolve_in_unit(&cpu, "c_start").unwrap().sympos, 1);
    assert_eq!(k.resolve_in_unit(&cpu, "c_next").unwrap().sympos, 1);

    let vague = unit(
        "fs/proc/consoles.c",
        VMLINUX,
        &["c_start", "c_next", "c_stop"],
    );
    let err = k.resolve_in_unit(&vague, "c_start").unwrap_err();
    let msg = err.to_string();
    match err {
        Error::Ambiguous { candidates, .. } => {
            assert_eq!(
                candidates.iter().map(|c| c.position).collect::<Vec<_>>(),
                [1, 2, 3]
            );
            // c_next and c_stop are everywhere: nothing distinctive.
            assert!(candidates.iter().all(|c| c.anchors == 0));
        }
        other => panic!("expected ambiguity, got {other:?}"),
    }
    assert!(
        msg.contains("0xffffffff8104c960") && msg.contains("0xffffffff814bb040"),
        "{msg}"
    );

    // The user may pick one of the listed candidates.
    let picked = k.resolve_position(VMLINUX, "c_start", 3).unwrap();
    assert_eq!((picked.sympos, picked.address), (3, 0xffffffff814bb040));
    let err = k.resolve_position(VMLINUX, "c_start", 4).unwrap_err();
    assert!(
        err.to_string().contains("#4") && err.to_string().contains("3 time"),
        "{err}"
    );
    assert!(k.resolve_position(VMLINUX, "c_start", 0).is_err());
    assert_eq!(
        k.resolve_position("seqmod", "c_start", 1).unwrap().sympos,
        0
    );

    let lost = unit("fs/other.c", VMLINUX, &["c_start", "other_fn"]);
    let err = k.resolve_in_unit(&lost, "c_start").unwrap_err();
    assert!(
        matches!(err, Error::NoMatchingBlock { ref candidates, .. } if candidates.len() == 3),
        "{err}"
    );

    // Positions count within the object: the module's c_start is unique there.
    let module_unit = unit("seqmod.c", "seqmod", &["c_start", "seqmod_show"]);
    let r = k.resolve_in_unit(&module_unit, "c_start").unwrap();
    assert_eq!((r.sympos, r.object.as_str()), (0, "seqmod"));
}

#[test]
fn object_of_prefers_symvers_and_refuses_ambiguity() {
    let k = parse_proc_kallsyms(KALLSYMS, "/proc/kallsyms").unwrap();
    assert_eq!(k.object_of("seqmod_show", None).unwrap(), "seqmod");
    assert_eq!(
        k.object_of("crypto_aead_setauthsize", None).unwrap(),
        VMLINUX
    );
    let err = k.object_of("shared_name", None).unwrap_err();
    assert!(err.to_string().contains("mod_a, mod_b"), "{err}");
    let symvers = Symvers::parse(
        "0x00000001\tshared_name\tdrivers/x/mod-b\tEXPORT_SYMBOL_GPL\t\n",
        "Module.symvers",
    )
    .unwrap();
    assert_eq!(k.object_of("shared_name", Some(&symvers)).unwrap(), "mod_b");
    assert!(k.object_of("nowhere", None).is_err());
    let err = k.resolve(VMLINUX, "c_start").unwrap_err();
    assert!(
        matches!(err, Error::Ambiguous { ref candidates, .. } if candidates.len() == 3),
        "{err}"
    );
}

#[test]
fn module_symbols_keep_symtab_order_and_drop_init() {
    let mut b = Builder::new();
    let text = b.section(".text", SectionKind::Text, 0x100);
    let init = b.section(".init.text", SectionKind::Text, 0x100);
    b.file("a.c");
    b.sym(
        "helper",
        0x40,
        SymbolKind::Text,
        SymbolScope::Compilation,
        false,
        SymbolSection::Section(text),
    );
    b.sym(
        "mod_init",
        0x0,
        SymbolKind::Text,
        SymbolScope::Compilation,
        false,
        SymbolSection::Section(init),
    );
    b.file("b.c");
    b.sym(
        "helper",
        0x10,
        SymbolKind::Text,
        SymbolScope::Compilation,
        false,
        SymbolSection::Section(text),
    );
    let k = parse_module(&b.obj.write().unwrap(), "m.ko", "m").unwrap();
    let got: Vec<(u64, &str, Option<&str>)> = k
        .symbols()
        .iter()
        .map(|s| (s.address, s.name.as_str(), s.file.as_deref()))
        .collect();
    assert_eq!(
        got,
        [(0x40, "helper", Some("a.c")), (0x10, "helper", Some("b.c"))]
    );
    let r = k
        .resolve_in_unit(&unit("drivers/m/b.c", "m", &["helper"]), "helper")
        .unwrap();
    assert_eq!((r.sympos, r.address), (2, 0x10));
}

#[test]
fn stripped_and_non_elf_inputs_are_refused_with_the_file_named() {
    let err = parse_vmlinux(b"not an elf", "bogus.img").unwrap_err();
    assert!(err.to_string().starts_with("bogus.img:"), "{err}");
    let obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let err = parse_vmlinux(&obj.write().unwrap(), "stripped").unwrap_err();
    assert!(err.to_string().starts_with("stripped:"), "{err}");
}

/// 6.12 (CALL_PADDING) puts a `__pfx_` symbol before every function. Counted as foreign
/// symbols, they broke a unit's block after half the usual number of foreign functions, and a
/// repeated local name whose unit lies two functions away was refused as having no block.
#[test]
fn regression_call_padding_symbols_do_not_break_a_units_block() {
    const PADDED: &str = "\
ffffffff81400000 t __pfx_alpha_show
ffffffff81400010 t alpha_show
ffffffff81400100 t __pfx_other_one
ffffffff81400110 t other_one
ffffffff81400200 t __pfx_other_two
ffffffff81400210 t other_two
ffffffff81400300 t __pfx_c_start
ffffffff81400310 t c_start
ffffffff81400400 T __pfx_foreign
ffffffff81400410 T foreign
ffffffff81500000 t __pfx_c_start
ffffffff81500010 t c_start
ffffffff81500100 t __pfx_elsewhere
ffffffff81500110 t elsewhere
";
    let k = parse_proc_kallsyms(PADDED, "/proc/kallsyms").unwrap();
    let tu = unit("fs/proc/alpha.c", VMLINUX, &["alpha_show", "c_start"]);
    let r = k.resolve_in_unit(&tu, "c_start").unwrap();
    assert_eq!((r.sympos, r.address), (1, 0xffffffff81400310));
}
