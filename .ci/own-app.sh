#!/usr/bin/env bash
# The README's "Build your own app", built exactly as written as a crate outside the workspace
# (connect-axum taken by path) and run on both stores by the testing kit's own-app check.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d /tmp/connect-axum-own-app.XXXXXX)
trap 'rm -rf "$work"' EXIT
python3 .ci/readme_app.py README.md "$work" "$root/crates/connect-axum"
# The workspace's lock file and target directory: the same versions, and what the workspace built
# with the same features is reused.
cp Cargo.lock "$work/"
CARGO_PROFILE_DEV_DEBUG=line-tables-only CARGO_TARGET_DIR="$root/target" \
  cargo build --quiet --manifest-path "$work/Cargo.toml"
cargo run --quiet -p connect-axum-testing --example own-app -- "$root/target/debug/bookmarks"
