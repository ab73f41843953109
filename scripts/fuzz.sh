#!/usr/bin/env bash
# Fuzzes the object reader and the differ with cargo-fuzz (libFuzzer), seeded with the shared
# kpatch corpus. Usage: scripts/fuzz.sh [SECONDS-PER-TARGET] [TARGET...]
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
  i=0
  for f in "$shared"/*.ORIG.o; do
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
  cargo fuzz run "$t" "$seeds" -- -max_total_time="$secs" -rss_limit_mb=4096 -max_len=1200000
done
