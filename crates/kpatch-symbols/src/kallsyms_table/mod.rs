//! The kallsyms tables that a kernel image carries in `.rodata` (`scripts/kallsyms` output),
//! found by their shape in an image that has no symbol table, such as the vmlinux decompressed from
//! Debian's vmlinuz.
//!
//! The tables are x86_64 ones with `CONFIG_KALLSYMS_BASE_RELATIVE` (6.12's `scripts/kallsyms`
//! writes no other kind), every table 8-byte aligned: `kallsyms_num_syms` (`u32`),
//! `kallsyms_names`, `kallsyms_markers` (the offset in the names of every 256th entry: `u32` in
//! 6.1 and 6.12, `u64` in kernels that wrote them as `PTR`), `kallsyms_token_table` and
//! `kallsyms_token_index`, `kallsyms_offsets` (one `s32` per symbol) and `kallsyms_relative_base`
//! (`u64`), and (in 6.1.y as Debian ships it, and 6.12) `kallsyms_seqs_of_names` (3-byte
//! big-endian symbol numbers in name order). Their order differs between kernels (6.1's and
//! 6.12's are in `layout.rs`), so it is found, not assumed: the names and the token table are
//! located by their contents, and the other tables are looked for at every place an order of the
//! tables allows. A reading is accepted only when its addresses are sorted, its base is the lowest
//! relative address, its per-CPU entries are of type `A` and its name-order numbers (when read)
//! list the names sorted, and only when it is the one reading that passes. In a linked image its
//! addresses must also lie within the image's sections ([`find_in_image`]).
//!
//! Addresses: with `CONFIG_KALLSYMS_ABSOLUTE_PERCPU` (detected: some offsets are negative; x86_64
//! 6.1 and 6.12 have it) an offset `o >= 0` is the absolute address `o` and `o < 0` is
//! `relative_base - 1 - o`; otherwise every address is `relative_base + (u32)o`.

mod layout;
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
    ///
    /// Every place where the names decode and the markers index them, next to a token table, is
    /// tried with every order of the other tables (see `layout.rs`); exactly one reading must pass
    /// the checks, or the data is refused.
    pub fn find(data: &[u8], file: &str) -> Result<Self, Error> {
        let not_found = |reason: String| Error::KallsymsNotFound {
            file: file.to_string(),
            reason,
        };
        let token_sets = tokens::find(data, ALIGN);
        if token_sets.is_empty() {
            return Err(not_found(
                "no kallsyms_token_table/kallsyms_token_index pair".to_string(),
            ));
        }
        let mut found: Vec<KallsymsTable> = Vec::new();
        let mut refusals: Vec<String> = Vec::new();
        for (table_at, index_at, toks) in &token_sets {
            let (f, r) = Self::find_with_tokens(data, *table_at, *index_at, toks);
            found.extend(f);
            refusals.extend(r);
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 if refusals.is_empty() => Err(not_found(
                "no kallsyms_num_syms followed by kallsyms_names and matching kallsyms_markers \
                 next to the token table"
                    .to_string(),
            )),
            0 => Err(not_found(refusals.join("; "))),
            _ => Err(not_found(format!(
                "{} different readings fit: {}",
                found.len(),
                found
                    .iter()
                    .map(|t| format!("{:?}", t.layout))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The readings of the tables around the token table at `token_table` that pass the checks,
    /// and why the near misses (names and markers found, no order of the rest fits) failed.
    fn find_with_tokens(
        data: &[u8],
        token_table: usize,
        token_index: usize,
        toks: &tokens::Tokens,
    ) -> (Vec<Self>, Vec<String>) {
        let tokens_end = align_up(token_index + 2 * 256);
        let (mut found, mut refusals) = (Vec::new(), Vec::new());
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
            let found_blocks = layout::Found {
                count,
                names: (here, align_up(markers_end)),
                tokens: (token_table, tokens_end),
            };
            let candidates = layout::candidates(&found_blocks, data.len());
            if candidates.is_empty() {
                continue;
            }
            // kallsyms_num_syms, kallsyms_names and kallsyms_markers are here, next to the token
            // table; the other tables must be where one of the candidate orders puts them.
            let mut fits: Vec<(layout::Placement, layout::Addresses, Option<Vec<usize>>)> =
                Vec::new();
            let mut why = Vec::new();
            for (order, placement) in &candidates {
                let checked = layout::addresses_at(data, placement.offsets, &names.entries)
                    .and_then(|a| match placement.seqs {
                        Some(s) => layout::seqs_at(data, s, &names.entries).map(|q| (a, Some(q))),
                        None => Ok((a, None)),
                    });
                match checked {
                    Ok((a, q)) => fits.push((*placement, a, q)),
                    Err(e) => why.push(format!("{}: {e}", layout::describe(order))),
                }
            }
            // Orders that differ only in whether the name-order numbers are there agree on the
            // addresses; the one that found the numbers is the reading.
            let offsets_found: Vec<usize> = fits.iter().map(|f| f.0.offsets).collect();
            if offsets_found.iter().any(|&o| o != offsets_found[0]) {
                refusals.push(format!(
                    "kallsyms_num_syms ({count}) and kallsyms_names found at {here:#x}, but \
                     kallsyms_offsets fits at several places ({offsets_found:#x?}): unknown layout"
                ));
                continue;
            }
            let Some((placement, addrs, seqs)) = fits.into_iter().max_by_key(|f| f.2.is_some())
            else {
                refusals.push(format!(
                    "kallsyms_num_syms ({count}) and kallsyms_names found at {here:#x}, but no \
                     order of the other tables fits: unknown layout ({})",
                    why.join("; ")
                ));
                continue;
            };
            let entries = addrs
                .addresses
                .into_iter()
                .zip(names.entries)
                .map(|(a, (k, n))| (a, k, n))
                .collect();
            found.push(KallsymsTable {
                layout: Layout {
                    offsets: placement.offsets,
                    relative_base: placement.offsets + layout::offsets_len(count),
                    num_syms: here,
                    names: names_at,
                    markers: markers_at,
                    marker_width,
                    seqs_of_names: placement.seqs,
                    token_table,
                    token_index,
                },
                relative_base: addrs.relative_base,
                absolute_percpu: addrs.absolute_percpu,
                entries,
                seqs_of_names: seqs,
            });
        }
        (found, refusals)
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

impl Layout {
    /// The tables' names in the order they lie in the data.
    pub fn order(&self) -> Vec<&'static str> {
        let mut tables = vec![
            (self.offsets, "kallsyms_offsets"),
            (self.relative_base, "kallsyms_relative_base"),
            (self.num_syms, "kallsyms_num_syms"),
            (self.names, "kallsyms_names"),
            (self.markers, "kallsyms_markers"),
            (self.token_table, "kallsyms_token_table"),
            (self.token_index, "kallsyms_token_index"),
        ];
        if let Some(s) = self.seqs_of_names {
            tables.push((s, "kallsyms_seqs_of_names"));
        }
        tables.sort();
        tables.into_iter().map(|(_, name)| name).collect()
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

/// Like [`parse_kallsyms_image`], keeping the table details. In a linked image (a vmlinux, not
/// a relocatable object) the decoded addresses must also fall within its allocated sections.
pub fn find_in_image(data: &[u8], file: &str) -> Result<KallsymsTable, Error> {
    if let Ok(elf) = object::File::parse(data) {
        if let Some(rodata) = elf.section_by_name(".rodata") {
            let bytes = rodata.data().map_err(|e| Error::Elf {
                file: file.to_string(),
                reason: format!(".rodata: {e}"),
            })?;
            let file = format!("{file} (.rodata)");
            let table = KallsymsTable::find(bytes, &file)?;
            if elf.kind() == object::ObjectKind::Executable {
                within_sections(&table, &elf)
                    .map_err(|reason| Error::KallsymsCorrupt { file, reason })?;
            }
            return Ok(table);
        }
    }
    KallsymsTable::find(data, file)
}

/// Whether the relative addresses of `table` lie within the span of `elf`'s allocated sections
/// (those linked at a non-zero address: x86_64's per-CPU section is at 0), its base inside one.
fn within_sections(table: &KallsymsTable, elf: &object::File<'_>) -> Result<(), String> {
    let spans: Vec<(u64, u64)> = elf
        .sections()
        .filter(|s| s.address() != 0 && s.size() != 0)
        .filter(|s| match s.flags() {
            object::SectionFlags::Elf { sh_flags, .. } => {
                sh_flags.0 & object::elf::SHF_ALLOC.0 != 0
            }
            _ => true,
        })
        .map(|s| (s.address(), s.address().saturating_add(s.size())))
        .collect();
    let base = table.relative_base;
    if !spans.iter().any(|&(lo, hi)| lo <= base && base < hi) {
        return Err(format!(
            "kallsyms_relative_base {base:#x} is in none of the image's sections"
        ));
    }
    let end = spans.iter().map(|s| s.1).max().unwrap_or(0);
    match table.entries.iter().rev().find(|e| e.0 >= base) {
        Some((a, _, n)) if *a > end => Err(format!(
            "symbol `{n}` at {a:#x} lies past the image's last section (ending at {end:#x})"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
