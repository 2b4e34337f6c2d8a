# Sourced by .ci/run right after .ci/postgres.sh: makes sure a MariaDB answers at 127.0.0.1:3306
# as root without a password (what the kit's FakeForgeSql uses, TEST_MARIADB_URL unset), starting
# a throwaway server from Debian's mariadb-server binaries in a temporary folder when none does.
# Defines stop_throwaway_mariadb, to call on exit.

mariadb_answers() {
  if command -v mariadb >/dev/null 2>&1; then
    mariadb -h127.0.0.1 -P3306 -uroot -e 'select 1' >/dev/null 2>&1
  else
    (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null
  fi
}

stop_throwaway_mariadb() { :; }
if ! mariadb_answers; then
  if ! command -v mariadbd >/dev/null 2>&1 && ! [ -x /usr/sbin/mariadbd ]; then
    echo "installing mariadb-server for the Forge SQL tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null
  fi
  maria_dir=$(mktemp -d /tmp/connect-axum-mariadb.XXXXXX)
  as_maria=()
  if [ "$(id -u)" = 0 ]; then
    id mysql >/dev/null 2>&1 || useradd --system --no-create-home mysql
    chown mysql "$maria_dir"
    as_maria=(--user=mysql)
  fi
  echo "starting a throwaway MariaDB on 127.0.0.1:3306"
  # Root has no password and logs in over TCP: the unix_socket plugin stays off.
  # --no-defaults comes first, or the server refuses it.
  mariadb-install-db --no-defaults "${as_maria[@]}" --datadir="$maria_dir/data" \
    --auth-root-authentication-method=normal --skip-test-db >"$maria_dir/install.log" 2>&1
  mariadbd --no-defaults "${as_maria[@]}" --datadir="$maria_dir/data" \
    --bind-address=127.0.0.1 --port=3306 --socket="$maria_dir/mariadb.sock" \
    --pid-file="$maria_dir/mariadb.pid" --skip-name-resolve --max-connections=500 \
    --log-error="$maria_dir/server.log" >/dev/null 2>&1 &
  maria_pid=$!
  for _ in $(seq 1 60); do
    mariadb_answers && break
    sleep 0.5
  done
  if ! mariadb_answers; then
    echo "the throwaway MariaDB did not answer; its log:" >&2
    cat "$maria_dir/server.log" >&2
    exit 1
  fi
  stop_throwaway_mariadb() {
    kill "$maria_pid" 2>/dev/null && wait "$maria_pid" 2>/dev/null || true
    rm -rf "$maria_dir"
  }
fi
