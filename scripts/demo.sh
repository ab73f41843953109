#!/usr/bin/env bash
# The main job (README "Quick start"): set up, build kpatch-rs, build a livepatch module from
# examples/cmdline-string.patch for the default Debian kernel, and prove it in a QEMU guest,
# showing /proc/cmdline unpatched, patched and unpatched again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --bin kpatch-rs
out=${KPATCH_RS_DEMO_OUT:-target/demo}
mkdir -p "$out"
exec target/release/kpatch-rs build examples/cmdline-string.patch -o "$out" \
  --verify --verify-cmd 'cat /proc/cmdline' "$@"
