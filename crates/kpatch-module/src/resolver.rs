//! Where the symbols a diff object uses live in the target kernel.
//!
//! [`SymbolResolver`] is the seam: module generation asks it about every symbol a diff object
//! uses but does not define, and about the `old_sympos` of every changed function.
//! [`KernelResolver`] answers from kpatch-symbols' tables (the target's symbols in kallsyms order
//! and its `Module.symvers`); tests use a fake.

use crate::names::VMLINUX;
use kpatch_elf::consts::*;
use kpatch_elf::Object;
use kpatch_symbols::{KernelSymbols, Symvers, TranslationUnit};
use std::collections::HashSet;

/// The translation unit a question is asked for.
#[derive(Debug, Clone, Copy)]
pub struct TuContext<'a> {
    /// The unit's name in messages (its object path, e.g. `fs/proc/cmdline.o`).
    pub name: &'a str,
    /// Its source path in the kernel tree (e.g. `fs/proc/cmdline.c`), or the basename from the
    /// original object's `STT_FILE` symbol.
    pub source: &'a str,
    /// The livepatch object it belongs to: `vmlinux` or a module name (kernel spelling).
    pub object: &'a str,
    /// The unit compiled from the unpatched source: its symbols identify the unit's block among
    /// same-named locals of the target.
    pub original: &'a Object,
}

/// How a symbol used by patched code is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Exported by vmlinux, or by a module other than the one being patched (jbd2 for an ext4
    /// patch, usbcore for a USB driver): a normal relocation, resolved by the module loader,
    /// versioned by modpost, which also records the exporting module in the patch's `depends`.
    /// `object` is the exporter (kernel spelling); `crc` the target's CRC (`None` when the kernel
    /// has no modversions); `namespace` the export's symbol namespace (`EXPORT_SYMBOL_NS`),
    /// which the glue imports.
    Export {
        object: String,
        crc: Option<u32>,
        namespace: Option<String>,
    },
    /// Resolved by the livepatch core: the symbol is defined in `object` (vmlinux or a module) at
    /// livepatch position `sympos` (0 when its name is unique there).
    Klp { object: String, sympos: u64 },
}

/// Why a symbol could not be resolved (absent, ambiguous, ...); the text names the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveError {
    /// The object searched (vmlinux or a module), for the message.
    pub object: String,
    pub reason: String,
}

pub trait SymbolResolver {
    /// A symbol `tu` uses but its diff object does not define. `local` is true for a symbol that
    /// is file-local (`STB_LOCAL`) in the unit: it is defined by the unit itself in `tu.object`.
    fn resolve(
        &self,
        tu: &TuContext<'_>,
        name: &str,
        local: bool,
    ) -> Result<Resolution, ResolveError>;

    /// The `old_sympos` of function `name`, which `tu` defines and the patch replaces.
    fn function_sympos(&self, tu: &TuContext<'_>, name: &str) -> Result<u64, ResolveError>;

    /// Whether `object`'s function `name` has its ENDBR sealed at boot (IBT): the kernel found no
    /// taken address of it, so an indirect call to it faults.
    fn is_sealed(&self, _object: &str, _name: &str) -> bool {
        false
    }
}

/// The names of the functions and data objects an object defines (for sympos disambiguation).
pub fn defined_names(object: &Object) -> Vec<String> {
    object
        .symbols_iter()
        .filter(|(_, s)| {
            s.section.is_some()
                && matches!(s.st_type(), STT_FUNC | STT_OBJECT)
                && !s.name.is_empty()
        })
        .map(|(_, s)| s.name.clone())
        .collect()
}

/// The name of the first `STT_FILE` symbol of an object (gcc writes the source basename).
pub fn source_file_name(object: &Object) -> Option<String> {
    object
        .symbols_iter()
        .find(|(_, s)| s.st_type() == STT_FILE && !s.name.is_empty())
        .map(|(_, s)| s.name.clone())
}

/// A resolver over the target's symbols (vmlinux and, for module patches, the modules concerned,
/// in kallsyms order) and its `Module.symvers`.
pub struct KernelResolver {
    pub symbols: KernelSymbols,
    pub symvers: Symvers,
    /// The target checks symbol CRCs (`CONFIG_MODVERSIONS`); without it `Module.symvers` holds
    /// zeros and modules carry no `__versions`.
    pub modversions: bool,
    /// `(object, name)` of the functions whose ENDBR the kernel seals at boot (IBT). A name is
    /// in it when any function of that name in the object is sealed: for the rare repeated local
    /// name this errs on the side of refusing.
    pub sealed: HashSet<(String, String)>,
}

impl KernelResolver {
    pub fn new(symbols: KernelSymbols, symvers: Symvers) -> Self {
        KernelResolver {
            symbols,
            symvers,
            modversions: true,
            sealed: HashSet::new(),
        }
    }

    /// Marks the functions of `object` that start at one of `addresses` (the sealed ENDBRs of
    /// `.ibt_endbr_seal`, see `kpatch_symbols::sealed_endbr_addresses`) as sealed.
    pub fn with_sealed(mut self, object: &str, addresses: &[u64]) -> Self {
        let set: HashSet<u64> = addresses.iter().copied().collect();
        for s in self.symbols.symbols() {
            if s.object == object && s.is_text() && set.contains(&s.address) {
                self.sealed.insert((object.to_string(), s.name.clone()));
            }
        }
        self
    }

    /// A resolver for a target built without `CONFIG_MODVERSIONS`: exports carry no CRC.
    pub fn without_modversions(mut self) -> Self {
        self.modversions = false;
        self
    }

    fn unit(tu: &TuContext<'_>) -> TranslationUnit {
        TranslationUnit {
            source: tu.source.to_string(),
            object: tu.object.to_string(),
            symbols: defined_names(tu.original),
        }
    }

    fn err(object: &str, e: impl std::fmt::Display) -> ResolveError {
        ResolveError {
            object: object.to_string(),
            reason: e.to_string(),
        }
    }

    /// The sympos of a global `name` in `object`: unique, or the single global among
    /// same-named symbols.
    fn global_sympos(&self, object: &str, name: &str) -> Result<u64, ResolveError> {
        match self.symbols.resolve(object, name) {
            Ok(r) => Ok(r.sympos as u64),
            Err(e) => {
                let occ = self.symbols.occurrences(object, name);
                let globals: Vec<usize> = occ
                    .iter()
                    .enumerate()
                    .filter(|(_, &i)| !self.symbols.symbols()[i].is_local())
                    .map(|(p, _)| p + 1)
                    .collect();
                match globals.as_slice() {
                    [one] => Ok(*one as u64),
                    _ => Err(Self::err(object, e)),
                }
            }
        }
    }
}

impl SymbolResolver for KernelResolver {
    fn resolve(
        &self,
        tu: &TuContext<'_>,
        name: &str,
        local: bool,
    ) -> Result<Resolution, ResolveError> {
        if local {
            let r = self
                .symbols
                .resolve_in_unit(&Self::unit(tu), name)
                .map_err(|e| Self::err(tu.object, e))?;
            return Ok(Resolution::Klp {
                object: tu.object.to_string(),
                sympos: r.sympos as u64,
            });
        }
        if let Some(entry) = self.symvers.get(name) {
            let object = entry.object();
            // An export of the patched module itself stays a livepatch relocation: the module
            // may load after the patch, and a normal relocation would make the patch need it.
            if object == VMLINUX || object != tu.object {
                let namespace = (!entry.namespace.is_empty()).then(|| entry.namespace.clone());
                return Ok(Resolution::Export {
                    object,
                    crc: self.modversions.then_some(entry.crc),
                    namespace,
                });
            }
            let sympos = self.global_sympos(&object, name)?;
            return Ok(Resolution::Klp { object, sympos });
        }
        // Not exported: the unit's own object first (a module's global), else vmlinux.
        let object = if !self.symbols.occurrences(tu.object, name).is_empty() {
            tu.object.to_string()
        } else if !self.symbols.occurrences(VMLINUX, name).is_empty() {
            VMLINUX.to_string()
        } else {
            let others = self.symbols.objects_defining(name);
            let reason = if others.is_empty() {
                format!(
                    "no symbol of this name in {} or vmlinux (symbols from {})",
                    tu.object, self.symbols.source
                )
            } else {
                format!(
                    "only {} define(s) it, and it is not exported",
                    others.join(", ")
                )
            };
            return Err(ResolveError {
                object: tu.object.to_string(),
                reason,
            });
        };
        let sympos = self.global_sympos(&object, name)?;
        Ok(Resolution::Klp { object, sympos })
    }

    fn function_sympos(&self, tu: &TuContext<'_>, name: &str) -> Result<u64, ResolveError> {
        let r = self
            .symbols
            .resolve_in_unit(&Self::unit(tu), name)
            .map_err(|e| Self::err(tu.object, e))?;
        Ok(r.sympos as u64)
    }

    fn is_sealed(&self, object: &str, name: &str) -> bool {
        self.sealed
            .contains(&(object.to_string(), name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpatch_elf::{Header, Section, Symbol};
    use kpatch_symbols::KernelSymbol;

    fn original() -> Object {
        let mut o = Object::new(Header {
            e_machine: EM_X86_64,
            e_flags: 0,
            ei_osabi: 0,
            ei_abiversion: 0,
            big_endian: false,
        });
        let t = o.add_section(Section::new(
            ".text",
            SHT_PROGBITS,
            SHF_ALLOC | SHF_EXECINSTR,
        ));
        let mut f = Symbol::new("cmdline.c", STB_LOCAL, STT_FILE);
        f.st_shndx = SHN_ABS;
        o.add_symbol(f);
        for n in ["helper", "neighbour"] {
            let mut s = Symbol::new(n, STB_LOCAL, STT_FUNC);
            s.section = Some(t);
            o.add_symbol(s);
        }
        o
    }

    fn resolver() -> KernelResolver {
        let mut syms = vec![KernelSymbol::new(0x10, 't', "helper", VMLINUX)];
        // Far enough apart that only the second `helper` has the unit's other symbol nearby.
        syms.extend(
            (0..40).map(|i| KernelSymbol::new(0x11 + i, 't', format!("filler{i}"), VMLINUX)),
        );
        syms.extend([
            KernelSymbol::new(0x20, 't', "helper", VMLINUX),
            KernelSymbol::new(0x28, 't', "neighbour", VMLINUX),
            KernelSymbol::new(0x30, 'T', "printk", VMLINUX),
            KernelSymbol::new(0x40, 'T', "secret", VMLINUX),
            KernelSymbol::new(0x50, 'T', "ext4_thing", "ext4"),
        ]);
        let symvers = Symvers::parse(
            "0x12345678\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n0x00000007\tnsfunc\tvmlinux\tEXPORT_SYMBOL_GPL\tCRYPTO_INTERNAL\n0x0badf00d\text4_thing\tfs/ext4/ext4\tEXPORT_SYMBOL_GPL\t\n",
            "Module.symvers",
        )
        .unwrap();
        KernelResolver::new(KernelSymbols::new("test", syms), symvers)
    }

    #[test]
    fn resolves_exports_locals_and_unexported_globals() {
        let orig = original();
        let tu = TuContext {
            name: "fs/proc/cmdline.o",
            source: "fs/proc/cmdline.c",
            object: VMLINUX,
            original: &orig,
        };
        let r = resolver();
        assert_eq!(
            r.resolve(&tu, "printk", false).unwrap(),
            Resolution::Export {
                object: VMLINUX.into(),
                crc: Some(0x12345678),
                namespace: None
            }
        );
        assert_eq!(
            r.resolve(&tu, "nsfunc", false).unwrap(),
            Resolution::Export {
                object: VMLINUX.into(),
                crc: Some(7),
                namespace: Some("CRYPTO_INTERNAL".into())
            }
        );
        assert_eq!(
            r.resolve(&tu, "secret", false).unwrap(),
            Resolution::Klp {
                object: VMLINUX.into(),
                sympos: 0
            }
        );
        // The second `helper` sits next to `neighbour`, the unit's other symbol.
        assert_eq!(
            r.resolve(&tu, "helper", true).unwrap(),
            Resolution::Klp {
                object: VMLINUX.into(),
                sympos: 2
            }
        );
        assert_eq!(r.function_sympos(&tu, "helper").unwrap(), 2);
        // Exported by a module: a normal relocation from vmlinux code...
        assert_eq!(
            r.resolve(&tu, "ext4_thing", false).unwrap(),
            Resolution::Export {
                object: "ext4".into(),
                crc: Some(0x0badf00d),
                namespace: None
            }
        );
        let e = r.resolve(&tu, "nowhere", false).unwrap_err();
        assert!(e.reason.contains("no symbol"), "{e:?}");
    }

    #[test]
    fn regression_module_patch_calling_another_modules_export() {
        // ext4 calling jbd2's export was "not in the target kernel (jbd2)": jbd2's symbols are
        // not loaded, and need not be: the export is a normal, versioned relocation.
        let o = original();
        let tu = TuContext {
            name: "fs/ext4/inode.o",
            source: "fs/ext4/inode.c",
            object: "ext4",
            original: &o,
        };
        let mut r = resolver();
        r.symvers = Symvers::parse(
            "0x0000abcd\tjbd2_journal_inode_ranged_wait\tfs/jbd2/jbd2\tEXPORT_SYMBOL\t\n0x0badf00d\text4_thing\tfs/ext4/ext4\tEXPORT_SYMBOL_GPL\t\n",
            "Module.symvers",
        )
        .unwrap();
        assert_eq!(
            r.resolve(&tu, "jbd2_journal_inode_ranged_wait", false)
                .unwrap(),
            Resolution::Export {
                object: "jbd2".into(),
                crc: Some(0xabcd),
                namespace: None
            }
        );
        // ...but the patched module's own export is resolved by the livepatch core.
        assert_eq!(
            r.resolve(&tu, "ext4_thing", false).unwrap(),
            Resolution::Klp {
                object: "ext4".into(),
                sympos: 0
            }
        );
    }

    #[test]
    fn a_target_without_modversions_gives_exports_no_crc() {
        let o = original();
        let tu = TuContext {
            name: "fs/proc/cmdline.o",
            source: "fs/proc/cmdline.c",
            object: VMLINUX,
            original: &o,
        };
        assert!(matches!(
            resolver().resolve(&tu, "printk", false),
            Ok(Resolution::Export {
                crc: Some(0x12345678),
                ..
            })
        ));
        assert!(matches!(
            resolver()
                .without_modversions()
                .resolve(&tu, "printk", false),
            Ok(Resolution::Export { crc: None, .. })
        ));
    }
}
