#!/usr/bin/env bash
# The peer benchmark: the release server against the same endpoint on atlassian-connect-express
# 11.5.3 (bench/ace), on one Postgres server, each on a database of its own. Both get the same
# tenants through their signed /installed hooks (bench-seed, RS256 install JWTs verified against
# bench-seed's key server) and 10 notes each on PROJ-1 through their POST endpoints; then at 1, 32
# and 128 connections wrk runs GET /api/issues/PROJ-1/notes (each request as the next tenant)
# alternately on connect-axum and ACE, ROUNDS rounds each, a warm-up before every run, while the
# server under load has its RSS sampled.
#
#   bench/run.sh --vs-ace [--tenants N] [--duration SECONDS] [--rounds N]
#
# Both log one line per request (connect-axum at RUST_LOG=info, ACE with morgan); REQUEST_LOG=off
# and RUST_LOG=warn turn both off. Results: a table on stdout, raw outputs in bench/out/vs-ace/,
# the summary in bench/out/vs-ace.json.
set -euo pipefail
cd "$(dirname "$0")/.."

tenants=1000 duration=20 warmup=5 rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --vs-ace) shift ;;
    --tenants) tenants=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

command -v wrk >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null || true; }
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
command -v node >/dev/null && command -v npm >/dev/null || { echo "node and npm are required for ACE" >&2; exit 1; }

source .ci/postgres.sh
declare -A pid=()
cleanup() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done
  stop_throwaway_postgres
}
trap cleanup EXIT

cargo build --release --locked --bin connect-axum --example bench-seed
# ACE at the versions of bench/ace/package-lock.json.
if ! (cd bench/ace && npm ls --all >/dev/null 2>&1); then
  (cd bench/ace && npm ci --no-audit --no-fund --loglevel=error)
fi
ace_version=$(node -p 'require("./bench/ace/node_modules/atlassian-connect-express/package.json").version')

out=bench/out/vs-ace
rm -rf "$out"
mkdir -p "$out"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
base_url=https://bench.example.com
pg_port=$(psql "$TEST_DATABASE_URL" -Atc 'show port')
socket_dir=""
for dir in /var/run/postgresql "${pg_dir:-}"; do
  if [ -n "$dir" ] && [ -S "$dir/.s.PGSQL.$pg_port" ]; then socket_dir=$dir; break; fi
done
# Each server's database URL: through the Unix socket when Postgres has one here (as run.sh).
db_url() {
  if [ -n "$socket_dir" ]; then
    echo "postgres://postgres@localhost:$pg_port/$1?host=$socket_dir"
  else
    echo "${TEST_DATABASE_URL%/*}/$1"
  fi
}
if [ -n "$socket_dir" ]; then echo "unix socket"; else echo tcp; fi >"$out/transport.txt"

declare -A db=([axum]=connect_axum_bench [ace]=connect_axum_bench_ace) port keys
for side in axum ace; do
  psql "$TEST_DATABASE_URL" -qc "drop database if exists ${db[$side]} with (force)" -c "create database ${db[$side]}"
  port[$side]=$(free_port)
  keys[$side]=$(free_port)
done

SECRETS_KEY="${SECRETS_KEY:-$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')}"
export SECRETS_KEY
DATABASE_URL="$(db_url "${db[axum]}")" PORT=${port[axum]} BASE_URL=$base_url \
  INSTALL_KEYS_URL="http://127.0.0.1:${keys[axum]}" TENANT_RATE_LIMIT=0 RUST_LOG="${RUST_LOG:-info}" \
  target/release/connect-axum >"$out/axum.log" 2>&1 &
pid[axum]=$!
# ACE 11.5.3 fetches the install JWT's public key from `$CONNECT_KEYS_CDN_URL/<kid>` when that
# variable is set (lib/middleware/verify-installation.js): bench-seed's key server here.
(cd bench/ace && NODE_ENV=production PORT=${port[ace]} DATABASE_URL="$(db_url "${db[ace]}")" \
  AC_LOCAL_BASE_URL=$base_url CONNECT_KEYS_CDN_URL="http://127.0.0.1:${keys[ace]}" \
  DB_POOL_SIZE="${DB_POOL_SIZE:-10}" exec node app.js) >"$out/ace.log" 2>&1 &
pid[ace]=$!

declare -A ready=([axum]=/readyz [ace]=/atlassian-connect.json)
for side in axum ace; do
  for _ in $(seq 200); do curl -fs "http://127.0.0.1:${port[$side]}${ready[$side]}" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fs "http://127.0.0.1:${port[$side]}${ready[$side]}" >/dev/null || { echo "$side did not start:" >&2; cat "$out/$side.log" >&2; exit 1; }
done

notes=/api/issues/PROJ-1/notes
for side in axum ace; do
  echo "seeding $side: $tenants tenants through the signed /installed hook, 10 notes each"
  target/release/examples/bench-seed --app "http://127.0.0.1:${port[$side]}" --base-url "$base_url" \
    --keys-port "${keys[$side]}" --tenants "$tenants" --tokens "$out/tokens-$side.txt"
  # The same check again from here, with the first token wrk will use: 200 and 10 notes.
  curl -fsS -H "Authorization: JWT $(head -n 1 "$out/tokens-$side.txt")" "http://127.0.0.1:${port[$side]}$notes" \
    >"$out/check-$side.json"
  python3 - "$side" "$out/check-$side.json" <<'EOF'
import json, sys
page = json.load(open(sys.argv[2]))
notes = page["notes"]
assert page["next"] is None, f"{sys.argv[1]}: a second page: {page['next']}"
assert len(notes) == 10, f"{sys.argv[1]}: expected 10 notes, got {len(notes)}"
print(f"check {sys.argv[1]}: GET answers 200 with 10 notes, fields {sorted(notes[0])}")
EOF
done
cmp -s <(python3 -c 'import json,sys; print(sorted(json.load(open(sys.argv[1]))["notes"][0]))' "$out/check-axum.json") \
       <(python3 -c 'import json,sys; print(sorted(json.load(open(sys.argv[1]))["notes"][0]))' "$out/check-ace.json") \
  || { echo "the two servers answer different fields" >&2; exit 1; }

run_wrk() { # side conns threads seconds [extra wrk options]
  local side=$1 c=$2 t=$3 d=$4; shift 4
  # A timeout longer than any run: with wrk's default (2 s) the slowest answers would be dropped
  # as socket errors instead of counted in the latencies.
  wrk -t"$t" -c"$c" -d"${d}s" --timeout 30s "$@" -s bench/notes.lua "http://127.0.0.1:${port[$side]}$notes" -- "$out/tokens-$side.txt"
}
for c in 1 32 128; do
  threads=$(( c < 2 ? 1 : 2 ))
  for round in $(seq "$rounds"); do
    for side in axum ace; do
      kill -0 "${pid[$side]}" 2>/dev/null || { echo "$side exited:" >&2; tail -n 20 "$out/$side.log" >&2; exit 1; }
      run_wrk "$side" "$c" "$threads" "$warmup" >"$out/warmup-c$c-$side-r$round.txt"
      ( p=${pid[$side]} peak=0
        while kill -0 "$p" 2>/dev/null; do
          rss=$(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
          [ "${rss:-0}" -gt "$peak" ] && peak=$rss && echo "$peak" >"$out/rss-c$c-$side-r$round.txt"
          # A compiler on the same cores skews the run: noted in the report.
          pgrep -x rustc >/dev/null && touch "$out/busy-c$c-$side-r$round"
          sleep 0.2
        done ) &
      sampler=$!
      head -n 1 /proc/stat >"$out/cpu-c$c-$side-r$round.txt"
      run_wrk "$side" "$c" "$threads" "$duration" --latency >"$out/wrk-c$c-$side-r$round.txt"
      head -n 1 /proc/stat >>"$out/cpu-c$c-$side-r$round.txt"
      kill $sampler 2>/dev/null || true
      wait $sampler 2>/dev/null || true
      printf 'c%-3s round %s %-4s %s req/s\n' "$c" "$round" "$side" "$(awk '/Requests\/sec/ {print $2}' "$out/wrk-c$c-$side-r$round.txt")"
    done
  done
done
for side in axum ace; do awk '/VmHWM/ {print $2}' "/proc/${pid[$side]}/status" >"$out/hwm-$side.txt"; done
node --version >"$out/node-version.txt"
echo "$ace_version" >"$out/ace-version.txt"

python3 bench/report-vs-ace.py "$out" "$tenants" "$rounds" "$duration" bench/out/vs-ace.json
