//! Where the tables lie relative to each other. `scripts/kallsyms` writes them into one `.rodata`
//! section, each `ALGN`-aligned and end to end, in an order that differs between kernels:
//!
//! - 6.1: offsets, relative_base, num_syms, names, markers, (seqs_of_names), token_table,
//!   token_index;
//! - 6.12: num_syms, names, markers, token_table, token_index, offsets, relative_base,
//!   seqs_of_names.
//!
//! The tables fall into four blocks, the same inside in both: [`Block::Names`] (found by
//! decoding), [`Block::Tokens`] (found by its shape), [`Block::Offsets`] and [`Block::Seqs`]
//! (sizes known from the symbol count). Every order of the blocks in which the two found ones sit
//! where they were found is a candidate placement; a candidate is kept only when the offsets it
//! implies decode to addresses that are sorted, whose base is the lowest of them and whose
//! absolute (per-CPU) entries are of type `A`, and the name-order numbers it implies (if any)
//! list the names sorted. Numbers that fail their check are taken as absent, as for a kernel
//! that writes none: the addresses do not depend on them, and without them same-named symbols
//! are numbered in table (address) order, as the numbers would have them.

use super::{align_up, u32_at, u64_at};

/// A group of tables that always follow each other in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// `kallsyms_num_syms`, `kallsyms_names`, `kallsyms_markers`.
    Names,
    /// `kallsyms_token_table`, `kallsyms_token_index`.
    Tokens,
    /// `kallsyms_offsets`, `kallsyms_relative_base`.
    Offsets,
    /// `kallsyms_seqs_of_names`.
    Seqs,
}

/// Where the two found blocks are, and the symbol count the others' sizes follow from.
pub struct Found {
    pub count: usize,
    /// Start of `kallsyms_num_syms`, and the aligned end of `kallsyms_markers`.
    pub names: (usize, usize),
    /// Start of `kallsyms_token_table`, and the aligned end of `kallsyms_token_index`.
    pub tokens: (usize, usize),
}

/// Offsets of the unknown blocks under one candidate order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// `kallsyms_offsets`; `kallsyms_relative_base` follows it.
    pub offsets: usize,
    pub seqs: Option<usize>,
}

/// The size of `kallsyms_offsets` with its padding.
pub fn offsets_len(count: usize) -> usize {
    align_up(4 * count)
}

fn block_len(b: Block, found: &Found) -> usize {
    match b {
        Block::Names => found.names.1 - found.names.0,
        Block::Tokens => found.tokens.1 - found.tokens.0,
        Block::Offsets => offsets_len(found.count) + 8,
        Block::Seqs => align_up(3 * found.count),
    }
}

/// Every order of `blocks`.
fn permutations(blocks: &[Block]) -> Vec<Vec<Block>> {
    if blocks.len() <= 1 {
        return vec![blocks.to_vec()];
    }
    let mut out = Vec::new();
    for (i, &first) in blocks.iter().enumerate() {
        let mut rest = blocks.to_vec();
        rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first);
            out.push(tail);
        }
    }
    out
}

/// The block orders (with and without name-order numbers) that put the found blocks where they
/// are, with the placement of the others each implies; the order is given for messages.
pub fn candidates(found: &Found, data_len: usize) -> Vec<(Vec<Block>, Placement)> {
    let mut out: Vec<(Vec<Block>, Placement)> = Vec::new();
    let with_seqs = [Block::Names, Block::Tokens, Block::Offsets, Block::Seqs];
    for order in permutations(&with_seqs)
        .into_iter()
        .chain(permutations(&with_seqs[..3]))
    {
        let before: usize = order
            .iter()
            .take_while(|&&b| b != Block::Names)
            .map(|&b| block_len(b, found))
            .sum();
        let Some(mut at) = found.names.0.checked_sub(before) else {
            continue;
        };
        let (mut tokens, mut offsets, mut seqs) = (None, None, None);
        for &b in &order {
            match b {
                Block::Names => {}
                Block::Tokens => tokens = Some(at),
                Block::Offsets => offsets = Some(at),
                Block::Seqs => seqs = Some(at),
            }
            at += block_len(b, found);
        }
        let Some(offsets) = offsets else { continue };
        let fits = |start: usize, len: usize| start.checked_add(len).is_some_and(|e| e <= data_len);
        if tokens != Some(found.tokens.0)
            || !fits(offsets, offsets_len(found.count) + 8)
            || seqs.is_some_and(|s| !fits(s, 3 * found.count))
        {
            continue;
        }
        let placement = Placement { offsets, seqs };
        if !out.iter().any(|(_, p)| *p == placement) {
            out.push((order, placement));
        }
    }
    out
}

/// A block order as the table names, for messages.
pub fn describe(order: &[Block]) -> String {
    order
        .iter()
        .map(|b| match b {
            Block::Names => "num_syms+names+markers",
            Block::Tokens => "token_table+token_index",
            Block::Offsets => "offsets+relative_base",
            Block::Seqs => "seqs_of_names",
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Addresses decoded from `kallsyms_offsets` at `at`, with the base that follows them.
pub struct Addresses {
    pub relative_base: u64,
    pub absolute_percpu: bool,
    pub addresses: Vec<u64>,
}

/// Decode the offsets at `at` for the symbols `entries` (`(type, name)` in table order), or say
/// why they are not `kallsyms_offsets` and `kallsyms_relative_base`.
///
/// With `CONFIG_KALLSYMS_ABSOLUTE_PERCPU` (detected: some offsets are negative) an offset `o >= 0`
/// is the absolute address `o` of a per-CPU symbol, which `scripts/kallsyms` gives type `A`, and
/// `o < 0` is `relative_base - 1 - o`; otherwise every address is `relative_base + (u32)o`.
/// Either way the base is the lowest relative address, so one offset is `-1` or `0`.
pub fn addresses_at(
    data: &[u8],
    at: usize,
    entries: &[(char, String)],
) -> Result<Addresses, String> {
    let count = entries.len();
    let base_at = at + offsets_len(count);
    let relative_base = u64_at(data, base_at).ok_or("kallsyms_relative_base out of range")?;
    let raw: Vec<i32> = (0..count)
        .map(|i| u32_at(data, at + 4 * i).map(|o| o as i32))
        .collect::<Option<_>>()
        .ok_or("kallsyms_offsets out of range")?;
    let absolute_percpu = raw.iter().any(|&o| o < 0);
    let addresses: Vec<u64> = raw
        .iter()
        .map(|&o| match (absolute_percpu, o >= 0) {
            (true, true) => o as u64,
            (true, false) => relative_base
                .wrapping_sub(1)
                .wrapping_sub(i64::from(o) as u64),
            (false, _) => relative_base.wrapping_add(u64::from(o as u32)),
        })
        .collect();
    if let Some(i) = addresses.windows(2).position(|w| w[0] > w[1]) {
        return Err(format!(
            "addresses not sorted (symbol {} `{}` at {:#x} follows {:#x})",
            i + 1,
            entries[i + 1].1,
            addresses[i + 1],
            addresses[i]
        ));
    }
    let lowest = if absolute_percpu { -1 } else { 0 };
    if !raw.contains(&lowest) {
        return Err(format!(
            "kallsyms_relative_base {relative_base:#x} is not the lowest relative address (no offset is {lowest})"
        ));
    }
    if absolute_percpu {
        if let Some(i) = (0..count).find(|&i| raw[i] >= 0 && entries[i].0 != 'A') {
            return Err(format!(
                "symbol {i} `{}` of type {} has an absolute (per-CPU) offset {:#x}",
                entries[i].1, entries[i].0, raw[i]
            ));
        }
    }
    Ok(Addresses {
        relative_base,
        absolute_percpu,
        addresses,
    })
}

/// `kallsyms_seqs_of_names` at `at`, or why it is not one: a permutation of the symbols that
/// lists them in name order (3-byte big-endian numbers).
pub fn seqs_at(data: &[u8], at: usize, entries: &[(char, String)]) -> Result<Vec<usize>, String> {
    let bytes = data
        .get(at..at + 3 * entries.len())
        .ok_or("kallsyms_seqs_of_names out of range")?;
    let seqs: Vec<usize> = bytes
        .chunks_exact(3)
        .map(|c| usize::from(c[0]) << 16 | usize::from(c[1]) << 8 | usize::from(c[2]))
        .collect();
    let mut seen = vec![false; entries.len()];
    for (k, &s) in seqs.iter().enumerate() {
        if s >= entries.len() || std::mem::replace(&mut seen[s], true) {
            return Err(format!(
                "kallsyms_seqs_of_names is not a permutation (entry {k} is {s})"
            ));
        }
    }
    if let Some(k) = seqs
        .windows(2)
        .position(|w| entries[w[0]].1 > entries[w[1]].1)
    {
        return Err(format!(
            "kallsyms_seqs_of_names is not in name order (`{}` before `{}`)",
            entries[seqs[k]].1,
            entries[seqs[k + 1]].1
        ));
    }
    Ok(seqs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_of_known_kernels_are_candidates() {
        // 300 symbols: offsets 1200 + 8 bytes, name numbers 900 bytes.
        let count = 300;
        let names = (0x10000, 0x10000 + 0x2000);
        let tokens_len = 0x800;
        // 6.12: names, tokens, offsets, seqs.
        let after = names.1 + tokens_len;
        let found = Found {
            count,
            names,
            tokens: (names.1, after),
        };
        let c = candidates(&found, 1 << 20);
        let placements: Vec<Placement> = c.iter().map(|(_, p)| *p).collect();
        assert!(placements.contains(&Placement {
            offsets: after,
            seqs: Some(after + 1208),
        }));
        assert!(placements.contains(&Placement {
            offsets: after,
            seqs: None,
        }));
        // ... or 6.1 without name numbers: offsets, names, tokens.
        assert!(placements.contains(&Placement {
            offsets: names.0 - 1208,
            seqs: None,
        }));
        // 6.1 with name numbers: offsets, names, seqs, tokens.
        let found = Found {
            count,
            names,
            tokens: (names.1 + 904, names.1 + 904 + tokens_len),
        };
        let c = candidates(&found, 1 << 20);
        assert!(c.iter().any(|(o, p)| *p
            == Placement {
                offsets: names.0 - 1208,
                seqs: Some(names.1),
            }
            && describe(o)
                == "offsets+relative_base, num_syms+names+markers, seqs_of_names, token_table+token_index"));
        // Tokens far from the names fit no order.
        let found = Found {
            count,
            names,
            tokens: (names.1 + 0x100000, names.1 + 0x100800),
        };
        assert!(candidates(&found, 1 << 22).is_empty());
        // Nor does a placement that runs past the data.
        let found = Found {
            count,
            names,
            tokens: (names.1, names.1 + tokens_len),
        };
        assert!(candidates(&found, names.1 + tokens_len + 100)
            .iter()
            .all(|(_, p)| p.offsets < names.0));
    }

    fn offsets_blob(offsets: &[i32], base: u64) -> Vec<u8> {
        let mut out: Vec<u8> = offsets.iter().flat_map(|o| o.to_le_bytes()).collect();
        out.resize(offsets_len(offsets.len()), 0);
        out.extend(base.to_le_bytes());
        out
    }

    fn entries(kinds: &str) -> Vec<(char, String)> {
        kinds
            .chars()
            .enumerate()
            .map(|(i, k)| (k, format!("s{i}")))
            .collect()
    }

    #[test]
    fn offsets_are_checked_against_their_base_and_types() {
        let base = 0xffff_ffff_8100_0000;
        let data = offsets_blob(&[0, 0x40, -1, -17], base);
        let a = addresses_at(&data, 0, &entries("AAtT")).unwrap();
        assert!(a.absolute_percpu);
        assert_eq!(a.addresses, [0, 0x40, base, base + 16]);
        // A per-CPU (absolute) offset is only ever written for a symbol of type A.
        let err = addresses_at(&data, 0, &entries("AttT")).err().unwrap();
        assert!(err.contains("symbol 1 `s1` of type t"), "{err}");
        // Without per-CPU symbols the base is the first address.
        let data = offsets_blob(&[0, 0x10, 0x7000_0000], base);
        let a = addresses_at(&data, 0, &entries("tTt")).unwrap();
        assert!(!a.absolute_percpu);
        assert_eq!(a.addresses, [base, base + 0x10, base + 0x7000_0000]);
        let data = offsets_blob(&[0x8, 0x10], base);
        let err = addresses_at(&data, 0, &entries("tt")).err().unwrap();
        assert!(err.contains("not the lowest"), "{err}");
        // Too short to hold the base.
        assert!(addresses_at(&data[..12], 0, &entries("tt")).is_err());
    }

    #[test]
    fn name_numbers_must_list_the_names_sorted() {
        let e: Vec<(char, String)> = ["b", "a", "c", "a"]
            .iter()
            .map(|n| ('t', n.to_string()))
            .collect();
        let data = [0, 0, 1, 0, 0, 3, 0, 0, 0, 0, 0, 2];
        assert_eq!(seqs_at(&data, 0, &e).unwrap(), [1, 3, 0, 2]);
        let swapped = [0, 0, 0, 0, 0, 1, 0, 0, 3, 0, 0, 2];
        assert!(seqs_at(&swapped, 0, &e).unwrap_err().contains("name order"));
        let repeated = [0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 2];
        assert!(seqs_at(&repeated, 0, &e)
            .unwrap_err()
            .contains("permutation"));
        assert!(seqs_at(&data[..11], 0, &e).is_err());
    }
}
