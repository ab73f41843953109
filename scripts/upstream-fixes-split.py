#!/usr/bin/env python3
"""Split the stable updates between two Debian source trees into single fixes.

Debian's source packages carry no git history, so a "single fix" is recovered from the tree
diff (`diff -urN OLD NEW`):

- a changed .c file is one fix, unless a header outside include/ in its directory changed
  too: then the .c files of that directory that include the header and the header form one
  fix (the per-directory unit);
- changes under include/ (headers many units include), arch/ other than x86, tools/,
  Documentation/, scripts/, device trees, Kconfig and Makefiles are out of scope for single
  fixes and are only counted;
- a .c fix whose added lines use an identifier that a changed include/ header adds is marked
  `needs-include`: it may only compile with that header change.

Each unit is named after the changelog subject it matches best (the 6.1.190-1 changelog lists
every upstream commit subject of the stable releases between the two versions, many with
their CVE): the subject's subsystem prefix against the unit's path, the identifiers it names
against the diff. The match is a heuristic and is recorded with its score.

The sample is deterministic and stratified: units are grouped by subsystem (the first two
path components), placed by kbuild (`--placements`: `unit<TAB>vmlinux|module:NAME|not-built`
from the same kbuild probe `kpatch-rs build` uses), and taken round-robin across subsystems,
those with a CVE first, until each of vmlinux and modules has `--per-side` fixes.

Usage:
  upstream-fixes-split.py --old OLD --new NEW --changelog changelog.Debian.gz \
      --diff stable.diff [--placements FILE] [--per-side 32] [--out tests/upstream-fixes]
Without --placements it prints the candidate units (one a line) for the probe and stops.
"""

import argparse
import collections
import gzip
import hashlib
import os
import re
import sys

OUT_OF_SCOPE_DIRS = ("Documentation/", "tools/", "scripts/", "samples/", "usr/", "LICENSES/")
STOP = set("""fix fixes fixed add adds added use uses remove removes the and for from with into
when not only after before on in of to a an be is are by as at it its this that if or no
don't do does avoid make makes prevent check checks handle properly correct correctly
missing possible potential issue error errors return value values set get free update
case cases also more less new old use-after-free null pointer dereference out-of-bounds
read write leak leaks memory bounds race condition under over during via all some any
revert""".split())


def parse_diff(path):
    """The diff's per-file chunks: relative path -> (kind, text with a/ b/ headers)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        text = f.read()
    files = {}
    for chunk in re.split(r"^(?=diff -urN)", text, flags=re.M)[1:]:
        lines = chunk.splitlines(keepends=True)
        m = re.match(r"diff -urN (?:--no-dereference )?(\S+) (\S+)", lines[0])
        old, new = m.group(1), m.group(2)
        rel = old.split("/", 2)[2]
        if len(lines) < 3 or not lines[1].startswith("--- "):
            files[rel] = ("binary", "")
            continue
        minus, plus = lines[1], lines[2]
        kind = "modified"
        if "\t1970-01-01" in minus:
            kind = "added"
        elif "\t1970-01-01" in plus:
            kind = "deleted"
        head = "--- " + ("/dev/null" if kind == "added" else "a/" + rel) + "\n"
        head += "+++ " + ("/dev/null" if kind == "deleted" else "b/" + rel) + "\n"
        files[rel] = (kind, head + "".join(lines[3:]))
    return files


def parse_changelog(path, stop_version):
    """The subjects of the newest changelog entry, down to `stop_version`'s entry."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        text = f.read()
    body = text.split(f"\nlinux ({stop_version})", 1)[0]
    entries, cur = [], None
    for line in body.splitlines():
        if line.startswith("    - ") or line.startswith("  * "):
            if cur:
                entries.append(cur)
            cur = line[6:] if line.startswith("    - ") else line[4:]
        elif line.startswith("      ") and cur is not None:
            cur += " " + line.strip()
        else:
            if cur:
                entries.append(cur)
            cur = None
    if cur:
        entries.append(cur)
    out = []
    for e in entries:
        cves = re.findall(r"CVE-\d{4}-\d+", e)
        subject = re.sub(r"\s*\((?:CVE-\d{4}-\d+(?:,\s*)?)+\)", "", e).strip()
        out.append((subject, cves))
    return out


def is_shared_header(rel):
    """A header many units include: under include/ or an architecture's include/."""
    return rel.startswith("include/") or re.match(r"arch/[^/]+/include/", rel) is not None


def in_scope(rel):
    if rel.startswith(OUT_OF_SCOPE_DIRS) or is_shared_header(rel):
        return False
    if rel.startswith("arch/") and not rel.startswith("arch/x86/"):
        return False
    return True


def includes(text):
    return set(re.findall(r'^\s*#\s*include\s+"([^"]+)"', text, flags=re.M))


def units_of(files, old_tree):
    """Groups the in-scope .c/.h changes into units: (name, [files])."""
    cs = sorted(r for r, (k, _) in files.items() if r.endswith(".c") and in_scope(r))
    hs = sorted(r for r, (k, _) in files.items() if r.endswith(".h") and in_scope(r))
    group = {c: {c} for c in cs}
    for h in hs:
        hdir, hbase = os.path.dirname(h), os.path.basename(h)
        users = []
        for c in cs:
            if not (os.path.dirname(c) == hdir or os.path.dirname(c).startswith(hdir + "/")):
                continue
            try:
                with open(os.path.join(old_tree, c), encoding="utf-8", errors="replace") as f:
                    inc = includes(f.read())
            except FileNotFoundError:
                inc = set()
            if any(os.path.basename(i) == hbase for i in inc):
                users.append(c)
        if not users:
            continue
        merged = {h}
        for c in users:
            merged |= group[c]
        for m in merged:
            if m.endswith(".c"):
                group[m] = merged
    seen, units = set(), []
    for c in cs:
        g = frozenset(group[c])
        if g in seen:
            continue
        seen.add(g)
        units.append(sorted(g))
    used_h = {f for u in units for f in u if f.endswith(".h")}
    lone_h = [h for h in hs if h not in used_h]
    return units, lone_h


def direct_headers(unit, old_tree):
    """The shared headers (include/, arch/x86/include/) the unit's .c files include directly."""
    out = set()
    for c in unit:
        if not c.endswith(".c"):
            continue
        try:
            with open(os.path.join(old_tree, c), encoding="utf-8", errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            continue
        for h in re.findall(r"^\s*#\s*include\s+<([^>]+)>", text, flags=re.M):
            for base in ("include/", "arch/x86/include/", "include/uapi/", "arch/x86/include/uapi/"):
                if os.path.exists(os.path.join(old_tree, base + h)):
                    out.add(base + h)
                    break
    return out


def unit_name(files):
    c = [f for f in files if f.endswith(".c")]
    if len(c) == 1:
        base = c[0][:-2]
    else:
        base = os.path.commonpath(c) or c[0]
    name = re.sub(r"[^A-Za-z0-9]+", "-", base).strip("-")
    # livepatch-NAME must fit the kernel's 55-character module names: drop leading components.
    while len(name) > 45 and "-" in name:
        name = name.split("-", 1)[1]
    return name


def identifiers(text):
    return set(w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]{2,}", text))


def changed_lines(diff):
    return "\n".join(
        l[1:] for l in diff.splitlines()
        if (l.startswith("+") or l.startswith("-")) and not l.startswith(("+++", "---"))
    )


def hunk_functions(diff):
    return " ".join(re.findall(r"^@@[^@]*@@(.*)$", diff, flags=re.M))


GENERIC = set("""net drivers usb core fs mm kernel lib block sound soc gadget function host pci
media platform misc staging ethernet wireless phy input gpu drm scsi common""".split())


def akin(a, b):
    """`tracing` and `trace`, `timers` and `time`: a shared start of four letters or more."""
    n = len(os.path.commonprefix([a, b]))
    return n >= 4 and n >= min(len(a), len(b)) - 3


def score(subject, path, diff_ids):
    """How well a changelog subject names a unit: its subsystem prefix against the unit's path
    (at least one specific component must match), the identifiers it names against the diff."""
    prefix, _, rest = subject.rpartition(":")
    arch = re.match(r"\[([^\]]+)\]\s*", subject)
    if arch:
        if not arch.group(1).startswith("x86"):
            return -1
        prefix = prefix[arch.end():]
    base, leaf, dirs, parts = path
    s = 0
    for t in set(re.split(r"[\s/:,]+", prefix.lower())) - {""}:
        if t == base:
            s += 6
        elif t == leaf:
            s += 4
        elif t in GENERIC:
            s += 1 if t in dirs else 0
        elif t in dirs or t in parts or any(akin(t, d) for d in dirs | {base}):
            s += 3
    if s < 3:
        return 0
    plain = 0
    for t in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", rest):
        tl = t.lower()
        if ("_" in t or re.search(r"[a-z][A-Z]", t)) and tl in diff_ids:
            s += 5
        elif len(tl) >= 4 and tl not in STOP and tl in diff_ids and plain < 3:
            plain += 1
            s += 1
    return s


def match_subject(files, diffs, subjects):
    """Subjects by score, best first: [(score, index)]. A unit of several files is matched
    through its first .c file's path."""
    first = next(f for f in files if f.endswith(".c")).lower()
    parts = first.split("/")
    base = parts[-1][:-2]
    leaf = parts[-2] if len(parts) > 1 else ""
    dirs = set(parts[:-1])
    pieces = set(re.split(r"[-_.]", base))
    for d in parts[:-1]:
        pieces |= set(re.split(r"[-_.]", d))
    text = "\n".join(diffs)
    diff_ids = identifiers(changed_lines(text)) | identifiers(hunk_functions(text))
    path = (base, leaf, dirs, pieces)
    scored = [(score(s, path, diff_ids), i) for i, (s, _) in enumerate(subjects)]
    scored.sort(key=lambda x: (-x[0], x[1]))
    return scored


def include_additions(files, old_tree, new_tree):
    """Identifiers that the changed include/ headers bring anew: in a new version of one of
    them, in no header under the old tree's include/."""
    def ids(path):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]{3,}", f.read()))
        except FileNotFoundError:
            return set()
    known = set()
    for root, _, names in os.walk(os.path.join(old_tree, "include")):
        for n in names:
            if n.endswith(".h"):
                known |= ids(os.path.join(root, n))
    added = set()
    for rel in files:
        if rel.startswith("include/") and rel.endswith(".h"):
            added |= ids(os.path.join(new_tree, rel)) - known
    return added


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, help="the older source tree")
    ap.add_argument("--new", required=True, help="the newer source tree")
    ap.add_argument("--diff", required=True, help="diff -urN OLD NEW")
    ap.add_argument("--changelog", required=True, help="the newer package's changelog.Debian.gz")
    ap.add_argument("--since", default="6.1.187-1", help="the older Debian version")
    ap.add_argument("--placements")
    ap.add_argument("--per-side", type=int, default=32)
    ap.add_argument("--out", default="tests/upstream-fixes")
    a = ap.parse_args()

    files = parse_diff(a.diff)
    subjects = parse_changelog(a.changelog, a.since)
    units, lone_h = units_of(files, a.old)
    header_ids = include_additions(files, a.old, a.new)
    shared_changed = sorted(r for r in files if r.endswith(".h") and is_shared_header(r))
    cfiles = [r for r in files if r.endswith(".c")]
    stats = collections.Counter()
    stats["files"] = len(files)
    stats["c files"] = len(cfiles)
    stats["c files out of scope (other arch, tools, ...)"] = sum(1 for r in cfiles if not in_scope(r))
    stats["headers under include/"] = sum(1 for r in files if r.startswith("include/"))
    stats["headers under arch/*/include/"] = sum(
        1 for r in files if r.startswith("arch/") and is_shared_header(r))
    stats["local headers in no unit"] = len(lone_h)
    stats["units"] = len(units)
    stats["units adding or deleting a file"] = sum(
        1 for u in units if any(files[f][0] != "modified" for f in u))
    stats["changelog subjects"] = len(subjects)
    stats["changelog subjects with a CVE"] = sum(1 for _, c in subjects if c)

    if not a.placements:
        for u in units:
            print(" ".join(f for f in u if f.endswith(".c")))
        for k, v in stats.items():
            print(f"# {k}: {v}", file=sys.stderr)
        return

    placement = {}
    with open(a.placements) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("\t")
            placement[k] = v
    rows = []
    for u in units:
        if any(files[f][0] != "modified" for f in u):
            continue
        places = {placement.get(f, "unknown") for f in u if f.endswith(".c")}
        place = ",".join(sorted(places))
        diffs = [files[f][1] for f in u]
        scored = match_subject(u, diffs, subjects)
        best, idx = scored[0]
        # Named only by a clear winner: a tie between subjects of one subsystem names none.
        clear = best >= 6 and best > scored[1][0]
        subject, cves = subjects[idx] if clear else ("", [])
        plus_ids = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]{3,}", "\n".join(
            l[1:] for d in diffs for l in d.splitlines() if l.startswith("+") and not l.startswith("+++"))))
        minus_ids = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]{3,}", "\n".join(
            l[1:] for d in diffs for l in d.splitlines() if l.startswith("-") and not l.startswith("---"))))
        needs = sorted(h for h in direct_headers(u, a.old) if h in shared_changed)
        if (plus_ids - minus_ids) & header_ids:
            needs = sorted(set(needs) | {"new:" + ",".join(sorted((plus_ids - minus_ids) & header_ids))})
        rows.append(dict(name=unit_name(u), files=u, place=place, subject=subject,
                         cve=",".join(cves), score=best, needs=needs, diffs=diffs))
    for r in rows:
        stats["placed " + r["place"].split(":")[0]] += 1

    def subsystem(r):
        return "/".join(r["files"][0].split("/")[:2])

    def spread(sub):
        # Subsystems in an order that is fixed but not alphabetical, so that a quota
        # reached mid-round does not always leave out net/ and sound/.
        return hashlib.sha256(sub.encode()).hexdigest()

    picked = []
    for side in ("vmlinux", "module"):
        cand = [r for r in rows if r["place"].startswith(side) and "," not in r["place"]]
        taken = 0
        # First the fixes the changelog names with a CVE, then those it names, then the rest.
        for tier in (lambda r: r["cve"], lambda r: r["subject"] and not r["cve"],
                     lambda r: not r["subject"]):
            by_sub = {}
            for r in sorted((r for r in cand if tier(r)), key=lambda r: r["files"]):
                by_sub.setdefault(subsystem(r), []).append(r)
            order = sorted(by_sub, key=spread)
            while taken < a.per_side and any(by_sub.values()):
                for sub in order:
                    if by_sub[sub] and taken < a.per_side:
                        picked.append(by_sub[sub].pop(0))
                        taken += 1
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "shared-headers.txt"), "w") as sh:
        sh.write("# the shared headers (include/, arch/*/include/) the same stable update changed\n")
        sh.write("".join(h + "\n" for h in shared_changed))
    with open(os.path.join(a.out, "index.tsv"), "w") as idx:
        idx.write("# name\tfiles\tplacement\tcve\tsubject\tmatch-score\tchanged-headers\n")
        for r in sorted(picked, key=lambda r: r["name"]):
            with open(os.path.join(a.out, r["name"] + ".patch"), "w", encoding="utf-8",
                      errors="surrogateescape") as p:
                p.write("".join(r["diffs"]))
            idx.write("\t".join([r["name"], ",".join(r["files"]), r["place"], r["cve"] or "-",
                                 r["subject"] or "-", str(r["score"]),
                                 ",".join(r["needs"]) or "-"]) + "\n")
    for k, v in stats.items():
        print(f"# {k}: {v}", file=sys.stderr)
    print(f"# sampled: {len(picked)}", file=sys.stderr)


if __name__ == "__main__":
    main()
