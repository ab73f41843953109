#!/usr/bin/env bash
# The corpus of real upstream fixes (tests/upstream-fixes/): builds every fix for the older
# Debian kernel it fixes, proves every module that built in one guest boot, and prints the table
# (fix, target object, outcome, reason, build seconds, guest result) and the totals.
# Not part of CI: a full run takes about an hour on two cores.
#
#   scripts/upstream-fixes.sh [--kernel ABI] [--out DIR] [--lock FILE] [--minutes N]
#                             [--only NAME,...] [--no-guest] [--table-only]
#
# --out DIR     results are kept there (default target/upstream-fixes); a fix whose result is
#               there already is not built again, so a run can be split into several
# --lock FILE   take this flock(1) lock around each build and around the guest boot (machines
#               shared by several builders)
# --minutes N   stop starting builds after N minutes (run again to go on)
# --only A,B    only these fixes
# --no-guest    build only; --table-only: neither build nor boot, print the table from DIR
#
# How the fixes were cut from the two source trees: scripts/upstream-fixes-split.py and
# tests/upstream-fixes/README.md.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
corpus=$repo/tests/upstream-fixes
kernel=6.1.0-53-amd64
out=$repo/target/upstream-fixes
lock="" minutes=0 only="" guest=1 build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) kernel=$2; shift ;;
    --out) out=$2; shift ;;
    --lock) lock=$2; shift ;;
    --minutes) minutes=$2; shift ;;
    --only) only=$2; shift ;;
    --no-guest) guest=0 ;;
    --table-only) guest=0 build=0 ;;
    *) sed -n '2,17p' "$0" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"
out=$(realpath "$out")

locked() {
  if [ -n "$lock" ]; then flock "$lock" "$@"; else "$@"; fi
}

if [ $build = 1 ] || [ $guest = 1 ]; then
  bash "$repo/scripts/setup.sh" || exit 1
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
  (cd "$repo" && cargo build --quiet --release -p kpatch-rs) || exit 1
  bin=$CARGO_TARGET_DIR/release/kpatch-rs
fi

names=$(grep -v '^#' "$corpus/index.tsv" | cut -f1)
if [ -n "$only" ]; then
  names=$(echo "$names" | grep -xF -f <(echo "$only" | tr ',' '\n'))
fi

# Builds: one kpatch-rs build per fix, its exit status, seconds, JSON summary and stderr kept.
if [ $build = 1 ]; then
  start_all=$(date +%s)
  for name in $names; do
    [ -f "$out/$name.rc" ] && continue
    if [ "$minutes" -gt 0 ] && [ $(( $(date +%s) - start_all )) -ge $((minutes * 60)) ]; then
      echo "stopping after $minutes minutes; run again to go on" >&2
      break
    fi
    echo "building $name ..." >&2
    rm -rf "$out/$name"
    start=$(date +%s.%N)
    locked "$bin" build --kernel "$kernel" --json --name "$name" -o "$out/$name" \
      "$corpus/$name.patch" > "$out/$name.json" 2> "$out/$name.err"
    rc=$?
    echo "$(echo "$(date +%s.%N) - $start" | bc)" > "$out/$name.secs"
    echo $rc > "$out/$name.rc"
    echo "  exit $rc" >&2
  done
fi

# One guest boot for every module that built.
if [ $guest = 1 ]; then
  modules=()
  for name in $names; do
    [ "$(cat "$out/$name.rc" 2>/dev/null)" = 0 ] || continue
    m=$(jq -r .module "$out/$name.json")
    [ -f "$m" ] && modules+=("$m")
  done
  if [ ${#modules[@]} -gt 0 ]; then
    echo "proving ${#modules[@]} modules in one boot of $kernel ..." >&2
    locked "$bin" verify --kernel "$kernel" --json --console-log "$out/guest-console.log" \
      "${modules[@]}" > "$out/verify.json"
    echo "  exit $?" >&2
  fi
fi

python3 - "$corpus/index.tsv" "$out" $names <<'PY'
import json, os, re, sys
index, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
meta = {}
for line in open(index):
    if line.startswith("#"):
        continue
    f = line.rstrip("\n").split("\t")
    meta[f[0]] = dict(files=f[1], placement=f[2], cve=f[3], subject=f[4], needs=f[6])
shared = set()
for line in open(os.path.join(os.path.dirname(index), "shared-headers.txt")):
    if not line.startswith("#") and line.strip():
        shared.add(line.strip())
guest = {}
vpath = os.path.join(out, "verify.json")
if os.path.exists(vpath):
    try:
        v = json.load(open(vpath))
        for r in v["rows"]:
            guest[r["name"]] = (r["outcome"], r["detail"])
        problems = v.get("problems", [])
    except (ValueError, KeyError):
        problems = ["verify.json unreadable"]
else:
    problems = []

def read(name, ext):
    try:
        return open(os.path.join(out, f"{name}.{ext}"), errors="replace").read()
    except FileNotFoundError:
        return None

# The refusal causes, from the reasons kpatch-rs prints (first match wins).
REFUSALS = [
    (r"__init code or data changed", "__init"),
    (r"existing data (changed|section)", "changed data"),
    (r"jump label|static key", "jump label of a module"),
    (r"noinstr/entry code", "noinstr code"),
    (r"share one section", "shared text section"),
    (r"section group", "section group"),
    (r"new exported symbol", "new export"),
    (r"ftrace", "no ftrace entry"),
    (r"not used by any changed function", "changed section used by no function"),
    # a static object that moved between .bss, .data and .rodata: its initial value changed
    (r"changed sections", "changed data"),
]


def classify(name):
    """(outcome, cause, reason): outcome built|refused|no-change|failed|not-run."""
    rc = read(name, "rc")
    if rc is None:
        return "not-run", "", ""
    rc = int(rc)
    err = read(name, "err") or ""
    lines = [l.strip() for l in err.splitlines() if l.strip() and not l.startswith("kpatch-rs: ==>")]
    if rc == 0:
        return "built", "", ""
    if rc == 3:
        return "no-change", "changes no function", ""
    if rc == 2:
        body = [l.strip() for l in err.rsplit("cannot be live-patched:", 1)[-1].splitlines() if l.strip()]
        found = []
        for l in body:
            for pat, cause in REFUSALS:
                if re.search(pat, l, re.I) and cause not in found:
                    found.append(cause)
                    break
        return "refused", " + ".join(found) or "other", body[0] if body else ""
    errors = [l for l in lines if re.match(r"\S+:\d+:\d+: error:", l)]
    if errors:
        # The unpatched unit compiles (the build compiled it first): the fix uses something
        # that a shared header of the same stable update brings.
        named = sorted({h for h in shared if any(h in e for e in errors)})
        direct = [h for h in meta[name]["needs"].split(",") if h in shared]
        if named or direct:
            return ("failed", "needs a shared-header change of the same update",
                    f"{', '.join(named or direct)}: {errors[0]}")
        return "failed", "compile error", errors[0]
    said = [l for l in lines if l.startswith("kpatch-rs: error:")]
    reason = (said or lines or [f"exit {rc}"])[-1]
    if "not built in this configuration" in err.lower():
        return "failed", "not built in this configuration", reason
    if "does not apply" in err.lower():
        return "failed", "does not apply", reason
    return "failed", "kpatch-rs", reason


rows, totals, causes = [], {}, {}
for n in names:
    outcome, cause, reason = classify(n)
    j = None
    if outcome == "built":
        try:
            j = json.loads(read(n, "json"))
        except (TypeError, ValueError):
            pass
    objects = ",".join(sorted({u["object"] for u in j["units"]})) if j else meta[n]["placement"]
    secs = read(n, "secs")
    g = guest.get(j["module_name"]) if j else None
    gtext = "-" if g is None else (g[0] if not g[1] else f"{g[0]}: {g[1]}")
    rows.append((n, meta[n]["cve"], objects, outcome, cause or "", reason, secs.strip() if secs else "-", gtext))
    totals[outcome] = totals.get(outcome, 0) + 1
    if cause:
        causes[(outcome, cause)] = causes.get((outcome, cause), 0) + 1
    if g is not None:
        totals["guest " + g[0]] = totals.get("guest " + g[0], 0) + 1

print("| fix | CVE | target object | outcome | reason | build s | guest |")
print("|---|---|---|---|---|---|---|")
for n, cve, obj, outcome, cause, reason, secs, g in rows:
    r = (cause + (": " if cause and reason else "") + reason)[:160].replace("|", "/")
    print(f"| {n} | {cve} | {obj} | {outcome} | {r} | {secs} | {g[:120].replace('|', '/')} |")
print()
print(f"fixes: {len(rows)}")
for k in ("built", "refused", "no-change", "failed", "not-run"):
    if k in totals:
        print(f"{k}: {totals[k]}")
        for (o, c), v in sorted(causes.items()):
            if o == k:
                print(f"  {c}: {v}")
for k, v in sorted(totals.items()):
    if k.startswith("guest "):
        print(f"{k}: {v}")
for p in problems:
    print(f"kernel problem: {p}")
PY
