//! ELF relocatable-object model: parse with object::read::elf, emit with object::write::elf::Writer.
