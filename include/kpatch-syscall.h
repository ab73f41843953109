/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * kpatch-syscall.h - patching a system call with kpatch-rs.
 *
 * Replace SYSCALL_DEFINEn(name, ...) by KPATCH_SYSCALL_DEFINEn(name, ...) in
 * the patched source.  The function bodies and the entry points the system
 * call table uses (__x64_sys_<name>, __ia32_sys_<name>, __se_sys_<name>)
 * come out as with SYSCALL_DEFINEn, without the tracing
 * metadata (SYSCALL_METADATA: syscall trace events) and the error-injection
 * list entry, which are tables of the original kernel image that a livepatch
 * module cannot extend: a patch that kept them would not build.
 *
 * The body is named __kpatch_do_sys_<name>, not __do_sys_<name>: the kernel's
 * __do_sys_<name> is static inline, so notrace, and where gcc kept it out of
 * line it cannot be patched itself. Under a new name the body is a new
 * function, and the traced entry points that call it are the changed ones.
 */
#ifndef __KPATCH_SYSCALL_H_
#define __KPATCH_SYSCALL_H_

#include <linux/syscalls.h>
#include "kpatch-macros.h"

#if defined(CONFIG_X86_64) && defined(CONFIG_ARCH_HAS_SYSCALL_WRAPPER)

/* One pt_regs entry point that unpacks the registers for __se_<name>. */
#define __KPATCH_SYS_ENTRY(abi, name, ...)					\
	long __##abi##_##name(const struct pt_regs *regs);			\
	long __##abi##_##name(const struct pt_regs *regs)			\
	{									\
		return __se_##name(__VA_ARGS__);				\
	}

#define __KPATCH_X64_SYS_ENTRY(x, name, ...)					\
	__KPATCH_SYS_ENTRY(x64, sys##name, SC_X86_64_REGS_TO_ARGS(x, __VA_ARGS__))

#ifdef CONFIG_IA32_EMULATION
#define __KPATCH_IA32_SYS_ENTRY(x, name, ...)					\
	__KPATCH_SYS_ENTRY(ia32, sys##name, SC_IA32_REGS_TO_ARGS(x, __VA_ARGS__))
#else
#define __KPATCH_IA32_SYS_ENTRY(x, name, ...)
#endif

#define __KPATCH_SYSCALL_DEFINEx(x, name, ...)					\
	static long __se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__));		\
	static inline long __kpatch_do_sys##name(__MAP(x, __SC_DECL, __VA_ARGS__));	\
	__KPATCH_X64_SYS_ENTRY(x, name, __VA_ARGS__)				\
	__KPATCH_IA32_SYS_ENTRY(x, name, __VA_ARGS__)				\
	static long __se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__))		\
	{									\
		long ret = __kpatch_do_sys##name(__MAP(x, __SC_CAST, __VA_ARGS__));	\
		__MAP(x, __SC_TEST, __VA_ARGS__);				\
		__PROTECT(x, ret, __MAP(x, __SC_ARGS, __VA_ARGS__));		\
		return ret;							\
	}									\
	static inline long __kpatch_do_sys##name(__MAP(x, __SC_DECL, __VA_ARGS__))

#else /* architectures without pt_regs syscall wrappers */

#define __KPATCH_SYSCALL_DEFINEx(x, name, ...)					\
	__diag_push();								\
	__diag_ignore(GCC, 8, "-Wattribute-alias",				\
		      "sys_<name> is an alias of __se_sys_<name>");		\
	asmlinkage long sys##name(__MAP(x, __SC_DECL, __VA_ARGS__))		\
		__attribute__((alias(__stringify(__se_sys##name))));		\
	static inline long __kpatch_do_sys##name(__MAP(x, __SC_DECL, __VA_ARGS__));	\
	asmlinkage long __se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__));	\
	asmlinkage long __se_sys##name(__MAP(x, __SC_LONG, __VA_ARGS__))	\
	{									\
		long ret = __kpatch_do_sys##name(__MAP(x, __SC_CAST, __VA_ARGS__));	\
		__MAP(x, __SC_TEST, __VA_ARGS__);				\
		__PROTECT(x, ret, __MAP(x, __SC_ARGS, __VA_ARGS__));		\
		return ret;							\
	}									\
	__diag_pop();								\
	static inline long __kpatch_do_sys##name(__MAP(x, __SC_DECL, __VA_ARGS__))

#endif

#define KPATCH_SYSCALL_DEFINE1(name, ...) __KPATCH_SYSCALL_DEFINEx(1, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE2(name, ...) __KPATCH_SYSCALL_DEFINEx(2, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE3(name, ...) __KPATCH_SYSCALL_DEFINEx(3, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE4(name, ...) __KPATCH_SYSCALL_DEFINEx(4, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE5(name, ...) __KPATCH_SYSCALL_DEFINEx(5, _##name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE6(name, ...) __KPATCH_SYSCALL_DEFINEx(6, _##name, __VA_ARGS__)

#endif /* __KPATCH_SYSCALL_H_ */
