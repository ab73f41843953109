//! What the differ and the module generator know of kernel objects beyond ELF: the section-name
//! classes and kpatch-macros.h records of every architecture ([`sections`]), and, behind one
//! trait so that arm64, ppc64le and s390x can be added as further implementations, what is
//! particular to an architecture.
//!
//! x86_64 is implemented: its relocation types, its table of special sections (the kernel's
//! arrays of fixed-size entries that point into functions, see [`special`]), how its functions
//! start, and an instruction-length decoder.

pub mod sections;
pub mod special;
pub mod x86_64;
pub mod x86_64_len;

pub use special::{Entries, Entry, EntrySize, Field, Kind, Layout, Rebuilt, SpecialSection};

/// How the compiler lays out the start of a function, and the ftrace call there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionEntry {
    /// Bytes of padding a function may have in front of it in its own section (x86's
    /// `CONFIG_CALL_PADDING`: `-fpatchable-function-entry=16,16` puts 16 NOPs before it).
    pub padding: u64,
    /// The prefix of the symbol objtool puts over that padding (`__pfx_foo`). It travels with
    /// its function and is no function of its own.
    pub padding_symbol_prefix: &'static str,
    /// What a function's ftrace call calls (`-mfentry`): `__fentry__`. The function's first
    /// relocation at or after its start is the call (after an `endbr64` under IBT).
    pub fentry: &'static str,
    /// Relocation types of that call: the call's own, or none where objtool turned the call
    /// into a NOP (and listed it in `__mcount_loc`).
    pub fentry_relocs: &'static [u32],
    /// The call instruction with its displacement zeroed, and where in it the relocation is:
    /// what makes a NOP-ed site the call ftrace expects.
    pub call: &'static [u8],
    pub call_reloc_at: u64,
    /// The relocation type of the call, and the one objtool leaves at a NOP-ed site.
    pub call_reloc: u32,
    pub nop_reloc: u32,
}

/// What an architecture tells the differ.
pub trait Arch: Sync {
    /// ELF `e_machine`.
    fn e_machine(&self) -> u16;
    /// The special sections: their entries' sizes and layouts, and what the differ does with
    /// each (see [`special`]).
    fn special_sections(&self) -> &'static [SpecialSection];
    /// The special section named `name`, if the table has it.
    fn special_section(&self, name: &str) -> Option<&'static SpecialSection> {
        self.special_sections().iter().find(|s| s.name == name)
    }
    /// How a function starts: its padding, its ftrace call.
    fn function_entry(&self) -> &'static FunctionEntry;
    /// The absolute pointer-sized relocation (`R_X86_64_64`).
    fn abs64(&self) -> u32;
    /// The sign-extended 32-bit absolute relocation of an address in an instruction's immediate
    /// (`R_X86_64_32S` of the kernel code model), if the architecture has one.
    fn abs32s(&self) -> Option<u32>;
    /// Relocation types that are PC-relative to the end of the instruction that holds them.
    fn is_pc_relative(&self, r_type: u32) -> bool;
    /// How many bytes a relocation of type `r_type` writes (`None` for a type that writes
    /// none or is unknown).
    fn reloc_width(&self, r_type: u32) -> Option<u64>;
    /// Relocation types whose field holds the address of symbol + addend itself, never biased
    /// by an instruction: absolute addresses, and addresses relative to the field (x86's
    /// `R_X86_64_64`, `_32S` and `_PC64`, the last a 16-byte jump entry's key). A reference of
    /// such a type to a section plus an offset points exactly at that offset.
    fn is_exact_address(&self, r_type: u32) -> bool;
    /// Length of the instruction starting at `code[0]`, or `None` if it cannot be decoded.
    fn insn_len(&self, code: &[u8]) -> Option<usize>;
    /// For an instruction that differs between two versions of a function only because it moves
    /// a `__LINE__` value: true when it is an immediate load of the line argument register.
    fn is_line_number_load(&self, insn: &[u8]) -> bool;
    /// Whether the relocation at `r_offset` of `code` is the displacement of a memory operand
    /// that the instruction reads or writes (as opposed to an address the code computes and
    /// may hand out: an immediate, a `lea`, a call target).
    fn is_memory_access(&self, _code: &[u8], _r_offset: u64) -> bool {
        false
    }
    /// Whether the relocation at `r_offset` of `code` is the target of a direct call or jump
    /// (`call foo`, `jmp foo`, `jcc foo`): the code branches to the symbol rather than taking its
    /// address. Under IBT only a taken address needs the target's ENDBR.
    fn is_direct_branch(&self, _code: &[u8], _r_offset: u64) -> bool {
        false
    }
    /// The distance from a PC-relative relocation to the end of its instruction where the
    /// relocated field ends the instruction, as it mostly does (x86: the field's 4 bytes, as in
    /// `lea sym-4(%rip)`). [`Arch::pc_rel_bias`] finds the distance by decoding.
    fn pc_rel_default_bias(&self) -> i64;
    /// Byte offset of the end of the instruction that holds a relocation at `r_offset`, relative to
    /// `r_offset` (the `add_off` of a PC-relative reference), by decoding `code` from its start.
    fn pc_rel_bias(&self, code: &[u8], r_offset: u64) -> Option<i64> {
        let mut at = 0usize;
        let target = usize::try_from(r_offset).ok()?;
        while at < code.len() {
            let len = self.insn_len(&code[at..])?;
            if target >= at && target < at + len {
                return Some((at + len - target) as i64);
            }
            at += len;
        }
        None
    }
}

/// The architecture of an `e_machine`, if supported.
pub fn for_machine(e_machine: u16) -> Option<&'static dyn Arch> {
    match e_machine {
        x86_64::EM_X86_64 => Some(&x86_64::X86_64),
        _ => None,
    }
}
