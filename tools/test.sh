#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need (on Debian/Ubuntu: a real
# Secret Service and D-Bus; the Python venv is made by the interop test), checks formatting and
# lints, then runs every test (the verify-only build included: tests/it/verify_only.rs). Prints
# how long each stage took.
set -euo pipefail
cd "$(dirname "$0")/.."

stage() {
  local name=$1 start=$SECONDS
  shift
  "$@"
  echo "test.sh: $name took $((SECONDS - start)) s" >&2
}

stage "installing test dependencies" bash tools/install-test-deps.sh
stage "cargo fmt" cargo fmt --check
stage "cargo clippy" cargo clippy --all-targets --locked -- -D warnings
stage "cargo test" cargo test --locked
