#!/usr/bin/env bash
# The differ as a process, side by side with kpatch's: runs `kpatch-rs create-diff-object` and
# kpatch's create-diff-object (../shared/tools/kpatch-create-diff-object) on every case of the
# kpatch corpus that has an ORIG/PATCHED pair, one process per case as kpatch-build calls it,
# alternating the two tools in each round, and prints each tool's total wall time over the
# corpus (best of the rounds, and median) and the ratio.
#
#   scripts/bench-differ-processes.sh [--rounds N] [--corpus DIR] [--only-expected] [--ours BIN]
#
# --only-expected: only the cases the project's expected.tsv lists.
# --ours BIN: time this kpatch-rs binary instead of building the workspace's release one (to
#   compare builds, e.g. a static one).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
rounds=7
corpus=${KPATCH_RS_UNIT_OBJS:-$repo/../shared/kpatch-unit-objs/x86_64}
only_expected=0
ours=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift ;;
    --corpus) corpus=$2; shift ;;
    --only-expected) only_expected=1 ;;
    --ours) ours=$(realpath "$2"); shift ;;
    *) echo "usage: $0 [--rounds N] [--corpus DIR] [--only-expected] [--ours BIN]" >&2; exit 2 ;;
  esac
  shift
done
peer=$repo/../shared/tools/kpatch-create-diff-object
[ -x "$peer" ] || { echo "kpatch's differ is not at $peer" >&2; exit 1; }

if [ -z "$ours" ]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
  cargo build --quiet --release -p kpatch-rs
  ours=$CARGO_TARGET_DIR/release/kpatch-rs
fi

python3 - "$corpus" "$ours" "$peer" "$rounds" "$only_expected" <<'PY'
import os, statistics, sys, tempfile, time, subprocess

corpus, ours, peer, rounds, only_expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
sizes = {"PARA_STRUCT_SIZE": "16", "EX_STRUCT_SIZE": "12", "BUG_STRUCT_SIZE": "12",
         "ALT_STRUCT_SIZE": "13", "JUMP_STRUCT_SIZE": "24", "ORC_STRUCT_SIZE": "6",
         "STATIC_CALL_STRUCT_SIZE": "8", "PRINTK_INDEX_STRUCT_SIZE": "44"}
names = sorted({f[:-len(".ORIG.o")] for f in os.listdir(corpus) if f.endswith(".ORIG.o")})
if only_expected:
    listed = {l.split("\t")[0] for l in open(os.path.join(corpus, "expected.tsv")).read().splitlines()[1:]}
    names = [n for n in names if n in listed]
work = tempfile.mkdtemp(prefix="bench-differ.")
symvers = os.path.join(work, "Module.symvers")
open(symvers, "w").close()
cases = []
for n in names:
    orig = os.path.join(corpus, n + ".ORIG.o")
    patched = os.path.join(corpus, n + ".PATCHED.o")
    if not os.path.exists(patched):
        patched = os.path.join(corpus, n + ".PATCHED.FAIL.o")
    if not os.path.exists(patched):
        continue
    symtab = os.path.join(work, n + ".symtab")
    with open(symtab, "w") as f:
        subprocess.run(["readelf", "-s", "--wide", orig], stdout=f, check=True)
    env = dict(os.environ, **sizes)
    envfile = os.path.join(corpus, n + ".env")
    if os.path.exists(envfile):
        for line in open(envfile):
            if "=" in line:
                k, v = line.strip().split("=", 1)
                env[k] = v
    cases.append((n, orig, patched, symtab, env))

devnull = os.open(os.devnull, os.O_WRONLY)

def run(tool, case):
    n, orig, patched, symtab, env = case
    out = os.path.join(work, n + ".out.o")
    argv = [tool] + (["create-diff-object"] if tool == ours else []) + [
        orig, patched, "vmlinux", symtab, symvers, "bench", out]
    t = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=[
        (os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)])
    _, status = os.waitpid(pid, 0)
    return time.perf_counter() - t, os.waitstatus_to_exitcode(status)

totals = {ours: [], peer: []}
per_case = {ours: {}, peer: {}}
codes = {}
for r in range(rounds):
    for tool in ([ours, peer] if r % 2 == 0 else [peer, ours]):
        total = 0.0
        for c in cases:
            dt, code = run(tool, c)
            total += dt
            per_case[tool].setdefault(c[0], []).append(dt)
            codes[(tool, c[0])] = code
        totals[tool].append(total)

def show(label, tool):
    t = totals[tool]
    print(f"{label}: best {min(t)*1000:.1f} ms, median {statistics.median(t)*1000:.1f} ms "
          f"over {len(cases)} cases ({min(t)/len(cases)*1000:.2f} ms a case)")

print(f"== create-diff-object as a process, {len(cases)} cases of {corpus}, {rounds} rounds ==")
show("kpatch-rs", ours)
show("kpatch   ", peer)
print(f"kpatch / kpatch-rs: {min(totals[peer])/min(totals[ours]):.1f}x (best), "
      f"{statistics.median(totals[peer])/statistics.median(totals[ours]):.1f}x (median)")
slow = sorted(cases, key=lambda c: -min(per_case[ours][c[0]]))[:5]
print("slowest kpatch-rs cases: " + ", ".join(
    f"{c[0]} {min(per_case[ours][c[0]])*1000:.1f} ms (kpatch {min(per_case[peer][c[0]])*1000:.1f} ms)" for c in slow))
differ = [c[0] for c in cases if codes[(ours, c[0])] != codes[(peer, c[0])]]
print(f"exit codes that differ: {', '.join(differ) if differ else 'none'}")
floor = []
for _ in range(20 * len(cases)):
    t = time.perf_counter()
    pid = os.posix_spawn("/bin/true", ["/bin/true"], os.environ)
    os.waitpid(pid, 0)
    floor.append(time.perf_counter() - t)
floor.sort()
print(f"floor: starting and reaping /bin/true costs {floor[len(floor)//2]*1000:.2f} ms, "
      f"{floor[len(floor)//2]*len(cases)*1000:.1f} ms for {len(cases)} processes")
PY
