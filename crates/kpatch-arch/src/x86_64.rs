//! x86_64.

use crate::{Arch, EntrySize, Field, FunctionEntry, Kind, Layout, SpecialSection};
use iced_x86::{Decoder, DecoderOptions};
use std::ops::RangeInclusive;

pub const EM_X86_64: u16 = 62;
pub const R_X86_64_NONE: u32 = 0;
pub const R_X86_64_64: u32 = 1;
pub const R_X86_64_PC32: u32 = 2;
pub const R_X86_64_PLT32: u32 = 4;
pub const R_X86_64_32: u32 = 10;
pub const R_X86_64_32S: u32 = 11;
pub const R_X86_64_PC64: u32 = 24;

const ANY: u64 = u64::MAX;

const fn field(offset: u64, len: u64) -> Option<Field> {
    Some(Field { offset, len })
}

/// One layout: entries of `sizes` bytes whose only known field is the code site at 0.
const fn code_at_0(sizes: RangeInclusive<u64>, len: u64) -> Layout {
    Layout {
        sizes,
        code: field(0, len),
        target: None,
        key: None,
        line: None,
    }
}

/// The x86_64 special sections (see [`crate::special`]), in the order the differ handles them.
/// Entry sizes that changed across kernel versions come from kpatch's environment variables or,
/// when those are unset, from the relocation pattern; a layout is given for each size a kernel
/// used. Addresses are 32-bit and relative to the field (`R_X86_64_PC32`) unless the layout says
/// 8 bytes (absolute, `R_X86_64_64`, or `R_X86_64_PC64` for a relative key).
pub static SPECIAL_SECTIONS: &[SpecialSection] = &[
    SpecialSection {
        name: "__bug_table",
        entry_size: EntrySize::Env("BUG_STRUCT_SIZE"),
        layouts: &[
            // struct bug_entry, CONFIG_DEBUG_BUGVERBOSE: { s32 bug_addr_disp; s32 file_disp;
            // u16 line; u16 flags; } (a larger given size: the same, padded).
            Layout {
                sizes: 12..=ANY,
                code: field(0, 4),
                target: None,
                key: None,
                line: field(8, 2),
            },
            // Without it: { s32 bug_addr_disp; u16 flags; }, padded.
            code_at_0(8..=8, 4),
        ],
        kind: Kind::Sites,
    },
    SpecialSection {
        name: "__ex_table",
        entry_size: EntrySize::Env("EX_STRUCT_SIZE"),
        // struct exception_table_entry { s32 insn; s32 fixup; s32 data; } (`handler` before
        // 5.17, relocated to the handler function).
        layouts: &[Layout {
            sizes: 12..=12,
            code: field(0, 4),
            target: field(4, 4),
            key: None,
            line: None,
        }],
        kind: Kind::Exceptions { fixup: ".fixup" },
    },
    SpecialSection {
        name: "__jump_table",
        entry_size: EntrySize::Env("JUMP_STRUCT_SIZE"),
        layouts: &[
            // struct jump_entry { s32 code; s32 target; long key; } (relative, since 4.20). The
            // key's low bits are the branch's flags.
            Layout {
                sizes: 16..=16,
                code: field(0, 4),
                target: field(4, 4),
                key: field(8, 8),
                line: None,
            },
            // Before: { u64 code; u64 target; u64 key; } (absolute).
            Layout {
                sizes: 24..=24,
                code: field(0, 8),
                target: field(8, 8),
                key: field(16, 8),
                line: None,
            },
        ],
        kind: Kind::Sites,
    },
    SpecialSection {
        name: ".printk_index",
        entry_size: EntrySize::Env("PRINTK_INDEX_STRUCT_SIZE"),
        // A pointer to the format's struct pi_entry (or the record itself): no code field.
        layouts: &[],
        kind: Kind::NamedByFunction,
    },
    SpecialSection {
        name: ".smp_locks",
        entry_size: EntrySize::Fixed(4),
        // s32: the LOCK prefix of an instruction (made a NOP on a uniprocessor).
        layouts: &[code_at_0(4..=4, 4)],
        kind: Kind::Sites,
    },
    SpecialSection {
        name: ".parainstructions",
        entry_size: EntrySize::Env("PARA_STRUCT_SIZE"),
        // struct paravirt_patch_site { u8 *instr; u8 type; u8 len; } (until 6.7).
        layouts: &[code_at_0(16..=16, 8)],
        kind: Kind::Sites,
    },
    SpecialSection {
        name: ".static_call_sites",
        entry_size: EntrySize::Env("STATIC_CALL_STRUCT_SIZE"),
        // struct static_call_site { s32 addr; s32 key; } (written by objtool; the key's low bits
        // are flags).
        layouts: &[Layout {
            sizes: 8..=8,
            code: field(0, 4),
            target: None,
            key: field(4, 4),
            line: None,
        }],
        kind: Kind::Sites,
    },
    SpecialSection {
        name: ".altinstructions",
        entry_size: EntrySize::Env("ALT_STRUCT_SIZE"),
        // struct alt_instr { s32 instr_offset; s32 repl_offset; ... }: the feature word and the
        // lengths after them take 4 (to 6.2), 5 (with padlen, before 5.10) or 6 bytes (6.3 on).
        layouts: &[Layout {
            sizes: 12..=14,
            code: field(0, 4),
            target: field(4, 4),
            key: None,
            line: None,
        }],
        kind: Kind::Alternatives {
            replacement: ".altinstr_replacement",
            aux: ".altinstr_aux",
        },
    },
    // objtool's site lists, s32 each: retpoline thunk calls, returns, calls (call depth
    // tracking), ENDBRs the kernel seals at boot. objtool writes them when it runs on each object,
    // not under IBT, where it runs on vmlinux.o only (6.12's unit objects have none).
    SpecialSection {
        name: ".retpoline_sites",
        entry_size: EntrySize::Fixed(4),
        layouts: &[code_at_0(4..=4, 4)],
        kind: Kind::Sites,
    },
    SpecialSection {
        name: ".return_sites",
        entry_size: EntrySize::Fixed(4),
        layouts: &[code_at_0(4..=4, 4)],
        kind: Kind::Sites,
    },
    SpecialSection {
        name: ".call_sites",
        entry_size: EntrySize::Fixed(4),
        layouts: &[code_at_0(4..=4, 4)],
        kind: Kind::Sites,
    },
    SpecialSection {
        name: ".ibt_endbr_seal",
        entry_size: EntrySize::Fixed(4),
        layouts: &[code_at_0(4..=4, 4)],
        kind: Kind::Sites,
    },
    // ORC (objtool): s32 addresses in .orc_unwind_ip, each with its struct orc_entry
    // { s16 sp_offset; s16 bp_offset; u16 flags; } in .orc_unwind.
    SpecialSection {
        name: ".orc_unwind_ip",
        entry_size: EntrySize::Fixed(4),
        layouts: &[code_at_0(4..=4, 4)],
        kind: Kind::Parallel {
            table: ".orc_unwind",
            table_entry: EntrySize::EnvOr("ORC_STRUCT_SIZE", 6),
        },
    },
    // -mrecord-mcount (or objtool --mcount): the address of each function's ftrace call.
    SpecialSection {
        name: "__mcount_loc",
        entry_size: EntrySize::Fixed(8),
        layouts: &[code_at_0(8..=8, 8)],
        kind: Kind::PerFunction { rebuilt: true },
    },
    // -fpatchable-function-entry=16,16 (CONFIG_CALL_PADDING, 6.2 on): the address of each
    // function's padding; the output's functions keep their padding without it.
    SpecialSection {
        name: "__patchable_function_entries",
        entry_size: EntrySize::Fixed(8),
        layouts: &[code_at_0(8..=8, 8)],
        kind: Kind::PerFunction { rebuilt: false },
    },
];

/// How gcc starts an x86_64 kernel function: 16 bytes of padding before it under
/// `CONFIG_CALL_PADDING` (objtool's `__pfx_` symbol over them), then `endbr64` under IBT, then
/// `call __fentry__` (`-mfentry`), which objtool may have made a 5-byte NOP with an
/// `R_X86_64_NONE` relocation.
pub static FUNCTION_ENTRY: FunctionEntry = FunctionEntry {
    padding: 16,
    padding_symbol_prefix: "__pfx_",
    fentry: "__fentry__",
    fentry_relocs: &[R_X86_64_NONE, R_X86_64_PC32, R_X86_64_PLT32],
    call: &[0xe8, 0, 0, 0, 0],
    call_reloc_at: 1,
    call_reloc: R_X86_64_PC32,
    nop_reloc: R_X86_64_NONE,
};

pub struct X86_64;

impl Arch for X86_64 {
    fn e_machine(&self) -> u16 {
        EM_X86_64
    }
    fn special_sections(&self) -> &'static [SpecialSection] {
        SPECIAL_SECTIONS
    }
    fn function_entry(&self) -> &'static FunctionEntry {
        &FUNCTION_ENTRY
    }
    fn abs64(&self) -> u32 {
        R_X86_64_64
    }
    fn abs32s(&self) -> Option<u32> {
        Some(R_X86_64_32S)
    }
    fn pc_rel_default_bias(&self) -> i64 {
        4
    }
    fn is_pc_relative(&self, r_type: u32) -> bool {
        matches!(r_type, R_X86_64_PC32 | R_X86_64_PLT32)
    }
    fn reloc_width(&self, r_type: u32) -> Option<u64> {
        match r_type {
            R_X86_64_64 | R_X86_64_PC64 => Some(8),
            R_X86_64_PC32 | R_X86_64_PLT32 | R_X86_64_32 | R_X86_64_32S => Some(4),
            _ => None,
        }
    }
    fn is_exact_address(&self, r_type: u32) -> bool {
        matches!(r_type, R_X86_64_64 | R_X86_64_32S | R_X86_64_PC64)
    }
    fn insn_len(&self, code: &[u8]) -> Option<usize> {
        let window = &code[..code.len().min(15)];
        if let Some(n) = crate::x86_64_len::length(window) {
            return Some(n);
        }
        let mut d = Decoder::new(64, window, DecoderOptions::NONE);
        let insn = d.decode();
        (!insn.is_invalid()).then(|| insn.len())
    }
    fn is_memory_access(&self, code: &[u8], r_offset: u64) -> bool {
        let mut d = Decoder::new(64, code, DecoderOptions::NONE);
        let target = r_offset as usize;
        while d.can_decode() {
            let start = d.position();
            let insn = d.decode();
            if insn.is_invalid() {
                return false;
            }
            if target >= start && target < start + insn.len() {
                let offsets = d.get_constant_offsets(&insn);
                return insn.mnemonic() != iced_x86::Mnemonic::Lea
                    && offsets.has_displacement()
                    && start + offsets.displacement_offset() == target;
            }
        }
        false
    }
    fn is_direct_branch(&self, code: &[u8], r_offset: u64) -> bool {
        let mut d = Decoder::new(64, code, DecoderOptions::NONE);
        let target = r_offset as usize;
        while d.can_decode() {
            let start = d.position();
            let insn = d.decode();
            if insn.is_invalid() {
                return false;
            }
            if target >= start && target < start + insn.len() {
                // call/jmp/jcc rel32: the one operand is a near branch target
                let branch =
                    insn.op_count() == 1 && insn.op0_kind() == iced_x86::OpKind::NearBranch64;
                // and its displacement is the instruction's last 4 bytes
                return branch && start + insn.len() - 4 == target;
            }
        }
        false
    }
    fn is_line_number_load(&self, insn: &[u8]) -> bool {
        // `mov $imm32, %edx` (0xba) or `mov $imm32, %esi` (0xbe): the line argument of WARN,
        // might_sleep and friends.
        matches!(insn.first(), Some(0xba) | Some(0xbe)) && insn.len() == 5
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::special::size_variables;

    /// Every entry of the table is consistent in itself: sizes, layouts and fields.
    #[test]
    fn the_special_section_table_is_consistent() {
        let table = X86_64.special_sections();
        for (k, s) in table.iter().enumerate() {
            assert!(
                table[..k].iter().all(|t| t.name != s.name),
                "{} twice",
                s.name
            );
            if let EntrySize::Fixed(n) | EntrySize::EnvOr(_, n) = s.entry_size {
                assert!(n > 0, "{}", s.name);
                assert!(
                    s.layouts.iter().all(|l| l.sizes.contains(&n)),
                    "{}: a layout for another size",
                    s.name
                );
            }
            if s.has_sites() && s.kind != Kind::NamedByFunction
                || matches!(s.kind, Kind::Parallel { .. } | Kind::PerFunction { .. })
            {
                assert!(!s.layouts.is_empty(), "{}: no layout", s.name);
            }
            for (i, l) in s.layouts.iter().enumerate() {
                let what = format!("{} layout {:?}", s.name, l.sizes);
                assert!(
                    *l.sizes.start() > 0 && l.sizes.start() <= l.sizes.end(),
                    "{what}"
                );
                for m in &s.layouts[..i] {
                    assert!(
                        l.sizes.end() < m.sizes.start() || m.sizes.end() < l.sizes.start(),
                        "{what}: sizes overlap another layout's"
                    );
                }
                assert!(l.code.is_some(), "{what}: no code field");
                let addresses = [l.code, l.target, l.key];
                for f in addresses.iter().flatten() {
                    assert!(
                        matches!(f.len, 4 | 8),
                        "{what}: an address of {} bytes",
                        f.len
                    );
                }
                if let Some(line) = l.line {
                    assert_eq!(line.len, 2, "{what}: __LINE__ is a u16");
                }
                let fields: Vec<Field> = addresses
                    .iter()
                    .chain([&l.line])
                    .flatten()
                    .copied()
                    .collect();
                for (a, f) in fields.iter().enumerate() {
                    assert!(
                        f.offset + f.len <= *l.sizes.start(),
                        "{what}: field {f:?} past the entry"
                    );
                    for g in &fields[..a] {
                        assert!(
                            f.offset + f.len <= g.offset || g.offset + g.len <= f.offset,
                            "{what}: {f:?} overlaps {g:?}"
                        );
                    }
                }
            }
        }
        // One section of each kind that has a rule of its own.
        let count = |pred: &dyn Fn(&Kind) -> bool| table.iter().filter(|s| pred(&s.kind)).count();
        assert_eq!(count(&|k| matches!(k, Kind::Alternatives { .. })), 1);
        assert_eq!(count(&|k| matches!(k, Kind::Exceptions { .. })), 1);
        assert_eq!(
            count(&|k| matches!(k, Kind::PerFunction { rebuilt: true })),
            1
        );
    }

    #[test]
    fn layouts_follow_the_entry_size() {
        let a = X86_64;
        let jump = a.special_section("__jump_table").unwrap();
        assert_eq!(
            jump.layout(16).and_then(|l| l.key),
            Some(Field { offset: 8, len: 8 })
        );
        assert_eq!(
            jump.layout(24).and_then(|l| l.key),
            Some(Field { offset: 16, len: 8 })
        );
        assert_eq!(jump.layout(20), None);
        let bug = a.special_section("__bug_table").unwrap();
        assert_eq!(
            bug.layout(12).and_then(|l| l.line),
            Some(Field { offset: 8, len: 2 })
        );
        assert_eq!(
            bug.layout(16).and_then(|l| l.line),
            Some(Field { offset: 8, len: 2 })
        );
        assert_eq!(bug.layout(8).and_then(|l| l.line), None);
        let sc = a.special_section(".static_call_sites").unwrap();
        assert_eq!(
            sc.layout(8).and_then(|l| l.key),
            Some(Field { offset: 4, len: 4 })
        );
        assert!(a.special_section(".text").is_none());
    }

    /// kpatch's `*_STRUCT_SIZE` variables, each for the section it sizes.
    #[test]
    fn struct_size_variables_are_kpatchs() {
        let mut got = size_variables(X86_64.special_sections());
        got.sort();
        let mut want = vec![
            ("ALT_STRUCT_SIZE", ".altinstructions"),
            ("BUG_STRUCT_SIZE", "__bug_table"),
            ("EX_STRUCT_SIZE", "__ex_table"),
            ("JUMP_STRUCT_SIZE", "__jump_table"),
            ("ORC_STRUCT_SIZE", ".orc_unwind"),
            ("PARA_STRUCT_SIZE", ".parainstructions"),
            ("PRINTK_INDEX_STRUCT_SIZE", ".printk_index"),
            ("STATIC_CALL_STRUCT_SIZE", ".static_call_sites"),
        ];
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn the_ftrace_call_is_a_call_with_its_relocation_after_the_opcode() {
        let e = X86_64.function_entry();
        assert_eq!(X86_64.insn_len(e.call), Some(e.call.len()));
        assert!(X86_64.is_direct_branch(e.call, e.call_reloc_at));
        assert!(e.fentry_relocs.contains(&e.call_reloc) && e.fentry_relocs.contains(&e.nop_reloc));
        // endbr64; call __fentry__: the call's relocation is the first at or after the start.
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0xe8, 0, 0, 0, 0];
        assert_eq!(X86_64.insn_len(&code), Some(4));
        assert!(X86_64.is_direct_branch(&code, 4 + e.call_reloc_at));
    }

    #[test]
    fn decodes_lengths_of_common_kernel_instructions() {
        let a = X86_64;
        assert_eq!(a.insn_len(&[0xe8, 0, 0, 0, 0]), Some(5)); // call rel32
        assert_eq!(a.insn_len(&[0x0f, 0x1f, 0x44, 0, 0]), Some(5)); // nopl 0(%rax,%rax,1)
        assert_eq!(a.insn_len(&[0xbe, 0x70, 0, 0, 0]), Some(5)); // mov $0x70,%esi
        assert_eq!(a.insn_len(&[0x48, 0xc7, 0xc7, 0, 0, 0, 0]), Some(7)); // mov $0,%rdi
        assert_eq!(a.insn_len(&[0xc6, 0x05, 0, 0, 0, 0, 1]), Some(7)); // movb $1,0(%rip)
        assert_eq!(a.insn_len(&[0xc3]), Some(1));
        let _ = a.insn_len(&[0x0f, 0xff]); // ud0: decoded or not, never a panic
        assert_eq!(a.insn_len(&[]), None);
    }

    #[test]
    fn pc_rel_bias_is_the_distance_to_the_end_of_the_instruction() {
        let a = X86_64;
        // nop; call rel32 (reloc at 2); movb $1,0(%rip) (reloc at 8, imm after it)
        let code = [0x90, 0xe8, 0, 0, 0, 0, 0xc6, 0x05, 0, 0, 0, 0, 1];
        assert_eq!(a.pc_rel_bias(&code, 2), Some(4));
        assert_eq!(a.pc_rel_bias(&code, 8), Some(5));
        assert_eq!(a.pc_rel_bias(&code, 40), None);
        // lea str(%rip),%rdi: the displacement ends the instruction, the default bias.
        assert_eq!(
            a.pc_rel_bias(&[0x48, 0x8d, 0x3d, 0, 0, 0, 0], 3),
            Some(a.pc_rel_default_bias())
        );
    }

    #[test]
    fn memory_accesses_are_told_from_computed_addresses() {
        let a = X86_64;
        // mov 0x0(,%rax,4),%eax: relocation in the displacement, at 3
        assert!(a.is_memory_access(&[0x8b, 0x04, 0x85, 0, 0, 0, 0], 3));
        // mov $0x0,%rdi: the relocation is an immediate
        assert!(!a.is_memory_access(&[0x48, 0xc7, 0xc7, 0, 0, 0, 0], 3));
        // lea 0x0(%rip),%rdi: an address the code computes
        assert!(!a.is_memory_access(&[0x48, 0x8d, 0x3d, 0, 0, 0, 0], 3));
        // mov 0x0(%rip),%rax: a load
        assert!(a.is_memory_access(&[0x48, 0x8b, 0x05, 0, 0, 0, 0], 3));
    }

    #[test]
    fn direct_branches_are_told_from_taken_addresses() {
        let a = X86_64;
        // call rel32, jmp rel32 (a tail call), jne rel32: relocations at 1, 1, 2
        assert!(a.is_direct_branch(&[0xe8, 0, 0, 0, 0], 1));
        assert!(a.is_direct_branch(&[0xe9, 0, 0, 0, 0], 1));
        assert!(a.is_direct_branch(&[0x0f, 0x85, 0, 0, 0, 0], 2));
        // endbr64; call rel32 at 5
        assert!(a.is_direct_branch(&[0xf3, 0x0f, 0x1e, 0xfa, 0xe8, 0, 0, 0, 0], 5));
        // mov $func,%rdi and lea func(%rip),%rsi: the address is taken
        assert!(!a.is_direct_branch(&[0x48, 0xc7, 0xc7, 0, 0, 0, 0], 3));
        assert!(!a.is_direct_branch(&[0x48, 0x8d, 0x35, 0, 0, 0, 0], 3));
        // call *func(%rip): an indirect call through memory is no direct branch
        assert!(!a.is_direct_branch(&[0xff, 0x15, 0, 0, 0, 0], 2));
        assert!(!a.is_direct_branch(&[0xe8, 0, 0, 0, 0], 40));
    }

    #[test]
    fn relocation_widths() {
        let a = X86_64;
        assert_eq!(a.reloc_width(R_X86_64_64), Some(8));
        assert_eq!(a.reloc_width(R_X86_64_PC64), Some(8));
        assert_eq!(a.reloc_width(R_X86_64_PC32), Some(4));
        assert_eq!(a.reloc_width(R_X86_64_32S), Some(4));
        assert_eq!(a.reloc_width(R_X86_64_NONE), None);
    }

    #[test]
    fn exact_addresses_are_absolute_or_field_relative() {
        let a = X86_64;
        for t in [R_X86_64_64, R_X86_64_32S, R_X86_64_PC64] {
            assert!(a.is_exact_address(t) && !a.is_pc_relative(t), "{t}");
        }
        // PC32 and PLT32 in code are relative to the end of their instruction.
        for t in [R_X86_64_PC32, R_X86_64_PLT32, R_X86_64_NONE] {
            assert!(!a.is_exact_address(t), "{t}");
        }
    }

    #[test]
    fn line_number_loads_are_mov_imm_to_edx_or_esi() {
        let a = X86_64;
        assert!(a.is_line_number_load(&[0xbe, 0x70, 0, 0, 0]));
        assert!(a.is_line_number_load(&[0xba, 0x70, 0, 0, 0]));
        assert!(!a.is_line_number_load(&[0xbf, 0x70, 0, 0, 0]));
    }
}
