#!/usr/bin/env bash
# Builds the binary from exactly the files the Dockerfile's build stage copies, as `docker build`
# would (no Docker engine is needed): a file the build needs but the image leaves out fails here.
# Then checks the forge-container target against what Forge requires of an image and against the
# binary: the libraries it loads are the runtime base's.
set -euo pipefail
cd "$(dirname "$0")/.."
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
awk '/^FROM/ { stage++ } stage == 1 && /^COPY / && !/--from/ { for (i = 2; i < NF; i++) print $i }' Dockerfile |
  while read -r source; do cp -r "$source" "$context/"; done
CARGO_TARGET_DIR="$PWD/target" cargo build --locked --quiet --bin connect-axum \
  --manifest-path "$context/Cargo.toml"
echo "docker build context: ok ($(ls "$context" | tr '\n' ' '))"

# The forge-container stage, from its FROM to the next FROM.
stage=$(awk '/^FROM/ { inside = / AS forge-container$/ } inside' Dockerfile)
fail() {
  echo "Dockerfile, target forge-container: $1" >&2
  exit 1
}
[ -n "$stage" ] || fail "no such stage"
from=$(head -n 1 <<<"$stage")
# Forge runs linux/amd64 images only.
grep -q -- '--platform=linux/amd64 ' <<<"$from" || fail "FROM lacks --platform=linux/amd64"
# The base provides glibc and libgcc and nothing else (no shell): the binary must need no more.
base=$(awk '{ print $(NF - 2) }' <<<"$from")
case "$base" in
  gcr.io/distroless/cc-debian12:*) provided='libc.so.6 libm.so.6 libgcc_s.so.1 ld-linux-x86-64.so.2 libdl.so.2 libpthread.so.0 librt.so.1 libstdc++.so.6' ;;
  gcr.io/distroless/static-debian12:* | scratch) provided='' ;;
  *) fail "base $base is neither distroless nor scratch" ;;
esac
# No shell in the image: nothing may run in it, and every command is exec form.
! grep -qE '^(RUN|HEALTHCHECK) ' <<<"$stage" || fail "RUN or HEALTHCHECK needs a shell"
grep -qE '^USER 1000:1000$' <<<"$stage" || fail "Forge runs UID/GID 1000: USER 1000:1000"
grep -qE '^EXPOSE 8080$' <<<"$stage" || fail "Forge sends traffic to 8080: EXPOSE 8080"
! grep -qE '^(VOLUME|WORKDIR) ' <<<"$stage" || fail "the root filesystem is read-only and has no volume"
entrypoint=$(sed -n 's/^ENTRYPOINT \["\([^"]*\)"\]$/\1/p' <<<"$stage")
[ -n "$entrypoint" ] || fail "ENTRYPOINT must be exec form with the binary alone"
grep -qE "^COPY --from=build /src/target/release/connect-axum $entrypoint$" <<<"$stage" ||
  fail "ENTRYPOINT $entrypoint is not the binary the build stage makes"
binary=target/debug/connect-axum
for library in $(readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'); do
  [[ " $provided " == *" $library "* ]] || fail "the binary needs $library, which $base lacks"
done
echo "docker target forge-container: ok ($base, USER 1000:1000, EXPOSE 8080, $(readelf -d "$binary" |
  grep -c NEEDED) libraries, all in the base)"
