//! The decoder against tables made by an encoder written here from the format's description.

use std::collections::HashMap;

use super::layout::Block;
use super::*;

struct Sym {
    addr: u64,
    kind: char,
    name: String,
}

fn sym(addr: u64, kind: char, name: &str) -> Sym {
    Sym {
        addr,
        kind,
        name: name.to_string(),
    }
}

struct Options {
    absolute_percpu: bool,
    marker_width: usize,
    /// Name-order symbol numbers; `Some(reverse_ties)` writes them, equal names in reverse table
    /// order when `reverse_ties`.
    seqs: Option<bool>,
    junk: usize,
    /// The order of the blocks of tables (without [`Block::Seqs`] it is left where `seqs` puts
    /// it: after the markers in [`V6_1`], last in [`V6_12`]).
    order: &'static [Block],
}

/// 6.1's `scripts/kallsyms`: offsets, relative_base, num_syms, names, markers, [seqs_of_names],
/// token_table, token_index.
const V6_1: &[Block] = &[Block::Offsets, Block::Names, Block::Seqs, Block::Tokens];
/// 6.12's: num_syms, names, markers, token_table, token_index, offsets, relative_base,
/// seqs_of_names.
const V6_12: &[Block] = &[Block::Names, Block::Tokens, Block::Offsets, Block::Seqs];

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().div_ceil(8) * 8, 0);
}

/// Pseudo-random bytes, deterministic.
fn junk(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Token table: every byte the names use stands for itself; the other codes get the most
/// frequent 2- and 3-byte substrings, then filler.
fn make_tokens(strings: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut used = [false; 256];
    strings
        .iter()
        .flatten()
        .for_each(|&b| used[usize::from(b)] = true);
    let mut counts: HashMap<&[u8], usize> = HashMap::new();
    for s in strings {
        for len in 2..=3 {
            for w in s.windows(len) {
                *counts.entry(w).or_default() += 1;
            }
        }
    }
    let mut cands: Vec<(&[u8], usize)> = counts.into_iter().collect();
    cands.sort_by(|a, b| {
        (b.1 * (b.0.len() - 1))
            .cmp(&(a.1 * (a.0.len() - 1)))
            .then(a.0.cmp(b.0))
    });
    let mut cands = cands.into_iter().map(|(s, _)| s.to_vec());
    (0..256)
        .map(|code| {
            if used[code] {
                vec![code as u8]
            } else {
                cands
                    .next()
                    .unwrap_or_else(|| format!("~{code}").into_bytes())
            }
        })
        .collect()
}

fn compress(s: &[u8], tokens: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < s.len() {
        let (code, len) = tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| s[at..].starts_with(t))
            .map(|(c, t)| (c, t.len()))
            .max_by_key(|&(c, len)| (len, std::cmp::Reverse(c)))
            .expect("every byte has a token");
        out.push(code as u8);
        at += len;
    }
    out
}

/// The tables of `syms` in `opts.order`, after `opts.junk` bytes of junk and followed by more;
/// returns the blob.
fn encode(syms: &[Sym], opts: &Options) -> Vec<u8> {
    let n = syms.len();
    let strings: Vec<Vec<u8>> = syms
        .iter()
        .map(|s| format!("{}{}", s.kind, s.name).into_bytes())
        .collect();
    let tokens = make_tokens(&strings);

    // Each block starts aligned; its offsets are relative to its start, which is aligned too.
    let mut offsets = Vec::new();
    let base = syms
        .iter()
        .filter(|s| !(opts.absolute_percpu && s.kind == 'A'))
        .map(|s| s.addr)
        .min()
        .unwrap();
    for s in syms {
        let off: u32 = if opts.absolute_percpu && s.kind == 'A' {
            s.addr as u32
        } else if opts.absolute_percpu {
            base.wrapping_sub(1).wrapping_sub(s.addr) as i64 as i32 as u32
        } else {
            (s.addr - base) as u32
        };
        offsets.extend(off.to_le_bytes());
    }
    pad(&mut offsets);
    offsets.extend(base.to_le_bytes());

    let mut names = Vec::new();
    names.extend((n as u32).to_le_bytes());
    pad(&mut names);
    let names_at = names.len();
    let mut markers = Vec::new();
    for (i, s) in strings.iter().enumerate() {
        if i % 256 == 0 {
            markers.push((names.len() - names_at) as u64);
        }
        let c = compress(s, &tokens);
        if c.len() > 0x7f {
            names.push(0x80 | (c.len() & 0x7f) as u8);
            names.push((c.len() >> 7) as u8);
        } else {
            names.push(c.len() as u8);
        }
        names.extend(c);
    }
    pad(&mut names);
    for m in markers {
        if opts.marker_width == 4 {
            names.extend((m as u32).to_le_bytes());
        } else {
            names.extend(m.to_le_bytes());
        }
    }

    let mut seqs = Vec::new();
    if let Some(reverse_ties) = opts.seqs {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            let tie = if reverse_ties { b.cmp(&a) } else { a.cmp(&b) };
            syms[a].name.cmp(&syms[b].name).then(tie)
        });
        for i in order {
            seqs.extend([(i >> 16) as u8, (i >> 8) as u8, i as u8]);
        }
    }

    let mut token_block = Vec::new();
    let mut index = Vec::new();
    for t in &tokens {
        index.extend((token_block.len() as u16).to_le_bytes());
        token_block.extend(t);
        token_block.push(0);
    }
    pad(&mut token_block);
    token_block.extend(index);

    let mut out = junk(opts.junk, 7);
    for block in opts.order {
        pad(&mut out);
        out.extend(match block {
            Block::Names => &names,
            Block::Tokens => &token_block,
            Block::Offsets => &offsets,
            Block::Seqs => &seqs,
        });
    }
    out.extend(junk(37, 11));
    out
}

/// `count` symbols in address order, with some repeated names and a very long one.
fn sample(count: usize) -> Vec<Sym> {
    let words = [
        "show", "read", "write", "init", "c_start", "proc", "dev", "cpu", "mem", "open",
    ];
    let mut syms = vec![
        sym(0, 'A', "fixed_percpu_data"),
        sym(0x1000, 'A', "cpu_tss_rw"),
    ];
    let mut addr = 0xffff_ffff_8100_0000u64;
    for i in 0..count {
        let name = match i {
            5 | 400 | 650 => "c_start".to_string(),
            7 => "x".repeat(2) + &"abcdefghijklmnopqrstuvwxyz0123456789".repeat(12),
            _ => format!(
                "{}_{}_{i}",
                words[i % words.len()],
                words[(i / 3) % words.len()]
            ),
        };
        let kind = ['t', 'T', 'd', 'r', 'b'][i % 5];
        syms.push(Sym { addr, kind, name });
        addr += 0x10 + (i as u64 % 7) * 0x30;
    }
    syms
}

fn check_roundtrip(syms: &[Sym], table: &KallsymsTable) {
    assert_eq!(table.entries.len(), syms.len());
    for (s, (a, k, n)) in syms.iter().zip(&table.entries) {
        assert_eq!((s.addr, s.kind, s.name.as_str()), (*a, *k, n.as_str()));
    }
}

#[test]
fn decodes_relative_table_without_name_order() {
    let syms: Vec<Sym> = sample(700).into_iter().skip(2).collect();
    let blob = encode(
        &syms,
        &Options {
            absolute_percpu: false,
            marker_width: 4,
            seqs: None,
            junk: 1000,
            order: V6_1,
        },
    );
    let table = KallsymsTable::find(&blob, "blob").unwrap();
    assert!(!table.absolute_percpu);
    assert_eq!(table.layout.marker_width, 4);
    assert_eq!(table.layout.seqs_of_names, None);
    assert_eq!(table.layout.offsets, 1000);
    check_roundtrip(&syms, &table);
    let k = table.into_symbols("blob");
    assert_eq!(k.occurrences(VMLINUX, "c_start"), vec![5, 400, 650]);
}

#[test]
fn decodes_absolute_percpu_table_with_name_order_and_wide_markers() {
    let syms = sample(900);
    let blob = encode(
        &syms,
        &Options {
            absolute_percpu: true,
            marker_width: 8,
            seqs: Some(false),
            junk: 64,
            order: V6_1,
        },
    );
    let table = KallsymsTable::find(&blob, "blob").unwrap();
    assert!(table.absolute_percpu);
    assert_eq!(table.relative_base, 0xffff_ffff_8100_0000);
    assert_eq!(table.layout.marker_width, 8);
    assert!(table.layout.seqs_of_names.is_some());
    assert_eq!(
        table.layout.order(),
        [
            "kallsyms_offsets",
            "kallsyms_relative_base",
            "kallsyms_num_syms",
            "kallsyms_names",
            "kallsyms_markers",
            "kallsyms_seqs_of_names",
            "kallsyms_token_table",
            "kallsyms_token_index",
        ]
    );
    check_roundtrip(&syms, &table);
    // The long name needs the two-byte length form.
    assert!(table.entries.iter().any(|e| e.2.len() > 400));
}

#[test]
fn same_named_symbols_are_numbered_in_name_table_order() {
    let syms = sample(700);
    let blob = encode(
        &syms,
        &Options {
            absolute_percpu: true,
            marker_width: 4,
            seqs: Some(true),
            junk: 8,
            order: V6_1,
        },
    );
    let k = KallsymsTable::find(&blob, "blob")
        .unwrap()
        .into_symbols("blob");
    // Indices shift by the two per-CPU symbols at the front.
    assert_eq!(k.occurrences(VMLINUX, "c_start"), vec![652, 402, 7]);
}

#[test]
fn finds_the_table_in_an_elf_rodata() {
    use object::write::Object as WObject;
    use object::{Architecture, BinaryFormat, Endianness, SectionKind};
    let syms = sample(300);
    let blob = encode(
        &syms,
        &Options {
            absolute_percpu: true,
            marker_width: 4,
            seqs: Some(false),
            junk: 4096,
            order: V6_1,
        },
    );
    let mut obj = WObject::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let text = obj.add_section(vec![], b".text".to_vec(), SectionKind::Text);
    obj.append_section_data(text, &[0xc3; 64], 16);
    let ro = obj.add_section(vec![], b".rodata".to_vec(), SectionKind::ReadOnlyData);
    obj.append_section_data(ro, &blob, 4096);
    let elf = obj.write().unwrap();
    let k = parse_kallsyms_image(&elf, "vmlinux").unwrap();
    assert_eq!(k.len(), syms.len());
    assert_eq!(k.symbols()[100].name, syms[100].name);
    // With no usable .symtab, an image's symbols are its kallsyms table's.
    let k = crate::parse_kernel_image(&elf, "vmlinux").unwrap();
    assert_eq!(k.len(), syms.len());
}

#[test]
fn damaged_tables_are_refused_not_misread() {
    let syms = sample(600);
    let opts = Options {
        absolute_percpu: true,
        marker_width: 4,
        seqs: Some(false),
        junk: 16,
        order: V6_1,
    };
    let blob = encode(&syms, &opts);
    let good = KallsymsTable::find(&blob, "blob").unwrap();

    // A wrong marker: the names no longer match their index.
    let mut bad = blob.clone();
    bad[good.layout.markers + 4] ^= 1;
    let err = KallsymsTable::find(&bad, "vmlinux.bad").unwrap_err();
    assert!(matches!(err, Error::KallsymsNotFound { .. }), "{err}");
    assert!(err.to_string().starts_with("vmlinux.bad:"), "{err}");

    // Addresses out of order.
    let mut bad = blob.clone();
    let o = good.layout.offsets + 4 * 300;
    bad[o..o + 4].copy_from_slice(&(-2i32).to_le_bytes());
    let err = KallsymsTable::find(&bad, "blob").unwrap_err();
    assert!(err.to_string().contains("not sorted"), "{err}");

    // No token table at all.
    let err = KallsymsTable::find(&blob[..good.layout.token_table], "cut").unwrap_err();
    assert!(err.to_string().contains("token"), "{err}");

    // Every truncation and random data: an error, never a panic.
    for cut in (0..blob.len()).step_by(97) {
        let _ = KallsymsTable::find(&blob[cut..], "cut");
    }
    assert!(KallsymsTable::find(&junk(20000, 3), "random").is_err());
}

const ORDER_6_12: [&str; 8] = [
    "kallsyms_num_syms",
    "kallsyms_names",
    "kallsyms_markers",
    "kallsyms_token_table",
    "kallsyms_token_index",
    "kallsyms_offsets",
    "kallsyms_relative_base",
    "kallsyms_seqs_of_names",
];

fn opts_6_12(absolute_percpu: bool) -> Options {
    Options {
        absolute_percpu,
        marker_width: 4,
        seqs: Some(false),
        junk: 40,
        order: V6_12,
    }
}

#[test]
fn decodes_the_6_12_order() {
    let syms = sample(900);
    let blob = encode(&syms, &opts_6_12(true));
    let table = KallsymsTable::find(&blob, "blob").unwrap();
    assert_eq!(table.layout.order(), ORDER_6_12);
    assert_eq!(table.layout.num_syms, 40);
    assert_eq!(table.layout.offsets, table.layout.token_index + 512);
    assert_eq!(table.layout.marker_width, 4);
    assert!(table.absolute_percpu);
    assert_eq!(table.relative_base, 0xffff_ffff_8100_0000);
    check_roundtrip(&syms, &table);
    let seqs = table
        .seqs_of_names
        .as_ref()
        .expect("6.12 writes seqs_of_names");
    assert_eq!(seqs.len(), syms.len());
    let k = table.into_symbols("blob");
    assert_eq!(k.occurrences(VMLINUX, "c_start"), vec![7, 402, 652]);
    // The same symbols in 6.1's order read the same.
    let old = encode(
        &syms,
        &Options {
            order: V6_1,
            ..opts_6_12(true)
        },
    );
    let old = KallsymsTable::find(&old, "blob").unwrap();
    assert_eq!(old.layout.order()[0], "kallsyms_offsets");
    check_roundtrip(&syms, &old);
}

#[test]
fn decodes_the_6_12_order_without_absolute_percpu() {
    let syms: Vec<Sym> = sample(300).into_iter().skip(2).collect();
    let blob = encode(&syms, &opts_6_12(false));
    let table = KallsymsTable::find(&blob, "blob").unwrap();
    assert!(!table.absolute_percpu);
    assert_eq!(table.layout.order(), ORDER_6_12);
    check_roundtrip(&syms, &table);
    // One marker only (300 symbols would need two: the 256th starts the second).
    let syms: Vec<Sym> = sample(200).into_iter().skip(2).collect();
    let table = KallsymsTable::find(&encode(&syms, &opts_6_12(false)), "blob").unwrap();
    check_roundtrip(&syms, &table);
}

#[test]
fn a_corrupt_6_12_layout_is_refused() {
    let syms = sample(600);
    let blob = encode(&syms, &opts_6_12(true));
    let good = KallsymsTable::find(&blob, "blob").unwrap();
    let offset_at = |i: usize| good.layout.offsets + 4 * i;

    // Addresses out of order: no order of the tables reads sorted addresses.
    let mut bad = blob.clone();
    let o = offset_at(300);
    bad[o..o + 4].copy_from_slice(&(-2i32).to_le_bytes());
    let err = KallsymsTable::find(&bad, "vmlinux.bad").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::KallsymsNotFound { .. }), "{msg}");
    assert!(msg.starts_with("vmlinux.bad:"), "{msg}");
    assert!(
        msg.contains("token_table+token_index, offsets+relative_base")
            && msg.contains("not sorted"),
        "{msg}"
    );

    // The base is not the lowest relative address (symbol 2 is the first relative one, at
    // offset -1): every address would be off by the same amount.
    let mut bad = blob.clone();
    let o = offset_at(2);
    assert_eq!(bad[o..o + 4], (-1i32).to_le_bytes());
    bad[o..o + 4].copy_from_slice(&(-2i32).to_le_bytes());
    let err = KallsymsTable::find(&bad, "blob").unwrap_err();
    assert!(err.to_string().contains("not the lowest"), "{err}");

    // A second copy of the offsets where 6.1 keeps them: two readings fit, neither is taken.
    let twice = encode(
        &syms,
        &Options {
            order: &[
                Block::Offsets,
                Block::Names,
                Block::Tokens,
                Block::Offsets,
                Block::Seqs,
            ],
            ..opts_6_12(true)
        },
    );
    let err = KallsymsTable::find(&twice, "blob").unwrap_err();
    assert!(err.to_string().contains("several places"), "{err}");

    // A wrong count: the names no longer end where the markers say.
    let mut bad = blob.clone();
    let n = good.layout.num_syms;
    bad[n..n + 4].copy_from_slice(&(syms.len() as u32 - 1).to_le_bytes());
    let err = KallsymsTable::find(&bad, "blob").unwrap_err();
    assert!(matches!(err, Error::KallsymsNotFound { .. }), "{err}");

    // Damaged name-order numbers are not a name index: the addresses are still read (they do not
    // depend on it), without one.
    let mut bad = blob.clone();
    let s = good.layout.seqs_of_names.unwrap();
    bad.copy_within(s + 3..s + 6, s);
    let table = KallsymsTable::find(&bad, "blob").unwrap();
    assert_eq!(table.layout.seqs_of_names, None);
    check_roundtrip(&syms, &table);

    // Every truncation: an error or the whole table, never a panic or a partial reading.
    for cut in (0..blob.len()).step_by(89) {
        if let Ok(t) = KallsymsTable::find(&blob[cut..], "cut") {
            check_roundtrip(&syms, &t);
        }
        if let Ok(t) = KallsymsTable::find(&blob[..cut], "cut") {
            check_roundtrip(&syms, &t);
        }
    }
}

/// `blob` as the `.rodata` of a linked image (`ET_EXEC`) whose `.text` starts at `text`.
fn linked_image(blob: &[u8], text: u64) -> Vec<u8> {
    use object::write::Object as WObject;
    use object::{Architecture, BinaryFormat, Endianness, SectionKind};
    let mut obj = WObject::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let t = obj.add_section(vec![], b".text".to_vec(), SectionKind::Text);
    obj.append_section_data(t, &vec![0xc3; 0x100000], 4096);
    let ro = obj.add_section(vec![], b".rodata".to_vec(), SectionKind::ReadOnlyData);
    obj.append_section_data(ro, blob, 4096);
    let mut elf = obj.write().unwrap();
    // The writer makes relocatable objects: make it a linked one, sections at their addresses.
    let (shoff, shentsize, text_index, rodata_index) = {
        let f = object::File::parse(&*elf).unwrap();
        let index = |name: &str| f.section_by_name(name).unwrap().index().0;
        let shoff = u64::from_le_bytes(elf[0x28..0x30].try_into().unwrap()) as usize;
        let shentsize = u16::from_le_bytes([elf[0x3a], elf[0x3b]]) as usize;
        (shoff, shentsize, index(".text"), index(".rodata"))
    };
    elf[16..18].copy_from_slice(&object::elf::ET_EXEC.0.to_le_bytes());
    for (index, addr) in [(text_index, text), (rodata_index, text + 0x100000)] {
        let at = shoff + index * shentsize + 0x10;
        elf[at..at + 8].copy_from_slice(&addr.to_le_bytes());
    }
    elf
}

#[test]
fn addresses_outside_a_linked_images_sections_are_refused() {
    let syms = sample(300);
    let blob = encode(&syms, &opts_6_12(true));
    let elf = linked_image(&blob, 0xffff_ffff_8100_0000);
    let table = find_in_image(&elf, "vmlinux").unwrap();
    check_roundtrip(&syms, &table);

    // The same table in an image linked elsewhere: its base is in none of the sections.
    let elf = linked_image(&blob, 0xffff_ffff_a000_0000);
    let err = find_in_image(&elf, "vmlinux").unwrap_err();
    assert!(matches!(err, Error::KallsymsCorrupt { .. }), "{err}");
    assert!(
        err.to_string().starts_with("vmlinux (.rodata):")
            && err.to_string().contains("in none of the image's sections"),
        "{err}"
    );

    // Or its symbols run past the image's end.
    let mut far = sample(300);
    far.last_mut().unwrap().addr = 0xffff_ffff_9000_0000;
    let elf = linked_image(&encode(&far, &opts_6_12(true)), 0xffff_ffff_8100_0000);
    let err = find_in_image(&elf, "vmlinux").unwrap_err();
    assert!(
        err.to_string().contains("past the image's last section"),
        "{err}"
    );
}
