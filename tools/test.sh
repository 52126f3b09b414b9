#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need (on Debian/Ubuntu: a real
# Secret Service and D-Bus; the Python venv is made by the interop test), checks formatting and
# lints, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/install-test-deps.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
