//! Architecture-specific knowledge the differ and the module generator need, behind one trait
//! so that arm64, ppc64le and s390x can be added as further implementations.
//!
//! x86_64 is implemented: its relocation types, its table of special sections (the kernel's
//! arrays of fixed-size entries that point into functions), and an instruction-length decoder.

pub mod sections;
pub mod x86_64;

/// How a special section is split into entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntrySize {
    /// Every entry has this many bytes.
    Fixed(u64),
    /// The size is taken from this environment variable (kpatch's `*_STRUCT_SIZE`) when it is
    /// set, else found from the entries' relocation pattern.
    Env(&'static str),
}

/// A kernel special section: an array of entries, each with relocations into code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialSection {
    pub name: &'static str,
    pub entry_size: EntrySize,
}

/// What an architecture tells the differ.
pub trait Arch: Sync {
    /// ELF `e_machine`.
    fn e_machine(&self) -> u16;
    /// The special sections, split into entries and kept only for included functions.
    fn special_sections(&self) -> &'static [SpecialSection];
    /// The absolute pointer-sized relocation (`R_X86_64_64`).
    fn abs64(&self) -> u32;
    /// Relocation types that are PC-relative to the end of the instruction that holds them.
    fn is_pc_relative(&self, r_type: u32) -> bool;
    /// The relocation a `call __fentry__` or NOP-ed `__fentry__` site carries.
    fn is_fentry_reloc(&self, r_type: u32) -> bool;
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
