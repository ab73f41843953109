//! `/proc/kallsyms` text: `address type name[\t[module]]`, one symbol a line, in kallsyms order
//! (vmlinux first, in table order; then each module's symbols in its symbol-table order).

use std::path::Path;

use crate::model::{KernelSymbol, KernelSymbols, VMLINUX};
use crate::Error;

/// Read `/proc/kallsyms` (or a saved copy of it).
pub fn read_proc_kallsyms(path: &Path) -> Result<KernelSymbols, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_proc_kallsyms(&text, &path.display().to_string())
}

/// Parse `/proc/kallsyms` text; `file` names it in errors. Addresses may all be zero (when the
/// reader lacks the privilege to see them): positions do not depend on them.
pub fn parse_proc_kallsyms(text: &str, file: &str) -> Result<KernelSymbols, Error> {
    let mut symbols = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let sym = parse_line(line).map_err(|reason| Error::KallsymsLine {
            file: file.to_string(),
            line: n + 1,
            reason,
        })?;
        symbols.push(sym);
    }
    Ok(KernelSymbols::new(file, symbols))
}

fn parse_line(line: &str) -> Result<KernelSymbol, String> {
    let (main, module) = match line.split_once('\t') {
        Some((main, rest)) => {
            let m = rest.trim();
            let m = m
                .strip_prefix('[')
                .and_then(|m| m.strip_suffix(']'))
                .ok_or_else(|| format!("module field `{m}` is not `[name]`"))?;
            if m.is_empty() {
                return Err("empty module name".to_string());
            }
            (main, m)
        }
        None => (line, VMLINUX),
    };
    let mut it = main.split_ascii_whitespace();
    let (Some(addr), Some(kind), Some(name), None) = (it.next(), it.next(), it.next(), it.next())
    else {
        return Err("expected `address type name`".to_string());
    };
    let address = u64::from_str_radix(addr, 16).map_err(|e| format!("address `{addr}`: {e}"))?;
    let mut kc = kind.chars();
    let (Some(kind), None) = (kc.next(), kc.next()) else {
        return Err(format!("type `{kind}` is not one letter"));
    };
    if !kind.is_ascii_alphabetic() && kind != '?' {
        return Err(format!("type `{kind}` is not a letter"));
    }
    Ok(KernelSymbol::new(address, kind, name, module))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vmlinux_and_module_lines() {
        let text = "ffffffff81000000 T _text\n\
                    ffffffff81001000 t c_start\n\
                    0000000000000000 t c_start\n\
                    ffffffffc0100000 t ext4_foo\t[ext4]\n\
                    ffffffffc0200000 t c_start\t[some_mod]\n";
        let k = parse_proc_kallsyms(text, "/proc/kallsyms").unwrap();
        assert_eq!(k.len(), 5);
        assert_eq!(k.symbols()[3].object, "ext4");
        assert_eq!(k.symbols()[3].name, "ext4_foo");
        assert_eq!(k.occurrences(VMLINUX, "c_start"), vec![1, 2]);
        assert_eq!(k.occurrences("some_mod", "c_start"), vec![4]);
        assert_eq!(k.symbols()[0].kind, 'T');
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        for bad in [
            "zzzz T foo",
            "ffff TT foo",
            "ffff T",
            "ffff T foo\text4",
            "ffff T foo bar",
        ] {
            let text = format!("ffffffff81000000 T _text\n{bad}\n");
            let err = parse_proc_kallsyms(&text, "saved-kallsyms").unwrap_err();
            assert!(
                err.to_string().starts_with("saved-kallsyms:2:"),
                "{bad}: {err}"
            );
        }
    }
}
