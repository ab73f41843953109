//! Module generation on synthetic diff objects (built with kpatch-elf) and a fake resolver; the
//! kbuild step is faked by a runner that "links" the prepared objects into a `.ko`.

use kpatch_common::exec::{Cmd, CmdOutput, RunError};
use kpatch_common::klp::{SHF_RELA_LIVEPATCH, SHN_LIVEPATCH};
use kpatch_elf::consts::*;
use kpatch_elf::{Header, Object, Rela, Section, SectionIndex, Symbol, SymbolIndex};
use kpatch_module::plan::{plan, CallbackKind};
use kpatch_module::*;
use std::collections::HashMap;
use std::path::Path;

const R_X86_64_64: u32 = 1;
const R_X86_64_PC32: u32 = 2;
const R_X86_64_PLT32: u32 = 4;
const R_X86_64_32S: u32 = 11;

/// A small relocatable object under construction.
struct Builder {
    o: Object,
}

impl Builder {
    fn new() -> Builder {
        let mut o = Object::new(Header {
            e_machine: EM_X86_64,
            e_flags: 0,
            ei_osabi: 0,
            ei_abiversion: 0,
            big_endian: false,
        });
        o.add_section(Section::new(".symtab", SHT_SYMTAB, 0));
        o.add_section(Section::new(".strtab", SHT_STRTAB, 0));
        o.add_section(Section::new(".shstrtab", SHT_STRTAB, 0));
        let mut f = Symbol::new("cmdline.c", STB_LOCAL, STT_FILE);
        f.st_shndx = SHN_ABS;
        o.add_symbol(f);
        Builder { o }
    }

    fn section(&mut self, name: &str, flags: u64, size: usize) -> SectionIndex {
        let mut s = Section::new(name, SHT_PROGBITS, flags);
        s.data = vec![0; size];
        s.sh_size = size as u64;
        s.sh_addralign = 8;
        self.o.add_section(s)
    }

    fn text(&mut self, name: &str, bind: u8) -> SectionIndex {
        let sec = self.section(&format!(".text.{name}"), SHF_ALLOC | SHF_EXECINSTR, 32);
        let mut s = Symbol::new(name, bind, STT_FUNC);
        s.section = Some(sec);
        s.st_size = 32;
        self.o.add_symbol(s);
        sec
    }

    fn undef(&mut self, name: &str, bind: u8, st_type: u8) {
        self.o.add_symbol(Symbol::new(name, bind, st_type));
    }

    fn sym(&self, name: &str) -> SymbolIndex {
        SymbolIndex(
            self.o
                .symbols
                .iter()
                .position(|s| s.name == name)
                .unwrap_or_else(|| panic!("no symbol {name}")),
        )
    }

    /// Relocations `(offset, type, symbol)` against `target`, in `.rela<target>`.
    fn relas(&mut self, target: SectionIndex, relas: &[(u64, u32, &str)]) {
        let entries: Vec<Rela> = relas
            .iter()
            .map(|&(r_offset, r_type, s)| Rela {
                r_offset,
                r_sym: self.sym(s),
                r_type,
                r_addend: -4,
            })
            .collect();
        let name = format!(".rela{}", self.o.section(target).name);
        let mut s = Section::new(name, SHT_RELA, SHF_INFO_LINK);
        s.sh_info = target.0 as u32;
        s.relas = entries;
        self.o.add_section(s);
    }

    fn finish(mut self) -> Object {
        self.o.sort_symbols_locals_first();
        // Round trip through the writer so the test objects are real ELF.
        Object::parse(&self.o.write().unwrap(), "synthetic.o").unwrap()
    }
}

/// fs/proc/cmdline.o patched: cmdline_proc_show calls an exported printf, reads an unexported
/// global, calls a static helper of the unit (sympos 2 in vmlinux), has a jump label on an
/// unexported static key, a pre-patch callback, a force marker and debug info.
fn cmdline_diff() -> Object {
    let mut b = Builder::new();
    let text = b.text("cmdline_proc_show", STB_GLOBAL);
    let pre = b.text("my_pre_patch", STB_LOCAL);
    b.undef("helper", STB_LOCAL, STT_FUNC);
    b.undef("seq_printf", STB_GLOBAL, STT_FUNC);
    b.undef("saved_command_line", STB_GLOBAL, STT_OBJECT);
    b.undef("some_key", STB_GLOBAL, STT_OBJECT);
    b.undef("unused_undefined", STB_GLOBAL, STT_NOTYPE);
    b.undef("optional_hook", STB_WEAK, STT_FUNC);
    b.relas(
        text,
        &[
            (1, R_X86_64_PLT32, "seq_printf"),
            (6, R_X86_64_PC32, "saved_command_line"),
            (11, R_X86_64_PLT32, "helper"),
            (16, R_X86_64_PC32, "saved_command_line"),
            (21, R_X86_64_PLT32, "optional_hook"),
        ],
    );
    let jt = b.section("__jump_table", SHF_ALLOC | SHF_WRITE, 16);
    b.relas(
        jt,
        &[
            (0, R_X86_64_PC32, "cmdline_proc_show"),
            (8, R_X86_64_64, "some_key"),
        ],
    );
    let cb = b.section(".kpatch.callbacks.pre_patch", SHF_ALLOC | SHF_WRITE, 16);
    b.relas(cb, &[(0, R_X86_64_64, "my_pre_patch")]);
    let force = b.section(".kpatch.force", SHF_ALLOC | SHF_WRITE, 8);
    b.relas(force, &[(0, R_X86_64_64, "cmdline_proc_show")]);
    b.undef("only_in_discard", STB_GLOBAL, STT_FUNC);
    let discard = b.section(".discard.addressable", SHF_ALLOC | SHF_WRITE, 8);
    b.relas(discard, &[(0, R_X86_64_64, "only_in_discard")]);
    let dbg = b.section(".debug_info", 0, 64);
    b.relas(dbg, &[(0, R_X86_64_64, "saved_command_line")]);
    let _ = pre;
    b.finish()
}

#[derive(Default)]
struct FakeResolver {
    symbols: HashMap<(String, bool), Resolution>,
    functions: HashMap<String, u64>,
    sealed: Vec<String>,
}

impl FakeResolver {
    fn vmlinux() -> FakeResolver {
        let mut r = FakeResolver::default();
        r.symbols.insert(
            ("seq_printf".into(), false),
            Resolution::Export {
                object: "vmlinux".into(),
                crc: Some(0xf0949581),
                namespace: None,
            },
        );
        r.symbols.insert(
            ("saved_command_line".into(), false),
            Resolution::Klp {
                object: "vmlinux".into(),
                sympos: 0,
            },
        );
        r.symbols.insert(
            ("some_key".into(), false),
            Resolution::Klp {
                object: "vmlinux".into(),
                sympos: 0,
            },
        );
        r.symbols.insert(
            ("helper".into(), true),
            Resolution::Klp {
                object: "vmlinux".into(),
                sympos: 2,
            },
        );
        r.functions.insert("cmdline_proc_show".into(), 0);
        r
    }
}

impl SymbolResolver for FakeResolver {
    fn resolve(
        &self,
        tu: &TuContext<'_>,
        name: &str,
        local: bool,
    ) -> Result<Resolution, ResolveError> {
        self.symbols
            .get(&(name.to_string(), local))
            .cloned()
            .ok_or_else(|| ResolveError {
                object: tu.object.to_string(),
                reason: format!("fake target has no `{name}`"),
            })
    }
    fn function_sympos(&self, tu: &TuContext<'_>, name: &str) -> Result<u64, ResolveError> {
        self.functions
            .get(name)
            .copied()
            .ok_or_else(|| ResolveError {
                object: tu.object.into(),
                reason: "absent".into(),
            })
    }
    fn is_sealed(&self, object: &str, name: &str) -> bool {
        object == "vmlinux" && self.sealed.iter().any(|s| s == name)
    }
}

/// cmdline_proc_show's code: `call sealed_fn` at 0, then `mov $sealed_fn,%rdi` at 5 when
/// `take_address`; and, with `in_data`, a new ops table in .data holding its address.
fn ibt_diff(take_address: bool, in_data: bool) -> Object {
    let mut b = Builder::new();
    let text = b.text("cmdline_proc_show", STB_GLOBAL);
    let code = [0xe8, 0, 0, 0, 0, 0x48, 0xc7, 0xc7, 0, 0, 0, 0];
    b.o.sections[text.0].data[..code.len()].copy_from_slice(&code);
    b.undef("sealed_fn", STB_GLOBAL, STT_FUNC);
    let mut relas = vec![(1, R_X86_64_PLT32, "sealed_fn")];
    if take_address {
        relas.push((8, R_X86_64_32S, "sealed_fn"));
    }
    b.relas(text, &relas);
    if in_data {
        let data = b.section(".data.my_ops", SHF_ALLOC | SHF_WRITE, 8);
        let mut ops = Symbol::new("my_ops", STB_LOCAL, STT_OBJECT);
        ops.section = Some(data);
        ops.st_size = 8;
        b.o.add_symbol(ops);
        b.relas(data, &[(0, R_X86_64_64, "sealed_fn")]);
    }
    b.finish()
}

fn ibt_resolver() -> FakeResolver {
    let mut r = FakeResolver::default();
    r.symbols.insert(
        ("sealed_fn".into(), false),
        Resolution::Klp {
            object: "vmlinux".into(),
            sympos: 0,
        },
    );
    r.functions.insert("cmdline_proc_show".into(), 0);
    r.sealed.push("sealed_fn".into());
    r
}

#[test]
fn ibt_taking_the_address_of_a_sealed_function_is_refused_naming_the_site() {
    let call_only = plan(
        vec![tu(
            "fs/proc/cmdline.o",
            "vmlinux",
            ibt_diff(false, false),
            &["cmdline_proc_show"],
        )],
        &ibt_resolver(),
    );
    assert!(
        call_only.is_ok(),
        "a direct call needs no ENDBR: {:?}",
        call_only.err()
    );

    let e = plan(
        vec![tu(
            "fs/proc/cmdline.o",
            "vmlinux",
            ibt_diff(true, false),
            &["cmdline_proc_show"],
        )],
        &ibt_resolver(),
    )
    .unwrap_err();
    assert!(e.is_refusal(), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("cmdline_proc_show+0x8")
            && msg.contains("`sealed_fn` (vmlinux)")
            && msg.contains("seals at boot"),
        "{msg}"
    );

    let e = plan(
        vec![tu(
            "fs/proc/cmdline.o",
            "vmlinux",
            ibt_diff(false, true),
            &["cmdline_proc_show"],
        )],
        &ibt_resolver(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("my_ops+0x0"), "{e}");

    // The same code against a kernel that does not seal it (no IBT, or its address is taken).
    let mut unsealed = ibt_resolver();
    unsealed.sealed.clear();
    assert!(plan(
        vec![tu(
            "fs/proc/cmdline.o",
            "vmlinux",
            ibt_diff(true, true),
            &["cmdline_proc_show"]
        )],
        &unsealed
    )
    .is_ok());
}

fn tu(name: &str, object: &str, diff: Object, changed: &[&str]) -> TuInput {
    TuInput {
        name: name.into(),
        source: None,
        object: object.into(),
        original: diff.clone(),
        diff,
        changed: changed.iter().map(|s| s.to_string()).collect(),
        new: vec![],
    }
}

fn names_of_relas(o: &Object, section: &str) -> Vec<String> {
    let i = o
        .section_by_name(section)
        .unwrap_or_else(|| panic!("no section {section}"));
    o.section(i)
        .relas
        .iter()
        .map(|r| o.symbol_name(r.r_sym).to_string())
        .collect()
}

#[test]
fn plan_redirects_non_exported_symbols_to_placeholders_and_keeps_exports() {
    let p = plan(
        vec![tu(
            "fs/proc/cmdline.o",
            "vmlinux",
            cmdline_diff(),
            &["cmdline_proc_show"],
        )],
        &FakeResolver::vmlinux(),
    )
    .unwrap();
    let d = &p.tus[0].diff;
    // One placeholder per distinct livepatch symbol, used by every relocation to it.
    let klp: Vec<(String, String, u64)> = p
        .klp_symbols
        .iter()
        .map(|k| (k.klp_name(), k.rela_object.clone(), k.sympos))
        .collect();
    assert_eq!(
        klp,
        [
            (
                ".klp.sym.vmlinux.saved_command_line,0".to_string(),
                "vmlinux".to_string(),
                0
            ),
            (
                ".klp.sym.vmlinux.helper,2".to_string(),
                "vmlinux".to_string(),
                2
            ),
            (
                ".klp.sym.vmlinux.some_key,0".to_string(),
                "vmlinux".to_string(),
                0
            ),
        ]
    );
    assert_eq!(
        names_of_relas(d, ".rela.text.cmdline_proc_show"),
        [
            "seq_printf",
            "__kpatch_rs_klp_0",
            "__kpatch_rs_klp_1",
            "__kpatch_rs_klp_0",
            "optional_hook"
        ]
    );
    let ph = d
        .symbols
        .iter()
        .find(|s| s.name == "__kpatch_rs_klp_1")
        .unwrap();
    assert!(ph.is_undefined() && ph.st_bind() == STB_WEAK);
    // The originals of the placeholders and unreferenced undefined symbols are gone.
    assert!(d.section_by_name(".discard.addressable").is_none());
    for gone in [
        "saved_command_line",
        "helper",
        "some_key",
        "unused_undefined",
        "only_in_discard",
    ] {
        assert!(
            !d.symbols.iter().any(|s| s.name == gone),
            "{gone} still present"
        );
    }
    // The changed function became local; its alias is global at the same place.
    let f = d
        .symbols
        .iter()
        .find(|s| s.name == "cmdline_proc_show")
        .unwrap();
    let a = d
        .symbols
        .iter()
        .find(|s| s.name == "__kpatch_rs_func_0")
        .unwrap();
    assert!(f.is_local() && !a.is_local());
    assert_eq!(
        (a.section, a.st_value, a.st_size, a.st_type()),
        (f.section, f.st_value, f.st_size, STT_FUNC)
    );
    assert_eq!(p.functions[0].name, "cmdline_proc_show");
    // Markers and debug info dropped; callback record named for the glue.
    assert!(
        d.section_by_name(".kpatch.force").is_none() && d.section_by_name(".debug_info").is_none()
    );
    assert_eq!(p.callbacks.len(), 1);
    assert_eq!(
        (p.callbacks[0].kind, p.callbacks[0].symbol.as_str()),
        (CallbackKind::PrePatch, "__kpatch_rs_cb_pre_patch_0")
    );
    assert_eq!(
        p.imports
            .iter()
            .map(|i| (i.name.as_str(), i.crc))
            .collect::<Vec<_>>(),
        [("seq_printf", Some(0xf0949581))]
    );
    // Still a valid object: locals first, indexes consistent.
    let back = Object::parse(&d.write().unwrap(), "prepared.o").unwrap();
    assert_eq!(
        names_of_relas(&back, ".rela__jump_table"),
        ["cmdline_proc_show", "__kpatch_rs_klp_2"]
    );
}

/// A fake `.ko`: the prepared objects concatenated are enough for one unit; add `.modinfo` and
/// `__versions` as modpost would.
fn fake_link(prepared: &Object, vermagic: &str, versions: &[(&str, u32)]) -> Object {
    let mut ko = prepared.clone();
    let mut info = Section::new(".modinfo", SHT_PROGBITS, SHF_ALLOC);
    info.data = format!("vermagic={vermagic}\0name=livepatch_x\0livepatch=Y\0").into_bytes();
    ko.add_section(info);
    let mut v = Section::new("__versions", SHT_PROGBITS, SHF_ALLOC);
    for (name, crc) in versions {
        v.data.extend((*crc as u64).to_le_bytes());
        let mut n = name.as_bytes().to_vec();
        n.resize(56, 0);
        v.data.extend(n);
    }
    ko.add_section(v);
    ko
}

#[test]
fn finalize_moves_relocations_into_klp_sections_and_checks_the_module() {
    let p = plan(
        vec![tu(
            "fs/proc/cmdline.o",
            "vmlinux",
            cmdline_diff(),
            &["cmdline_proc_show"],
        )],
        &FakeResolver::vmlinux(),
    )
    .unwrap();
    let release = "6.1.0-56-amd64";
    let vermagic = format!("{release} SMP preempt mod_unload modversions ");
    let mut ko = fake_link(&p.tus[0].diff, &vermagic, &[("seq_printf", 0xf0949581)]);
    finalize::convert_klp(&mut ko, &p, "x.ko").unwrap();
    let ko = Object::parse(&ko.write().unwrap(), "x.ko").unwrap();

    // A weak reference the target lacks stays a weak reference (resolved to 0 by the loader).
    assert_eq!(
        names_of_relas(&ko, ".rela.text.cmdline_proc_show"),
        ["seq_printf", "optional_hook"]
    );
    assert_eq!(
        names_of_relas(&ko, ".klp.rela.vmlinux..text.cmdline_proc_show"),
        [
            ".klp.sym.vmlinux.saved_command_line,0",
            ".klp.sym.vmlinux.helper,2",
            ".klp.sym.vmlinux.saved_command_line,0"
        ]
    );
    let text_rela = ko.section(
        ko.section_by_name(".klp.rela.vmlinux..text.cmdline_proc_show")
            .unwrap(),
    );
    assert_eq!(
        text_rela.sh_flags,
        SHF_ALLOC | SHF_INFO_LINK | SHF_RELA_LIVEPATCH
    );
    assert_eq!(
        ko.section(SectionIndex(text_rela.sh_info as usize)).name,
        ".text.cmdline_proc_show"
    );
    assert_eq!(
        text_rela
            .relas
            .iter()
            .map(|r| r.r_offset)
            .collect::<Vec<_>>(),
        [6, 11, 16]
    );
    // vmlinux symbols in special sections are fine: vmlinux klp relocations are applied at load.
    assert_eq!(
        names_of_relas(&ko, ".klp.rela.vmlinux.__jump_table"),
        [".klp.sym.vmlinux.some_key,0"]
    );
    for s in ko
        .symbols
        .iter()
        .filter(|s| s.name.starts_with(".klp.sym."))
    {
        assert_eq!(
            (s.st_shndx, s.st_bind(), s.section),
            (SHN_LIVEPATCH, STB_GLOBAL, None),
            "{}",
            s.name
        );
    }
    assert!(!ko
        .symbols
        .iter()
        .any(|s| s.name.starts_with("__kpatch_rs_klp_")));
    finalize::check_module(&ko, &p, release, "x.ko").unwrap();

    // Wrong release, wrong CRC, missing CRC.
    let e = finalize::check_module(&ko, &p, "6.1.0-1-amd64", "x.ko")
        .unwrap_err()
        .to_string();
    assert!(e.contains("6.1.0-1-amd64") && e.contains(release), "{e}");
    let mut bad = fake_link(&p.tus[0].diff, &vermagic, &[("seq_printf", 0x1234)]);
    finalize::convert_klp(&mut bad, &p, "bad.ko").unwrap();
    let e = finalize::check_module(&bad, &p, release, "bad.ko").unwrap_err();
    assert!(matches!(e, ModuleError::CrcMismatch { .. }), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("seq_printf") && e.contains("0x00001234") && e.contains("0xf0949581"),
        "{e}"
    );
    let mut missing = fake_link(&p.tus[0].diff, &vermagic, &[("other", 1)]);
    finalize::convert_klp(&mut missing, &p, "m.ko").unwrap();
    let e = finalize::check_module(&missing, &p, release, "m.ko")
        .unwrap_err()
        .to_string();
    assert!(e.contains("seq_printf") && e.contains("__versions"), "{e}");
}

/// An ext4 unit: a local of ext4, an unexported vmlinux global, a symbol exported by ext4.
fn ext4_diff(jump_key: &str) -> Object {
    let mut b = Builder::new();
    let text = b.text("ext4_fill_super", STB_LOCAL);
    b.undef("ext4_local", STB_LOCAL, STT_FUNC);
    b.undef("vm_secret", STB_GLOBAL, STT_OBJECT);
    b.undef("ext4_exported", STB_GLOBAL, STT_FUNC);
    b.undef("printk", STB_GLOBAL, STT_FUNC);
    b.relas(
        text,
        &[
            (1, R_X86_64_PLT32, "ext4_local"),
            (6, R_X86_64_PC32, "vm_secret"),
            (11, R_X86_64_PLT32, "ext4_exported"),
            (16, R_X86_64_PLT32, "printk"),
        ],
    );
    let jt = b.section("__jump_table", SHF_ALLOC | SHF_WRITE, 16);
    b.relas(
        jt,
        &[
            (0, R_X86_64_PC32, "ext4_fill_super"),
            (8, R_X86_64_64, jump_key),
        ],
    );
    b.finish()
}

fn ext4_resolver() -> FakeResolver {
    let mut r = FakeResolver::default();
    r.symbols.insert(
        ("ext4_local".into(), true),
        Resolution::Klp {
            object: "ext4".into(),
            sympos: 0,
        },
    );
    r.symbols.insert(
        ("vm_secret".into(), false),
        Resolution::Klp {
            object: "vmlinux".into(),
            sympos: 0,
        },
    );
    r.symbols.insert(
        ("ext4_exported".into(), false),
        Resolution::Klp {
            object: "ext4".into(),
            sympos: 0,
        },
    );
    r.symbols.insert(
        ("printk".into(), false),
        Resolution::Export {
            object: "vmlinux".into(),
            crc: Some(1),
            namespace: Some("TEST_NS".into()),
        },
    );
    r.functions.insert("ext4_fill_super".into(), 3);
    r
}

#[test]
fn module_target_splits_klp_relocations_by_object_and_refuses_module_symbols_in_special_sections() {
    // Jump label on a vmlinux key: allowed (applied when the patch module loads).
    let p = plan(
        vec![tu(
            "fs/ext4/super.o",
            "ext4",
            ext4_diff("vm_secret"),
            &["ext4_fill_super"],
        )],
        &ext4_resolver(),
    )
    .unwrap();
    assert_eq!(p.functions[0].sympos, 3);
    let mut ko = fake_link(&p.tus[0].diff, "6.1.0-56-amd64 SMP", &[("printk", 1)]);
    finalize::convert_klp(&mut ko, &p, "x.ko").unwrap();
    assert_eq!(
        names_of_relas(&ko, ".klp.rela.ext4..text.ext4_fill_super"),
        [
            ".klp.sym.ext4.ext4_local,0",
            ".klp.sym.ext4.ext4_exported,0"
        ]
    );
    assert_eq!(
        names_of_relas(&ko, ".klp.rela.vmlinux..text.ext4_fill_super"),
        [".klp.sym.vmlinux.vm_secret,0"]
    );
    assert_eq!(
        names_of_relas(&ko, ".klp.rela.vmlinux.__jump_table"),
        [".klp.sym.vmlinux.vm_secret,0"]
    );
    assert_eq!(
        names_of_relas(&ko, ".rela.text.ext4_fill_super"),
        ["printk"]
    );
    finalize::check_module(&ko, &p, "6.1.0-56-amd64", "x.ko").unwrap();

    let glue = glue::generate(
        &p,
        &GlueOptions {
            target_release: "r".into(),
            patch_sha256: "ab".into(),
            replace: false,
            metadata: Default::default(),
        },
    );
    assert!(glue.contains(".name = \"ext4\""), "{glue}");
    assert!(glue.contains(".old_sympos = 3"), "{glue}");
    assert!(glue.contains(".replace = false"), "{glue}");
    assert!(
        glue.contains("MODULE_INFO(kpatch_rs_replace, \"0\");"),
        "{glue}"
    );
    assert!(
        glue.contains("MODULE_INFO(import_ns, \"TEST_NS\");"),
        "{glue}"
    );
    assert!(!glue.contains(".name = NULL"), "{glue}");

    // Jump label on an ext4 key: ext4 relocations come too late for the jump-label code.
    let err = plan(
        vec![tu(
            "fs/ext4/super.o",
            "ext4",
            ext4_diff("ext4_exported"),
            &["ext4_fill_super"],
        )],
        &ext4_resolver(),
    )
    .unwrap_err();
    assert!(
        matches!(err, ModuleError::SpecialSectionKlp { .. }),
        "{err}"
    );
    let e = err.to_string();
    assert!(
        e.contains("__jump_table") && e.contains("ext4_exported") && e.contains("fs/ext4/super.o"),
        "{e}"
    );
    // A refusal (exit 2) that says what to write instead.
    assert!(
        err.is_refusal() && e.contains("static_key_enabled(&key)"),
        "{e}"
    );
}

#[test]
fn refusals_name_the_symbol_and_the_unit() {
    let mut r = FakeResolver::vmlinux();
    r.symbols.remove(&("helper".to_string(), true));
    let err = plan(
        vec![tu(
            "fs/proc/cmdline.o",
            "vmlinux",
            cmdline_diff(),
            &["cmdline_proc_show"],
        )],
        &r,
    )
    .unwrap_err();
    assert!(matches!(err, ModuleError::SymbolNotInTarget { .. }));
    let e = err.to_string();
    assert!(
        e.contains("helper") && e.contains("fs/proc/cmdline.o"),
        "{e}"
    );

    // A changed function the diff object does not define.
    let err = plan(
        vec![tu(
            "fs/proc/cmdline.o",
            "vmlinux",
            cmdline_diff(),
            &["nope"],
        )],
        &FakeResolver::vmlinux(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");

    // vmlinux code cannot use a module's symbol.
    let mut r = FakeResolver::vmlinux();
    r.symbols.insert(
        ("saved_command_line".into(), false),
        Resolution::Klp {
            object: "ext4".into(),
            sympos: 0,
        },
    );
    let err = plan(
        vec![tu(
            "fs/proc/cmdline.o",
            "vmlinux",
            cmdline_diff(),
            &["cmdline_proc_show"],
        )],
        &r,
    )
    .unwrap_err();
    assert!(
        matches!(err, ModuleError::VmlinuxUsesModuleSymbol { .. }),
        "{err}"
    );

    // Two pre-patch callbacks for vmlinux (from two units).
    let mut second = cmdline_diff();
    let i = second
        .symbols
        .iter()
        .position(|s| s.name == "cmdline_proc_show")
        .unwrap();
    second.symbols[i].name = "other_show".into();
    let mut r = FakeResolver::vmlinux();
    r.functions.insert("other_show".into(), 0);
    let err = plan(
        vec![
            tu(
                "fs/proc/cmdline.o",
                "vmlinux",
                cmdline_diff(),
                &["cmdline_proc_show"],
            ),
            tu("fs/proc/other.o", "vmlinux", second, &["other_show"]),
        ],
        &r,
    )
    .unwrap_err();
    let e = err.to_string();
    assert!(
        e.contains("pre_patch") && e.contains("fs/proc/cmdline.o") && e.contains("fs/proc/other.o"),
        "{e}"
    );
}

#[test]
fn glue_wires_functions_objects_callbacks_and_modinfo() {
    let p = plan(
        vec![tu(
            "fs/proc/cmdline.o",
            "vmlinux",
            cmdline_diff(),
            &["cmdline_proc_show"],
        )],
        &FakeResolver::vmlinux(),
    )
    .unwrap();
    let g = glue::generate(
        &p,
        &GlueOptions {
            target_release: "6.1.0-56-amd64".into(),
            patch_sha256: "ab".repeat(32),
            replace: true,
            metadata: kpatch_module::PatchMetadata {
                description: Some("proc: say \"live\" in /proc/cmdline".into()),
                name: Some("fix-cmdline".into()),
                version: Some(3),
                cves: vec!["CVE-2099-1001".into(), "CVE-2099-1002".into()],
                kernel_version: None,
            },
        },
    );
    for needle in [
        "MODULE_INFO(description, \"proc: say \\\"live\\\" in /proc/cmdline\");",
        "MODULE_INFO(kpatch_rs_patch_name, \"fix-cmdline\");",
        "MODULE_INFO(kpatch_rs_patch_version, \"3\");",
        "MODULE_INFO(kpatch_rs_replace, \"1\");",
        "MODULE_INFO(kpatch_rs_cves, \"CVE-2099-1001,CVE-2099-1002\");",
    ] {
        assert!(g.contains(needle), "missing {needle:?} in:\n{g}");
    }
    assert!(!g.contains("kpatch_rs_kernel_version"), "{g}");
    for needle in [
        "extern void __kpatch_rs_func_0(void);",
        ".old_name = \"cmdline_proc_show\",",
        ".new_func = __kpatch_rs_func_0,",
        ".old_sympos = 0,",
        ".name = NULL,",
        ".replace = true,",
        "extern const struct kpatch_pre_patch_callback __kpatch_rs_cb_pre_patch_0;",
        "kpatch_rs_objects[0].callbacks.pre_patch = __kpatch_rs_cb_pre_patch_0.fn;",
        "return klp_enable_patch(&kpatch_rs_patch);",
        "MODULE_LICENSE(\"GPL\");",
        "MODULE_INFO(livepatch, \"Y\");",
        "MODULE_INFO(kpatch_rs_kernel, \"6.1.0-56-amd64\");",
        "MODULE_INFO(kpatch_rs_functions, \"vmlinux:cmdline_proc_show,0\");",
    ] {
        assert!(g.contains(needle), "missing {needle:?} in:\n{g}");
    }
}

/// A kbuild stand-in: reads the shipped objects from `M=<dir>` and writes `<stem>.ko` as the
/// linker and modpost would (one unit only), or fails like make.
struct FakeKbuild {
    fail: bool,
    vermagic: String,
}

impl Runner for FakeKbuild {
    fn run(&self, command: &Cmd) -> Result<CmdOutput, RunError> {
        let args = command.arg_strings();
        assert_eq!(command.program, "make");
        assert_eq!(command.env_remove, ["MAKEFLAGS", "MFLAGS", "MAKELEVEL"]);
        assert!(
            args.iter().any(|a| a == "CC=gcc-12")
                && args.last().map(String::as_str) == Some("modules"),
            "{args:?}"
        );
        let dir = args.iter().find_map(|a| a.strip_prefix("M=")).unwrap();
        let dir = Path::new(dir);
        let kbuild = std::fs::read_to_string(dir.join("Kbuild")).unwrap();
        assert!(
            kbuild.contains("obj-m := livepatch-fix-cmdline.o"),
            "{kbuild}"
        );
        assert!(
            kbuild.contains("livepatch-fix-cmdline-y := kpatch-rs-glue.o kpatch-rs-tu0.o"),
            "{kbuild}"
        );
        assert!(dir.join("kpatch-rs-glue.c").is_file() && dir.join("kpatch-macros.h").is_file());
        if self.fail {
            return Ok(CmdOutput {
                code: Some(2),
                stdout: "CC [M] glue\n".into(),
                stderr: "error: it broke\n".into(),
            });
        }
        let prepared = Object::read(&dir.join("kpatch-rs-tu0.o_shipped")).unwrap();
        let ko = fake_link(&prepared, &self.vermagic, &[("seq_printf", 0xf0949581)]);
        ko.write_to_path(&dir.join("livepatch-fix-cmdline.ko"))
            .unwrap();
        Ok(CmdOutput::ok())
    }
}

fn fake_headers(dir: &Path, release: &str) {
    std::fs::create_dir_all(dir.join("include/generated")).unwrap();
    std::fs::write(
        dir.join("include/generated/utsrelease.h"),
        format!("#define UTS_RELEASE \"{release}\"\n"),
    )
    .unwrap();
}

fn options(dir: &Path, out: &Path) -> ModuleOptions {
    ModuleOptions {
        patch_name: "fix-cmdline".into(),
        glue: GlueOptions::new("6.1.0-56-amd64", "ab".repeat(32)),
        kbuild: KbuildOptions {
            kbuild_dir: dir.to_path_buf(),
            cc: "gcc-12".into(),
            jobs: 1,
        },
        output: out.to_path_buf(),
        work_dir: None,
    }
}

#[test]
fn build_module_end_to_end_with_fake_kbuild_and_no_output_on_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let headers = tmp.path().join("headers");
    fake_headers(&headers, "6.1.0-56-amd64");
    let out = tmp.path().join("livepatch-fix-cmdline.ko");
    let inputs = || {
        vec![tu(
            "fs/proc/cmdline.o",
            "vmlinux",
            cmdline_diff(),
            &["cmdline_proc_show"],
        )]
    };

    let ok = FakeKbuild {
        fail: false,
        vermagic: "6.1.0-56-amd64 SMP preempt mod_unload modversions ".into(),
    };
    let built = build_module(
        &options(&headers, &out),
        inputs(),
        &FakeResolver::vmlinux(),
        &ok,
    )
    .unwrap();
    assert_eq!(built.module_name, "livepatch_fix_cmdline");
    let ko = Object::read(&out).unwrap();
    assert!(ko
        .section_by_name(".klp.rela.vmlinux..text.cmdline_proc_show")
        .is_some());
    std::fs::remove_file(&out).unwrap();

    // make fails: its output is reported, nothing is written.
    let err = build_module(
        &options(&headers, &out),
        inputs(),
        &FakeResolver::vmlinux(),
        &FakeKbuild {
            fail: true,
            vermagic: String::new(),
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, ModuleError::Kbuild { .. }) && err.to_string().contains("it broke"),
        "{err}"
    );
    assert!(!out.exists());

    // The module comes out for another release: refused, nothing written.
    let other = FakeKbuild {
        fail: false,
        vermagic: "6.1.0-55-amd64 SMP".into(),
    };
    let err = build_module(
        &options(&headers, &out),
        inputs(),
        &FakeResolver::vmlinux(),
        &other,
    )
    .unwrap_err();
    assert!(matches!(err, ModuleError::Vermagic { .. }), "{err}");
    assert!(!out.exists());

    // Headers of another release: refused before building.
    fake_headers(&headers, "6.1.0-55-amd64");
    let err = build_module(
        &options(&headers, &out),
        inputs(),
        &FakeResolver::vmlinux(),
        &ok,
    )
    .unwrap_err();
    let e = err.to_string();
    assert!(
        e.contains("6.1.0-55-amd64") && e.contains("6.1.0-56-amd64") && e.contains("utsrelease.h"),
        "{e}"
    );
    assert!(!out.exists());
}

#[test]
fn shipped_headers_install_and_define_the_kpatch_markers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = headers::install_headers(&tmp.path().join("inc")).unwrap();
    let macros = std::fs::read_to_string(dir.join("kpatch-macros.h")).unwrap();
    for m in [
        "KPATCH_PRE_PATCH_CALLBACK(_fn)",
        "KPATCH_POST_PATCH_CALLBACK(_fn)",
        "KPATCH_PRE_UNPATCH_CALLBACK(_fn)",
        "KPATCH_POST_UNPATCH_CALLBACK(_fn)",
        "KPATCH_IGNORE_SECTION(_sec)",
        "KPATCH_IGNORE_FUNCTION(_fn)",
        "KPATCH_FORCE_UNSAFE(_fn)",
        "KPATCH_PRINTK(_fmt, ...)",
        "typedef struct klp_object patch_object;",
    ] {
        assert!(macros.contains(m), "kpatch-macros.h lacks {m}");
    }
    for kind in CallbackKind::ALL {
        assert!(macros.contains(&format!("struct kpatch_{}_callback {{", kind.field())));
    }
    let syscall = std::fs::read_to_string(dir.join("kpatch-syscall.h")).unwrap();
    for n in 1..=6 {
        assert!(syscall.contains(&format!("#define KPATCH_SYSCALL_DEFINE{n}(name, ...)")));
    }
}
