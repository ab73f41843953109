/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * kpatch-macros.h - markers for livepatch source patches built by kpatch-rs.
 *
 * Include this header from a patched kernel source file (it is on the include
 * path of every compile kpatch-rs does for a patch).  The markers place small
 * records in sections whose names start with ".kpatch."; kpatch-rs reads them
 * while comparing the patched and original objects and while generating the
 * livepatch module, and none of them ends up as patched code.
 *
 * Callbacks (one of each kind per patched object, vmlinux or a module):
 *
 *   KPATCH_PRE_PATCH_CALLBACK(fn)     int  fn(patch_object *obj)
 *   KPATCH_POST_PATCH_CALLBACK(fn)    void fn(patch_object *obj)
 *   KPATCH_PRE_UNPATCH_CALLBACK(fn)   void fn(patch_object *obj)
 *   KPATCH_POST_UNPATCH_CALLBACK(fn)  void fn(patch_object *obj)
 *
 * They run with the semantics of the livepatch core's klp_callbacks: for the
 * object of the file that uses the macro, when that object is (un)patched.  A
 * pre-patch callback that returns an error makes the patch fail to apply.
 *
 * Other markers:
 *
 *   KPATCH_IGNORE_SECTION(".name")  do not treat changes in section ".name" as
 *                                   changes of the patch
 *   KPATCH_IGNORE_FUNCTION(fn)      do not patch fn even though it changed
 *   KPATCH_FORCE_UNSAFE(fn)         patch fn even though the consistency model
 *                                   would reject it (you vouch for its safety)
 *   KPATCH_PRINTK(fmt, ...)         printk without turning the calling code path
 *                                   cold (see below)
 *
 * Shadow variables are the livepatch core's klp_shadow_alloc(), klp_shadow_get(),
 * klp_shadow_get_or_alloc() and klp_shadow_free(); <linux/livepatch.h> is
 * included here for them and for struct klp_object.
 */
#ifndef __KPATCH_MACROS_H_
#define __KPATCH_MACROS_H_

#include <linux/compiler.h>
#include <linux/jiffies.h>
#include <linux/livepatch.h>
#include <linux/printk.h>

/* The object a callback is called for: vmlinux (name NULL) or a module. */
typedef struct klp_object patch_object;

/*
 * One record per callback.  The layout (a function pointer followed by an
 * object-name pointer, NULL here) is shared with the generated module glue,
 * which reads the function pointer; kpatch-rs knows the object from the file
 * the record comes from.
 */
struct kpatch_pre_patch_callback {
	int (*fn)(patch_object *obj);
	const char *objname;
};

struct kpatch_post_patch_callback {
	void (*fn)(patch_object *obj);
	const char *objname;
};

struct kpatch_pre_unpatch_callback {
	void (*fn)(patch_object *obj);
	const char *objname;
};

struct kpatch_post_unpatch_callback {
	void (*fn)(patch_object *obj);
	const char *objname;
};

/*
 * The initialiser checks the callback's type: a function with another
 * signature is an incompatible-pointer-types error in kernel builds.
 */
#define __KPATCH_CALLBACK(_kind, _fn)						\
	static struct kpatch_##_kind##_callback __kpatch_##_kind##_##_fn	\
	__section(".kpatch.callbacks." #_kind) __used = {			\
		.fn = _fn,							\
		.objname = NULL,						\
	}

#define KPATCH_PRE_PATCH_CALLBACK(_fn)	__KPATCH_CALLBACK(pre_patch, _fn)
#define KPATCH_POST_PATCH_CALLBACK(_fn)	__KPATCH_CALLBACK(post_patch, _fn)
#define KPATCH_PRE_UNPATCH_CALLBACK(_fn)	__KPATCH_CALLBACK(pre_unpatch, _fn)
#define KPATCH_POST_UNPATCH_CALLBACK(_fn)	__KPATCH_CALLBACK(post_unpatch, _fn)

/*
 * Each record is one pointer: to the section-name string, or to the function.
 */
#define KPATCH_IGNORE_SECTION(_sec)						\
	static const char *__UNIQUE_ID(kpatch_ignore_section_)			\
	__section(".kpatch.ignore.sections") __used = (_sec)

#define KPATCH_IGNORE_FUNCTION(_fn)						\
	static void *__kpatch_ignore_function_##_fn				\
	__section(".kpatch.ignore.functions") __used = (void *)(_fn)

#define KPATCH_FORCE_UNSAFE(_fn)						\
	static void *__kpatch_force_unsafe_##_fn				\
	__section(".kpatch.force") __used = (void *)(_fn)

/*
 * printk() is declared __cold, and gcc may then treat a whole code path that
 * calls it as unlikely: it moves the path to .text.unlikely or splits the
 * function (foo.cold), and the patched function no longer matches the shape of
 * the original.  The test of jiffies (volatile, never known at compile time)
 * gives the call a branch of its own, so only that branch is cold.
 */
#define KPATCH_PRINTK(_fmt, ...)						\
({										\
	if (jiffies)								\
		printk(_fmt, ##__VA_ARGS__);					\
})

#endif /* __KPATCH_MACROS_H_ */
