#!/usr/bin/env bash
# Fuzzes with cargo-fuzz (libFuzzer): the object reader and the differ (seeded with the shared
# kpatch corpus), the module reader behind `info` (seeded with small modules of a Debian kernel
# in the cache, plain and xz-compressed, and the corpus's objects) and the patch-file parser
# (seeded with the example and integration patches).
# Usage: scripts/fuzz.sh [SECONDS-PER-TARGET] [TARGET...]   (targets: object_reader differ
# module_reader patch_parser; default: the first two)
# Crashes land in fuzz/artifacts/<target>/; copy each into crates/*/tests/regressions/ as a test.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}; shift || true
targets=("${@:-object_reader differ}")
shared=${KPATCH_RS_UNIT_OBJS:-$(cd .. && pwd)/shared/kpatch-unit-objs/x86_64}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
# cargo-fuzz needs nightly-only rustc flags; this machine has a stable toolchain only.
export RUSTC_BOOTSTRAP=1
export KPATCH_RS_FUZZ_ORIG_DIR=$shared
for t in ${targets[@]}; do
  seeds=fuzz/corpus/$t
  mkdir -p "$seeds"
  max_len=1200000
  if [ "$t" = patch_parser ]; then
    max_len=65536
    for f in examples/*.patch tests/integration/*.patch; do
      { printf '\x01'; cat "$f"; } > "$seeds/$(basename "$f").seed"
    done
  elif [ "$t" = module_reader ]; then
    cache=${KPATCH_RS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kpatch-rs}
    mapfile -t kos < <(find "$cache/debian" -name '*.ko' -size -16k 2>/dev/null | sort)
    for ko in "${kos[@]:0:40}"; do
      cp "$ko" "$seeds/"
      xz -c "$ko" > "$seeds/$(basename "$ko").xz"
    done
    mapfile -t objs < <(find "$shared" -name '*.ORIG.o' -size -64k 2>/dev/null | sort)
    for o in "${objs[@]:0:20}"; do cp "$o" "$seeds/"; done
    max_len=262144
  fi
  i=0
  for f in "$shared"/*.ORIG.o; do
    [ "$t" = differ ] || [ "$t" = object_reader ] || break
    n=${f%.ORIG.o}
    p=$n.PATCHED.o; [ -f "$p" ] || p=$n.PATCHED.FAIL.o
    if [ "$t" = differ ]; then
      { printf "\\x$(printf %02x $i)"; cat "$p"; } > "$seeds/$(basename "$n").seed"
    else
      cp "$f" "$seeds/"; cp "$p" "$seeds/"
    fi
    i=$((i + 1))
  done
  echo "fuzz: $t for ${secs}s" >&2
  cargo fuzz run "$t" "$seeds" -- -max_total_time="$secs" -rss_limit_mb=4096 -max_len="$max_len"
done
