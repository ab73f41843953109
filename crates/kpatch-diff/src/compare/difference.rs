//! Where a changed section first differs from its twin, for the report: the first instruction
//! that differs, found on instruction boundaries, and what differs in it (its bytes, or where a
//! relocation in it points, compared as [`super::compare_sections`] compares them).

use super::{alternatives_aux, rela_equal, O, P};
use crate::index::{OrigSec, PatchedSec};
use crate::kelf::Kelf;
use crate::Differs;
use kpatch_elf::Rela;

/// The first difference of a section from its twin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FirstDifference {
    /// Where the instruction starts, in the section.
    pub offset: u64,
    pub differs: Differs,
    /// The original's instruction bytes or relocation target, and the patched one's.
    pub was: String,
    pub now: String,
}

/// What stands for the side of a difference that has nothing there.
const NOTHING: &str = "nothing";

/// The first instruction of patched section `sp` that differs from original `so`: its bytes,
/// or its relocations (one missing, or pointing elsewhere). An instruction that differs only as
/// a `__LINE__` load is passed over while a later one differs too. `None` when no instruction
/// differs (the sections differ in their size or flags only).
pub(crate) fn first_difference(
    o: &O,
    p: &P,
    so: OrigSec,
    sp: PatchedSec,
) -> Option<FirstDifference> {
    let (od, pd) = (&o.sec(so).data, &p.sec(sp).data);
    let in_code = p.sec(sp).is_text();
    let aux = alternatives_aux(p);
    let (orelas, prelas) = (sorted_relas(o, so), sorted_relas(p, sp));
    // The relocations (sorted by offset) in [lo, hi).
    fn in_range(relas: &[Rela], lo: usize, hi: usize) -> &[Rela] {
        let from = relas.partition_point(|r| r.r_offset < lo as u64);
        let to = relas.partition_point(|r| r.r_offset < hi as u64);
        &relas[from..to.max(from)]
    }
    // The length of the instruction at `at` (what is left, where it does not decode).
    let insn = |data: &[u8], at: usize| -> usize {
        if !in_code {
            return data.len() - at;
        }
        p.arch.insn_len(&data[at..]).unwrap_or(data.len() - at)
    };
    let mut line_move = None;
    let mut at = 0usize;
    while at < pd.len() {
        let plen = insn(pd, at);
        if at >= od.len() {
            return Some(FirstDifference {
                offset: at as u64,
                differs: Differs::Length,
                was: NOTHING.into(),
                now: hex(&pd[at..at + plen]),
            });
        }
        let olen = insn(od, at);
        let (ob, pb) = (&od[at..at + olen], &pd[at..at + plen]);
        let (or, pr) = (
            in_range(&orelas, at, at + olen),
            in_range(&prelas, at, at + plen),
        );
        // Both have relocations at the same places, one of which points elsewhere: that is the
        // difference, whatever the bytes. Otherwise the bytes, with what they reference.
        let paired =
            or.len() == pr.len() && or.iter().zip(pr).all(|(a, b)| a.r_offset == b.r_offset);
        let moved = or
            .iter()
            .zip(pr)
            .find(|(a, b)| !rela_equal(o, p, a, b, in_code, aux));
        if let (true, Some((a, b))) = (paired, moved) {
            let (was, now) = references(o, a, p, b, in_code);
            return Some(FirstDifference {
                offset: at as u64,
                differs: Differs::Relocation,
                was,
                now,
            });
        }
        if ob != pb || !paired {
            let found = FirstDifference {
                offset: at as u64,
                differs: if ob != pb {
                    Differs::Bytes
                } else {
                    Differs::Relocation
                },
                was: instruction(o, ob, or, in_code),
                now: instruction(p, pb, pr, in_code),
            };
            if paired && in_code && p.arch.is_line_number_load(ob) && p.arch.is_line_number_load(pb)
            {
                line_move.get_or_insert(found);
            } else {
                return Some(found);
            }
        }
        at += plen;
    }
    if od.len() > pd.len() {
        let olen = insn(od, pd.len());
        return Some(FirstDifference {
            offset: pd.len() as u64,
            differs: Differs::Length,
            was: hex(&od[pd.len()..pd.len() + olen]),
            now: NOTHING.into(),
        });
    }
    line_move
}

fn sorted_relas<S>(k: &Kelf<S>, sec: crate::index::Sec<S>) -> Vec<Rela> {
    let mut v = k.rela_of[sec]
        .map(|r| k.relas(r).to_vec())
        .unwrap_or_default();
    v.sort_by_key(|r| r.r_offset);
    v
}

/// Bytes as `objdump -d` shows them: `48 89 c7`.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// An instruction's bytes and what its relocations point at: `48 8b 05 00 00 00 00
/// <jiffies-0x4>`; `nothing` for none.
fn instruction<S>(k: &Kelf<S>, bytes: &[u8], relas: &[Rela], in_code: bool) -> String {
    if bytes.is_empty() {
        return NOTHING.into();
    }
    let mut text = hex(bytes);
    for r in relas {
        text.push_str(&format!(" <{}>", reference(k, r, in_code, None)));
    }
    text
}

/// What two relocations point at, a string told from the other by where they first differ.
fn references(o: &O, a: &Rela, p: &P, b: &Rela, in_code: bool) -> (String, String) {
    let skip = match (o.rela_string(a, in_code), p.rela_string(b, in_code)) {
        (Some(x), Some(y)) => x.iter().zip(y).take_while(|(c, d)| c == d).count(),
        _ => 0,
    };
    let (was, now) = (
        reference(o, a, in_code, Some(skip)),
        reference(p, b, in_code, Some(skip)),
    );
    if was == now {
        // The same name: an object compared by its contents (a switch table).
        (was, format!("{now} (other contents)"))
    } else {
        (was, now)
    }
}

/// What a relocation points at, as a reviewer reads it: a string by its text (from some chars
/// before `from`, where two strings first differ), anything else as `symbol+0x10` (objdump's
/// way).
fn reference<S>(k: &Kelf<S>, r: &Rela, in_code: bool, from: Option<usize>) -> String {
    if let Some(s) = k.rela_string(r, in_code) {
        const MAX: usize = 40;
        const BEFORE: usize = 8;
        let start = from.unwrap_or(0).saturating_sub(BEFORE);
        let start = if start < BEFORE { 0 } else { start };
        let text = String::from_utf8_lossy(&s[start.min(s.len())..]);
        let head = if start > 0 { "..." } else { "" };
        return if text.chars().count() > MAX {
            let cut: String = text.chars().take(MAX).collect();
            format!("{head}{cut:?}...")
        } else {
            format!("{head}{text:?}")
        };
    }
    let name = k.sym_name(k.target(r));
    match r.r_addend {
        0 => name.to_string(),
        a if a < 0 => format!("{name}-{:#x}", a.unsigned_abs()),
        a => format!("{name}+{a:#x}"),
    }
}
