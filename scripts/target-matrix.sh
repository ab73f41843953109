#!/usr/bin/env bash
# Builds and verifies one patch for every Debian kernel the archive offers (both lines, every
# flavour), and prints a table: ABI, build seconds, verified or why not. Not part of CI: a full
# run from an empty cache took 65 minutes for 39 kernels (2026-12-02, 2 cores).
#
#   scripts/target-matrix.sh [--patch FILE] [--line 6.1|6.12] [--flavour F] [--limit N] [--keep]
#
# Each kernel is built in a cache of its own under $KPATCH_RS_MATRIX_CACHE (default: a temporary
# directory), removed after its row unless --keep: a prepared tree takes about 2 GB. The
# downloaded source package is kept across the flavours of one version (and, in a cache given
# by $KPATCH_RS_MATRIX_CACHE, for the next run).
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
patch=$repo/examples/cmdline-string.patch
filters=() limit=0 keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --patch) patch=$(realpath "$2"); shift ;;
    --line) filters+=(--line "$2"); shift ;;
    --flavour) filters+=(--flavour "$2"); shift ;;
    --limit) limit=$2; shift ;;
    --keep) keep=1 ;;
    *) echo "usage: $0 [--patch FILE] [--line L] [--flavour F] [--limit N] [--keep]" >&2; exit 2 ;;
  esac
  shift
done

bash "$repo/scripts/setup.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
cargo build --quiet --release -p kpatch-rs || exit 1
bin=$CARGO_TARGET_DIR/release/kpatch-rs
work=$(mktemp -d)
matrix=${KPATCH_RS_MATRIX_CACHE:-$work/cache}
trap 'rm -rf "$work"' EXIT

"$bin" targets --json "${filters[@]}" > "$work/targets.json" || exit 1
python3 - "$work/targets.json" > "$work/rows" <<'PY'
import json, sys
for t in json.load(open(sys.argv[1])):
    print(t["abi"], t["version"], "1" if t["source"] else "0")
PY

printf '%-30s %-22s %8s  %s\n' ABI VERSION BUILD_S RESULT
n=0 built=0 verified=0
while read -r abi version source; do
  if [ "$limit" -gt 0 ] && [ "$n" -ge "$limit" ]; then break; fi
  n=$((n + 1))
  if [ "$source" != 1 ]; then
    printf '%-30s %-22s %8s  %s\n' "$abi" "$version" - "not built: the archive no longer has its source"
    continue
  fi
  export KPATCH_RS_CACHE=$matrix/$version
  start=$(date +%s.%N)
  "$bin" build --kernel "$abi" --verify --json -o "$work/out" "$patch" > "$work/out.json" 2> "$work/err"
  rc=$?
  secs=$(echo "$(date +%s.%N) - $start" | bc)
  if [ $rc = 0 ] && grep -q '"verified": true' "$work/out.json"; then
    built=$((built + 1)); verified=$((verified + 1))
    result="verified"
  else
    why=$(grep -m1 -E 'error|FAIL|refus' "$work/err" | cut -c1-100)
    [ $rc = 0 ] && built=$((built + 1))
    result="failed (exit $rc): ${why:-see stderr}"
  fi
  printf '%-30s %-22s %8.1f  %s\n' "$abi" "$version" "$secs" "$result"
  if [ $keep = 0 ]; then
    # keep only the downloaded source of this version for its other flavours
    find "$KPATCH_RS_CACHE" -mindepth 1 -maxdepth 1 ! -name debian -exec rm -rf {} + 2>/dev/null
    find "$KPATCH_RS_CACHE/debian" -mindepth 1 -maxdepth 1 ! -name 'linux-source-*' -exec rm -rf {} + 2>/dev/null
  fi
done < "$work/rows"
# a cache given by the caller keeps its downloaded sources for the next run
[ $keep = 0 ] && [ -z "${KPATCH_RS_MATRIX_CACHE:-}" ] && rm -rf "$matrix"
echo "matrix: $n kernels, $built built, $verified verified"
