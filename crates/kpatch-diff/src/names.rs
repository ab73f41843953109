//! Name rules: gcc's numbered suffixes, and the static locals that must never be correlated.

const UNIQUE_ID: &str = "__UNIQUE_ID_";

/// A name with gcc's numbers taken out, as a byte stream: every `.<digits>` run becomes a lone
/// `.` (or nothing at the end: `foo.12` is `foo`), and after `__UNIQUE_ID_` every digit run
/// (a `__COUNTER__`) becomes `#`. String-literal sections (`.rodata.str1.1`) stay as they are.
/// The one normalisation behind [`mangled_eq`], [`mangled_hash`] and [`mangled_key_string`].
fn mangled_bytes(name: &str) -> impl Iterator<Item = u8> + '_ {
    let b = name.as_bytes();
    let literal = find_bytes(b, b".str1.").is_some();
    let unique_from = find_bytes(b, UNIQUE_ID.as_bytes()).unwrap_or(usize::MAX);
    let digits_from = move |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut i = 0;
    std::iter::from_fn(move || loop {
        let c = *b.get(i)?;
        if !literal && i > unique_from && c.is_ascii_digit() {
            i = digits_from(i);
            return Some(b'#');
        }
        if !literal && c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i = digits_from(i + 1);
            if i < b.len() {
                return Some(b'.');
            }
            continue;
        }
        i += 1;
        return Some(c);
    })
}

/// Where `needle` first occurs in `hay`. A plain scan: symbol names are short, and `str::find`
/// builds a searcher on every call, which cost the differ a fifth of its time.
fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    (0..hay.len().saturating_sub(needle.len() - 1))
        .find(|&i| hay[i] == first && hay[i..].starts_with(needle))
}

/// Compares two names ignoring gcc's numbers (`foo.123`, `foo.isra.0`, `__key.45`, the counter
/// of `__UNIQUE_ID_x12`), as kpatch's `kpatch_mangled_strcmp` does.
pub fn mangled_eq(a: &str, b: &str) -> bool {
    if is_plain(a) && is_plain(b) {
        return a == b;
    }
    mangled_bytes(a).eq(mangled_bytes(b))
}

/// A name [`mangled_bytes`] leaves as it is (no `.` before a digit, no `__UNIQUE_ID_`): most
/// names, compared and hashed as plain bytes.
fn is_plain(name: &str) -> bool {
    let b = name.as_bytes();
    !b.windows(2).any(|w| w[0] == b'.' && w[1].is_ascii_digit())
        && find_bytes(b, UNIQUE_ID.as_bytes()).is_none()
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// A hash two names share when [`mangled_eq`] holds. Computed without allocating.
pub fn mangled_hash(name: &str) -> u64 {
    let fnv = |h: u64, c: u8| (h ^ c as u64).wrapping_mul(FNV_PRIME);
    if is_plain(name) {
        return name.bytes().fold(FNV_OFFSET, fnv);
    }
    mangled_bytes(name).fold(FNV_OFFSET, fnv)
}

/// The name [`mangled_eq`] compares, for keys and signatures.
pub fn mangled_key_string(name: &str) -> String {
    String::from_utf8_lossy(&mangled_bytes(name).collect::<Vec<u8>>()).into_owned()
}

/// FNV-1a of a name.
pub fn name_hash(name: &str) -> u64 {
    name.bytes()
        .fold(FNV_OFFSET, |h, c| (h ^ c as u64).wrapping_mul(FNV_PRIME))
}

/// A hasher for keys that are already hashes.
#[derive(Default, Clone, Copy)]
pub struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(FNV_PRIME);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Indexes by a name hash; lookups must confirm the name, since hashes can collide.
pub type HashIndex<T> =
    std::collections::HashMap<u64, Vec<T>, std::hash::BuildHasherDefault<PreHashed>>;

/// Static locals that the compiler creates per use (lockdep keys, WARN_ONCE flags, `__func__`,
/// netlink extack messages, ratelimit states, switch tables): never correlated, always carried
/// with the function.
const SPECIAL_STATICS: &[&str] = &[
    "__key",
    "__warned",
    "__already_done.",
    "__func__",
    "__msg",
    "__FUNCTION__",
    "_rs",
    "CSWTCH",
    "_entry",
];

/// File-scope statics under one name in many files, whose address nothing compares: carried like
/// the per-use statics. ACPICA's `ACPI_MODULE_NAME` string names its file in debug output.
const SPECIAL_FILE_STATICS: &[&str] = &["_acpi_module_name"];

/// True for a name of a special static local, gcc style (`__key.12`) or clang style
/// (`func.__key`). `section` is the name of the section the symbol lives in.
pub fn is_special_static_name(name: &str, section: &str) -> bool {
    if kpatch_arch::sections::is_dynamic_debug(section)
        || kpatch_arch::sections::is_warn_once_data(section)
    {
        return true;
    }
    if SPECIAL_FILE_STATICS.contains(&name) {
        return true;
    }
    // Both forms need a `.` in the name: most names have none.
    if !name.contains('.') {
        return false;
    }
    SPECIAL_STATICS.iter().any(|v| {
        let v = v.trim_end_matches('.');
        // gcc: `__key.12`; clang: `func.__key` or `func.__key.3`.
        (name.len() > v.len() && name.starts_with(v) && name.as_bytes()[v.len()] == b'.')
            || name.match_indices(v).any(|(at, _)| {
                let end = at + v.len();
                at > 0
                    && name.as_bytes()[at - 1] == b'.'
                    && (end == name.len() || name.as_bytes()[end] == b'.')
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_search_finds_what_str_find_finds() {
        for (hay, needle) in [
            ("foo.str1.1", ".str1."),
            ("__UNIQUE_ID_x12", "__UNIQUE_ID_"),
            ("a__UNIQUE_ID_", "__UNIQUE_ID_"),
            ("short", "longer than it"),
            ("", ".str1."),
            ("x.str1", ".str1."),
        ] {
            assert_eq!(
                find_bytes(hay.as_bytes(), needle.as_bytes()),
                hay.find(needle),
                "{hay}"
            );
        }
    }

    #[test]
    fn mangled_names_compare_without_their_numbers() {
        assert!(mangled_eq("foo.123", "foo.456"));
        assert!(mangled_eq("foo.isra.0", "foo.isra.3"));
        assert!(mangled_eq("foo", "foo.12"));
        assert!(mangled_eq("foo.12", "foo"));
        assert!(!mangled_eq("foo.a", "foo.12"));
        assert!(!mangled_eq("foo", "foobar"));
        assert!(!mangled_eq(".rodata.str1.1", ".rodata.str1.8"));
        assert!(mangled_eq(".text.foo.constprop.0", ".text.foo.constprop.1"));
        assert_eq!(mangled_hash("foo.isra.12"), mangled_hash("foo.isra.3"));
        assert_eq!(mangled_hash("x.1y"), name_hash("x.y"));
        assert_eq!(mangled_key_string("foo.isra.12"), "foo.isra");
        assert_eq!(
            mangled_key_string("__UNIQUE_ID_cnt12.3"),
            "__UNIQUE_ID_cnt#"
        );
        assert_eq!(mangled_hash("foo.12"), mangled_hash("foo"));
        assert_eq!(mangled_hash("foo.isra.0"), name_hash("foo.isra"));
        assert_ne!(mangled_hash("foo"), mangled_hash("bar"));
        assert!(mangled_eq("__UNIQUE_ID_calls0.1", "__UNIQUE_ID_calls1.1"));
        assert_eq!(
            mangled_hash("__UNIQUE_ID_calls0.1"),
            mangled_hash("__UNIQUE_ID_calls12.3")
        );
        assert!(!mangled_eq("calls0", "calls1"));
        assert!(mangled_eq(
            ".data.__UNIQUE_ID_cnt0",
            ".data.__UNIQUE_ID_cnt1"
        ));
        assert_eq!(
            mangled_hash(".data.__UNIQUE_ID_cnt0"),
            mangled_hash(".data.__UNIQUE_ID_cnt7")
        );
    }

    #[test]
    fn special_statics_are_recognised() {
        assert!(is_special_static_name("__key.12", ".bss"));
        assert!(is_special_static_name("__warned.3", ".data.once"));
        assert!(is_special_static_name("__already_done.4", ".data..once"));
        assert!(is_special_static_name("__func__.7", ".rodata"));
        assert!(is_special_static_name("__msg.38", ".rodata"));
        assert!(!is_special_static_name("__msgbuf.2", ".rodata"));
        assert!(is_special_static_name("_acpi_module_name", ".rodata"));
        assert!(is_special_static_name("foo.__key", ".bss"));
        assert!(is_special_static_name("anything", "__dyndbg"));
        assert!(!is_special_static_name("counter.5", ".bss"));
        assert!(!is_special_static_name("__keyboard", ".bss"));
    }
}
