//! Architecture tables: special sections, relocation kinds, entry sizes (x86_64 now).
