//! Livepatch module generation: klp relocations, klp symbols, glue.
