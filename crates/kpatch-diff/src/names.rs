//! Name rules: gcc's numbered suffixes, and the static locals that must never be correlated.

/// Compares two names ignoring every `.<digits>` run (gcc's `foo.123`, `foo.isra.0`,
/// `__key.45`), as kpatch's `kpatch_mangled_strcmp` does. String-literal sections
/// (`.rodata.str1.1`) compare exactly.
pub fn mangled_eq(a: &str, b: &str) -> bool {
    if a.contains(".str1.") {
        return a == b;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    loop {
        match (a.get(i), b.get(j)) {
            (None, None) => return true,
            (Some(b'.'), Some(b'.')) if a.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                if !b.get(j + 1).is_some_and(u8::is_ascii_digit) {
                    return false;
                }
                i += 1;
                j += 1;
                while a.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                while b.get(j).is_some_and(u8::is_ascii_digit) {
                    j += 1;
                }
            }
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            (None, Some(_)) => return is_digit_tail(&b[j..]),
            (Some(_), None) => return is_digit_tail(&a[i..]),
            _ => return false,
        }
    }
}

fn is_digit_tail(s: &[u8]) -> bool {
    s.len() >= 2 && s[0] == b'.' && s[1..].iter().all(u8::is_ascii_digit)
}

/// The key two names share when [`mangled_eq`] may hold: the name without `.<digits>` runs.
pub fn mangled_key(name: &str) -> String {
    if name.contains(".str1.") {
        return name.to_string();
    }
    let b = name.as_bytes();
    let mut out = String::with_capacity(name.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i += 1;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            out.push('.');
            continue;
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// Static locals that the compiler creates per use (lockdep keys, WARN_ONCE flags, `__func__`,
/// ratelimit states, switch tables): never correlated, always carried with the function.
const SPECIAL_STATICS: &[&str] = &[
    "__key",
    "__warned",
    "__already_done.",
    "__func__",
    "__FUNCTION__",
    "_rs",
    "CSWTCH",
    "_entry",
];

/// True for a name of a special static local, gcc style (`__key.12`) or clang style
/// (`func.__key`). `section` is the name of the section the symbol lives in.
pub fn is_special_static_name(name: &str, section: &str) -> bool {
    if section == "__verbose" || section == "__dyndbg" || section == ".data.once" {
        return true;
    }
    SPECIAL_STATICS.iter().any(|v| {
        let v = v.trim_end_matches('.');
        name.starts_with(&format!("{v}.")) || name.contains(&format!(".{v}."))
            || name.ends_with(&format!(".{v}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(mangled_key("foo.isra.12"), mangled_key("foo.isra.3"));
        assert_eq!(mangled_key("x.1y"), "x.y");
    }

    #[test]
    fn special_statics_are_recognised() {
        assert!(is_special_static_name("__key.12", ".bss"));
        assert!(is_special_static_name("__warned.3", ".data.once"));
        assert!(is_special_static_name("__func__.7", ".rodata"));
        assert!(is_special_static_name("foo.__key", ".bss"));
        assert!(is_special_static_name("anything", "__dyndbg"));
        assert!(!is_special_static_name("counter.5", ".bss"));
        assert!(!is_special_static_name("__keyboard", ".bss"));
    }
}
