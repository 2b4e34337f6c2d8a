#!/usr/bin/env bash
# The container door under load: the release server in container mode (FORGE_EGRESS_PROXY_URL
# alone: the in-memory store, Forge SQL for the notes), behind the testing kit's fake sidecar
# with Forge SQL on MariaDB. N installations with 10 notes each on PROJ-1, then wrk on
# GET /forge/api/issues/PROJ-1/notes (each request the next installation's invocation) at 1, 32
# and 128 connections. For each level: req/s, latency, the server's own CPU per request
# (user + system of all its threads, /proc/PID/stat) and its peak RSS; the goal is RSS <= 32 MiB,
# half of Forge's smallest size (64Mi).
#
#   bench/container.sh [--installations N] [--duration SECONDS] [--eager-commit]
#
# The fake sidecar and MariaDB run on the same machine and are in every request's path (each
# notes page is one Forge SQL call through the sidecar). Beside it, in the same run, the same
# binary through the Connect door (JWT + QSH) and the Forge Remote door (a Forge Invocation Token
# from the kit's fake Forge), each on its embedded SQLite store and the same page of 10 notes:
# compare CPU per request, which counts the server alone, rather than req/s.
set -euo pipefail
cd "$(dirname "$0")/.."

installations=50 duration=20 warmup=5 arena_eager_commit=0
while [ $# -gt 0 ]; do
  case "$1" in
    --installations) installations=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --eager-commit) arena_eager_commit=2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

if ! command -v wrk >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null || true
fi
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }

source .ci/mariadb.sh
server_pid="" sidecar_pid=""
forge_pid=""
cleanup() {
  # Each step on its own: one that fails (a process already gone) must not skip the rest.
  [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
  [ -z "$forge_pid" ] || kill "$forge_pid" 2>/dev/null || true
  if [ -n "$sidecar_pid" ]; then kill "$sidecar_pid" 2>/dev/null && wait "$sidecar_pid" 2>/dev/null || true; fi
  stop_throwaway_mariadb
}
trap cleanup EXIT

cargo build --release --locked --bin connect-axum -p issue-notes
cargo build --release --locked -p connect-axum-testing --example fake-sidecar --example fake-forge
cargo build --release --locked --example bench-seed
out=bench/out/container
mkdir -p "$out"
rm -f "$out"/*

target/release/examples/fake-sidecar --installations "$installations" --ids "$out/ids.txt" \
  >"$out/sidecar.txt" 2>"$out/sidecar.log" &
sidecar_pid=$!
for _ in $(seq 300); do [ -s "$out/sidecar.txt" ] && break; sleep 0.1; done
proxy=$(head -n 1 "$out/sidecar.txt")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
app="http://127.0.0.1:$port"
# Started as Forge starts it: its variables alone, in a folder it may not write.
run_dir=$(mktemp -d) && chmod 555 "$run_dir"
# MIMALLOC_ARENA_EAGER_COMMIT=0 as the image sets it (the Dockerfile's forge-container target);
# bench/container.sh --eager-commit measures without it.
( cd "$run_dir" && exec env -i FORGE_EGRESS_PROXY_URL="$proxy" SERVER_PORT="$port" RUST_LOG=info \
    MIMALLOC_ARENA_EAGER_COMMIT="$arena_eager_commit" \
    "$OLDPWD/target/release/connect-axum" ) >"$out/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 300); do curl -fs "$app/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
idle_rss=$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status")

# 10 notes on PROJ-1 of each installation, through the server.
while read -r id; do
  for n in $(seq 10); do
    curl -fs -o /dev/null -X POST "$app/forge/api/issues/PROJ-1/notes" \
      -H "x-forge-invocation-id: $id" -H 'content-type: application/json' \
      -d "{\"body\": \"note $n\"}"
  done
done <"$out/ids.txt"

ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
hz=$(getconf CLK_TCK)
# load DOOR URL TOKENS [HEADER PREFIX PATH]: wrk with bench/notes.lua at 1, 32 and 128
# connections; CPU ticks and RSS per level.
load() {
  local door=$1 url=$2
  shift 2
  for c in 1 32 128; do
    threads=$(( c < 2 ? 1 : 2 ))
    wrk -t$threads -c$c -d${warmup}s -s bench/notes.lua "$url" -- "$@" >/dev/null
    ( peak=0
      while kill -0 "$server_pid" 2>/dev/null; do
        rss=$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status" 2>/dev/null || echo 0)
        [ "${rss:-0}" -gt "$peak" ] && peak=$rss && echo "$peak" >"$out/$door-rss-c$c.txt"
        sleep 0.2
      done ) &
    sampler=$!
    before=$(ticks)
    wrk -t$threads -c$c -d${duration}s --latency -s bench/notes.lua "$url" -- "$@" >"$out/$door-wrk-c$c.txt"
    after=$(ticks)
    kill $sampler 2>/dev/null || true
    echo "$(( after - before )) $hz" >"$out/$door-cpu-c$c.txt"
  done
  awk '/VmHWM/ {print $2}' "/proc/$server_pid/status" >"$out/$door-rss-peak.txt"
}
load container "$app/forge/api/issues/PROJ-1/notes" "$out/ids.txt" x-forge-invocation-id "" \
  /forge/api/issues/PROJ-1/notes
echo "$idle_rss" >"$out/container-rss-idle.txt"
kill "$server_pid" && wait "$server_pid" 2>/dev/null || true

# The Connect door, same binary, embedded SQLite in a folder of its own.
port=$(free_port) keys_port=$(free_port)
app="http://127.0.0.1:$port"
connect_dir=$(mktemp -d)
( cd "$connect_dir" && exec env -i PORT="$port" BASE_URL=https://bench.example.com \
    INSTALL_KEYS_URL="http://127.0.0.1:$keys_port" RUST_LOG=info \
    MIMALLOC_ARENA_EAGER_COMMIT="$arena_eager_commit" \
    "$OLDPWD/target/release/connect-axum" ) >"$out/connect-server.log" 2>&1 &
server_pid=$!
for _ in $(seq 300); do curl -fs "$app/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
echo "$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status")" >"$out/connect-rss-idle.txt"
target/release/examples/bench-seed --app "$app" --base-url https://bench.example.com \
  --keys-port "$keys_port" --tenants "$installations" --tokens "$out/tokens.txt"
load connect "$app/api/issues/PROJ-1/notes" "$out/tokens.txt"
kill "$server_pid" && wait "$server_pid" 2>/dev/null || true
rm -rf "$connect_dir"

# The Forge Remote door, same binary, embedded SQLite; sites installed through the fake Forge.
port=$(free_port)
app="http://127.0.0.1:$port"
remote_dir=$(mktemp -d)
target/release/examples/fake-forge --app "$app" --installations "$installations" \
  --tokens "$out/fits.txt" >"$out/forge-vars.txt" 2>"$out/forge.log" &
forge_pid=$!
for _ in $(seq 300); do grep -q '^$' "$out/forge-vars.txt" 2>/dev/null && break; sleep 0.1; done
forge_vars=$(grep = "$out/forge-vars.txt" | tr '\n' ' ')
# shellcheck disable=SC2086 # one KEY=VALUE word per setting of the fake Forge
( cd "$remote_dir" && exec env -i PORT="$port" BASE_URL=https://bench.example.com RUST_LOG=info \
    MIMALLOC_ARENA_EAGER_COMMIT="$arena_eager_commit" $forge_vars \
    "$OLDPWD/target/release/connect-axum" ) >"$out/remote-server.log" 2>&1 &
server_pid=$!
for _ in $(seq 300); do curl -fs "$app/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
echo "$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status")" >"$out/remote-rss-idle.txt"
for _ in $(seq 600); do [ -s "$out/fits.txt" ] && break; sleep 0.1; done
load remote "$app/forge/api/issues/PROJ-1/notes" "$out/fits.txt" Authorization "Bearer " \
  /forge/api/issues/PROJ-1/notes
rm -rf "$remote_dir"

python3 bench/report-container.py "$out" "$installations"
