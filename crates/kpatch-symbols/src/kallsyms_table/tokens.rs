//! `kallsyms_token_table` and `kallsyms_token_index`: 256 NUL-terminated strings, and the 256
//! 16-bit offsets of those strings. Every byte of a compressed name stands for one token.

/// The 256 tokens, decoded.
#[derive(Debug, Clone)]
pub struct Tokens {
    tokens: Vec<Vec<u8>>,
}

impl Tokens {
    pub fn expand(&self, byte: u8) -> &[u8] {
        &self.tokens[usize::from(byte)]
    }
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    data.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
}

/// The 256 token offsets at `at`, when they look like a token index: they start at 0 and grow by
/// at least 2 (a non-empty token and its NUL) each.
pub fn index_at(data: &[u8], at: usize) -> Option<[u16; 256]> {
    let mut index = [0u16; 256];
    if u16_at(data, at)? != 0 {
        return None;
    }
    for (i, slot) in index.iter_mut().enumerate().skip(1) {
        let v = u16_at(data, at + 2 * i)?;
        let prev = u16_at(data, at + 2 * (i - 1))?;
        if v < prev.checked_add(2)? {
            return None;
        }
        *slot = v;
    }
    Some(index)
}

/// The token table that `index` describes, starting at `start`, if the strings there fit it.
pub fn table_at(data: &[u8], start: usize, index: &[u16; 256], end_limit: usize) -> Option<Tokens> {
    let mut tokens = Vec::with_capacity(256);
    for i in 0..256 {
        let from = start + usize::from(index[i]);
        // The NUL of token i is the byte before token i + 1 (for the last one: before the index).
        let nul_limit = if i < 255 {
            start + usize::from(index[i + 1])
        } else {
            end_limit
        };
        let slice = data.get(from..nul_limit.min(data.len()))?;
        let len = slice.iter().position(|&b| b == 0)?;
        if len == 0 || (i < 255 && from + len + 1 != nul_limit) {
            return None;
        }
        tokens.push(slice[..len].to_vec());
    }
    Some(Tokens { tokens })
}

/// The token table and index in `data`: `(table offset, index offset, tokens)` for each place where
/// an index is preceded, within alignment padding, by the strings it describes.
pub fn find(data: &[u8], align: usize) -> Vec<(usize, usize, Tokens)> {
    let mut found = Vec::new();
    let mut at = 0;
    while at + 512 <= data.len() {
        if data[at] == 0 && data[at + 1] == 0 {
            if let Some(index) = index_at(data, at) {
                let last = usize::from(index[255]);
                // The last token is at least one byte plus NUL; padding is below `align`; no token is
                // longer than a symbol name.
                let newest = at.checked_sub(last + 2);
                if let Some(newest) = newest {
                    let mut start = newest - newest % align;
                    let oldest = newest.saturating_sub(512 + align);
                    loop {
                        if let Some(tokens) = table_at(data, start, &index, at) {
                            let end = start + last + tokens.tokens[255].len() + 1;
                            if at - end < align {
                                found.push((start, at, tokens));
                            }
                            break;
                        }
                        if start < oldest + align {
                            break;
                        }
                        start -= align;
                    }
                }
            }
        }
        at += align;
    }
    found
}
