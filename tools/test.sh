#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need (on Debian/Ubuntu: a real
# Secret Service and D-Bus; the Python venv is made by the interop test), checks formatting and
# lints, checks that each library feature builds on its own, then runs every test (the
# verify-only build included: tests/it/verify_only.rs). Prints how long each stage took.
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
# Each library feature builds on its own (a user of `remote` or `authority` without the CLI).
# Here rather than in a test: this target directory already holds their C dependencies.
check_features() {
  local feature
  for feature in remote authority; do
    cargo check --locked --lib --no-default-features --features "$feature"
  done
}
stage "cargo check (each library feature)" check_features
stage "cargo test" cargo test --locked
