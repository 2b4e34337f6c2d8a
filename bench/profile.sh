#!/usr/bin/env bash
# Where the server's CPU goes: the release server on Postgres with 1 000 tenants (signed installs,
# 10 notes each), wrk at 32 connections on GET /api/issues/PROJ-1/notes, `perf record` on the
# server meanwhile, and the samples summed by component (bench/perf-summary.py).
#
#   bench/profile.sh [--duration SECONDS] [--bin PATH]
#
# Prints wrk's figures, how the machine's CPU was shared (server, Postgres, the rest) and the
# component table; keeps the raw profile in bench/out/perf.data.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10 bin=target/release/connect-axum build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --bin) bin=$2; build=0; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
command -v perf >/dev/null || { echo "perf is required (apt-get install linux-perf)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }

source .ci/postgres.sh
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; stop_throwaway_postgres; }
trap cleanup EXIT

[ "$build" = 1 ] && cargo build --release --locked --bin connect-axum
cargo build --release --locked --example bench-seed
out=bench/out
mkdir -p "$out"
db=connect_axum_profile
psql "$TEST_DATABASE_URL" -qc "drop database if exists $db with (force)" -c "create database $db"
db_url="${TEST_DATABASE_URL%/*}/$db"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
app_port=$(free_port) keys_port=$(free_port)
app="http://127.0.0.1:$app_port"
SECRETS_KEY="$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')" \
DATABASE_URL="$db_url" PORT=$app_port BASE_URL=https://bench.example.com TENANT_RATE_LIMIT=0 \
  INSTALL_KEYS_URL="http://127.0.0.1:$keys_port" RUST_LOG="${RUST_LOG:-info}" "$bin" >"$out/profile-server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do curl -fs "$app/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
target/release/examples/bench-seed --app "$app" --base-url https://bench.example.com \
  --keys-port "$keys_port" --tenants 1000 --tokens "$out/profile-tokens.txt"

url="$app/api/issues/PROJ-1/notes"
wrk -t2 -c32 -d3s -s bench/notes.lua "$url" -- "$out/profile-tokens.txt" >/dev/null
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
pg_ticks() {
  local sum=0 p
  for p in $(pgrep -u postgres | sort -u); do
    sum=$((sum + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$sum"
}
machine() { awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
a0=$(ticks $server_pid) p0=$(pg_ticks) m0=$(machine)
wrk -t2 -c32 -d"${duration}s" --latency -s bench/notes.lua "$url" -- "$out/profile-tokens.txt" >"$out/profile-wrk.txt" &
wrk_pid=$!
sleep 1
perf record -F 999 -g -p "$server_pid" -o "$out/perf.data" -- sleep $((duration - 2)) >/dev/null 2>&1
wait $wrk_pid
a1=$(ticks $server_pid) p1=$(pg_ticks) m1=$(machine)
grep -E "Requests/sec|Non-2xx|Socket errors" "$out/profile-wrk.txt" || true
grep -A4 "Latency Distribution" "$out/profile-wrk.txt" | tail -n 4
echo "machine CPU: server $((100 * (a1 - a0) / (m1 - m0))) %, Postgres $((100 * (p1 - p0) / (m1 - m0))) %, the rest (wrk, idle) $((100 - 100 * (a1 - a0 + p1 - p0) / (m1 - m0))) %"
perf report -i "$out/perf.data" --no-children --sort dso,symbol -g none --percent-limit 0 --stdio 2>/dev/null |
  python3 bench/perf-summary.py
