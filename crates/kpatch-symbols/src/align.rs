//! How well a stretch of the kernel's symbols lines up with a translation unit's symbols.
//!
//! A unit's code lies in the image in the order the compiler emitted it, which is the order of
//! the unit's object file; its data do too, in their own sections. So the unit's symbols that
//! surround a candidate occurrence must appear around it in the same order. The measure is a
//! longest common subsequence (foreign symbols in between are skipped), weighted so that names
//! occurring once in the object (surely the unit's own) count before names many units share.

/// Weight of a match on a name that occurs once in the object.
pub(crate) const DISTINCTIVE: u64 = 1 << 24;

/// Largest total weight of a common subsequence of `unit` and `kernel`, where matching
/// `kernel[j]` is worth `weights[j]`.
pub(crate) fn weighted_lcs(unit: &[&str], kernel: &[&str], weights: &[u64]) -> u64 {
    let mut prev = vec![0u64; kernel.len() + 1];
    let mut cur = vec![0u64; kernel.len() + 1];
    for u in unit {
        for j in 1..=kernel.len() {
            let mut best = prev[j].max(cur[j - 1]);
            if *u == kernel[j - 1] {
                best = best.max(prev[j - 1] + weights[j - 1]);
            }
            cur[j] = best;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[kernel.len()]
}

/// `(distinctive matches, all matches)` of a [`weighted_lcs`] total.
pub(crate) fn split(total: u64) -> (usize, usize) {
    // A distinctive match adds DISTINCTIVE + 1, a shared one 1: the remainder counts them all.
    (
        (total / DISTINCTIVE) as usize,
        (total % DISTINCTIVE) as usize,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_matters_and_distinctive_names_weigh_more() {
        let unit = ["a", "b", "c", "d"];
        assert_eq!(weighted_lcs(&unit, &["a", "x", "b", "c"], &[1, 1, 1, 1]), 3);
        assert_eq!(weighted_lcs(&unit, &["d", "c", "b", "a"], &[1, 1, 1, 1]), 1);
        // Prefer one distinctive match over two shared ones.
        let w = [1, 1, DISTINCTIVE + 1];
        let total = weighted_lcs(&["a", "b", "d"], &["b", "a", "d"], &w);
        assert_eq!(split(total), (1, 2));
        assert_eq!(weighted_lcs(&[], &["a"], &[1]), 0);
    }
}
