#!/usr/bin/env bash
# Every Forge manifest of the repository through Atlassian's validator (@forge/manifest, pinned in
# .ci/forge-manifest/package-lock.json): the full validation `forge lint` runs, with no Forge login.
# Installed once into target/forge-manifest, again when the lock file changes. Exits 1 on any error.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=target/forge-manifest
if ! cmp -s .ci/forge-manifest/package-lock.json "$cache/package-lock.json" ||
  ! [ -d "$cache/node_modules/@forge/manifest" ]; then
  mkdir -p "$cache"
  cp .ci/forge-manifest/package.json .ci/forge-manifest/package-lock.json "$cache/"
  (cd "$cache" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
cp .ci/forge-manifest/validate.mjs "$cache/"
manifests=$(git ls-files --cached --others --exclude-standard -- 'forge/manifest.yml' 'forge/**/manifest.yml')
[ -n "$manifests" ] || { echo "no Forge manifest under forge/" >&2; exit 1; }
# shellcheck disable=SC2086 # one argument per manifest path (none has a space)
node "$cache/validate.mjs" $manifests
