#!/usr/bin/env bash
# bench/notify.sh - a destination that hangs does not slow a backup down.
#
# What it does:
#   1. installs hyperfine and jq with apt-get when missing (sqlite3 and
#      python3 must be there)
#   2. builds backupd (`cargo build --release`), unless BACKUPD_BIN is set
#   3. builds the SQLite fixture (migrations-fixtures/build.sh sqlite, scale
#      BENCH_SCALE) in a scratch dir, removed on exit (also on Ctrl-C or an error)
#   4. starts a "hanging receiver" on 127.0.0.1: python3 accepting TCP
#      connections, reading the request and never answering (a hung webhook)
#   5. hyperfine (--warmup 1, --runs BENCH_RUNS, the backup folder emptied
#      before each run) over:
#        a. backupd once                          (no NOTIFY_URLS)
#        b. backupd once, NOTIFY_LEVEL=info, NOTIFY_URLS=the hanging receiver,
#           NOTIFY_TIMEOUT_SECONDS=BENCH_NOTIFY_TIMEOUT
#      and, after each hyperfine run of a command, reads the status file's
#      last_duration_seconds: the backup's own time, which must not change.
#      (b)'s wall time is the backup plus once's bounded wait for its
#      notifications (at most NOTIFY_TIMEOUT_SECONDS); the path of the
#      backup is printed before that wait.
#   6. prints a markdown table, writes it to bench/results/<date>-notify.md
#
# Usage:   bench/notify.sh                  (scale 50, 10 runs: about a minute)
#          BENCH_SCALE=5 BENCH_RUNS=3 bench/notify.sh
#
# Variables:
#   BENCH_SCALE            fixture scale (default 50)
#   BENCH_RUNS             hyperfine --runs (default 10)
#   BENCH_NOTIFY_TIMEOUT   NOTIFY_TIMEOUT_SECONDS of run (b) (default 2)
#   BACKUPD_BIN            use this backupd instead of building target/release/backupd
#   BENCH_DIR              parent of the scratch dir (default ${TMPDIR:-/tmp})
#   BENCH_RESULTS_DIR      where the markdown goes (default bench/results)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
scale=${BENCH_SCALE:-50}
runs=${BENCH_RUNS:-10}
notify_timeout=${BENCH_NOTIFY_TIMEOUT:-2}
results_dir=${BENCH_RESULTS_DIR:-$repo/bench/results}
target_dir=${CARGO_TARGET_DIR:-$repo/target}

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'bench/notify.sh: %s\n' "$*" >&2; exit 1; }

[[ $scale =~ ^[1-9][0-9]*$ ]] || die "BENCH_SCALE must be a positive integer"
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
[[ $notify_timeout =~ ^[1-9][0-9]*$ ]] || die "BENCH_NOTIFY_TIMEOUT must be a positive integer"

# ---------------------------------------------------------------- 1. tools
missing=()
command -v hyperfine >/dev/null || missing+=(hyperfine)
command -v jq >/dev/null || missing+=(jq)
if [[ ${#missing[@]} -gt 0 ]]; then
    sudo=()
    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null || die "need root or sudo to install: ${missing[*]}"
        sudo=(sudo)
    fi
    log "apt-get install ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v sqlite3 >/dev/null || die "sqlite3 not found (needed to build the fixture)"
command -v python3 >/dev/null || die "python3 not found (the hanging receiver)"

# ---------------------------------------------------------------- 2. binary
if [[ -n ${BACKUPD_BIN:-} ]]; then
    backupd=$BACKUPD_BIN
else
    command -v cargo >/dev/null || die "cargo not found (install Rust, or set BACKUPD_BIN)"
    log "cargo build --release"
    (cd "$repo" && cargo build --release)
    backupd=$target_dir/release/backupd
fi
[[ -x $backupd ]] || die "backupd binary not found at $backupd"
backupd=$(cd "$(dirname "$backupd")" && pwd)/$(basename "$backupd")
version=$("$backupd" --version 2>/dev/null | head -n 1) || version="version unknown"

# ---------------------------------------------------------------- 3. scratch, fixture
work=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/backupd-notify.XXXXXX")
work=$(cd "$work" && pwd -P)
receiver_pid=""
cleanup() {
    if [[ -n $receiver_pid ]]; then
        kill "$receiver_pid" 2>/dev/null || true
        wait "$receiver_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

db=$work/assessment.db
log "building the SQLite fixture at scale $scale"
"$repo/migrations-fixtures/build.sh" sqlite "$db" "$scale" >/dev/null
db_bytes=$(stat -c %s "$db")

# ---------------------------------------------------------------- 4. hanging receiver
port_file=$work/receiver.port
python3 - "$port_file" <<'PY' &
import socket, sys, threading
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 0))
server.listen(64)
open(sys.argv[1], "w").write(str(server.getsockname()[1]))
held = []
def hold(conn):
    held.append(conn)  # read what comes, never answer
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass
while True:
    conn, _ = server.accept()
    threading.Thread(target=hold, args=(conn,), daemon=True).start()
PY
receiver_pid=$!
for _ in $(seq 1 100); do [[ -s $port_file ]] && break; sleep 0.05; done
[[ -s $port_file ]] || die "the hanging receiver did not start"
port=$(cat "$port_file")

# ---------------------------------------------------------------- 5. measure
# Wrapper scripts: the environment stays out of hyperfine's output.
for name in plain hanging; do
    dir=$work/backups-$name
    mkdir -p "$dir"
    {
        echo '#!/bin/sh'
        echo "export DATABASE_URL='sqlite:///$db' BACKUP_DIR='$dir' BACKUP_RETENTION_DAYS=0 LOG_LEVEL=warn"
        if [[ $name == hanging ]]; then
            echo "export NOTIFY_LEVEL=info NOTIFY_URLS='http://127.0.0.1:$port/hook' NOTIFY_TIMEOUT_SECONDS=$notify_timeout"
        fi
        echo "exec '$backupd' once"
    } >"$work/$name.sh"
    chmod +x "$work/$name.sh"
done

durations() {  # the backup's own durations from the status file, one per run
    local name=$1
    : >"$work/durations-$name"
    for _ in $(seq 1 "$runs"); do
        rm -rf "$work/backups-$name"/*
        "$work/$name.sh" >/dev/null 2>>"$work/$name.err" || die "backupd once ($name) failed; see its stderr above"
        jq -r .last_duration_seconds "$work/backups-$name/backup-status.json" >>"$work/durations-$name"
    done
}

log "hyperfine: backupd once with and without a hanging destination"
hyperfine --warmup 1 --runs "$runs" --export-markdown "$work/hyperfine.md" --export-json "$work/hyperfine.json" \
    --prepare "rm -rf '$work/backups-plain'/* '$work/backups-hanging'/*" \
    -n 'backupd once (no NOTIFY_URLS)' "'$work/plain.sh' >/dev/null" \
    -n "backupd once (hanging webhook, NOTIFY_LEVEL=info, NOTIFY_TIMEOUT_SECONDS=$notify_timeout)" "'$work/hanging.sh' >/dev/null"

log "the backup's own duration (status file last_duration_seconds), $runs runs each"
durations plain
durations hanging
stats() { sort -n "$1" | awk '{ a[NR] = $1; s += $1 } END { printf "%.3f | %.3f | %.3f", s / NR, a[1], a[NR] }'; }

# ---------------------------------------------------------------- 6. report
mkdir -p "$results_dir"
day=$(date -u +%Y-%m-%d)
out=$results_dir/$day-notify.md
n=2
while [[ -e $out ]]; do out=$results_dir/$day-notify-$n.md; n=$((n + 1)); done
{
    echo "# backupd once with a hanging notification destination ($day)"
    echo
    echo "$version; SQLite fixture scale $scale ($db_bytes bytes); $(nproc) cores; $runs runs + 1 warmup."
    echo
    echo "## Wall time (hyperfine)"
    echo
    cat "$work/hyperfine.md"
    echo
    echo "## The backup's own duration (status file \`last_duration_seconds\`, s)"
    echo
    echo "| run | mean | min | max |"
    echo "|---|---|---|---|"
    echo "| no NOTIFY_URLS | $(stats "$work/durations-plain") |"
    echo "| hanging webhook | $(stats "$work/durations-hanging") |"
    echo
    echo "The hanging run's wall time is the backup plus \`once\`'s bounded wait for its"
    echo "notifications (NOTIFY_TIMEOUT_SECONDS=$notify_timeout); the backup itself does not wait."
} | tee "$out"
echo "bench/notify.sh: wrote $out" >&2
