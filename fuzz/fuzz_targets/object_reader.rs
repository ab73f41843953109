//! Any bytes: the reader returns an object or an error, never panics; an object it accepts
//! writes, and what it writes reads back the same.
#![no_main]

use kpatch_elf::Object;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(obj) = Object::parse(data, "fuzz.o") else { return };
    let Ok(bytes) = obj.write() else { return };
    let again = Object::parse(&bytes, "rewritten.o").expect("a written object must read back");
    assert_eq!(obj.symbols, again.symbols);
    assert_eq!(obj.sections.len(), again.sections.len());
});
