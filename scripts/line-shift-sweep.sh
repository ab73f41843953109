#!/usr/bin/env bash
# A patch that changes no code must build to "the patch changes no function" (exit 3). For a
# sample of .c files that the target's configuration compiles, this builds two such patches per
# file and prints every file whose build did anything else:
#   shift    a blank line after the file's first line (every __LINE__ below it moves);
#   comment  the text of the file's first line changed, when it is a comment (no line moves).
#
#   scripts/line-shift-sweep.sh [--kernel ABI] [--count N] [--seed S] [FILE...]
#
# Files are sampled from vmlinux and modules across the tree (every top-level directory the
# configuration builds), skipping files the configuration does not compile. A sweep of 300
# files took 55 minutes on 2 cores (two builds per file); CI runs a few files (see
# crates/kpatch-rs/tests/line_shift.rs).
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
kernel=() count=300 seed=1 files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) kernel=(--kernel "$2"); shift ;;
    --count) count=$2; shift ;;
    --seed) seed=$2; shift ;;
    -*) echo "usage: $0 [--kernel ABI] [--count N] [--seed S] [FILE...]" >&2; exit 2 ;;
    *) files+=("$1") ;;
  esac
  shift
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
cargo build --quiet --release -p kpatch-rs || exit 1
bin=$CARGO_TARGET_DIR/release/kpatch-rs
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The prepared tree of the target (built on first use by a throwaway build).
probe="$work/probe.patch"
printf -- '--- a/init/version.c\n+++ b/init/version.c\n@@ -1 +1 @@\n-x\n+y\n' > "$probe"
"$bin" build "${kernel[@]}" "$probe" -o "$work/out" >/dev/null 2>&1
abi=${kernel[1]:-$("$bin" targets --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["abi"])')}
tree=${KPATCH_RS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kpatch-rs}/src/$abi
if [ ! -d "$tree" ]; then echo "no prepared tree at $tree" >&2; exit 1; fi

if [ ${#files[@]} = 0 ]; then
  # A deterministic sample across the top-level directories.
  mapfile -t files < <(cd "$tree" && find arch/x86 block crypto drivers fs init ipc kernel lib mm net security sound virt \
      -name '*.c' -size +2k 2>/dev/null | sort | awk -v seed="$seed" 'BEGIN{srand(seed)} {print rand() "\t" $0}' | sort | cut -f2 | head -n $((count * 4)))
fi

patch_for() { # kind file -> patch on stdout, or nothing
  local kind=$1 f=$2 first
  first=$(head -n1 "$tree/$f")
  case $kind in
    shift) printf -- '--- a/%s\n+++ b/%s\n@@ -1 +1,2 @@\n %s\n+\n' "$f" "$f" "$first" ;;
    comment)
      case $first in
        /\**\*/) printf -- '--- a/%s\n+++ b/%s\n@@ -1 +1 @@\n-%s\n+%s (sweep) */\n' "$f" "$f" "$first" "${first%\*/}" ;;
        //*|/\**) printf -- '--- a/%s\n+++ b/%s\n@@ -1 +1 @@\n-%s\n+%s (sweep)\n' "$f" "$f" "$first" "$first" ;;
      esac ;;
  esac
}

done_files=0 ok=0 bad=0 skipped=0
printf '%-55s %-8s %s\n' FILE KIND RESULT
for f in "${files[@]}"; do
  [ "$done_files" -ge "$count" ] && break
  counted=0
  for kind in shift comment; do
    p="$work/$kind.patch"
    patch_for "$kind" "$f" > "$p"
    [ -s "$p" ] || continue
    "$bin" build "${kernel[@]}" "$p" -o "$work/out" > "$work/log" 2>&1
    rc=$?
    if grep -qE "changes no compiled source file|not built in this kernel configuration|touches no file that is compiled into the kernel" "$work/log"; then
      skipped=$((skipped + 1)); break
    fi
    counted=1
    if [ $rc = 3 ]; then
      ok=$((ok + 1))
    else
      bad=$((bad + 1))
      printf '%-55s %-8s exit %s: %s\n' "$f" "$kind" "$rc" "$(grep -E 'changed function|error|cannot' "$work/log" | head -3 | tr '\n' ' ' | cut -c1-200)"
    fi
  done
  done_files=$((done_files + counted))
done
echo "sweep: $done_files files, $ok builds changed no function, $bad did something else, $skipped files not compiled by the configuration"
[ $bad = 0 ]
