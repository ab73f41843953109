//! The symbol table of a target kernel in kallsyms order, indexed by name.

use std::collections::HashMap;

pub use kpatch_common::VMLINUX;

/// Whether a name looks like one a linker script provides (`__start_X`, `__stop_X`, `__end_X`,
/// `__X_start`, `__X_end`): kallsyms puts those after other symbols at the same address.
pub(crate) fn linker_provided(name: &str) -> bool {
    name.len() >= 8
        && name.starts_with("__")
        && (name[2..].starts_with("start_")
            || name[2..].starts_with("stop_")
            || name[2..].starts_with("end_")
            || name.ends_with("_start")
            || name.ends_with("_end"))
}

/// Whether a symbol marks where an output section (or a linker-collected part of one, such as
/// `.data.once`) starts or ends: no translation unit's block runs across it.
pub(crate) fn section_boundary(name: &str) -> bool {
    linker_provided(name)
        || name.ends_with("_stop")
        || matches!(
            name,
            "_text"
                | "_stext"
                | "_etext"
                | "_sdata"
                | "_edata"
                | "_sinittext"
                | "_einittext"
                | "_end"
        )
}

/// One symbol of the target kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSymbol {
    /// Address: link-time for ELF and embedded tables, run-time for /proc/kallsyms (0 when hidden).
    pub address: u64,
    /// nm-style type letter: lower case for local symbols (`t`, `d`, `b`, `r`), upper case for global.
    pub kind: char,
    pub name: String,
    /// `vmlinux`, or the module that defines the symbol.
    pub object: String,
    /// Source file named by the STT_FILE symbol that precedes this local symbol in a vmlinux
    /// `.symtab`; `None` for other sources and for global symbols.
    pub file: Option<String>,
    /// Symbols sharing a `file_group` come from one translation unit (one FILE block of `.symtab`).
    pub file_group: Option<u32>,
}

impl KernelSymbol {
    /// A symbol without FILE information.
    pub fn new(
        address: u64,
        kind: char,
        name: impl Into<String>,
        object: impl Into<String>,
    ) -> Self {
        KernelSymbol {
            address,
            kind,
            name: name.into(),
            object: object.into(),
            file: None,
            file_group: None,
        }
    }

    /// Text (code) symbol: `t`/`T`, or weak code `w`/`W`.
    pub fn is_text(&self) -> bool {
        matches!(self.kind, 't' | 'T' | 'w' | 'W')
    }

    /// Local (file-scope) symbol: lower-case type letter.
    pub fn is_local(&self) -> bool {
        self.kind.is_ascii_lowercase() && !matches!(self.kind, 'w' | 'v' | 'u')
    }
}

/// All symbols of a target, in kallsyms order, with an index by name.
///
/// Livepatch's `sympos` of a symbol is its 1-based place among the symbols of the same object with
/// the same name, in the order in which the kernel's symbol walk visits them: address order for
/// vmlinux (the order of its kallsyms table, and of `kallsyms_seqs_of_names` among equal names), the
/// module's symbol-table order for a module.
#[derive(Debug, Clone, Default)]
pub struct KernelSymbols {
    /// Where the symbols came from (a path, or `/proc/kallsyms`), for messages.
    pub source: String,
    symbols: Vec<KernelSymbol>,
    /// name -> indices into `symbols`, in sympos order (all objects mixed; filter by object).
    by_name: HashMap<String, Vec<usize>>,
    /// FILE group -> indices into `symbols`.
    by_group: HashMap<u32, Vec<usize>>,
}

impl KernelSymbols {
    /// Symbols in kallsyms order; same-named symbols are numbered in this order.
    pub fn new(source: impl Into<String>, symbols: Vec<KernelSymbol>) -> Self {
        let order: Vec<usize> = (0..symbols.len()).collect();
        Self::with_position_order(source, symbols, &order)
    }

    /// Symbols in kallsyms order, with same-named symbols numbered in the order in which their
    /// indices appear in `order` (e.g. the table's `kallsyms_seqs_of_names`). Indices that are out of
    /// range or repeated are ignored; symbols missing from `order` are numbered after the others.
    pub fn with_position_order(
        source: impl Into<String>,
        symbols: Vec<KernelSymbol>,
        order: &[usize],
    ) -> Self {
        let mut seen = vec![false; symbols.len()];
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::with_capacity(symbols.len());
        let rest: Vec<usize> = (0..symbols.len()).collect();
        for &i in order.iter().chain(rest.iter()) {
            if i >= symbols.len() || seen[i] {
                continue;
            }
            seen[i] = true;
            by_name.entry(symbols[i].name.clone()).or_default().push(i);
        }
        let mut by_group: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, s) in symbols.iter().enumerate() {
            if let Some(g) = s.file_group {
                by_group.entry(g).or_default().push(i);
            }
        }
        KernelSymbols {
            source: source.into(),
            symbols,
            by_name,
            by_group,
        }
    }

    pub fn symbols(&self) -> &[KernelSymbol] {
        &self.symbols
    }

    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// Indices (into [`Self::symbols`]) of the symbols named `name` in `object`, in sympos order.
    pub fn occurrences(&self, object: &str, name: &str) -> Vec<usize> {
        self.by_name
            .get(name)
            .map(|v| {
                v.iter()
                    .copied()
                    .filter(|&i| self.symbols[i].object == object)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Indices of the symbols of FILE group `group` (one translation unit of a `.symtab`).
    pub fn file_group(&self, group: u32) -> &[usize] {
        self.by_group.get(&group).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every object (vmlinux or module) that has a symbol named `name`, each once.
    pub fn objects_defining(&self, name: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for &i in self.by_name.get(name).map(Vec::as_slice).unwrap_or(&[]) {
            let object = self.symbols[i].object.as_str();
            if !out.contains(&object) {
                out.push(object);
            }
        }
        out
    }

    /// Names that occur more than once in `object` among the symbols accepted by `filter`
    /// (counting only accepted symbols), with their counts, sorted by name.
    pub fn repeated_names(
        &self,
        object: &str,
        filter: impl Fn(&KernelSymbol) -> bool,
    ) -> Vec<(&str, usize)> {
        let mut out: Vec<(&str, usize)> = self
            .by_name
            .iter()
            .map(|(name, v)| {
                let n = v
                    .iter()
                    .filter(|&&i| self.symbols[i].object == object && filter(&self.symbols[i]))
                    .count();
                (name.as_str(), n)
            })
            .filter(|&(_, n)| n > 1)
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_given_order() {
        let syms = vec![
            KernelSymbol::new(0x10, 't', "a", VMLINUX),
            KernelSymbol::new(0x20, 't', "b", VMLINUX),
            KernelSymbol::new(0x30, 't', "a", VMLINUX),
            KernelSymbol::new(0x40, 't', "a", "ext4"),
        ];
        let k = KernelSymbols::new("test", syms.clone());
        assert_eq!(k.occurrences(VMLINUX, "a"), vec![0, 2]);
        assert_eq!(k.occurrences("ext4", "a"), vec![3]);
        assert_eq!(k.occurrences(VMLINUX, "zz"), Vec::<usize>::new());
        assert_eq!(k.objects_defining("a"), vec![VMLINUX, "ext4"]);
        let k = KernelSymbols::with_position_order("test", syms, &[2, 1, 0]);
        assert_eq!(k.occurrences(VMLINUX, "a"), vec![2, 0]);
        assert_eq!(k.repeated_names(VMLINUX, |s| s.is_text()), vec![("a", 2)]);
        assert_eq!(k.repeated_names("ext4", |_| true), vec![]);
    }
}
