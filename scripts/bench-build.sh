#!/usr/bin/env bash
# Times each stage of `kpatch-rs build`'s front half (fetch, unpack, prepare, compile original,
# compile patched) for a one-file patch to fs/proc/cmdline.c, and prints the cache size.
#
#   scripts/bench-build.sh            warm: the normal cache (prepared tree reused if present)
#   scripts/bench-build.sh --cold     from nothing: a fresh empty cache (downloads included),
#                                     deleted afterwards unless --keep is given
#   --kernel ABI                      a Debian kernel (default: running or newest Debian kernel)
#   --header PATCH                    also the whole build of a header patch: stages, what the
#                                     header filters removed, peak memory
#   --header-filter-only PATCH        only its selection and header filters (nothing compiled):
#                                     for headers with thousands of includers
#
# Then the whole `kpatch-rs build` twice on the prepared tree, with two different patches to the
# same file: the first compiles the original (or finds it cached), the second takes it from the
# object cache and compiles only the patched unit. Each run prints its stages and peak RSS.
#
# Targets (2-core machine): under 10 s for a warm one-file build, under 6 minutes cold, cache
# under 3 GB.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cold=0 keep=0 kernel=() header="" header_filter=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cold) cold=1 ;;
    --keep) keep=1 ;;
    --kernel) kernel=(--kernel "$2"); shift ;;
    --header) header=$(realpath "$2"); shift ;;
    --header-filter-only) header_filter=$(realpath "$2"); shift ;;
    *) echo "usage: $0 [--cold [--keep]] [--kernel ABI] [--header PATCH] [--header-filter-only PATCH]" >&2; exit 2 ;;
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

cat > "$work/cmdline2.patch" <<'PATCH'
--- a/fs/proc/cmdline.c
+++ b/fs/proc/cmdline.c
@@ -7,7 +7,7 @@
 static int cmdline_proc_show(struct seq_file *m, void *v)
 {
 	seq_puts(m, saved_command_line);
-	seq_putc(m, '\n');
+	seq_puts(m, " kpatch-rs\n");
 	return 0;
 }
 
PATCH

# The whole `kpatch-rs build` (front half, differ, symbol resolution, module), the tree now
# prepared: what a user waits for. Prints its stages, filters, cache use and peak RSS.
cargo build --quiet --release --bin kpatch-rs
whole() {
  local title=$1; shift
  local start end
  start=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$work/rss" "$CARGO_TARGET_DIR/release/kpatch-rs" build "$@" "${kernel[@]}" \
    -o "$work/out" --json > "$work/build.json" 2> "$work/build.log" || {
    cat "$work/build.log" >&2; exit 1; }
  end=$(date +%s.%N)
  echo "== kpatch-rs build, whole: $title =="
  python3 - "$work/build.json" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
for stage, secs in v.get("timings", []):
    print(f"{stage}: {secs:.1f} s")
o, f = v["original_objects"], v["header_filter"]
print(f"original objects: {o['cached']} from the cache, {o['compiled']} compiled")
if f["header_units"]:
    print(f"header includers: {f['header_units']}; identical after preprocessing {f['identical']}, "
          f"changed only in unused definitions {f['unused_only']}, not preprocessed {f['not_preprocessed']}, "
          f"compiled {f['kept']}")
print(f"changed functions: {', '.join(sorted({fn for _, fn, _ in v['functions']}))}")
PY
  printf 'total: %.1f s, peak RSS %s MB\n' "$(echo "$end - $start" | bc)" "$(( $(cat "$work/rss") / 1024 ))"
}
whole "one-file patch to fs/proc/cmdline.c" "$work/cmdline.patch"
whole "a second patch to the same file (original from the cache)" "$work/cmdline2.patch"
if [ -n "$header" ]; then
  whole "header patch $(basename "$header")" "$header"
fi
if [ -n "$header_filter" ]; then
  echo "== header patch $(basename "$header_filter"): selection and header filters only =="
  /usr/bin/time -f 'peak RSS %M KB' "$bin" "${kernel[@]}" --patch "$header_filter" --work "$work/filter" \
    --stop-after filter 2>&1 > "$work/kept" | grep -E '^(stage|header|peak)'
  echo "units left to compile: $(wc -l < "$work/kept")"
fi
