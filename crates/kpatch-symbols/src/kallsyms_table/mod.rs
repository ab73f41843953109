//! The kallsyms tables that a kernel image carries in `.rodata` (`scripts/kallsyms` output),
//! found by their shape in an image that has no symbol table, such as the vmlinux decompressed from
//! Debian's vmlinuz.
//!
//! The layout read here is the x86_64 one of 6.1 with `CONFIG_KALLSYMS_BASE_RELATIVE`, every table
//! 8-byte aligned: `kallsyms_offsets` (one `s32` per symbol), `kallsyms_relative_base` (`u64`),
//! `kallsyms_num_syms` (`u32`), `kallsyms_names`, `kallsyms_markers` (`u32` or `u64`: the offset in
//! the names of every 256th entry), optionally `kallsyms_seqs_of_names` (3-byte big-endian symbol
//! numbers in name order), then `kallsyms_token_table` and `kallsyms_token_index`.
//!
//! Addresses: with `CONFIG_KALLSYMS_ABSOLUTE_PERCPU` (detected: some offsets are negative) an offset
//! `o >= 0` is the absolute address `o` and `o < 0` is `relative_base - 1 - o`; otherwise every
//! address is `relative_base + (u32)o`.

mod names;
mod tokens;

use std::path::Path;

use object::{Object, ObjectSection};

use crate::model::{KernelSymbol, KernelSymbols, VMLINUX};
use crate::Error;

const ALIGN: usize = 8;
const MAX_SYMS: u32 = 4_000_000;

/// Where each table was found, as offsets into the searched data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub offsets: usize,
    pub relative_base: usize,
    pub num_syms: usize,
    pub names: usize,
    pub markers: usize,
    /// Width of one marker in bytes (4 or 8).
    pub marker_width: usize,
    pub seqs_of_names: Option<usize>,
    pub token_table: usize,
    pub token_index: usize,
}

/// A decoded kallsyms table.
#[derive(Debug, Clone)]
pub struct KallsymsTable {
    pub layout: Layout,
    pub relative_base: u64,
    pub absolute_percpu: bool,
    /// `(address, type letter, name)` in table order.
    pub entries: Vec<(u64, char, String)>,
    /// Symbol numbers in name order, when the table has `kallsyms_seqs_of_names`.
    pub seqs_of_names: Option<Vec<usize>>,
}

fn align_up(v: usize) -> usize {
    v.div_ceil(ALIGN) * ALIGN
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    let b = data.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

impl KallsymsTable {
    /// Find and decode the tables in `data` (a `.rodata` section's contents, or a whole image);
    /// `file` names it in errors.
    pub fn find(data: &[u8], file: &str) -> Result<Self, Error> {
        let token_sets = tokens::find(data, ALIGN);
        if token_sets.is_empty() {
            return Err(Error::KallsymsNotFound {
                file: file.to_string(),
                reason: "no kallsyms_token_table/kallsyms_token_index pair".to_string(),
            });
        }
        let mut last_reason = String::new();
        for (table_at, index_at, toks) in &token_sets {
            match Self::find_with_tokens(data, *table_at, *index_at, toks) {
                Ok(t) => return Ok(t),
                Err(reason) => last_reason = reason,
            }
        }
        Err(Error::KallsymsNotFound {
            file: file.to_string(),
            reason: last_reason,
        })
    }

    fn find_with_tokens(
        data: &[u8],
        token_table: usize,
        token_index: usize,
        toks: &tokens::Tokens,
    ) -> Result<Self, String> {
        let mut at = 0;
        while at + 8 <= data.len() {
            let here = at;
            at += ALIGN;
            let Some(n) = u32_at(data, here) else { break };
            if n == 0 || n > MAX_SYMS || u32_at(data, here + 4) != Some(0) {
                continue;
            }
            let count = n as usize;
            let names_at = here + ALIGN;
            if count > data.len() - names_at {
                continue;
            }
            let Some(names) = names::decode(data, names_at, count, toks) else {
                continue;
            };
            let markers_at = align_up(names_at + names.len);
            let Some(marker_width) = markers_match(data, markers_at, &names.markers) else {
                continue;
            };
            let markers_end = markers_at + names.markers.len() * marker_width;
            // The names, markers and (when present) name-ordered numbers lie end to end before
            // the token table.
            let after_markers = align_up(markers_end);
            let seqs_of_names = if after_markers == token_table {
                None
            } else if align_up(after_markers + 3 * count) == token_table {
                match seqs_in_name_order(data, after_markers, &names.entries) {
                    Some(seqs) => Some(seqs),
                    None => continue,
                }
            } else {
                continue;
            };
            // This is kallsyms_num_syms; everything below is checked, not searched for.
            let base_at = here
                .checked_sub(ALIGN)
                .ok_or("kallsyms_num_syms at the start of the data: no kallsyms_relative_base")?;
            let relative_base =
                u64_at(data, base_at).ok_or("kallsyms_relative_base out of range")?;
            let offsets_at = base_at
                .checked_sub(align_up(4 * count))
                .ok_or("kallsyms_offsets would start before the data")?;
            let raw: Vec<i32> = (0..count)
                .map(|i| u32_at(data, offsets_at + 4 * i).unwrap_or(0) as i32)
                .collect();
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
                    "kallsyms_num_syms ({count}) and kallsyms_names found at {here:#x}, but the addresses \
                     before them are not sorted (symbol {} `{}` at {:#x} follows {:#x}): unknown layout",
                    i + 1,
                    names.entries[i + 1].1,
                    addresses[i + 1],
                    addresses[i]
                ));
            }
            let entries = addresses
                .into_iter()
                .zip(names.entries)
                .map(|(a, (k, n))| (a, k, n))
                .collect();
            return Ok(KallsymsTable {
                layout: Layout {
                    offsets: offsets_at,
                    relative_base: base_at,
                    num_syms: here,
                    names: names_at,
                    markers: markers_at,
                    marker_width,
                    seqs_of_names: seqs_of_names.as_ref().map(|_| after_markers),
                    token_table,
                    token_index,
                },
                relative_base,
                absolute_percpu,
                entries,
                seqs_of_names,
            });
        }
        Err(
            "no kallsyms_num_syms followed by kallsyms_names and matching kallsyms_markers"
                .to_string(),
        )
    }

    /// The symbols, all of object `vmlinux`, numbered in name-table order when there is one.
    pub fn into_symbols(self, file: &str) -> KernelSymbols {
        let symbols: Vec<KernelSymbol> = self
            .entries
            .into_iter()
            .map(|(a, k, n)| KernelSymbol::new(a, k, n, VMLINUX))
            .collect();
        match self.seqs_of_names {
            Some(order) => KernelSymbols::with_position_order(file, symbols, &order),
            None => KernelSymbols::new(file, symbols),
        }
    }
}

/// The marker width (4 or 8) with which the array at `at` holds exactly `expected`.
fn markers_match(data: &[u8], at: usize, expected: &[usize]) -> Option<usize> {
    for width in [4usize, 8] {
        let ok = expected.iter().enumerate().all(|(k, &want)| {
            let got = if width == 4 {
                u32_at(data, at + 4 * k).map(u64::from)
            } else {
                u64_at(data, at + 8 * k)
            };
            got == Some(want as u64)
        });
        if ok {
            return Some(width);
        }
    }
    None
}

/// `kallsyms_seqs_of_names` at `at`, if there is a valid one: a permutation of the symbols that
/// lists them in name order.
fn seqs_in_name_order(data: &[u8], at: usize, entries: &[(char, String)]) -> Option<Vec<usize>> {
    let bytes = data.get(at..at + 3 * entries.len())?;
    let seqs: Vec<usize> = bytes
        .chunks_exact(3)
        .map(|c| usize::from(c[0]) << 16 | usize::from(c[1]) << 8 | usize::from(c[2]))
        .collect();
    let mut seen = vec![false; entries.len()];
    for &s in &seqs {
        if s >= entries.len() || std::mem::replace(&mut seen[s], true) {
            return None;
        }
    }
    let sorted = seqs.windows(2).all(|w| entries[w[0]].1 <= entries[w[1]].1);
    sorted.then_some(seqs)
}

/// Read a kernel image (an uncompressed vmlinux) and decode the kallsyms tables it carries.
pub fn read_kallsyms_image(path: &Path) -> Result<KernelSymbols, Error> {
    let data = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_kallsyms_image(&data, &path.display().to_string())
}

/// The embedded kallsyms table of an image: its `.rodata` when it is an ELF file that has one,
/// else the whole data.
pub fn parse_kallsyms_image(data: &[u8], file: &str) -> Result<KernelSymbols, Error> {
    Ok(find_in_image(data, file)?.into_symbols(file))
}

/// Like [`parse_kallsyms_image`], keeping the table details.
pub fn find_in_image(data: &[u8], file: &str) -> Result<KallsymsTable, Error> {
    if let Ok(elf) = object::File::parse(data) {
        if let Some(rodata) = elf.section_by_name(".rodata") {
            let bytes = rodata.data().map_err(|e| Error::Elf {
                file: file.to_string(),
                reason: format!(".rodata: {e}"),
            })?;
            return KallsymsTable::find(bytes, &format!("{file} (.rodata)"));
        }
    }
    KallsymsTable::find(data, file)
}

#[cfg(test)]
mod tests;
