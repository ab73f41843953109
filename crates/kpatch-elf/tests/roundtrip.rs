//! Every object of the shared kpatch corpus survives read → write → read with its sections,
//! symbols, relocations and groups unchanged, and binutils accepts what we write.

use kpatch_elf::{consts::*, Object};
use std::path::PathBuf;

fn corpus_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("KPATCH_RS_UNIT_OBJS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/kpatch-unit-objs/x86_64")
        });
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: the shared object corpus is not at {} (set KPATCH_RS_UNIT_OBJS)",
            dir.display()
        );
        None
    }
}

fn corpus_objects() -> Vec<PathBuf> {
    let Some(dir) = corpus_dir() else {
        return Vec::new();
    };
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "o"))
        .collect();
    v.sort();
    v
}

/// The model with the fields that depend on string-table layout cleared.
fn normalised(mut o: Object) -> Object {
    for s in &mut o.sections {
        if s.is_generated_table() {
            s.sh_size = 0;
        }
    }
    o
}

#[test]
fn corpus_objects_round_trip_unchanged() {
    let objs = corpus_objects();
    if objs.is_empty() {
        return;
    }
    let mut groups = 0;
    let mut relas = 0;
    for path in &objs {
        let a = Object::read(path).unwrap();
        let bytes = a.write().unwrap();
        let b = Object::parse(&bytes, "round-tripped").unwrap();
        groups += a.sections.iter().filter(|s| s.sh_type == SHT_GROUP).count();
        relas += a.sections.iter().map(|s| s.relas.len()).sum::<usize>();
        assert_eq!(a.sections.len(), b.sections.len(), "{}", path.display());
        assert_eq!(a.symbols, b.symbols, "{}: symbols differ", path.display());
        let (a, b) = (normalised(a), normalised(b));
        for (i, (x, y)) in a.sections.iter().zip(&b.sections).enumerate() {
            assert_eq!(x, y, "{}: section [{i}] {} differs", path.display(), x.name);
        }
        // A second write is byte-identical to the first: the writer is deterministic.
        assert_eq!(bytes, b.write().unwrap(), "{}", path.display());
    }
    assert!(
        objs.len() >= 70,
        "expected the whole corpus, read {}",
        objs.len()
    );
    assert!(relas > 10_000, "only {relas} relocations read");
    eprintln!(
        "{} objects, {relas} relocations, {groups} groups round-tripped",
        objs.len()
    );
}

#[test]
fn readelf_accepts_written_objects() {
    let objs = corpus_objects();
    if objs.is_empty() {
        return;
    }
    if std::process::Command::new("readelf")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: readelf is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for path in objs.iter().step_by(7) {
        let out = dir.path().join(path.file_name().unwrap());
        Object::read(path).unwrap().write_to_path(&out).unwrap();
        let r = std::process::Command::new("readelf")
            .args(["-W", "-S", "-s", "-r", "-g"])
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(
            r.status.success() && stderr.trim().is_empty(),
            "{}: readelf: {stderr}",
            path.display()
        );
        let orig = std::process::Command::new("readelf")
            .args(["-W", "-s", "-r"])
            .arg(path)
            .output()
            .unwrap();
        let new = std::process::Command::new("readelf")
            .args(["-W", "-s", "-r"])
            .arg(&out)
            .output()
            .unwrap();
        // Symbol and relocation listings are identical except for the file-offset lines.
        let strip = |o: &[u8]| {
            String::from_utf8_lossy(o)
                .lines()
                .filter(|l| !l.contains("at offset"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            strip(&orig.stdout),
            strip(&new.stdout),
            "{}",
            path.display()
        );
    }
}

#[test]
fn bad_input_is_refused_with_the_file_named() {
    let e = Object::parse(b"not an elf file at all", "junk.o")
        .unwrap_err()
        .to_string();
    assert!(e.contains("junk.o") && e.contains("no ELF magic"), "{e}");
    let objs = corpus_objects();
    let Some(first) = objs.first() else { return };
    let data = std::fs::read(first).unwrap();
    // Truncations at many points: always an error, never a panic.
    for cut in (0..data.len()).step_by(data.len() / 97 + 1) {
        let _ = Object::parse(&data[..cut], "cut.o");
    }
    let e = Object::parse(&data[..data.len() / 2], "half.o")
        .unwrap_err()
        .to_string();
    assert!(e.contains("half.o"), "{e}");
    // Another architecture's class: 32-bit.
    let mut d32 = data.clone();
    d32[4] = 1;
    let e = Object::parse(&d32, "x.o").unwrap_err().to_string();
    assert!(e.contains("64-bit"), "{e}");
    // Not relocatable: e_type = ET_EXEC.
    let mut exec = data.clone();
    exec[16] = 2;
    let e = Object::parse(&exec, "exec.o").unwrap_err().to_string();
    assert!(e.contains("not a relocatable object"), "{e}");
}

#[test]
fn writing_an_object_without_string_tables_is_an_error_not_a_panic() {
    let mut o = Object::new(kpatch_elf::Header {
        e_machine: EM_X86_64,
        e_flags: 0,
        ei_osabi: 0,
        ei_abiversion: 0,
        big_endian: false,
    });
    let e = o.write().unwrap_err().to_string();
    assert!(e.contains(".symtab"), "{e}");
    let mut symtab = o.sections[0].clone();
    symtab.name = ".symtab".into();
    symtab.sh_type = SHT_SYMTAB;
    o.sections.push(symtab);
    let e = o.write().unwrap_err().to_string();
    assert!(e.contains(".strtab"), "{e}");
}

/// Fuzzing found a patched object whose `.strtab` was renamed (`hstrtab`): it was read, and the
/// differ then built an output it could not write. Such an object is now refused on reading.
#[test]
fn fuzz_crash_renamed_string_table_is_refused_when_read() {
    let objs = corpus_objects();
    let Some(first) = objs.first() else { return };
    let mut data = std::fs::read(first).unwrap();
    let at = data
        .windows(9)
        .position(|w| w == b"\0.strtab\0")
        .expect("a .strtab name")
        + 1;
    data[at] = b'x';
    let e = Object::parse(&data, "renamed.o").unwrap_err().to_string();
    assert!(
        e.contains("renamed.o") && e.contains("xstrtab") && e.contains(".strtab"),
        "{e}"
    );
}

/// Fuzzing (object_reader) found a section with an alignment of 2^40: reading accepted it and
/// writing padded the file towards a terabyte. Such alignments are refused on reading.
#[test]
fn fuzz_crash_absurd_alignment_is_refused_when_read() {
    let data = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/regressions/reader-huge-alignment.crash"),
    )
    .unwrap();
    let e = Object::parse(&data, "align.o").unwrap_err().to_string();
    assert!(e.contains("align.o") && e.contains("sh_addralign"), "{e}");
}

/// Fuzzing (object_reader) found an object whose symbol 0 was not the null symbol: it read, but
/// did not survive a round trip (the writer always writes a null symbol 0). Refused on reading.
#[test]
fn fuzz_roundtrip_non_null_symbol_0_is_refused_when_read() {
    // The crashing input was 570 KB; the same defect made by hand: a value in symbol 0.
    let objs = corpus_objects();
    let Some(first) = objs.first() else { return };
    let mut data = std::fs::read(first).unwrap();
    let symtab = Object::read(first)
        .unwrap()
        .sections
        .iter()
        .position(|s| s.sh_type == SHT_SYMTAB)
        .unwrap();
    let shoff = u64::from_le_bytes(data[0x28..0x30].try_into().unwrap()) as usize;
    let hdr = shoff + symtab * 64;
    let sym_off = u64::from_le_bytes(data[hdr + 24..hdr + 32].try_into().unwrap()) as usize;
    data[sym_off + 8] = 0x42; // st_value of symbol 0
    let e = Object::parse(&data, "sym0.o").unwrap_err().to_string();
    assert!(e.contains("sym0.o") && e.contains("null symbol"), "{e}");
}

/// Fuzzing (object_reader) turned a function's section into SHT_NULL: it read (with no bytes)
/// and then its relocations lay past its end once written. Inactive headers are refused.
#[test]
fn fuzz_roundtrip_inactive_section_header_is_refused_when_read() {
    let objs = corpus_objects();
    let Some(first) = objs.first() else { return };
    let mut data = std::fs::read(first).unwrap();
    let obj = Object::read(first).unwrap();
    let text = obj
        .sections
        .iter()
        .position(|s| s.is_text() && !s.data.is_empty())
        .unwrap();
    let shoff = u64::from_le_bytes(data[0x28..0x30].try_into().unwrap()) as usize;
    let hdr = shoff + text * 64;
    data[hdr + 4..hdr + 8].copy_from_slice(&0u32.to_le_bytes()); // sh_type = SHT_NULL
    let e = Object::parse(&data, "null.o").unwrap_err().to_string();
    assert!(e.contains("null.o") && e.contains("SHT_NULL"), "{e}");
}

/// Fuzzing (object_reader) made a data section an SHT_SYMTAB_SHNDX placed before `.symtab`:
/// the writer wrote the index table before gathering it. Now a stray index table is refused on
/// reading, and a real one is written after the symbols wherever its header stands.
#[test]
fn fuzz_crash_stray_symtab_shndx_is_refused_when_read() {
    let data = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/regressions/reader-stray-symtab-shndx.crash"),
    )
    .unwrap();
    let e = Object::parse(&data, "shndx.o").unwrap_err().to_string();
    assert!(
        e.contains("shndx.o") && e.contains("SHT_SYMTAB_SHNDX"),
        "{e}"
    );
}
