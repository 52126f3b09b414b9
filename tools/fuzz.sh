#!/usr/bin/env bash
# The long run of the parser fuzzing in tests/it/untrusted_input.rs: CASES per target (default
# 100,000), in the test profile (the crypto crates are optimized there, see Cargo.toml).
# CI runs the same targets with 256 cases as part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-100000}"
start=$(date +%s)
AGENTSEAL_FUZZ_CASES="$cases" cargo test --locked --test it untrusted_input -- --test-threads 2
echo "fuzz.sh: $cases cases per target in $(( $(date +%s) - start )) s on $(nproc) CPUs, $(date -u +%F)"
