#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers for the tests and creates a fresh database for this run.
# Prints the URL the tests should use (export it as BENTOGATE_TEST_POSTGRES). With no server on
# 127.0.0.1:5432 it starts the installed cluster, or installs Debian's postgresql package first.
set -euo pipefail
host=${PGHOST_FOR_TESTS:-127.0.0.1}
port=${PGPORT_FOR_TESTS:-5432}
user=${PGUSER_FOR_TESTS:-postgres}
answers() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }
wait_for_server() {
  for _ in $(seq 1 60); do answers && return 0; sleep 0.5; done
  return 1
}
if ! command -v pg_isready >/dev/null || ! answers; then
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    echo "ensure.sh: no PostgreSQL here; installing Debian's postgresql" >&2
    export DEBIAN_FRONTEND=noninteractive
    sudo_=""; [ "$(id -u)" -ne 0 ] && sudo_="sudo"
    $sudo_ apt-get update -qq >&2
    $sudo_ apt-get install -y -qq postgresql >&2
  fi
  version=$(ls /usr/lib/postgresql | sort -n | tail -1)
  if ! pg_lsclusters -h 2>/dev/null | grep -q "^$version "; then
    pg_createcluster "$version" main >&2
  fi
  conf=/etc/postgresql/$version/main
  # Trust for local TCP connections, as on this project's CI machines.
  if ! grep -q "bentogate-tests" "$conf/pg_hba.conf"; then
    sed -i '1i host all all 127.0.0.1/32 trust # bentogate-tests\nlocal all all trust # bentogate-tests' "$conf/pg_hba.conf"
  fi
  pg_ctlcluster "$version" main start >&2 || pg_ctlcluster "$version" main reload >&2
  wait_for_server || { echo "ensure.sh: PostgreSQL did not start on $host:$port" >&2; exit 1; }
fi
db="bentogate_ci_$$"
# Drop what earlier runs left behind (their test databases are named after their process).
psql -X -q -h "$host" -p "$port" -U "$user" -d postgres -At \
  -c "SELECT datname FROM pg_database WHERE datname LIKE 'bentogate_ci_%' OR datname LIKE 'bentogate_test_%'" |
  while read -r old; do
    psql -X -q -h "$host" -p "$port" -U "$user" -d postgres -c "DROP DATABASE IF EXISTS \"$old\" WITH (FORCE)" >&2
  done
psql -X -q -h "$host" -p "$port" -U "$user" -d postgres -c "CREATE DATABASE $db" >&2
echo "postgres://$user@$host:$port/$db"
