#!/usr/bin/env bash
# The load benchmark: the release server on Postgres, N tenants installed through the signed
# /installed hook, 10 notes each on PROJ-1, then wrk on GET /api/issues/PROJ-1/notes (each request
# as the next tenant) at 1, 32 and 128 connections, and pgbench on the same SELECT for the ceiling,
# alone and as the app runs it (in a transaction under row-level security).
#
#   bench/run.sh [--tenants N] [--duration SECONDS] [--direct]
#   bench/run.sh --vs-ace [--tenants N] [--duration SECONDS] [--rounds N]
#
# --direct seeds tenants and notes with SQL instead of the hooks (for 100 000 tenants).
# Results: a table on stdout and bench/out/results.json.
# --vs-ace runs the peer benchmark instead, against atlassian-connect-express (bench/vs-ace.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
for arg in "$@"; do if [ "$arg" = --vs-ace ]; then exec bench/vs-ace.sh "$@"; fi; done

tenants=1000 duration=20 warmup=5 direct=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tenants) tenants=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --direct) direct=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

if ! command -v wrk >/dev/null || ! command -v pgbench >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk postgresql-contrib >/dev/null || true
fi
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
pgbench_bin=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench | sort -V | tail -n 1)

source .ci/postgres.sh
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; stop_throwaway_postgres; }
trap cleanup EXIT

cargo build --release --locked --bin connect-axum --example bench-seed
out=bench/out
mkdir -p "$out"
rm -f "$out"/*.txt "$out"/*.log "$out"/*.json

db=connect_axum_bench
psql "$TEST_DATABASE_URL" -qc "drop database if exists $db with (force)" -c "create database $db"
db_url="${TEST_DATABASE_URL%/*}/$db"
# On one machine the server and pgbench reach Postgres through its Unix socket when it has one
# (as a co-located deployment would); otherwise through TCP.
pg_port=$(psql "$db_url" -Atc 'show port')
transport=tcp pgbench_target=("$db_url")
for dir in /var/run/postgresql "${pg_dir:-}"; do
  if [ -n "$dir" ] && [ -S "$dir/.s.PGSQL.$pg_port" ]; then
    db_url="postgres://postgres@localhost/$db?host=$dir&port=$pg_port"
    pgbench_target=(-h "$dir" -p "$pg_port" -U postgres "$db")
    transport="unix socket"
    break
  fi
done
echo "$transport" >"$out/transport.txt"
SECRETS_KEY="${SECRETS_KEY:-$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')}"
export SECRETS_KEY
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
app_port=$(free_port) keys_port=$(free_port)
app="http://127.0.0.1:$app_port"
base_url=https://bench.example.com

DATABASE_URL="$db_url" PORT=$app_port BASE_URL=$base_url INSTALL_KEYS_URL="http://127.0.0.1:$keys_port" \
  RUST_LOG="${RUST_LOG:-info}" target/release/connect-axum >"$out/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do curl -fs "$app/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

seed_args=(--app "$app" --base-url "$base_url" --keys-port "$keys_port" --tenants "$tenants" --tokens "$out/tokens.txt")
[ "$direct" = 1 ] && seed_args+=(--direct "$db_url")
target/release/examples/bench-seed "${seed_args[@]}"

url="$app/api/issues/PROJ-1/notes"
# pgbench opens one connection per client: stay within what the server allows.
max_clients=$(( $(psql "$db_url" -Atc 'show max_connections') - 20 ))
for c in 1 32 128; do
  threads=$(( c < 2 ? 1 : 2 ))
  wrk -t$threads -c$c -d${warmup}s -s bench/notes.lua "$url" -- "$out/tokens.txt" >/dev/null
  ( peak=0
    while kill -0 "$server_pid" 2>/dev/null; do
      rss=$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status" 2>/dev/null || echo 0)
      [ "${rss:-0}" -gt "$peak" ] && peak=$rss && echo "$peak" >"$out/rss-c$c.txt"
      sleep 0.2
    done ) &
  sampler=$!
  wrk -t$threads -c$c -d${duration}s --latency -s bench/notes.lua "$url" -- "$out/tokens.txt" >"$out/wrk-c$c.txt"
  kill $sampler 2>/dev/null || true
  clients=$(( c < max_clients ? c : max_clients ))
  echo "clients: $clients" | tee "$out/pgselect-c$c.txt" >"$out/pgselect-rls-c$c.txt"
  for script in select select-rls; do
    "$pgbench_bin" -n -M prepared -c $clients -j $threads -T "$duration" -D tenants="$tenants" \
      -f bench/$script.sql "${pgbench_target[@]}" >>"$out/pg$script-c$c.txt" 2>&1 || echo "pgbench $script failed at $clients clients" >&2
  done
done
awk '/VmHWM/ {print $2}' "/proc/$server_pid/status" >"$out/rss-peak.txt"

python3 bench/report.py "$out" "$tenants"
