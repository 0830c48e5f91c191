# bench/pgkit.sh - the PostgreSQL machinery the benchmarks share; sourced by
# run.sh and restore-downtime.sh (not run on its own).
#
# The sourcing script defines `log MSG` and `die MSG` first. Functions:
#   kit_install_missing [PKG...]  apt-get install hyperfine, pigz, gzip, jq, GNU
#                     time, the given packages when their command is missing, and
#                     a PostgreSQL server when there is no /usr/lib/postgresql/*/bin/initdb
#   kit_pick_pgbin    sets pgbin (BENCH_PG_BIN or the newest /usr/lib/postgresql/*/bin)
#   free_port, random_password
#   kit_cluster_init DIR      initdb DIR/pgdata (scram-sha-256, superuser
#                     postgres with password $super_pw); DIR must exist, 755
#   kit_cluster_start DIR     pg_ctl start on 127.0.0.1:$port, socket in the data
#                     dir, max_wal_size=4GB; sets cluster_started=1
#   kit_cluster_stop          immediate stop when kit_cluster_start ran
#   su_psql ARGS...           psql as the superuser on database postgres
#   kit_load_fixtures SCALE   role bench (password $bench_pw) owning benchdb,
#                     filled by migrations-fixtures/build.sh; sets load_s
#   kit_db_facts              sets db_bytes, db_pretty, pg_version of benchdb
# Variables used: repo, super_pw, bench_pw, port (set by the caller).

kit_apt_install() {
    local sudo=()
    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null || die "need root or sudo to install: $*"
        sudo=(sudo)
    fi
    log "apt-get install $*"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >/dev/null
}

# kit_install_missing [PKG...]: each extra PKG is installed when a command
# of the same name is missing (sqlite3, busybox-static is checked by path).
kit_install_missing() {
    local missing=() p
    command -v hyperfine >/dev/null || missing+=(hyperfine)
    command -v pigz >/dev/null || missing+=(pigz)
    command -v gzip >/dev/null || missing+=(gzip)
    command -v jq >/dev/null || missing+=(jq)
    [[ -x /usr/bin/time ]] || missing+=(time)
    for p in "$@"; do
        case $p in
            busybox-static) [[ -x /bin/busybox ]] || missing+=("$p") ;;
            *) command -v "$p" >/dev/null || missing+=("$p") ;;
        esac
    done
    if [[ -z ${BENCH_PG_BIN:-} ]] && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
        # Debian's postgresql-common creates and starts a "main" cluster on
        # install unless told not to; we only want the binaries.
        if [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
            if [[ $EUID -eq 0 ]]; then
                mkdir -p /etc/postgresql-common
                echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf
            fi
        fi
        missing+=(postgresql postgresql-client)
    fi
    if [[ ${#missing[@]} -gt 0 ]]; then
        kit_apt_install "${missing[@]}"
    fi
}

kit_pick_pgbin() {
    if [[ -n ${BENCH_PG_BIN:-} ]]; then
        pgbin=$BENCH_PG_BIN
    else
        pgbin=$(find /usr/lib/postgresql -maxdepth 3 -path '*/bin/initdb' -printf '%h\n' | sort -V | tail -n 1)
    fi
    [[ -x $pgbin/initdb && -x $pgbin/pg_ctl && -x $pgbin/pg_dump && -x $pgbin/psql ]] ||
        die "no usable PostgreSQL in '$pgbin' (need initdb, pg_ctl, pg_dump, psql)"
}

free_port() {
    local p _
    for _ in $(seq 1 100); do
        p=$((30000 + RANDOM % 30000))
        # nothing accepts a connection there -> free
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

random_password() { head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24; }

kit_home=""
cluster_started=0

# runs "$@" as the postgres user when we are root, from the cluster's parent
as_pg() {
    if [[ $EUID -eq 0 ]]; then
        (cd "$kit_home" && runuser -u postgres -- "$@")
    else
        (cd "$kit_home" && "$@")
    fi
}

kit_cluster_init() {
    kit_home=$1
    local pgdata=$kit_home/pgdata
    if [[ $EUID -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user to run the server as"
    fi
    mkdir -p "$pgdata"
    (umask 077 && printf '%s\n' "$super_pw" >"$kit_home/pwfile")
    if [[ $EUID -eq 0 ]]; then chown postgres: "$pgdata" "$kit_home/pwfile"; fi
    chmod 700 "$pgdata"
    as_pg "$pgbin/initdb" -D "$pgdata" -U postgres --auth=scram-sha-256 --pwfile="$kit_home/pwfile" \
        -E UTF8 --locale=C.UTF-8 >"$kit_home/initdb.log" 2>&1 ||
        { cat "$kit_home/initdb.log" >&2; rm -f "$kit_home/pwfile"; die "initdb failed"; }
    rm -f "$kit_home/pwfile"
}

kit_cluster_start() {
    kit_home=$1
    local pgdata=$kit_home/pgdata
    log "PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') cluster in $pgdata, port $port"
    as_pg "$pgbin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 60 \
        -o "-p $port -k $pgdata -c listen_addresses=127.0.0.1 -c max_wal_size=4GB" start >/dev/null ||
        { cat "$pgdata/server.log" >&2 || true; die "pg_ctl start failed"; }
    cluster_started=1
}

# $1: immediate (default; a throwaway cluster) or fast (a cached one that is
# started again later, so no crash recovery on the next start)
kit_cluster_stop() {
    if [[ $cluster_started == 1 ]]; then
        as_pg "$pgbin/pg_ctl" -D "$kit_home/pgdata" -m "${1:-immediate}" -w stop >/dev/null 2>&1 || true
        cluster_started=0
    fi
}

su_psql() {
    PGPASSWORD=$super_pw "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"
}

kit_load_fixtures() {
    local scale=$1 t0 t1
    su_psql -c "CREATE ROLE bench LOGIN PASSWORD '$bench_pw'" \
            -c "CREATE DATABASE benchdb OWNER bench"
    log "loading fixtures at scale $scale"
    t0=$(date +%s.%N)
    PGHOST=127.0.0.1 PGPORT=$port PGUSER=bench PGPASSWORD=$bench_pw PGDATABASE=benchdb \
        PSQL=$pgbin/psql "$repo/migrations-fixtures/build.sh" postgres "$scale"
    t1=$(date +%s.%N)
    load_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
}

kit_db_facts() {
    db_bytes=$(su_psql -At -c "SELECT pg_database_size('benchdb')")
    db_pretty=$(su_psql -At -c "SELECT pg_size_pretty(pg_database_size('benchdb'))")
    pg_version=$(su_psql -At -c "SHOW server_version")
}
