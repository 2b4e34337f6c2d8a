# Sourced by .ci/run and bench/run.sh: makes sure a Postgres answers at TEST_DATABASE_URL,
# starting a throwaway cluster (initdb + pg_ctl, trust auth, free port) when none does.
# Defines stop_throwaway_postgres, to call on exit.

export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

pg_answers() {
  if command -v psql >/dev/null 2>&1; then
    psql "$1" -Atqc 'select 1' >/dev/null 2>&1
  else
    local hostport="${1#*@}"; hostport="${hostport%%/*}"
    (exec 3<>"/dev/tcp/${hostport%%:*}/${hostport##*:}") 2>/dev/null
  fi
}

stop_throwaway_postgres() { :; }
if ! pg_answers "$TEST_DATABASE_URL"; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$pg_bin" ]; then
    echo "no Postgres answers at $TEST_DATABASE_URL and none is installed: apt-get install postgresql" >&2
    exit 1
  fi
  pg_dir=$(mktemp -d /tmp/connect-axum-pg.XXXXXX)
  pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_pg=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$pg_dir"
    as_pg=(runuser -u postgres --)
  fi
  echo "starting a throwaway Postgres ($pg_bin) on port $pg_port"
  "${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust >/dev/null
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
    -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null
  stop_throwaway_postgres() {
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pg_dir"
  }
  export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
fi
