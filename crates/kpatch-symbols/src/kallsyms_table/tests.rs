//! The decoder against tables made by an encoder written here from the format's description.

use std::collections::HashMap;

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
}

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

/// A 6.1-style table, after `opts.junk` bytes of junk; returns the blob.
fn encode(syms: &[Sym], opts: &Options) -> Vec<u8> {
    let n = syms.len();
    let strings: Vec<Vec<u8>> = syms
        .iter()
        .map(|s| format!("{}{}", s.kind, s.name).into_bytes())
        .collect();
    let tokens = make_tokens(&strings);
    let mut out = junk(opts.junk, 7);
    pad(&mut out);

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
        out.extend(off.to_le_bytes());
    }
    pad(&mut out);
    out.extend(base.to_le_bytes());
    out.extend((n as u32).to_le_bytes());
    pad(&mut out);

    let names_at = out.len();
    let mut markers = Vec::new();
    for (i, s) in strings.iter().enumerate() {
        if i % 256 == 0 {
            markers.push((out.len() - names_at) as u64);
        }
        let c = compress(s, &tokens);
        if c.len() > 0x7f {
            out.push(0x80 | (c.len() & 0x7f) as u8);
            out.push((c.len() >> 7) as u8);
        } else {
            out.push(c.len() as u8);
        }
        out.extend(c);
    }
    pad(&mut out);
    for m in markers {
        if opts.marker_width == 4 {
            out.extend((m as u32).to_le_bytes());
        } else {
            out.extend(m.to_le_bytes());
        }
    }
    pad(&mut out);
    if let Some(reverse_ties) = opts.seqs {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            let tie = if reverse_ties { b.cmp(&a) } else { a.cmp(&b) };
            syms[a].name.cmp(&syms[b].name).then(tie)
        });
        for i in order {
            out.extend([(i >> 16) as u8, (i >> 8) as u8, i as u8]);
        }
        pad(&mut out);
    }
    let mut index = Vec::new();
    let table_at = out.len();
    for t in &tokens {
        index.extend(((out.len() - table_at) as u16).to_le_bytes());
        out.extend(t);
        out.push(0);
    }
    pad(&mut out);
    out.extend(index);
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
        },
    );
    let table = KallsymsTable::find(&blob, "blob").unwrap();
    assert!(table.absolute_percpu);
    assert_eq!(table.relative_base, 0xffff_ffff_8100_0000);
    assert_eq!(table.layout.marker_width, 8);
    assert!(table.layout.seqs_of_names.is_some());
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
