#!/usr/bin/env bash
# Builds a small x86_64 kernel that can be live-patched: tinyconfig plus livepatch (ftrace with
# regs, kallsyms, ORC unwinder for reliable stack traces) and what a QEMU guest with a busybox
# initramfs needs (serial console on ttyS0, initrd, ELF and script binaries, devtmpfs, tmpfs,
# ACPI for `poweroff -f` to end QEMU, and PCI, without which ACPI cannot load the DSDT of QEMU's
# pc machine; PVH so QEMU boots the ELF vmlinux with -kernel). No module signing, no MODVERSIONS.
#
#   bash scripts/tiny-kernel.sh <linux-source tarball> <dest dir>
#
# The tree is unpacked and built in a temporary directory beside <dest dir> and renamed to
# <dest dir> only when complete; an flock on <dest dir>.lock keeps two callers from building
# at once (the second waits, then finds it done). A tree built by another version of this
# recipe (options, compiler) is rebuilt. Prints <dest dir> on stdout when ready.
# Use it with `kpatch-rs build --sourcedir <dest dir> --config <dest dir>/.config
# --vmlinux <dest dir>/vmlinux`. Environment: CC (default gcc-12), JOBS (default nproc).
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 <linux-source tarball> <dest dir>" >&2
    exit 2
fi
tarball=$(realpath "$1")
dest=$2
cc=${CC:-gcc-12}
jobs=${JOBS:-$(nproc)}
# Every option here must end up =y after olddefconfig, or the build stops and names it.
options=(
    64BIT MODULES MODULE_UNLOAD
    LIVEPATCH FTRACE FUNCTION_TRACER DYNAMIC_FTRACE DYNAMIC_FTRACE_WITH_REGS
    KALLSYMS KALLSYMS_ALL DEBUG_KERNEL SYSFS UNWINDER_ORC HAVE_RELIABLE_STACKTRACE
    PROC_FS PRINTK BUG TTY SERIAL_8250 SERIAL_8250_CONSOLE
    BLK_DEV_INITRD BINFMT_ELF BINFMT_SCRIPT DEVTMPFS DEVTMPFS_MOUNT SHMEM TMPFS
    MULTIUSER FUTEX EPOLL FILE_LOCKING ACPI PCI HYPERVISOR_GUEST PVH
)
disabled=(MODULE_SIG MODVERSIONS TRIM_UNUSED_KSYMS UNWINDER_GUESS UNWINDER_FRAME_POINTER)

# What the build depends on besides the tarball (the caller keys <dest dir> by its version):
# a tree built with other options or another compiler is stale and is rebuilt.
recipe="options=${options[*]} disabled=${disabled[*]} cc=$cc"
complete() { [ "$(cat "$dest/.tiny-kernel-complete" 2>/dev/null)" = "$recipe" ]; }
if complete; then
    echo "$dest"
    exit 0
fi
parent=$(dirname "$dest")
mkdir -p "$parent"
exec 9>"$dest.lock"
if ! flock -n 9; then
    echo "tiny-kernel: waiting for another build of $dest" >&2
    flock 9
fi
if complete; then
    echo "$dest"
    exit 0
fi
if [ -e "$dest" ]; then
    echo "tiny-kernel: $dest is stale or incomplete (its recipe differs); rebuilding" >&2
    rm -rf "$dest"
fi

tmp=$(mktemp -d "$parent/.$(basename "$dest").tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "tiny-kernel: unpacking $tarball" >&2
tar -xf "$tarball" -C "$tmp"
tree=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d | head -n 1)
[ -f "$tree/Makefile" ] || { echo "tiny-kernel: no kernel tree in $tarball" >&2; exit 1; }
cd "$tree"
mk() { make ARCH=x86_64 CC="$cc" "$@"; }
echo "tiny-kernel: configuring (tinyconfig + livepatch + guest options)" >&2
mk tinyconfig >/dev/null
args=()
for o in "${options[@]}"; do args+=(-e "$o"); done
for o in "${disabled[@]}"; do args+=(-d "$o"); done
scripts/config "${args[@]}"
mk olddefconfig >/dev/null
missing=()
for o in "${options[@]}"; do
    grep -qx "CONFIG_$o=y" .config || missing+=("CONFIG_$o")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "tiny-kernel: olddefconfig left these unset (a dependency is missing): ${missing[*]}" >&2
    exit 1
fi
echo "tiny-kernel: make -j$jobs all (vmlinux, bzImage, modules: Module.symvers and modpost)" >&2
if ! mk -j"$jobs" all >"$tmp/build.log" 2>&1; then
    tail -n 40 "$tmp/build.log" >&2
    echo "tiny-kernel: the kernel build failed" >&2
    exit 1
fi
for f in vmlinux arch/x86/boot/bzImage Module.symvers scripts/mod/modpost include/config/kernel.release; do
    [ -e "$f" ] || { echo "tiny-kernel: the build left no $f" >&2; exit 1; }
done
end=$(date +%s)
echo "tiny-kernel: built in $((end - start)) s" >&2
echo "$((end - start))" >.tiny-kernel-build-seconds
echo "$recipe" >.tiny-kernel-complete
cd /
mv "$tree" "$dest"
echo "$dest"
