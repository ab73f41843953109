//! Kernel interface (sysfs, proc, finit_module) behind a trait; patch management.
