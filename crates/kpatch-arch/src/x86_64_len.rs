//! Instruction lengths for the common x86_64 encodings, without a decoder's tables.
//!
//! iced-x86 builds its decoder tables the first time it decodes (about a million instructions
//! of set-up, a third of a small diff as a process). Kernel C code is almost entirely the
//! one-byte and `0F` opcode maps with ModRM, SIB, displacement and immediate; [`length`] reads
//! those and answers `None` for anything else (VEX, EVEX, x87, SSE, `0F 38`/`0F 3A`, `LOCK`,
//! and every encoding whose validity depends on details iced knows better), and then iced
//! decides. A test compares it with iced on every instruction of the kpatch corpus.

/// Legacy prefixes it reads.
fn is_prefix(b: u8) -> bool {
    matches!(
        b,
        0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3
    )
}

/// Whether `LOCK` is valid on this instruction: a read-modify-write of memory.
fn lockable(two: bool, op: u8, modrm: u8) -> bool {
    let reg = (modrm >> 3) & 7;
    if modrm >> 6 == 3 {
        return false;
    }
    if two {
        return match op {
            0xab | 0xb3 | 0xbb | 0xb0 | 0xb1 | 0xc0 | 0xc1 => true,
            0xba => reg >= 5,
            _ => false,
        };
    }
    match op {
        0x00..=0x35 => op & 7 <= 1 && op & 0x38 != 0x38,
        0x80 | 0x81 | 0x83 => reg != 7,
        0x86 | 0x87 => true,
        0xf6 | 0xf7 => reg == 2 || reg == 3,
        0xfe | 0xff => reg <= 1,
        _ => false,
    }
}

/// What follows an opcode.
#[derive(Clone, Copy)]
enum Operands {
    Bare,
    /// A ModRM byte (with its SIB and displacement), then `imm` bytes of immediate.
    ModRm {
        imm: Imm,
    },
    /// Only an immediate.
    Only(Imm),
}

#[derive(Clone, Copy)]
enum Imm {
    No,
    B1,
    B2,
    B3,
    /// 2 with a `66` prefix, else 4 (REX.W keeps 4).
    Z,
    /// `B8+r`: 8 with REX.W, else as `Z`.
    V,
}

/// The operands of a one-byte opcode whose length does not depend on ModRM's `reg`, or
/// `None` when iced must decide.
fn one_byte(op: u8, modrm: Option<u8>, has66: bool) -> Option<Operands> {
    use Imm::*;
    use Operands::*;
    let reg = modrm.map(|m| (m >> 3) & 7);
    let mod3 = modrm.is_some_and(|m| m >> 6 == 3);
    Some(match op {
        // ALU: Eb,Gb / Ev,Gv / Gb,Eb / Gv,Ev ; AL,Ib ; eAX,Iz
        0x00..=0x3f if op & 7 <= 3 => ModRm { imm: No },
        0x00..=0x3f if op & 7 == 4 => Only(B1),
        0x00..=0x3f if op & 7 == 5 => Only(Z),
        0x50..=0x5f => Bare,
        0x63 => ModRm { imm: No },
        0x68 => Only(Z),
        0x69 => ModRm { imm: Z },
        0x6a => Only(B1),
        0x6b => ModRm { imm: B1 },
        0x6c..=0x6f => Bare,
        0x70..=0x7f => Only(B1),
        0x80 | 0x83 => ModRm { imm: B1 },
        0x81 => ModRm { imm: Z },
        0x84..=0x8b => ModRm { imm: No },
        0x8d if !mod3 => ModRm { imm: No },
        0x8f if reg == Some(0) => ModRm { imm: No },
        0x90..=0x99 | 0x9b..=0x9f => Bare,
        0xa4..=0xa7 | 0xaa..=0xaf => Bare,
        0xa8 => Only(B1),
        0xa9 => Only(Z),
        0xb0..=0xb7 => Only(B1),
        0xb8..=0xbf => Only(V),
        0xc0 | 0xc1 if reg != Some(6) => ModRm { imm: B1 },
        0xc2 | 0xca => Only(B2),
        0xc3 | 0xc9 | 0xcb | 0xcc | 0xcf => Bare,
        0xc6 if reg == Some(0) => ModRm { imm: B1 },
        0xc7 if reg == Some(0) => ModRm { imm: Z },
        0xc8 => Only(B3),
        0xcd => Only(B1),
        0xd0..=0xd3 if reg != Some(6) => ModRm { imm: No },
        0xd7 => Bare,
        0xe0..=0xe7 => Only(B1),
        0xe8 | 0xe9 if !has66 => Only(Z),
        0xeb => Only(B1),
        0xec..=0xef | 0xf1 | 0xf4 | 0xf5 | 0xf8..=0xfd => Bare,
        0xf6 if reg == Some(0) => ModRm { imm: B1 },
        0xf7 if reg == Some(0) => ModRm { imm: Z },
        0xf6 | 0xf7 if reg.is_some_and(|r| r >= 2) => ModRm { imm: No },
        0xfe if reg.is_some_and(|r| r <= 1) => ModRm { imm: No },
        0xff if reg != Some(7) => ModRm { imm: No },
        _ => return None,
    })
}

/// The same for the `0F` map.
fn two_byte(op: u8, modrm: Option<u8>, has66: bool) -> Option<Operands> {
    use Imm::*;
    use Operands::*;
    let reg = modrm.map(|m| (m >> 3) & 7);
    let mod3 = modrm.is_some_and(|m| m >> 6 == 3);
    Some(match op {
        0x00 if reg.is_some_and(|r| r < 6) => ModRm { imm: No },
        0x01 if !mod3 && reg != Some(5) => ModRm { imm: No },
        0x01 if modrm.is_some_and(
            |m| matches!(m, 0xc1..=0xc4 | 0xc8..=0xcb | 0xd0 | 0xd1 | 0xf8 | 0xf9),
        ) =>
        {
            ModRm { imm: No }
        }
        0x02 | 0x03 => ModRm { imm: No },
        0x05..=0x09 | 0x0b => Bare,
        0x18 if !mod3 && reg.is_some_and(|r| r < 4) => ModRm { imm: No },
        0x1e | 0x1f => ModRm { imm: No },
        0x30..=0x33 => Bare,
        0x40..=0x4f => ModRm { imm: No },
        0x80..=0x8f if !has66 => Only(Z),
        0x90..=0x9f => ModRm { imm: No },
        0xa0..=0xa2 | 0xa8 | 0xa9 => Bare,
        0xa3 | 0xa5 | 0xab | 0xad | 0xaf => ModRm { imm: No },
        0xa4 | 0xac => ModRm { imm: B1 },
        0xb0 | 0xb1 | 0xb3 | 0xb6 | 0xb7 | 0xbb..=0xbf => ModRm { imm: No },
        0xba if reg.is_some_and(|r| r >= 4) => ModRm { imm: B1 },
        0xc0 | 0xc1 => ModRm { imm: No },
        0xc8..=0xcf => Bare,
        _ => return None,
    })
}

/// The length of the instruction at the start of `code` when it is one of the encodings this
/// module reads (see the module documentation), else `None`.
pub fn length(code: &[u8]) -> Option<usize> {
    let mut i = 0;
    let (mut has66, mut lock) = (false, false);
    while let Some(&b) = code.get(i) {
        if !is_prefix(b) {
            break;
        }
        has66 |= b == 0x66;
        lock |= b == 0xf0;
        i += 1;
    }
    let mut rex_w = false;
    if let Some(&b) = code.get(i) {
        if b & 0xf0 == 0x40 {
            rex_w = b & 8 != 0;
            i += 1;
        }
    }
    let op = *code.get(i)?;
    i += 1;
    let (two, op) = if op == 0x0f {
        i += 1;
        (true, *code.get(i - 1)?)
    } else {
        (false, op)
    };
    let needs_modrm = |ops: Option<Operands>| matches!(ops, Some(Operands::ModRm { .. }));
    // Look at ModRM first where there may be one: some opcodes depend on its reg field.
    let modrm = code.get(i).copied();
    let ops = if two {
        two_byte(op, modrm, has66)
    } else {
        one_byte(op, modrm, has66)
    }?;
    if lock && !(needs_modrm(Some(ops)) && modrm.is_some_and(|m| lockable(two, op, m))) {
        return None;
    }
    if needs_modrm(Some(ops)) {
        let m = modrm?;
        i += 1;
        let (md, rm) = (m >> 6, m & 7);
        if md != 3 {
            if rm == 4 {
                let sib = *code.get(i)?;
                i += 1;
                if md == 0 && sib & 7 == 5 {
                    i += 4;
                }
            } else if md == 0 && rm == 5 {
                i += 4;
            }
            i += match md {
                1 => 1,
                2 => 4,
                _ => 0,
            };
        }
    }
    let imm = match ops {
        Operands::Bare => Imm::No,
        Operands::ModRm { imm } | Operands::Only(imm) => imm,
    };
    let z = if has66 && !rex_w { 2 } else { 4 };
    i += match imm {
        Imm::No => 0,
        Imm::B1 => 1,
        Imm::B2 => 2,
        Imm::B3 => 3,
        Imm::Z => z,
        Imm::V if rex_w => 8,
        Imm::V => z,
    };
    (i <= code.len() && i <= 15).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_kernel_encodings() {
        let cases: &[(&[u8], Option<usize>)] = &[
            (&[0xe8, 0, 0, 0, 0], Some(5)),                    // call rel32
            (&[0x48, 0x8b, 0x05, 1, 2, 3, 4], Some(7)),        // mov rax, [rip+d32]
            (&[0xc7, 0x05, 1, 2, 3, 4, 5, 6, 7, 8], Some(10)), // mov dword [rip+d32], imm32
            (&[0x66, 0xc7, 0x05, 1, 2, 3, 4, 5, 6], Some(9)),  // mov word [rip+d32], imm16
            (&[0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8], Some(10)), // movabs rax, imm64
            (&[0xf3, 0x0f, 0x1e, 0xfa], Some(4)),              // endbr64
            (&[0x0f, 0x1f, 0x44, 0, 0], Some(5)),              // nopl 0(rax,rax,1)
            (&[0x83, 0x7c, 0x24, 0x08, 0x01], Some(5)),        // cmp dword [rsp+8], 1
            (&[0x0f, 0x84, 1, 2, 3, 4], Some(6)),              // je rel32
            (&[0xc3], Some(1)),                                // ret
            (&[0xf0, 0x0f, 0xb1, 0x0a], Some(4)),              // lock cmpxchg [rdx], ecx
            (&[0xf0, 0x48, 0x83, 0x07, 0x01], Some(5)),        // lock add qword [rdi], 1
            (&[0xf0, 0x39, 0x07], None),                       // lock cmp: invalid, iced
            (&[0xc5, 0xf8, 0x77], None),                       // vzeroupper: iced
            (&[0x62, 0xf1, 0x7c, 0x48, 0x28, 0xc1], None),     // EVEX: iced
            (&[0xe8, 0, 0], None),                             // cut short
        ];
        for (code, want) in cases {
            assert_eq!(length(code), *want, "{code:02x?}");
        }
    }
}
