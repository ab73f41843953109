//! `kallsyms_names`: one entry per symbol, a length (one byte, or two when the first has bit 7 set:
//! low 7 bits first, then the next 8 bits) followed by that many token bytes. The expansion's
//! first character is the symbol's type letter, the rest its name.

use super::tokens::Tokens;

/// Decoded names, and where every 256th entry starts (what `kallsyms_markers` must hold).
pub struct Names {
    /// `(type letter, name)` per symbol, in table order.
    pub entries: Vec<(char, String)>,
    /// Offset (from the start of the names) of entries 0, 256, 512, ...
    pub markers: Vec<usize>,
    /// Offset just past the last entry.
    pub len: usize,
}

/// `KSYM_NAME_LEN` of 6.1, the longest name kallsyms stores.
const MAX_NAME: usize = 512;

/// Type letters that `scripts/kallsyms` writes (nm's, less those it never keeps).
const TYPE_LETTERS: &[u8] = b"AaBbCDdGgRrSsTtVvWwu";

fn valid_name_byte(b: u8) -> bool {
    b.is_ascii_graphic()
}

/// Decode `count` entries starting at `data[start..]`; `None` at the first thing that is not a
/// well-formed entry.
pub fn decode(data: &[u8], start: usize, count: usize, tokens: &Tokens) -> Option<Names> {
    let mut entries = Vec::with_capacity(count.min(4096));
    let mut markers = Vec::with_capacity(count.min(4096) / 256 + 1);
    let mut at = start;
    let mut buf: Vec<u8> = Vec::with_capacity(64);
    for i in 0..count {
        if i % 256 == 0 {
            markers.push(at - start);
        }
        let first = *data.get(at)?;
        let (len, header) = if first & 0x80 != 0 {
            let second = *data.get(at + 1)?;
            (usize::from(first & 0x7f) | usize::from(second) << 7, 2)
        } else {
            (usize::from(first), 1)
        };
        if len == 0 || len > MAX_NAME {
            return None;
        }
        let body = data.get(at + header..at + header + len)?;
        buf.clear();
        for &b in body {
            buf.extend_from_slice(tokens.expand(b));
        }
        let (&kind, name) = buf.split_first()?;
        if !TYPE_LETTERS.contains(&kind)
            || name.is_empty()
            || name.len() > MAX_NAME
            || !name.iter().all(|&b| valid_name_byte(b))
        {
            return None;
        }
        // Only graphic ASCII was accepted above, so this cannot fail.
        let name = String::from_utf8(name.to_vec()).ok()?;
        entries.push((char::from(kind), name));
        at += header + len;
    }
    Some(Names {
        entries,
        markers,
        len: at - start,
    })
}
