#!/usr/bin/env bash
# Build the assessment-app fixture database at a given scale.
#
#   build.sh sqlite OUT.db [SCALE]   create a new SQLite file (sqlite3 CLI)
#   build.sh postgres [SCALE]        load into the PostgreSQL database named by
#                                    the libpq environment (PGHOST, PGPORT,
#                                    PGUSER, PGPASSWORD, PGDATABASE) with psql
#
# SCALE is a positive integer row-count multiplier (default 1).  Scale 1 is a
# few hundred rows; the size grows linearly (roughly 0.43 MB per unit in
# PostgreSQL, 0.35 MB per unit in SQLite).
#
# Environment:
#   SQLITE_JOURNAL_MODE   journal mode of the built SQLite file (default DELETE;
#                         WAL also works)
#   PSQL, SQLITE3         client binaries (default: psql, sqlite3 from PATH)
#
# The target must be empty: the SQLite file must not exist yet, the
# PostgreSQL database must not already contain the tables.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

check_scale() {
    if [[ ! $1 =~ ^[1-9][0-9]{0,6}$ ]]; then
        echo "build.sh: SCALE must be a positive integer, got '$1'" >&2
        exit 2
    fi
}

build_sqlite() {
    local out=$1 scale=$2 mode=${SQLITE_JOURNAL_MODE:-DELETE} sqlite3=${SQLITE3:-sqlite3}
    check_scale "$scale"
    if [[ ! $mode =~ ^(DELETE|WAL|delete|wal)$ ]]; then
        echo "build.sh: SQLITE_JOURNAL_MODE must be DELETE or WAL" >&2
        exit 2
    fi
    if [[ -e $out ]]; then
        echo "build.sh: $out already exists; remove it first" >&2
        exit 1
    fi
    # build under a temporary name so an interrupted build leaves nothing
    # that looks finished
    local tmp="$out.building.$$"
    rm -f "$tmp" "$tmp-journal" "$tmp-wal" "$tmp-shm"
    trap 'rm -f "$tmp" "$tmp-journal" "$tmp-wal" "$tmp-shm"' EXIT
    "$sqlite3" -bail -batch "$tmp" \
        "PRAGMA journal_mode = DELETE;" \
        ".read '$here/sqlite/schema.sql'" \
        "CREATE TEMP TABLE fixture_scale(n INTEGER NOT NULL);" \
        "INSERT INTO fixture_scale VALUES ($scale);" \
        ".read '$here/sqlite/seed.sql'" \
        "PRAGMA journal_mode = $mode;" >/dev/null
    mv "$tmp" "$out"
    trap - EXIT
    echo "build.sh: built $out (scale $scale, $(wc -c <"$out") bytes, journal_mode=$mode)" >&2
}

build_postgres() {
    local scale=$1 psql=${PSQL:-psql}
    check_scale "$scale"
    "$psql" -X -q -v ON_ERROR_STOP=1 -v scale="$scale" \
        -f "$here/postgres/schema.sql" -f "$here/postgres/seed.sql"
    echo "build.sh: loaded scale $scale into database '${PGDATABASE:-${PGUSER:-$(id -un)}}'" >&2
}

[[ $# -ge 1 ]] || usage
case $1 in
    sqlite)
        [[ $# -ge 2 && $# -le 3 ]] || usage
        build_sqlite "$2" "${3:-1}"
        ;;
    postgres | postgresql | pg)
        [[ $# -le 2 ]] || usage
        build_postgres "${2:-1}"
        ;;
    -h | --help | help)
        usage
        ;;
    *)
        usage
        ;;
esac
