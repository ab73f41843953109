//! An ELF relocatable-object model for kernel objects.
//!
//! Objects are parsed with `object::read::elf` into an owned model ([`Object`]) whose field names
//! copy the ELF specification (`sh_flags`, `st_shndx`, `r_addend`), edited freely, and emitted
//! with `object::write::elf::Writer`. Section and symbol indexes are positions in
//! [`Object::sections`] and [`Object::symbols`]; index 0 is the null entry in both, as in the file.
//!
//! The symbol table, its string table, the section-name string table and `SHT_SYMTAB_SHNDX` are
//! regenerated on write from the model; every other section keeps its bytes.

mod edit;
mod error;
mod model;
mod read;
mod write;

pub use error::ElfError;
pub use model::*;

/// ELF constants as plain integers (names from the ELF specification), so that callers
/// compare model fields without depending on `object`'s newtypes.
pub mod consts {
    pub const EM_386: u16 = object::elf::EM_386.0;
    pub const EM_AARCH64: u16 = object::elf::EM_AARCH64.0;
    pub const EM_PPC64: u16 = object::elf::EM_PPC64.0;
    pub const EM_S390: u16 = object::elf::EM_S390.0;
    pub const EM_X86_64: u16 = object::elf::EM_X86_64.0;
    pub const SHN_ABS: u16 = object::elf::SHN_ABS.0;
    pub const SHN_COMMON: u16 = object::elf::SHN_COMMON.0;
    pub const SHN_LORESERVE: u16 = object::elf::SHN_LORESERVE;
    pub const SHN_UNDEF: u16 = object::elf::SHN_UNDEF.0;
    pub const SHN_XINDEX: u16 = object::elf::SHN_XINDEX.0;
    pub const GRP_COMDAT: u32 = object::elf::GRP_COMDAT.0;
    pub const SHT_GROUP: u32 = object::elf::SHT_GROUP.0;
    pub const SHT_NOBITS: u32 = object::elf::SHT_NOBITS.0;
    pub const SHT_NOTE: u32 = object::elf::SHT_NOTE.0;
    pub const SHT_NULL: u32 = object::elf::SHT_NULL.0;
    pub const SHT_PROGBITS: u32 = object::elf::SHT_PROGBITS.0;
    pub const SHT_REL: u32 = object::elf::SHT_REL.0;
    pub const SHT_RELA: u32 = object::elf::SHT_RELA.0;
    pub const SHT_STRTAB: u32 = object::elf::SHT_STRTAB.0;
    pub const SHT_SYMTAB: u32 = object::elf::SHT_SYMTAB.0;
    pub const SHT_SYMTAB_SHNDX: u32 = object::elf::SHT_SYMTAB_SHNDX.0;
    pub const SHF_ALLOC: u64 = object::elf::SHF_ALLOC.0;
    pub const SHF_EXECINSTR: u64 = object::elf::SHF_EXECINSTR.0;
    pub const SHF_GROUP: u64 = object::elf::SHF_GROUP.0;
    pub const SHF_INFO_LINK: u64 = object::elf::SHF_INFO_LINK.0;
    pub const SHF_LINK_ORDER: u64 = object::elf::SHF_LINK_ORDER.0;
    pub const SHF_MERGE: u64 = object::elf::SHF_MERGE.0;
    pub const SHF_STRINGS: u64 = object::elf::SHF_STRINGS.0;
    pub const SHF_WRITE: u64 = object::elf::SHF_WRITE.0;
    pub const STB_GLOBAL: u8 = object::elf::STB_GLOBAL.0;
    pub const STB_LOCAL: u8 = object::elf::STB_LOCAL.0;
    pub const STB_WEAK: u8 = object::elf::STB_WEAK.0;
    pub const STT_FILE: u8 = object::elf::STT_FILE.0;
    pub const STT_FUNC: u8 = object::elf::STT_FUNC.0;
    pub const STT_NOTYPE: u8 = object::elf::STT_NOTYPE.0;
    pub const STT_OBJECT: u8 = object::elf::STT_OBJECT.0;
    pub const STT_SECTION: u8 = object::elf::STT_SECTION.0;
    pub const STT_TLS: u8 = object::elf::STT_TLS.0;
    pub const STV_DEFAULT: u8 = object::elf::STV_DEFAULT.0;
}
