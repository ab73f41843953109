//! Symbol resolution against a target kernel: vmlinux symtab, kallsyms, Module.symvers.
