//! The module reader behind `kpatch-rs info` (and load, install): any bytes, plain or
//! compressed, give a module or an error that names the file, never a panic; what it accepts
//! answers every question `info` asks of it.
#![no_main]

use kpatch_kernel::modinfo::ModuleFile;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.ko");
    match ModuleFile::from_bytes(path, data.to_vec()) {
        Ok(m) => {
            let _ = m.name();
            let info = &m.info;
            let _ = (info.is_livepatch(), info.vermagic_release(), info.target_kernel());
            let _ = (info.patch_sha256(), info.depends());
            for f in info.functions() {
                assert!(!f.object.is_empty() && !f.function.is_empty());
            }
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz.ko: "), "{e}"),
    }
});
