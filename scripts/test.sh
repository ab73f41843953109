#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls it).
# Installs what the tests use, checks formatting (rustfmt) and lints (clippy, warnings are
# errors), then runs every test, guest boots included. Downloads and prepared kernel trees are
# cached under $KPATCH_RS_CACHE (default ~/.cache/kpatch-rs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export KPATCH_RS_GUEST_TESTS=${KPATCH_RS_GUEST_TESTS:-1}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Formatting and lints first: a failure fails the run, which still runs the tests (so that one
# run shows everything).
lint_failed=()
cargo fmt --all -- --check || lint_failed+=("cargo fmt --all -- --check")
cargo clippy --workspace --all-targets --release -- -D warnings || lint_failed+=("cargo clippy -D warnings")
# Guest tests boot QEMU under TCG and compile kernel objects: two at a time on two cores.
# (No doctests: the crates have no examples in their docs.)
set +e
cargo test --workspace --release --no-fail-fast --lib --bins --tests -- --test-threads="${KPATCH_RS_TEST_THREADS:-2}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s += $1} END {print s + 0}')
# A test that replaces a device node (an atomic write renamed over /dev/null) breaks the machine
# for everything after it: say so.
[ -c /dev/null ] || lint_failed+=("/dev/null is no longer a character device after the tests")
if [ ${#lint_failed[@]} -gt 0 ]; then
  echo
  printf 'failed: %s\n' "${lint_failed[@]}"
  [ "$status" -ne 0 ] || status=1
fi
echo
echo "tests: $passed passed, $failed failed"
exit "$status"
