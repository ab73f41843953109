#!/usr/bin/env bash
# Installs the system packages kpatch-rs and its tests use, on Debian 12 (bookworm).
# Idempotent: packages already present are skipped. Needs root (or sudo).
set -euo pipefail

PKGS=(
  # kernel builds (make prepare, objtool, module builds)
  gcc-12 libc6-dev make bison flex bc libelf-dev libssl-dev dwarves patch xz-utils zstd
  # module signing (build --sign-key) and its test
  openssl
  # guest harness: QEMU under TCG, a static busybox and cpio for the initramfs
  qemu-system-x86 busybox-static cpio kmod
  # fetching and unpacking Debian kernel packages without installing them
  dpkg apt
  # fleets: patch packages and kpatch-rs's own (dpkg-deb, dpkg-shlibdeps, strip), the apt repository
  # (dpkg-scanpackages, apt-ftparchive, gpg), and the Debian 12 guest system of the fleet test
  # (mmdebstrap, mkfs.ext4 -d)
  dpkg-dev binutils apt-utils gnupg mmdebstrap e2fsprogs
  # build --distcc and its test (a distccd on 127.0.0.1); peak memory in the benchmarks
  distcc time
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "setup: system packages ready" >&2
