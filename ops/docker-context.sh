#!/usr/bin/env bash
# Builds the binary from exactly the files the Dockerfile's build stage copies, as `docker build`
# would (no Docker engine is needed): a file the build needs but the image leaves out fails here.
set -euo pipefail
cd "$(dirname "$0")/.."
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
awk '/^FROM/ { stage++ } stage == 1 && /^COPY / && !/--from/ { for (i = 2; i < NF; i++) print $i }' Dockerfile |
  while read -r source; do cp -r "$source" "$context/"; done
CARGO_TARGET_DIR="$PWD/target" cargo build --locked --quiet --bin connect-axum \
  --manifest-path "$context/Cargo.toml"
echo "docker build context: ok ($(ls "$context" | tr '\n' ' '))"
