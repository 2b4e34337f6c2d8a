#!/usr/bin/env bash
# A/B load comparison of this checkout's release server against another revision's, on the same
# machine in alternating runs (so the machine's drift hits both alike): each on its own Postgres
# database with 1 000 tenants installed through the signed hook and 10 notes each, then wrk on
# GET /api/issues/PROJ-1/notes at 1 and 32 connections, ROUNDS rounds of 10 s per side.
#
#   bench/compare.sh REV [--rounds N]
#
# Prints each run and the median of each side, and writes bench/out/compare.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: bench/compare.sh REV [--rounds N]}; shift
rounds=4
[ "${1:-}" = "--rounds" ] && rounds=$2

command -v wrk >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
source .ci/postgres.sh
pids=()
# The other revision is checked out outside this one: inside, Cargo would take it for a member of
# this workspace.
basedir=$(mktemp -d /tmp/connect-axum-compare.XXXXXX)/base
cleanup() { kill "${pids[@]}" 2>/dev/null || true; git worktree remove --force "$basedir" 2>/dev/null || true; stop_throwaway_postgres; }
trap cleanup EXIT

git worktree add --detach "$basedir" "$base" >/dev/null
root=$PWD
declare -A dir=([base]=$basedir [this]=.) target=([base]=target/compare/target-base [this]=target) port
for side in base this; do
  (cd "${dir[$side]}" && CARGO_TARGET_DIR="$root/${target[$side]}" \
    cargo build --release --locked --quiet --bin connect-axum --example bench-seed)
done

out=bench/out
mkdir -p "$out"
: >"$out/compare.txt"
SECRETS_KEY="$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')"
export SECRETS_KEY
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
for side in base this; do
  db=connect_axum_compare_$side
  psql "$TEST_DATABASE_URL" -qc "drop database if exists $db with (force)" -c "create database $db"
  port[$side]=$(free_port) keys=$(free_port)
  DATABASE_URL="${TEST_DATABASE_URL%/*}/$db" PORT=${port[$side]} BASE_URL=https://bench.example.com \
    INSTALL_KEYS_URL="http://127.0.0.1:$keys" RUST_LOG=info \
    "${target[$side]}/release/connect-axum" >"$out/compare-$side.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:${port[$side]}/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  "${target[$side]}/release/examples/bench-seed" --app "http://127.0.0.1:${port[$side]}" \
    --base-url https://bench.example.com --keys-port "$keys" --tenants 1000 --tokens "$out/compare-tokens-$side.txt"
done

run() { wrk -t"$2" -c"$1" -d"$3" -s bench/notes.lua "http://127.0.0.1:${port[$4]}/api/issues/PROJ-1/notes" -- "$out/compare-tokens-$4.txt"; }
for c in 1 32; do
  threads=$(( c < 2 ? 1 : 2 ))
  for side in base this; do run $c $threads 3s $side >/dev/null; done
  for round in $(seq "$rounds"); do
    for side in base this; do
      rps=$(run $c $threads 10s $side | awk '/Requests\/sec/ {print $2}')
      echo "c$c round $round $side $rps" | tee -a "$out/compare.txt"
    done
  done
done
python3 - "$out/compare.txt" "$base" <<'PY'
import statistics, sys
runs = [line.split() for line in open(sys.argv[1])]
for c in ("c1", "c32"):
    base = statistics.median(float(r[4]) for r in runs if r[0] == c and r[3] == "base")
    this = statistics.median(float(r[4]) for r in runs if r[0] == c and r[3] == "this")
    print(f"{c}: {sys.argv[2]} {base:.0f} req/s, this checkout {this:.0f} req/s, ratio {this / base:.2f}")
PY
