#!/usr/bin/env bash
# The verify-only library: `--no-default-features` builds crypto, JOSE, the signed objects and the
# verifier, and none of the server's crates. Checks the dependency tree, then builds
# examples/verify_offline.rs that way and lets it decide on a token the real CLI signed: ALLOW,
# then DENY once the token is revoked in a fresh revocation list and for other arguments.
# Needs the default build of the agentseal binary (tools/test.sh builds it first).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo check --locked --no-default-features --lib
banned='^(rmcp|axum|clap|regorus|rusqlite|keyring-core|linux-keyutils|linux-keyutils-keyring-store|zbus-secret-service-keyring-store|apple-native-keyring-store|windows-native-keyring-store|reqwest|tokio) '
if found=$(cargo tree --locked --no-default-features -e normal --prefix none | grep -E "$banned"); then
  echo "verify-only: the lean library depends on server crates:" >&2
  echo "$found" | sort -u >&2
  exit 1
fi
echo "verify-only: dependency tree holds none of the server's crates"

cargo build --locked --no-default-features --example verify_offline
cargo build --locked --bin agentseal
bin=target/debug/agentseal
example=target/debug/examples/verify_offline

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export AGENTSEAL_DATA_DIR="$work/data" AGENTSEAL_KEY_STORE=file AGENTSEAL_PASSPHRASE=verify-only-test
agent=agent://acme.example/reviewer
aud=https://deploy.acme.example
"$bin" init >/dev/null 2>&1
"$bin" agent create "$agent" >/dev/null
"$bin" status | python3 -c 'import json,sys; print(json.load(sys.stdin)["ca_id"])' >"$work/ca_id"
"$bin" jwks >"$work/jwks.json"
"$bin" cert show "$agent" | python3 -c 'import json,sys; print(json.load(sys.stdin)["certificate"])' >"$work/cert"
"$bin" token sign --agent "$agent" --action deploy --aud "$aud" --arg repo=web >"$work/token"
"$bin" crl >"$work/crl"

decide() { # expected-exit args-json
  local out status=0
  out=$("$example" "$(cat "$work/ca_id")" "$work/jwks.json" "$work/crl" "$work/cert" "$work/token" "$aud" deploy "$2") || status=$?
  echo "verify-only: $out"
  if [ "$status" != "$1" ]; then
    echo "verify-only: expected exit $1, got $status" >&2
    exit 1
  fi
}
decide 0 '{"repo":"web"}'
decide 1 '{"repo":"prod"}'
"$bin" revoke token "$(cat "$work/token")" --reason "verify-only check" >/dev/null
"$bin" crl >"$work/crl"
decide 1 '{"repo":"web"}'
"$bin" destroy --confirm "$(cat "$work/ca_id")" >/dev/null
echo "verify-only: ok"
