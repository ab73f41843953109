//! Fetches the real default target through apt (gated by KPATCH_RS_GUEST_TESTS=1).

use kpatch_target::DebianKernel;
use object::{Object, ObjectSection};

fn enabled() -> bool {
    if std::env::var("KPATCH_RS_GUEST_TESTS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("skipped: set KPATCH_RS_GUEST_TESTS=1 to fetch Debian kernel packages with apt");
    false
}

#[test]
fn default_target_vmlinux_is_x86_64_elf_with_rodata() {
    if !enabled() {
        return;
    }
    let k = DebianKernel::default_target().expect("resolve default target");
    eprintln!("default target {} {}", k.abi, k.version);
    let vmlinux = k.vmlinux().expect("vmlinux");
    let data = std::fs::read(&vmlinux).unwrap();
    let file = object::File::parse(&*data).expect("vmlinux parses as an object file");
    assert_eq!(file.architecture(), object::Architecture::X86_64);
    assert_eq!(file.format(), object::BinaryFormat::Elf);
    let rodata = file.section_by_name(".rodata").expect(".rodata section");
    assert!(rodata.size() > 0);
    let text = file.section_by_name(".text").expect(".text section");
    assert!(text.size() > 1 << 20, ".text is {} bytes", text.size());

    // the other image files are there too
    let config = std::fs::read_to_string(k.config().unwrap()).unwrap();
    assert!(config.contains("CONFIG_LIVEPATCH=y"));
    // Debian's System.map is a stub; a real one would have to contain the symbols.
    match k.system_map() {
        Err(kpatch_target::TargetError::StubSystemMap { .. }) => {}
        Ok(p) => {
            let map = std::fs::read_to_string(p).unwrap();
            assert!(map.lines().any(|l| l.ends_with(" cmdline_proc_show")));
        }
        Err(e) => panic!("{e}"),
    }
    assert!(k.modules_dir().unwrap().join("modules.order").is_file());
}

#[test]
fn default_target_headers_resolve_inside_the_cache() {
    if !enabled() {
        return;
    }
    let k = DebianKernel::default_target().expect("resolve default target");
    let kb = k.kbuild_dir().expect("kbuild headers");
    let root = kb.ancestors().nth(3).unwrap().to_path_buf();
    // scripts and the included common Makefile resolve inside the root
    let scripts = std::fs::canonicalize(kb.join("scripts")).unwrap();
    assert!(
        scripts.starts_with(std::fs::canonicalize(&root).unwrap()),
        "{scripts:?}"
    );
    assert!(scripts.join("Makefile.modpost").is_file());
    let mk = std::fs::read_to_string(kb.join("Makefile")).unwrap();
    assert!(!mk.contains("include /usr"), "{mk}");
    let symvers = std::fs::read_to_string(k.symvers().unwrap()).unwrap();
    assert!(symvers
        .lines()
        .any(|l| l.split('\t').nth(1) == Some("klp_enable_patch")));
}

#[test]
fn default_target_source_tarball_is_an_xz_file() {
    if !enabled() {
        return;
    }
    let k = DebianKernel::default_target().expect("resolve default target");
    let tarball = k.source_tarball().expect("linux-source package");
    assert!(
        tarball.to_string_lossy().ends_with(".tar.xz"),
        "{tarball:?}"
    );
    let mut head = [0u8; 6];
    std::io::Read::read_exact(&mut std::fs::File::open(&tarball).unwrap(), &mut head).unwrap();
    assert_eq!(&head, b"\xfd7zXZ\0");
    assert!(std::fs::metadata(&tarball).unwrap().len() > 100 << 20);
}
