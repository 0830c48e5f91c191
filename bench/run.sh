#!/usr/bin/env bash
# bench/run.sh - benchmark `backupd once` against pg_dump + gzip/pigz.
#
# What it does:
#   1. installs missing tools with apt-get (hyperfine, pigz, GNU time, jq, the
#      PostgreSQL client, a PostgreSQL server if no /usr/lib/postgresql/*/bin/initdb,
#      sqlite3 when BENCH_SQLITE=1)
#   2. starts a throwaway PostgreSQL cluster (scram-sha-256 password auth, TCP on
#      127.0.0.1 at a free port, unix socket inside the data dir; run as the
#      `postgres` user when the script runs as root) and removes it on exit
#   3. creates role `bench` (with a random password) and database `benchdb`,
#      loads migrations-fixtures at BENCH_SCALE with build.sh, prints the size
#   4. builds backupd with `cargo build --release` unless BACKUPD_BIN is set
#   5. hyperfine: `pg_dump > /dev/null`, `pg_dump | gzip -6`, `pg_dump | pigz -6`,
#      `backupd once`; markdown to bench/results/<date>-pg.md
#   6. peak RSS (GNU time -v; backupd's own peak sampled from /proc), output
#      sizes and compression ratios; a summary table is printed and appended
#      to the markdown
#   7. with BENCH_SQLITE=1 the same for a SQLite database built at the same
#      scale: `backupd once` vs `sqlite3 DB .backup` (+ gzip -6);
#      bench/results/<date>-sqlite.md
#   8. with BENCH_RESTORE=1 (or BENCH_ONLY_RESTORE=1, which skips 5-7): the
#      restore side. Role bench gets CREATEDB; one `backupd once` file is
#      restored with hyperfine (--runs BENCH_RUNS, no warmup):
#        a. gunzip -c FILE | psql --single-transaction into a new empty database
#        b. backupd restore --file FILE, RESTORE_SAFETY_BACKUP=false (staging:
#           load into a new database, swap it in, drop the old one)
#        c. the same with RESTORE_SAFETY_BACKUP=true (a full backup first)
#      peak RSS of (b) (GNU time -v, VmHWM sampling); then `backupd restore` as
#      a watcher: latency from an atomic mv into RESTORE_WATCH_DIR to its
#      "restore requested" log line, and its idle RSS and CPU ticks;
#      bench/results/<date>-restore.md
#
# Usage:   bench/run.sh                         (scale 1000: ~440 MB database)
#          BENCH_SCALE=20 BENCH_RUNS=1 bench/run.sh     (quick smoke test)
#          BENCH_ONLY_RESTORE=1 BENCH_RUNS=2 bench/run.sh  (restore side only)
#
# Variables:
#   BENCH_SCALE       fixture scale (default 1000; ~0.43 MB of database per unit)
#   BENCH_RUNS        hyperfine --runs (default 3; plus 1 warmup run, none for restores)
#   BENCH_SQLITE      1 = also benchmark SQLite (default 0)
#   BENCH_RESTORE     1 = also benchmark restoring (step 8; default 0)
#   BENCH_ONLY_RESTORE  1 = restore benchmark only: skips steps 5-7 (default 0)
#   BENCH_SETTLE      RESTORE_SETTLE_SECONDS for the watcher (default 2)
#   BENCH_IDLE_SECONDS  how long the idle watcher's CPU ticks are counted (default 20)
#   BACKUPD_BIN       use this binary instead of building target/release/backupd
#   BENCH_COMPRESSION_LEVEL  BACKUP_COMPRESSION_LEVEL given to backupd (default 6)
#   BENCH_PG_BIN      PostgreSQL bin dir (default: newest /usr/lib/postgresql/*/bin)
#   BENCH_PG_PORT     TCP port for the cluster (default: a free port)
#   BENCH_WORKDIR     parent of the scratch dir (default ${TMPDIR:-/tmp}); it holds
#                     the cluster, the dumps and the backups, so it needs a few
#                     times the database size free
#   BENCH_RESULTS_DIR where the markdown goes (default bench/results)
#   BENCH_KEEP        1 = keep the scratch dir (the cluster is stopped anyway)
#
# backupd contract assumed here: `backupd once` exits 0, prints the path of the
# new backup file as the last stdout line, logs to stderr, and reads
# DATABASE_URL, BACKUP_DIR, BACKUP_RETENTION_DAYS (0 = off) and
# BACKUP_COMPRESSION_LEVEL.  It finds pg_dump on PATH; the server's own bin dir
# is put first on PATH so client and server versions match.
# For step 8: `backupd restore --file F` exits 0 after restoring F into the
# database of DATABASE_URL (RESTORE_* variables as in `backupd restore --help`);
# without --file it watches RESTORE_WATCH_DIR and logs lines starting with an
# RFC 3339 UTC timestamp, among them "restore requested" and "restore finished"
# (or "restore failed"), and stops on SIGTERM.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
scale=${BENCH_SCALE:-1000}
runs=${BENCH_RUNS:-3}
level=${BENCH_COMPRESSION_LEVEL:-6}
results_dir=${BENCH_RESULTS_DIR:-$repo/bench/results}
only_restore=${BENCH_ONLY_RESTORE:-0}
restore=${BENCH_RESTORE:-0}
if [[ $only_restore == 1 ]]; then restore=1; fi
settle=${BENCH_SETTLE:-2}
idle_s=${BENCH_IDLE_SECONDS:-20}

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'bench/run.sh: %s\n' "$*" >&2; exit 1; }

[[ $scale =~ ^[1-9][0-9]*$ ]] || die "BENCH_SCALE must be a positive integer"
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
[[ $level =~ ^[0-9]$ ]] || die "BENCH_COMPRESSION_LEVEL must be 0-9"
[[ $restore =~ ^[01]$ ]] || die "BENCH_RESTORE must be 0 or 1"
[[ $only_restore =~ ^[01]$ ]] || die "BENCH_ONLY_RESTORE must be 0 or 1"
[[ $settle =~ ^[0-9]+$ ]] || die "BENCH_SETTLE must be a whole number of seconds"
[[ $idle_s =~ ^[1-9][0-9]*$ ]] || die "BENCH_IDLE_SECONDS must be a positive integer"
if [[ $only_restore == 1 && ${BENCH_SQLITE:-0} == 1 ]]; then
    printf 'bench/run.sh: BENCH_ONLY_RESTORE=1: ignoring BENCH_SQLITE=1\n' >&2
fi

# ---------------------------------------------------------------- 1. tools
# shellcheck source=bench/pgkit.sh
. "$repo/bench/pgkit.sh"
extra=()
if [[ ${BENCH_SQLITE:-0} == 1 && $only_restore != 1 ]]; then extra+=(sqlite3); fi
kit_install_missing "${extra[@]}"
kit_pick_pgbin

# ---------------------------------------------------------------- scratch dir, cleanup
work=$(mktemp -d "${BENCH_WORKDIR:-${TMPDIR:-/tmp}}/backupd-bench.XXXXXX")
work=$(cd "$work" && pwd -P)
chmod 755 "$work"           # the postgres user must reach $work/pgdata
outdir=$work/out            # pg_dump | gzip outputs
backup_dir=$work/backups    # BACKUP_DIR for backupd
mkdir -p "$outdir" "$backup_dir"

watcher_pid=""
cleanup() {
    local rc=$?
    if [[ -n $watcher_pid ]]; then
        kill -TERM "$watcher_pid" 2>/dev/null || true
        wait "$watcher_pid" 2>/dev/null || true
    fi
    kit_cluster_stop immediate
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        echo "bench/run.sh: kept $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- 2. cluster
port=${BENCH_PG_PORT:-$(free_port)} || die "no free TCP port found"
super_pw=$(random_password)
bench_pw=$(random_password)
kit_cluster_init "$work"
kit_cluster_start "$work"

# ---------------------------------------------------------------- 3. data
kit_load_fixtures "$scale"
kit_db_facts
log "database benchdb: $db_pretty ($db_bytes bytes), loaded in ${load_s}s"

# ---------------------------------------------------------------- 4. backupd
if [[ -n ${BACKUPD_BIN:-} ]]; then
    backupd=$BACKUPD_BIN
else
    command -v cargo >/dev/null || die "cargo not found (install Rust, or set BACKUPD_BIN)"
    log "cargo build --release"
    (cd "$repo" && cargo build --release)
    backupd=${CARGO_TARGET_DIR:-$repo/target}/release/backupd
fi
[[ -x $backupd ]] || die "backupd binary not found at $backupd"
backupd=$(cd "$(dirname "$backupd")" && pwd)/$(basename "$backupd")

# Wrappers keep passwords out of hyperfine's command lines (and the markdown).
# pg_dump gets its password from PGPASSWORD only.
cat >"$work/pg_dump.sh" <<EOF
#!/bin/sh
PGPASSWORD='$bench_pw' exec "$pgbin/pg_dump" --format=plain --no-owner --no-privileges \\
    -h 127.0.0.1 -p $port -U bench -d benchdb
EOF
# backupd gets DATABASE_URL only: no PG* variables leak in from here.
# Usage: backupd.sh NAME, with the URL in $work/url-NAME
cat >"$work/backupd.sh" <<EOF
#!/bin/sh
url=\$(cat "$work/url-\$1") || exit 1
echo \$\$ >"$work/backupd.pid"
exec env -u PGPASSWORD -u PGPASSFILE -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE \\
    PATH="$pgbin:\$PATH" DATABASE_URL="\$url" BACKUP_DIR="$backup_dir" \\
    BACKUP_RETENTION_DAYS=0 BACKUP_COMPRESSION_LEVEL=$level "$backupd" once
EOF
chmod 700 "$work/pg_dump.sh" "$work/backupd.sh"
(umask 077 && printf '%s\n' "postgresql://bench:$bench_pw@127.0.0.1:$port/benchdb" >"$work/url-pg")

# ---------------------------------------------------------------- helpers
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
kib_mib() { awk -v k="$1" 'BEGIN { if (k > 0) printf "%.1f", k / 1024; else print "n/a" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
fsize() { stat -c %s "$1"; }
# peak RSS in KiB as reported by GNU time -v in file $1
time_rss() { awk -F': ' '/Maximum resident set size/ { print $2 }' "$1"; }
rss_mib() { kib_mib "$(time_rss "$1")"; }

# run backupd once under GNU time, sampling its own VmHWM from /proc.
# $1: name of the URL file ($work/url-NAME).
# Sets: bk_file bk_tree_rss_kib bk_own_rss_kib bk_wall
backupd_measured() {
    local tag=$1 bpid="" hwm=0 v tpid
    rm -rf "$backup_dir" && mkdir -p "$backup_dir"
    rm -f "$work/backupd.pid"
    /usr/bin/time -v -o "$work/time-$tag.txt" "$work/backupd.sh" "$tag" \
        >"$work/backupd-$tag.out" 2>"$work/backupd-$tag.err" &
    tpid=$!
    while kill -0 "$tpid" 2>/dev/null; do
        if [[ -z $bpid && -s $work/backupd.pid ]]; then bpid=$(cat "$work/backupd.pid"); fi
        if [[ -n $bpid ]]; then
            v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$bpid/status" 2>/dev/null || true)
            if [[ -n $v && $v -gt $hwm ]]; then hwm=$v; fi
        fi
        sleep 0.02
    done
    if ! wait "$tpid"; then
        echo "---- backupd stderr:" >&2
        tail -n 40 "$work/backupd-$tag.err" >&2
        die "backupd once failed (see above)"
    fi
    bk_file=$(tail -n 1 "$work/backupd-$tag.out")
    [[ -n $bk_file && -f $bk_file ]] ||
        die "backupd once: last stdout line '$bk_file' is not a file"
    case $(cd "$(dirname "$bk_file")" && pwd -P) in
        "$backup_dir"*) ;;
        *) die "backupd once: $bk_file is not inside BACKUP_DIR $backup_dir" ;;
    esac
    bk_tree_rss_kib=$(time_rss "$work/time-$tag.txt")
    bk_own_rss_kib=$hwm
    bk_wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { print $2 }' "$work/time-$tag.txt")
}

# mean and user+sys CPU seconds of command #$2 (0-based) in hyperfine JSON $1
hf_mean() { jq -r ".results[$2].mean" "$1" | awk '{ printf "%.3f", $1 }'; }
hf_cpu() { jq -r ".results[$2] | .user + .system" "$1" | awk '{ printf "%.3f", $1 }'; }

result_file() {
    local base
    base=$results_dir/$(date +%Y-%m-%d)-$1
    local f=$base.md n=2
    while [[ -e $f ]]; do f=$base-$n.md; n=$((n + 1)); done
    echo "$f"
}

machine_info() {
    local cpu
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    echo "- host: $(uname -srm), ${cpu:-unknown CPU}, $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
    echo "- backupd: $backupd ($("$backupd" --version 2>/dev/null | head -n 1 || echo 'version unknown'))"
    echo "- $(hyperfine --version), $(gzip --version | head -n 1), $(pigz --version 2>&1 | head -n 1)"
}

# ---------------------------------------------------------------- 8. restore
# Defined here, run at the end (BENCH_RESTORE=1) or alone (BENCH_ONLY_RESTORE=1).
# Scratch: $work/restore-src (the one backup file), $work/restore-given (the
# copy given to --file), $work/incoming (RESTORE_WATCH_DIR), $work/failed,
# $work/restore-state.json; safety backups go to $backup_dir.
r_src=$work/restore-src
r_given=$work/restore-given
r_incoming=$work/incoming
r_failed=$work/failed
r_state=$work/restore-state.json

# $work/restore.sh SAFETY [ARGS...]: backupd restore ARGS with
# RESTORE_SAFETY_BACKUP=SAFETY, the URL only (no PG* variables) and every
# RESTORE_* setting the benchmark depends on pinned.
write_restore_scripts() {
    cat >"$work/restore.sh" <<EOF
#!/bin/sh
url=\$(cat "$work/url-pg") || exit 1
safety=\$1
shift
echo \$\$ >"$work/restore.pid"
exec env -u PGPASSWORD -u PGPASSFILE -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE \\
    PATH="$pgbin:\$PATH" DATABASE_URL="\$url" BACKUP_DIR="$backup_dir" \\
    BACKUP_RETENTION_DAYS=0 BACKUP_COMPRESSION_LEVEL=$level \\
    RESTORE_STATE_FILE="$r_state" RESTORE_WATCH_DIR="$r_incoming" \\
    RESTORE_FAILED_DIR="$r_failed" RESTORE_KEEP_PREVIOUS=0 \\
    RESTORE_PG_STRATEGY=staging RESTORE_STOP_CONTAINERS= RESTORE_START_CONTAINERS= \\
    RESTORE_SETTLE_SECONDS=$settle RESTORE_POLL_INTERVAL=30 RESTORE_USE_NOTIFY=true \\
    RESTORE_SAFETY_BACKUP="\$safety" "$backupd" restore "\$@"
EOF
    # $work/psql-plain.sh: the baseline's psql, into benchdb_plain
    cat >"$work/psql-plain.sh" <<EOF
#!/bin/sh
PGPASSWORD='$bench_pw' exec "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 --single-transaction \\
    -h 127.0.0.1 -p $port -U bench -d benchdb_plain
EOF
    # $work/restore-prepare.sh plain|given: hyperfine's --prepare. Drops what
    # an earlier restore left (benchdb_pre_restore_*, benchdb_restore_*), then
    # plain: a new empty benchdb_plain; given: an empty BACKUP_DIR, no state
    # file, and a fresh copy of the backup at $r_given/NAME.
    cat >"$work/restore-prepare.sh" <<EOF
#!/bin/sh
set -e
export PGPASSWORD='$bench_pw'
bpsql() { "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $port -U bench -d postgres "\$@"; }
bpsql >/dev/null <<'SQL'
SELECT format('DROP DATABASE %I', datname) FROM pg_database
 WHERE starts_with(datname, 'benchdb_pre_restore_') OR starts_with(datname, 'benchdb_restore_')
\\gexec
SQL
case \$1 in
    plain)
        bpsql -c 'DROP DATABASE IF EXISTS benchdb_plain' -c 'CREATE DATABASE benchdb_plain' ;;
    given)
        rm -rf "$backup_dir" "$r_given" "$r_state"
        mkdir -p "$backup_dir" "$r_given"
        cp "$r_src/\$2" "$r_given/\$2" ;;
    *) echo "usage: \$0 plain|given NAME" >&2; exit 2 ;;
esac
EOF
    chmod 700 "$work/restore.sh" "$work/psql-plain.sh" "$work/restore-prepare.sh"
}

# Runs "$@" under GNU time -v (-o $work/time-$1.txt, stdout/stderr to
# $work/$1.out/.err), sampling VmHWM of the pid the wrapper writes to $2.
# Usage: time_sampled TAG PIDFILE CMD...   Sets: ts_rc ts_own_hwm_kib
time_sampled() {
    local tag=$1 pidfile=$2 bpid="" hwm=0 v tpid
    shift 2
    rm -f "$pidfile"
    /usr/bin/time -v -o "$work/time-$tag.txt" "$@" >"$work/$tag.out" 2>"$work/$tag.err" &
    tpid=$!
    while kill -0 "$tpid" 2>/dev/null; do
        if [[ -z $bpid && -s $pidfile ]]; then bpid=$(cat "$pidfile"); fi
        if [[ -n $bpid ]]; then
            v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$bpid/status" 2>/dev/null || true)
            if [[ -n $v && $v -gt $hwm ]]; then hwm=$v; fi
        fi
        sleep 0.02
    done
    ts_rc=0
    wait "$tpid" || ts_rc=$?
    ts_own_hwm_kib=$hwm
}

# the watcher's stderr log; waits until a line matches ERE $1 (up to $2 s)
# or the watcher has exited; prints the first matching line
wait_log() {
    local pattern=$1 limit=$2 deadline line
    deadline=$(($(date +%s) + limit))
    while :; do
        line=$(grep -m 1 -E -- "$pattern" "$work/watcher.err" || true)
        if [[ -n $line ]]; then
            printf '%s\n' "$line"
            return 0
        fi
        kill -0 "$watcher_pid" 2>/dev/null || return 1
        [[ $(date +%s) -lt $deadline ]] || return 1
        sleep 0.05
    done
}
# epoch seconds of the RFC 3339 timestamp that starts log line $1
log_epoch() { date -u -d "${1%% *}" +%s.%N; }
# utime+stime (clock ticks) of pid $1
proc_ticks() {
    local stat f
    stat=$(cat "/proc/$1/stat")
    read -r -a f <<<"${stat##*) }"    # f[0] is field 3 (state)
    echo $((f[11] + f[12]))
}
proc_status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
hf_stat() { jq -r ".results[$2].$3" "$1" | awk '{ printf "%.3f", $1 }'; }
db_size() {
    su_psql -At -c "SELECT coalesce((SELECT pg_size_pretty(pg_database_size(datname)) FROM pg_database WHERE datname = '$1'), 'missing')"
}

restore_bench() {
    local name given_left history
    write_restore_scripts
    log "restore: ALTER ROLE bench CREATEDB"
    su_psql -c "ALTER ROLE bench CREATEDB"

    log "restore: one backup with backupd once"
    backupd_measured pg
    name=$(basename "$bk_file")
    rm -rf "$r_src" && mkdir -p "$r_src"
    mv "$bk_file" "$r_src/$name"
    r_file=$r_src/$name
    r_gz_bytes=$(fsize "$r_file")
    r_plain_bytes=$(gunzip -c "$r_file" | wc -c)
    log "restore: $name: $(mib "$r_gz_bytes") MiB gzip, $(mib "$r_plain_bytes") MiB of SQL"

    # (b) once, measured: checks the contract and gives the peak RSS
    log "restore: backupd restore --file (measured run: GNU time -v, VmHWM sampling)"
    "$work/restore-prepare.sh" given "$name"
    time_sampled restore-b "$work/restore.pid" "$work/restore.sh" false --file "$r_given/$name"
    if [[ $ts_rc -ne 0 ]]; then
        echo "---- backupd restore stderr:" >&2
        tail -n 40 "$work/restore-b.err" >&2
        die "backupd restore --file failed (exit $ts_rc; see above)"
    fi
    history=$(jq -r '.history[0].result // "none"' "$r_state" 2>/dev/null || echo "unreadable")
    [[ $history == restored ]] || die "backupd restore: the state file's newest result is '$history', not 'restored'"
    r_own_rss=$ts_own_hwm_kib
    r_tree_rss=$(time_rss "$work/time-restore-b.txt")
    r_wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { print $2 }' "$work/time-restore-b.txt")
    if [[ -e $r_given/$name ]]; then given_left=kept; else given_left=deleted; fi
    log "restore: done in $r_wall, peak RSS $(kib_mib "$r_own_rss") MiB (tree $(kib_mib "$r_tree_rss") MiB); the --file copy was $given_left"

    log "restore: hyperfine ($runs runs, no warmup)"
    r_hf_json=$work/hyperfine-restore.json
    r_hf_md=$work/hyperfine-restore.md
    hyperfine --style basic --runs "$runs" \
        --export-json "$r_hf_json" --export-markdown "$r_hf_md" \
        --prepare "'$work/restore-prepare.sh' plain" \
        -n 'gunzip | psql --single-transaction' "gunzip -c '$r_file' | '$work/psql-plain.sh'" \
        --prepare "'$work/restore-prepare.sh' given '$name'" \
        -n 'backupd restore (no safety backup)' "'$work/restore.sh' false --file '$r_given/$name'" \
        --prepare "'$work/restore-prepare.sh' given '$name'" \
        -n 'backupd restore (safety backup)' "'$work/restore.sh' true --file '$r_given/$name'"
    r_size_live=$(db_size benchdb)
    r_size_plain=$(db_size benchdb_plain)

    # the watcher: latency from "file complete" to "restore requested"
    log "restore: watcher (RESTORE_SETTLE_SECONDS=$settle, RESTORE_POLL_INTERVAL=30, notify on)"
    "$work/restore-prepare.sh" given "$name"
    rm -rf "$r_incoming" "$r_failed" && mkdir -p "$r_incoming"
    "$work/restore.sh" false >"$work/watcher.out" 2>"$work/watcher.err" &
    watcher_pid=$!
    wait_log 'watching for backups' 60 >/dev/null ||
        { tail -n 40 "$work/watcher.err" >&2; die "the watcher did not start"; }
    sleep 1
    r_start_rss=$(proc_status_kib "$watcher_pid" VmRSS)
    cp "$r_file" "$r_incoming/.$name.tmp"       # ignored: dotfile, .tmp
    mv "$r_incoming/.$name.tmp" "$r_incoming/$name"
    r_t_mv=$(date +%s.%N)
    r_req_line=$(wait_log 'restore requested' 300) ||
        { tail -n 40 "$work/watcher.err" >&2; die "no 'restore requested' within 300 s"; }
    r_latency=$(secs "$r_t_mv" "$(log_epoch "$r_req_line")")
    log "restore: requested ${r_latency}s after the mv"
    r_done_line=$(wait_log 'restore (finished|failed)' 7200) ||
        { tail -n 40 "$work/watcher.err" >&2; die "the watched restore did not end"; }
    [[ $r_done_line == *'restore finished'* ]] ||
        { tail -n 40 "$work/watcher.err" >&2; die "the watched restore failed"; }
    r_watch_s=$(secs "$(log_epoch "$r_req_line")" "$(log_epoch "$r_done_line")")
    [[ ! -e $r_incoming/$name ]] || die "the watcher restored the file but did not delete it"
    log "restore: finished ${r_watch_s}s after it was requested; idle measurements (5 s + ${idle_s} s)"
    sleep 5
    r_idle_rss=$(proc_status_kib "$watcher_pid" VmRSS)
    r_idle_hwm=$(proc_status_kib "$watcher_pid" VmHWM)
    r_clk=$(getconf CLK_TCK)
    local t0 t1
    t0=$(proc_ticks "$watcher_pid")
    sleep "$idle_s"
    t1=$(proc_ticks "$watcher_pid")
    r_idle_ticks=$((t1 - t0))
    kill -TERM "$watcher_pid"
    r_term_rc=0
    wait "$watcher_pid" || r_term_rc=$?
    watcher_pid=""
    log "restore: watcher stopped on SIGTERM with exit status $r_term_rc"

    md_r=$(result_file restore)
    {
        echo "# backupd benchmark: PostgreSQL restore, scale $scale"
        echo
        echo "- $(date -u '+%Y-%m-%d %H:%M UTC'); load average at the end: $(cut -d ' ' -f 1-3 /proc/loadavg)"
        echo "- PostgreSQL $pg_version; database benchdb $db_pretty ($db_bytes bytes), fixtures loaded in ${load_s}s"
        echo "- backup file ($name, backupd once, level $level): $(mib "$r_gz_bytes") MiB gzip, $(mib "$r_plain_bytes") MiB of SQL"
        echo "- after the runs: benchdb (restored by backupd) $r_size_live, benchdb_plain (baseline) $r_size_plain"
        echo "- hyperfine --runs $runs, no warmup (warm page cache); backupd: RESTORE_PG_STRATEGY=staging, RESTORE_KEEP_PREVIOUS=0"
        machine_info
        echo
        echo "## Timings"
        echo
        cat "$r_hf_md"
        echo
        echo "## Summary"
        echo
        summary_restore
        echo
        echo "Baseline: \`gunzip -c FILE | psql -X -q -v ON_ERROR_STOP=1 --single-transaction\` into a new empty database."
        echo "backupd restore --file checks the whole file first (gunzip to the end, pg_dump trailer, sha256), loads it with the same"
        echo "psql flags into a new staging database, renames the live database away and the staging one into place, then drops the"
        echo "old one (RESTORE_KEEP_PREVIOUS=0); with RESTORE_SAFETY_BACKUP=true a full \`backupd once\`-style backup of the live"
        echo "database comes first. Peak RSS of the measured (b) run: backupd's own VmHWM sampled every 20 ms, and GNU time -v's"
        echo "maximum over its process tree (the psql child). The --file copy was $given_left by backupd."
        echo "Watcher: the file is copied in as a dotfile and renamed (mv) to its name; latency = timestamp of the first"
        echo "\`restore requested\` log line minus the time right after the mv (settle period RESTORE_SETTLE_SECONDS=$settle)."
        echo "Idle figures are taken 5 s after \`restore finished\` (VmHWM so includes the restore); CPU over the next ${idle_s} s."
    } >"$md_r"

    log "summary (restore, scale $scale, database $db_pretty)"
    summary_restore
    echo "results: $md_r"
}

summary_restore() {
    local i
    echo "| command | mean wall s | min s | max s | CPU s (user+sys) | peak RSS MiB |"
    echo "|---|---:|---:|---:|---:|---:|"
    local rss=("-" "$(kib_mib "$r_own_rss") (backupd; $(kib_mib "$r_tree_rss") max over its process tree)" "-")
    for i in 0 1 2; do
        echo "| $(jq -r ".results[$i].command" "$r_hf_json" | sed 's/|/\\|/g') | $(hf_mean "$r_hf_json" "$i") | $(hf_stat "$r_hf_json" "$i" min) | $(hf_stat "$r_hf_json" "$i" max) | $(hf_cpu "$r_hf_json" "$i") | ${rss[$i]} |"
    done
    echo
    echo "| watcher (backupd restore, notify on, settle ${settle}s) | value |"
    echo "|---|---:|"
    echo "| mv into RESTORE_WATCH_DIR → \`restore requested\` | ${r_latency} s |"
    echo "| \`restore requested\` → \`restore finished\` | ${r_watch_s} s |"
    echo "| RSS 1 s after start (VmRSS) | $(kib_mib "$r_start_rss") MiB |"
    echo "| idle RSS 5 s after the restore (VmRSS) | $(kib_mib "$r_idle_rss") MiB |"
    echo "| peak RSS so far (VmHWM, includes the restore) | $(kib_mib "$r_idle_hwm") MiB |"
    echo "| idle CPU over ${idle_s} s (utime+stime) | $r_idle_ticks ticks at ${r_clk}/s = $(awk -v t="$r_idle_ticks" -v c="$r_clk" -v s="$idle_s" 'BEGIN { printf "%.2f s, %.2f%% of one core", t / c, 100 * t / c / s }') |"
    echo "| exit status on SIGTERM | $r_term_rc |"
}

mkdir -p "$results_dir"

if [[ $only_restore == 1 ]]; then
    restore_bench
    exit 0
fi

# ---------------------------------------------------------------- 5. PostgreSQL
# one measured run first: checks the contract (exit 0, last stdout line is the
# new file inside BACKUP_DIR) and records peak RSS and the output size
log "backupd once (measured run: GNU time -v, VmHWM sampling)"
backupd_measured pg
backupd_bytes=$(fsize "$bk_file")
pg_own_rss=$bk_own_rss_kib
pg_tree_rss=$bk_tree_rss_kib
log "backupd wrote $bk_file ($backupd_bytes bytes) in $bk_wall"

log "hyperfine (PostgreSQL, scale $scale, $runs runs + 1 warmup)"
hf_json=$work/hyperfine-pg.json
hf_md=$work/hyperfine-pg.md
hyperfine --style basic --warmup 1 --runs "$runs" \
    --export-json "$hf_json" --export-markdown "$hf_md" \
    --prepare "rm -rf '$backup_dir' && mkdir -p '$backup_dir'" \
    -n 'pg_dump > /dev/null' "'$work/pg_dump.sh' > /dev/null" \
    -n 'pg_dump | gzip -6' "'$work/pg_dump.sh' | gzip -6 > '$outdir/dump.sql.gz'" \
    -n 'pg_dump | pigz -6' "'$work/pg_dump.sh' | pigz -6 > '$outdir/dump.sql.pigz.gz'" \
    -n 'backupd once' "'$work/backupd.sh' pg > /dev/null"

# ---------------------------------------------------------------- 6. RSS and sizes
log "peak RSS and sizes of the baselines"
plain_bytes=$("$work/pg_dump.sh" | wc -c)
gzip_bytes=$(fsize "$outdir/dump.sql.gz")
pigz_bytes=$(fsize "$outdir/dump.sql.pigz.gz")
/usr/bin/time -v -o "$work/time-pgdump.txt" "$work/pg_dump.sh" >/dev/null
"$work/pg_dump.sh" | /usr/bin/time -v -o "$work/time-gzip.txt" gzip -6 >"$outdir/rss.gz"
"$work/pg_dump.sh" | /usr/bin/time -v -o "$work/time-pigz.txt" pigz -6 >"$outdir/rss.pigz.gz"

summary_pg() {
    echo "| command | mean wall s | CPU s (user+sys) | peak RSS MiB | output MiB | ratio vs plain dump |"
    echo "|---|---:|---:|---:|---:|---:|"
    echo "| pg_dump > /dev/null | $(hf_mean "$hf_json" 0) | $(hf_cpu "$hf_json" 0) | $(rss_mib "$work/time-pgdump.txt") (pg_dump) | $(mib "$plain_bytes") | 1.00 |"
    echo "| pg_dump \\| gzip -6 | $(hf_mean "$hf_json" 1) | $(hf_cpu "$hf_json" 1) | $(rss_mib "$work/time-gzip.txt") (gzip only) | $(mib "$gzip_bytes") | $(ratio "$plain_bytes" "$gzip_bytes") |"
    echo "| pg_dump \\| pigz -6 | $(hf_mean "$hf_json" 2) | $(hf_cpu "$hf_json" 2) | $(rss_mib "$work/time-pigz.txt") (pigz only) | $(mib "$pigz_bytes") | $(ratio "$plain_bytes" "$pigz_bytes") |"
    echo "| backupd once | $(hf_mean "$hf_json" 3) | $(hf_cpu "$hf_json" 3) | $(kib_mib "$pg_own_rss") (backupd; $(kib_mib "$pg_tree_rss") max over its process tree) | $(mib "$backupd_bytes") | $(ratio "$plain_bytes" "$backupd_bytes") |"
}

md=$(result_file pg)
{
    echo "# backupd benchmark: PostgreSQL, scale $scale"
    echo
    echo "- $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- PostgreSQL $pg_version; database $db_pretty ($db_bytes bytes), fixtures loaded in ${load_s}s"
    echo "- pg_dump --format=plain --no-owner --no-privileges; backupd BACKUP_COMPRESSION_LEVEL=$level"
    echo "- hyperfine --warmup 1 --runs $runs (warm page cache)"
    machine_info
    echo
    echo "## Timings"
    echo
    cat "$hf_md"
    echo
    echo "## Summary"
    echo
    summary_pg
    echo
    echo "Peak RSS from GNU time -v (gzip and pigz measured as the consumer of a pg_dump pipe)."
    echo "backupd's own peak is its VmHWM sampled every 20 ms; the process-tree figure includes its pg_dump child."
} >"$md"

log "summary (PostgreSQL, scale $scale, database $db_pretty)"
summary_pg
echo "results: $md"

# ---------------------------------------------------------------- 7. SQLite (optional)
if [[ ${BENCH_SQLITE:-0} == 1 ]]; then
    sqlite_db=$work/assessment.db
    log "building SQLite fixture at scale $scale"
    t0=$(date +%s.%N)
    "$repo/migrations-fixtures/build.sh" sqlite "$sqlite_db" "$scale"
    t1=$(date +%s.%N)
    sqlite_load_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    sqlite_bytes=$(fsize "$sqlite_db")
    sqlite_url="sqlite:///$sqlite_db"    # sqlite:////abs/path.db
    printf '%s\n' "$sqlite_url" >"$work/url-sqlite"

    log "backupd once (measured run, $sqlite_url)"
    backupd_measured sqlite
    backupd_s_bytes=$(fsize "$bk_file")
    sqlite_own_rss=$bk_own_rss_kib
    sqlite_tree_rss=$bk_tree_rss_kib
    log "backupd wrote $bk_file ($backupd_s_bytes bytes) in $bk_wall"

    hf_json_s=$work/hyperfine-sqlite.json
    hf_md_s=$work/hyperfine-sqlite.md
    hyperfine --style basic --warmup 1 --runs "$runs" \
        --export-json "$hf_json_s" --export-markdown "$hf_md_s" \
        --prepare "rm -rf '$backup_dir' '$outdir/copy1.db' '$outdir/copy2.db' && mkdir -p '$backup_dir'" \
        -n 'sqlite3 .backup' "sqlite3 '$sqlite_db' \".backup '$outdir/copy1.db'\"" \
        -n 'sqlite3 .backup + gzip -6' "sqlite3 '$sqlite_db' \".backup '$outdir/copy2.db'\" && gzip -6 -f '$outdir/copy2.db'" \
        -n 'backupd once' "'$work/backupd.sh' sqlite > /dev/null"

    sqlite_gz_bytes=$(fsize "$outdir/copy2.db.gz")
    rm -f "$outdir/rss.db" "$outdir/rss.db.gz"
    /usr/bin/time -v -o "$work/time-sqlite3.txt" sqlite3 "$sqlite_db" ".backup '$outdir/rss.db'"
    /usr/bin/time -v -o "$work/time-sqlite-gzip.txt" gzip -6 "$outdir/rss.db"

    summary_sqlite() {
        echo "| command | mean wall s | CPU s (user+sys) | peak RSS MiB | output MiB | ratio vs database file |"
        echo "|---|---:|---:|---:|---:|---:|"
        echo "| sqlite3 .backup | $(hf_mean "$hf_json_s" 0) | $(hf_cpu "$hf_json_s" 0) | $(rss_mib "$work/time-sqlite3.txt") (sqlite3) | $(mib "$sqlite_bytes") | 1.00 |"
        echo "| sqlite3 .backup + gzip -6 | $(hf_mean "$hf_json_s" 1) | $(hf_cpu "$hf_json_s" 1) | $(rss_mib "$work/time-sqlite-gzip.txt") (gzip) | $(mib "$sqlite_gz_bytes") | $(ratio "$sqlite_bytes" "$sqlite_gz_bytes") |"
        echo "| backupd once | $(hf_mean "$hf_json_s" 2) | $(hf_cpu "$hf_json_s" 2) | $(kib_mib "$sqlite_own_rss") (backupd; $(kib_mib "$sqlite_tree_rss") process tree) | $(mib "$backupd_s_bytes") | $(ratio "$sqlite_bytes" "$backupd_s_bytes") |"
    }

    md_s=$(result_file sqlite)
    {
        echo "# backupd benchmark: SQLite, scale $scale"
        echo
        echo "- $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "- $(sqlite3 --version | awk '{print "sqlite3 " $1}'); database $(mib "$sqlite_bytes") MiB ($sqlite_bytes bytes), built in ${sqlite_load_s}s"
        echo "- backupd BACKUP_COMPRESSION_LEVEL=$level"
        echo "- hyperfine --warmup 1 --runs $runs (warm page cache)"
        machine_info
        echo
        echo "## Timings"
        echo
        cat "$hf_md_s"
        echo
        echo "## Summary"
        echo
        summary_sqlite
        echo
        echo "Peak RSS from GNU time -v; backupd's own peak is its VmHWM sampled every 20 ms."
    } >"$md_s"

    log "summary (SQLite, scale $scale, $(mib "$sqlite_bytes") MiB)"
    summary_sqlite
    echo "results: $md_s"
fi

# ---------------------------------------------------------------- 8. restore (optional)
if [[ $restore == 1 ]]; then
    restore_bench
fi
