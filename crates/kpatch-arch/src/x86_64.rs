//! x86_64.

use crate::{Arch, EntrySize, SpecialSection};
use iced_x86::{Decoder, DecoderOptions};

pub const EM_X86_64: u16 = 62;
pub const R_X86_64_NONE: u32 = 0;
pub const R_X86_64_64: u32 = 1;
pub const R_X86_64_PC32: u32 = 2;
pub const R_X86_64_PLT32: u32 = 4;
pub const R_X86_64_32: u32 = 10;
pub const R_X86_64_32S: u32 = 11;
pub const R_X86_64_PC64: u32 = 24;

/// The x86_64 special sections. Entry sizes that changed across kernel versions come from
/// kpatch's environment variables or, when those are unset, from the relocation pattern.
pub static SPECIAL_SECTIONS: &[SpecialSection] = &[
    SpecialSection {
        name: "__bug_table",
        entry_size: EntrySize::Env("BUG_STRUCT_SIZE"),
    },
    SpecialSection {
        name: "__ex_table",
        entry_size: EntrySize::Env("EX_STRUCT_SIZE"),
    },
    SpecialSection {
        name: "__jump_table",
        entry_size: EntrySize::Env("JUMP_STRUCT_SIZE"),
    },
    SpecialSection {
        name: ".printk_index",
        entry_size: EntrySize::Env("PRINTK_INDEX_STRUCT_SIZE"),
    },
    SpecialSection {
        name: ".smp_locks",
        entry_size: EntrySize::Fixed(4),
    },
    SpecialSection {
        name: ".parainstructions",
        entry_size: EntrySize::Env("PARA_STRUCT_SIZE"),
    },
    SpecialSection {
        name: ".static_call_sites",
        entry_size: EntrySize::Env("STATIC_CALL_STRUCT_SIZE"),
    },
    SpecialSection {
        name: ".altinstructions",
        entry_size: EntrySize::Env("ALT_STRUCT_SIZE"),
    },
    SpecialSection {
        name: ".retpoline_sites",
        entry_size: EntrySize::Fixed(4),
    },
    SpecialSection {
        name: ".return_sites",
        entry_size: EntrySize::Fixed(4),
    },
    SpecialSection {
        name: ".call_sites",
        entry_size: EntrySize::Fixed(4),
    },
    SpecialSection {
        name: ".ibt_endbr_seal",
        entry_size: EntrySize::Fixed(4),
    },
];

pub struct X86_64;

impl Arch for X86_64 {
    fn e_machine(&self) -> u16 {
        EM_X86_64
    }
    fn special_sections(&self) -> &'static [SpecialSection] {
        SPECIAL_SECTIONS
    }
    fn abs64(&self) -> u32 {
        R_X86_64_64
    }
    fn is_pc_relative(&self, r_type: u32) -> bool {
        matches!(r_type, R_X86_64_PC32 | R_X86_64_PLT32)
    }
    fn is_fentry_reloc(&self, r_type: u32) -> bool {
        matches!(r_type, R_X86_64_NONE | R_X86_64_PC32 | R_X86_64_PLT32)
    }
    fn insn_len(&self, code: &[u8]) -> Option<usize> {
        let window = &code[..code.len().min(15)];
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
    fn line_number_loads_are_mov_imm_to_edx_or_esi() {
        let a = X86_64;
        assert!(a.is_line_number_load(&[0xbe, 0x70, 0, 0, 0]));
        assert!(a.is_line_number_load(&[0xba, 0x70, 0, 0, 0]));
        assert!(!a.is_line_number_load(&[0xbf, 0x70, 0, 0, 0]));
    }
}
