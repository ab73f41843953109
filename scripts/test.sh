#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls it).
# Installs what the tests use, then runs every test, guest boots included. Downloads and
# prepared kernel trees are cached under $KPATCH_RS_CACHE (default ~/.cache/kpatch-rs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export KPATCH_RS_GUEST_TESTS=${KPATCH_RS_GUEST_TESTS:-1}
# Guest tests boot QEMU under TCG and compile kernel objects: two at a time on two cores.
cargo test --workspace --release -- --test-threads="${KPATCH_RS_TEST_THREADS:-2}"
