#!/usr/bin/env bash
# The apps the pages show, each built exactly as written as a crate outside the workspace
# (connect-axum taken by path): the README's small app, which then checks its configuration and
# store, and the guide's "Build your own app" (docs/guide/build-an-app.md), run on both stores by
# the testing kit's own-app check.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d /tmp/connect-axum-own-app.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Builds the app the page ($1) shows in the section whose heading names $2, as the package $3.
build_app() {
  local crate="$work/$3"
  python3 .ci/markdown_app.py "$1" "$2" "$3" "$crate" "$root/crates/connect-axum"
  # The workspace's lock file and target directory: the same versions, and what the workspace
  # built with the same features is reused.
  cp Cargo.lock "$crate/"
  CARGO_PROFILE_DEV_DEBUG=line-tables-only CARGO_TARGET_DIR="$root/target" \
    cargo build --quiet --manifest-path "$crate/Cargo.toml"
}

build_app README.md "a small app" hello-issues
export DATABASE_URL="sqlite://$work/hello-issues.db" SECRETS_KEY_FILE="$work/hello-issues.key"
"$root/target/debug/hello-issues" check
# Served, it refuses its routes to a caller without a token, each door with its reason.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PORT=$port "$root/target/debug/hello-issues" >"$work/hello-issues.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
expect_refusal() {
  local body status
  body=$(curl -s -o - -w '\n%{http_code}' "http://127.0.0.1:$port$1")
  status=${body##*$'\n'}
  if [ "$status" != 401 ] || ! grep -q "\"error\":\"$2\"" <<<"$body"; then
    echo "GET $1: expected 401 $2, got: $body"; cat "$work/hello-issues.log"; exit 1
  fi
  echo "GET $1: 401 $2"
}
expect_refusal /api/issues/PROJ-1/hello missing_token
expect_refusal /forge/api/issues/PROJ-1/hello forge_not_configured
kill $server
unset DATABASE_URL SECRETS_KEY_FILE

build_app docs/guide/build-an-app.md "your own app" bookmarks
cargo run --quiet -p connect-axum-testing --example own-app -- "$root/target/debug/bookmarks"
