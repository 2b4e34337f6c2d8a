#!/usr/bin/env bash
# Two replicas of the server on one Postgres behind nginx, all on loopback: the topology of
# `docker compose --profile replicas up`, without Docker. Checks that both replicas serve through
# the proxy and that a reinstall through one replica is honoured by the other within a second.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nginx >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi
source .ci/postgres.sh

work=$(mktemp -d /tmp/connect-axum-replicas.XXXXXX)
chmod 0777 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
  stop_throwaway_postgres
}
trap cleanup EXIT

cargo build --quiet --bin connect-axum --example bench-seed
db=connect_axum_replicas
psql "$TEST_DATABASE_URL" -qc "drop database if exists $db with (force)" -c "create database $db" 2>/dev/null
db_url="${TEST_DATABASE_URL%/*}/$db"
SECRETS_KEY="${SECRETS_KEY:-$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')}"
export SECRETS_KEY
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
one=$(free_port) two=$(free_port) proxy=$(free_port) keys=$(free_port)
base_url=https://replicas.example.com

for port in $one $two; do
  DATABASE_URL="$db_url" PORT=$port BASE_URL=$base_url INSTALL_KEYS_URL="http://127.0.0.1:$keys" \
    RUST_LOG=warn target/debug/connect-axum >"$work/replica-$port.log" 2>&1 &
  pids+=($!)
done
for port in $one $two; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
done

cat >"$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log;
events {}
http {
  log_format upstream '\$upstream_addr \$status';
  access_log $work/access.log upstream;
  client_body_temp_path $work/body;
  proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fastcgi;
  uwsgi_temp_path $work/uwsgi;
  scgi_temp_path $work/scgi;
  upstream app { server 127.0.0.1:$one; server 127.0.0.1:$two; }
  server {
    listen 127.0.0.1:$proxy;
    location / {
      proxy_pass http://app;
      proxy_set_header Host \$host;
      proxy_set_header X-Request-Id \$request_id;
    }
  }
}
CONF
nginx -c "$work/nginx.conf"

notes() { # URL TOKEN -> "STATUS ROWS"
  curl -s -o "$work/body.json" -w '%{http_code}\n' -H "Authorization: JWT $2" "$1/api/issues/PROJ-1/notes" \
    | { read -r status; echo "$status $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(len(d["notes"]) if "notes" in d else d.get("error"))' "$work/body.json")"; }
}

echo "installing 4 tenants and their notes through the proxy"
target/debug/examples/bench-seed --app "http://127.0.0.1:$proxy" --base-url $base_url --keys-port "$keys" \
  --tenants 4 --tokens "$work/tokens.txt"
token=$(head -n 1 "$work/tokens.txt")

for port in $one $two; do
  got=$(notes "http://127.0.0.1:$port" "$token")
  [ "$got" = "200 10" ] || { echo "replica on $port answered: $got" >&2; exit 1; }
  echo "replica on $port serves tenant 0: $got"
done
for _ in $(seq 10); do notes "http://127.0.0.1:$proxy" "$token" >/dev/null; done
served=$(awk '{print $1}' "$work/access.log" | sort -u | wc -l)
[ "$served" -ge 2 ] || { echo "the proxy used $served replica(s)" >&2; exit 1; }
echo "the proxy spread requests over $served replicas"

echo "reinstalling tenant 0 with a new sharedSecret through replica $one"
target/debug/examples/bench-seed --app "http://127.0.0.1:$one" --base-url $base_url --keys-port "$keys" \
  --tenants 1 --secret-version 1 --install-only --tokens "$work/tokens-v1.txt"
new_token=$(head -n 1 "$work/tokens-v1.txt")
start=$(date +%s%N)
while :; do
  got=$(notes "http://127.0.0.1:$two" "$token")
  [ "$got" = "401 bad_signature" ] && break
  [ $(( ($(date +%s%N) - start) / 1000000 )) -lt 1000 ] || { echo "replica $two still answers $got after 1 s" >&2; exit 1; }
  sleep 0.02
done
echo "replica $two refused the old secret after $(( ($(date +%s%N) - start) / 1000000 )) ms"
got=$(notes "http://127.0.0.1:$two" "$new_token")
[ "$got" = "200 10" ] || { echo "replica $two with the new secret answered: $got" >&2; exit 1; }
echo "replica $two serves the new secret: $got"
echo "two replicas: ok"
