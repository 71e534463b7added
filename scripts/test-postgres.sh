#!/usr/bin/env bash
# A throwaway PostgreSQL server for the test suite: private data dir under /tmp, loopback only,
# a free port. Prints `export ...` lines for the environment the PostgreSQL tests read:
#
#   eval "$(bash scripts/test-postgres.sh)"      # then: cargo test
#   "$NETSENTINEL_TEST_PG_CTL" stop -m fast       # what the database-restart test runs
#   bash scripts/test-postgres.sh stop DIR       # remove it (DIR is NETSENTINEL_TEST_PG_DIR)
#
# Installs Debian's `postgresql` package when no server binaries are found (needs root). As
# root the server runs as the `postgres` user (PostgreSQL refuses to run as root).
set -euo pipefail

if [ "${1:-}" = "stop" ]; then
  dir="${2:?usage: test-postgres.sh stop DIR}"
  "$dir/pg_ctl" stop -m immediate >/dev/null 2>&1 || true
  rm -rf "$dir"
  exit 0
fi

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
bin="$(find_bin)"
if [ -z "$bin" ] || [ ! -x "$bin/pg_ctl" ]; then
  echo "test-postgres: installing postgresql (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  bin="$(find_bin)"
fi
[ -x "$bin/pg_ctl" ] || { echo "test-postgres: no pg_ctl found under /usr/lib/postgresql" >&2; exit 1; }

port=""
for p in $(seq 55432 55532); do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || { echo "test-postgres: no free port in 55432..55532" >&2; exit 1; }

dir="$(mktemp -d /tmp/netsentinel-pg.XXXXXX)"
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$dir"
  as_pg=(runuser -u postgres --)
fi

# The wrapper the restart test calls: pg_ctl for this cluster, as the right user.
cat >"$dir/pg_ctl" <<WRAP
#!/bin/sh
exec ${as_pg[*]} "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -o "-p $port -k $dir -c listen_addresses=127.0.0.1" "\$@"
WRAP
chmod 755 "$dir/pg_ctl"

"${as_pg[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }
# Small and fast: the tests create a database each and need no durability across a power cut.
cat >>"$dir/data/postgresql.conf" <<CONF
max_connections = 300
fsync = off
full_page_writes = off
shared_buffers = 64MB
CONF
"$dir/pg_ctl" start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
"${as_pg[@]}" "$bin/psql" -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
  -c "CREATE ROLE netsentinel LOGIN PASSWORD 'netsentinel' CREATEDB" \
  -c "CREATE DATABASE netsentinel OWNER netsentinel" >&2

echo "export NETSENTINEL_TEST_DATABASE_URL='postgres://netsentinel:netsentinel@127.0.0.1:$port/netsentinel'"
echo "export NETSENTINEL_TEST_PG_CTL='$dir/pg_ctl'"
echo "export NETSENTINEL_TEST_PG_DIR='$dir'"
