#!/usr/bin/env bash
# Times each stage of `kpatch-rs build`'s front half (fetch, unpack, prepare, compile original,
# compile patched) for a one-file patch to fs/proc/cmdline.c, and prints the cache size.
#
#   scripts/bench-build.sh            warm: the normal cache (prepared tree reused if present)
#   scripts/bench-build.sh --cold     from nothing: a fresh empty cache (downloads included),
#                                     deleted afterwards unless --keep is given
#   --kernel ABI                      a Debian kernel (default: running or newest Debian kernel)
#
# Targets (2-core machine): under 60 s warm, under 6 minutes cold, cache under 3 GB.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cold=0 keep=0 kernel=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cold) cold=1 ;;
    --keep) keep=1 ;;
    --kernel) kernel=(--kernel "$2"); shift ;;
    *) echo "usage: $0 [--cold [--keep]] [--kernel ABI]" >&2; exit 2 ;;
  esac
  shift
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
cargo build --quiet --release -p kpatch-build --example build-objects
bin=$CARGO_TARGET_DIR/release/examples/build-objects

work=$(mktemp -d)
if [ $cold = 1 ]; then
  export KPATCH_RS_CACHE=$work/cache
fi
cleanup() { if [ $keep = 1 ]; then rm -rf "$work/build"; else rm -rf "$work"; fi; }
trap cleanup EXIT

cat > "$work/cmdline.patch" <<'PATCH'
--- a/fs/proc/cmdline.c
+++ b/fs/proc/cmdline.c
@@ -6,6 +6,7 @@
 
 static int cmdline_proc_show(struct seq_file *m, void *v)
 {
+	seq_puts(m, "kpatch-rs ");
 	seq_puts(m, saved_command_line);
 	seq_putc(m, '\n');
 	return 0;
PATCH

start=$(date +%s.%N)
"$bin" "${kernel[@]}" --patch "$work/cmdline.patch" --work "$work/build" 2> "$work/log" > "$work/pairs.json" || {
  cat "$work/log" >&2; exit 1; }
end=$(date +%s.%N)

echo "== kpatch-rs build front half, one-file patch ($([ $cold = 1 ] && echo cold || echo warm)) =="
grep -E '^(target|stage|patch:)' "$work/log" || true
printf 'total: %.1f s\n' "$(echo "$end - $start" | bc)"
cache=${KPATCH_RS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kpatch-rs}
echo "cache: $(du -sh "$cache" | cut -f1) ($cache)"
echo "pairs: $(grep -c '"object"' "$work/pairs.json")"

# The whole `kpatch-rs build` (front half, differ, symbol resolution, module) on the same patch,
# the tree now prepared: what a user waits for.
cargo build --quiet --release --bin kpatch-rs
start=$(date +%s.%N)
"$CARGO_TARGET_DIR/release/kpatch-rs" build "$work/cmdline.patch" "${kernel[@]}" -o "$work/out" --json > "$work/build.json" 2> "$work/build.log" || {
  cat "$work/build.log" >&2; exit 1; }
end=$(date +%s.%N)
echo "== kpatch-rs build, whole (tree prepared) =="
python3 - "$work/build.json" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
for stage, secs in v.get("timings", []):
    print(f"{stage}: {secs:.1f} s")
print(f"module: {v['module']}")
PY
printf 'total: %.1f s\n' "$(echo "$end - $start" | bc)"
