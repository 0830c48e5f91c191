#!/usr/bin/env bash
# bench/offsite.sh - encryption and upload: peak RSS and throughput of
# `backupd once` on a large SQLite database, against plain gzip.
#
# What it does:
#   1. installs missing tools with apt-get (GNU time, gzip; python3 must be there)
#   2. builds backupd (`cargo build --release`) and the S3 test server
#      (`cargo build --release --example s3_test_server`), unless BACKUPD_BIN is set
#   3. creates a SQLite database of BENCH_OFFSITE_MIB MiB of random blobs
#      (python3's sqlite3: rows of randomblob(1048576)) in a scratch dir, which
#      is removed on exit (also on Ctrl-C or an error)
#   4. starts examples/s3_test_server.rs (the tests' s3s-fs server with SigV4
#      checks, on 127.0.0.1) as a coprocess; closing its stdin stops it
#   5. measures, one run each, with /usr/bin/time -v (wall time, "Maximum
#      resident set size"; backupd's RSS is also sampled every 50 ms to see
#      which phase the peak falls in):
#        a. gzip -6 -c DB                 (plain single-threaded gzip, the reference)
#        b. backupd once                  (no key, no bucket: parallel gzip only)
#        c. backupd once + key            (gzip + Fernet: .db.gz.enc)
#        d. backupd once + key + bucket   (c, then the multipart upload)
#      and checks: (c) ends in .db.gz.enc and `backupd verify` passes on it
#      with the key (timed too); (d)'s object and its .sha256 are in the
#      server's folder, the object the size of the local file
#   6. prints a markdown table and derived figures (encryption overhead c vs b,
#      upload d vs c), writes them to bench/results/<date>-offsite.md, then
#      fails (exit 1) if any backupd process peaked at BENCH_RSS_LIMIT_MIB or more
#
# Usage:   bench/offsite.sh                          (1 GiB: several minutes)
#          BENCH_OFFSITE_MIB=64 bench/offsite.sh     (smoke test)
#
# Variables:
#   BENCH_OFFSITE_MIB   database size in MiB (default 1024)
#   BENCH_DIR           parent of the scratch dir (default /var/tmp); needs about
#                       4.5x the database free at the peak (database, backupd's
#                       snapshot, the .enc file, and the server's parts + object)
#   BACKUPD_BIN         use this backupd instead of building target/release/backupd;
#                       also skips building the server unless it is missing
#   BENCH_S3_SERVER_BIN the s3_test_server binary (default target/release/examples/s3_test_server)
#   BENCH_COMPRESSION_LEVEL  gzip level for gzip and backupd (default 6)
#   BENCH_RSS_LIMIT_MIB peak RSS every backupd run must stay under (default 64)
#   BENCH_RESULTS_DIR   where the markdown goes (default bench/results)
#   BENCH_KEEP          1 = keep the scratch dir (logs, RSS samples; the data is deleted)
#   MALLOC_ARENA_MAX, MALLOC_*, GLIBC_TUNABLES, TOKIO_WORKER_THREADS are passed on to
#   backupd unchanged (and recorded in the markdown), to see what the peak is made of
#
# backupd contract assumed here: `backupd once` exits 0 and prints the new
# file's path as its last stdout line; with BACKUP_ENCRYPTION_KEY it writes
# NAME.gz.enc; with AWS_S3_BUCKET it then uploads it as KEY=NAME (no prefix)
# and logs a line "uploaded"; a failed upload does not change the exit status,
# so the object is checked in the server's folder. Logs go to stderr, each line
# starting with an RFC 3339 UTC timestamp. `backupd keygen` prints a key;
# `backupd verify FILE` exits 0 when the file is sound.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
size_mib=${BENCH_OFFSITE_MIB:-1024}
level=${BENCH_COMPRESSION_LEVEL:-6}
limit_mib=${BENCH_RSS_LIMIT_MIB:-64}
results_dir=${BENCH_RESULTS_DIR:-$repo/bench/results}
target_dir=${CARGO_TARGET_DIR:-$repo/target}

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'bench/offsite.sh: %s\n' "$*" >&2; exit 1; }

[[ $size_mib =~ ^[1-9][0-9]*$ ]] || die "BENCH_OFFSITE_MIB must be a positive integer"
[[ $level =~ ^[0-9]$ ]] || die "BENCH_COMPRESSION_LEVEL must be 0-9"
[[ $limit_mib =~ ^[1-9][0-9]*$ ]] || die "BENCH_RSS_LIMIT_MIB must be a positive integer"

# ---------------------------------------------------------------- 1. tools
apt_install() {
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

missing=()
command -v gzip >/dev/null || missing+=(gzip)
[[ -x /usr/bin/time ]] || missing+=(time)
if [[ ${#missing[@]} -gt 0 ]]; then
    apt_install "${missing[@]}"
fi
command -v python3 >/dev/null || die "python3 not found (needed to build the database)"
python3 -c 'import sqlite3' 2>/dev/null || die "python3 has no sqlite3 module"

# ---------------------------------------------------------------- 2. binaries
build() {
    command -v cargo >/dev/null || die "cargo not found (install Rust, or set BACKUPD_BIN)"
    log "cargo build --release $*"
    (cd "$repo" && cargo build --release "$@")
}
if [[ -n ${BACKUPD_BIN:-} ]]; then
    backupd=$BACKUPD_BIN
else
    build
    backupd=$target_dir/release/backupd
fi
s3_server=${BENCH_S3_SERVER_BIN:-$target_dir/release/examples/s3_test_server}
if [[ -z ${BACKUPD_BIN:-} || ( -z ${BENCH_S3_SERVER_BIN:-} && ! -x $s3_server ) ]]; then
    build --example s3_test_server
fi
[[ -x $backupd ]] || die "backupd binary not found at $backupd"
[[ -x $s3_server ]] || die "S3 test server not found at $s3_server (cargo build --release --example s3_test_server)"
backupd=$(cd "$(dirname "$backupd")" && pwd)/$(basename "$backupd")
version=$("$backupd" --version 2>/dev/null | head -n 1) || version="version unknown"

# ---------------------------------------------------------------- scratch dir, cleanup
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/backupd-offsite.XXXXXX")
work=$(cd "$work" && pwd -P)
db=$work/bench.db
backup_dir=$work/backups

s3_pid=""
s3_in=""
stop_server() {
    if [[ -n $s3_pid ]]; then
        if [[ -n $s3_in ]]; then exec {s3_in}>&-; s3_in=""; fi   # EOF on its stdin: it stops
        local _
        for _ in $(seq 1 100); do
            kill -0 "$s3_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -TERM "$s3_pid" 2>/dev/null || true
        wait "$s3_pid" 2>/dev/null || true
        s3_pid=""
    fi
}
cleanup() {
    local rc=$?
    stop_server
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        rm -f "$db" && rm -rf "$backup_dir" "${s3_root:-/nonexistent}"
        echo "bench/offsite.sh: kept $work (logs and RSS samples; the data was deleted)" >&2
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
kib_mib() { awk -v k="$1" 'BEGIN { if (k > 0) printf "%.1f", k / 1024; else print "n/a" }'; }
fsize() { stat -c %s "$1"; }
time_rss() { awk -F': ' '/Maximum resident set size/ { print $2 }' "$1"; }
# wall clock "h:mm:ss" or "m:ss.ss" of GNU time -v in file $1, as seconds
time_wall() {
    awk -F': ' '/Elapsed \(wall clock\)/ {
        n = split($2, p, ":"); s = 0
        for (i = 1; i <= n; i++) s = s * 60 + p[i]
        printf "%.2f", s }' "$1"
}
rate() { awk -v m="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.1f", m / s; else print "-" }'; }
log_epoch() { date -u -d "${1%% *}" +%s.%N; }

# the backupd wrapper: $work/backupd.sh MODE ARGS...; MODE plain|enc|s3.
# It writes its pid (= backupd's, after exec) to $work/backupd.pid. backupd
# gets only what the mode needs: no key or bucket from the caller leaks in.
write_wrapper() {
    cat >"$work/backupd.sh" <<EOF
#!/bin/sh
mode=\$1
shift
key=
s3=
case \$mode in
plain) ;;
enc) key=\$(cat "$work/key") ;;
s3) key=\$(cat "$work/key"); s3=\$(cat "$work/s3.env") ;;
*) echo "backupd.sh: unknown mode \$mode" >&2; exit 2 ;;
esac
echo \$\$ >"$work/backupd.pid"
# key and s3.env hold no whitespace (checked), so plain word splitting is safe
exec env -u BACKUP_ENCRYPTION_KEY -u BACKUP_ENCRYPTION_KEY_FILE -u AWS_S3_BUCKET \\
    -u AWS_S3_PREFIX -u AWS_ENDPOINT_URL -u AWS_PROFILE -u AWS_SESSION_TOKEN \\
    -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_REGION -u AWS_DEFAULT_REGION \\
    -u AWS_ACCESS_KEY_ID_FILE -u AWS_SECRET_ACCESS_KEY_FILE -u SQLALCHEMY_DATABASE_URI \\
    -u SQLALCHEMY_DATABASE_URI_FILE -u DATABASE_URL_FILE -u RUST_LOG \\
    -u BACKUP_S3_RETENTION_DAYS -u BACKUP_STATUS_FILE -u BACKUP_KEEP_MIN \\
    DATABASE_URL="sqlite:///$db" BACKUP_DIR="$backup_dir" BACKUP_RETENTION_DAYS=0 \\
    BACKUP_COMPRESSION_LEVEL=$level LOG_FORMAT=text LOG_LEVEL=info \\
    \${key:+BACKUP_ENCRYPTION_KEY=\$key} \$s3 "$backupd" "\$@"
EOF
    chmod 700 "$work/backupd.sh"
}

# measure TAG CMD...: runs CMD under GNU time -v (stdout to $work/TAG.out,
# stderr to $work/TAG.err); for the backupd wrapper also samples the RSS of
# the process every 50 ms into $work/rss-TAG.tsv (epoch seconds, VmRSS KiB).
# Sets m_wall (s), m_rss_kib; dies when CMD fails.
measure() {
    local tag=$1 tpid bpid="" v
    shift
    rm -f "$work/backupd.pid"
    : >"$work/rss-$tag.tsv"
    /usr/bin/time -v -o "$work/time-$tag.txt" "$@" >"$work/$tag.out" 2>"$work/$tag.err" &
    tpid=$!
    while kill -0 "$tpid" 2>/dev/null; do
        if [[ -z $bpid && -s $work/backupd.pid ]]; then bpid=$(cat "$work/backupd.pid"); fi
        if [[ -n $bpid ]]; then
            v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$bpid/status" 2>/dev/null || true)
            if [[ -n $v ]]; then printf '%s\t%s\n' "$(date +%s.%N)" "$v" >>"$work/rss-$tag.tsv"; fi
        fi
        sleep 0.05
    done
    if ! wait "$tpid"; then
        echo "---- $tag stderr:" >&2
        tail -n 40 "$work/$tag.err" >&2
        die "$tag: $* failed (see above)"
    fi
    m_wall=$(time_wall "$work/time-$tag.txt")
    m_rss_kib=$(time_rss "$work/time-$tag.txt")
}

# the new backup of a backupd run TAG: its last stdout line, inside BACKUP_DIR
backup_file() {
    local f
    f=$(tail -n 1 "$work/$1.out")
    [[ -n $f && -f $f ]] || die "$1: last stdout line '$f' is not a file"
    [[ $(cd "$(dirname "$f")" && pwd -P) == "$backup_dir" ]] || die "$1: $f is not in BACKUP_DIR $backup_dir"
    echo "$f"
}

# peak_between TAG FROM TO: the highest VmRSS sample (KiB) of run TAG taken
# at FROM <= t < TO (epoch seconds)
peak_between() {
    awk -F'\t' -v a="$2" -v b="$3" '$1 >= a && $1 < b && $2 > m { m = $2 } END { print m + 0 }' "$work/rss-$1.tsv"
}

# ---------------------------------------------------------------- 3. database
log "creating a ${size_mib} MiB SQLite database of random blobs in $work"
t0=$(date +%s.%N)
python3 - "$db" "$size_mib" <<'PY'
import sqlite3, sys
path, mib = sys.argv[1], int(sys.argv[2])
con = sqlite3.connect(path)
con.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
done = 0
while done < mib:
    n = min(64, mib - done)
    with con:  # one transaction per 64 MiB
        con.execute(
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) "
            "INSERT INTO blobs (data) SELECT randomblob(1048576) FROM c", (n,))
    done += n
con.close()
PY
t1=$(date +%s.%N)
db_bytes=$(fsize "$db")
db_mib=$(awk -v b="$db_bytes" 'BEGIN { printf "%.3f", b / 1048576 }')
log "database: $(mib "$db_bytes") MiB ($db_bytes bytes) in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"

# ---------------------------------------------------------------- 4. S3 test server
log "starting the S3 test server ($s3_server)"
coproc S3SRV { TMPDIR=$work exec "$s3_server" 2>"$work/s3-server.err"; }
s3_pid=$S3SRV_PID
s3_out=${S3SRV[0]}
s3_in=${S3SRV[1]}
: >"$work/s3.env"
s3_root=""
while IFS= read -r -t 60 -u "$s3_out" line; do
    case $line in
        S3_ROOT=*) s3_root=${line#S3_ROOT=}; break ;;
        AWS_S3_BUCKET=*) s3_bucket=${line#*=}; printf '%s\n' "$line" >>"$work/s3.env" ;;
        AWS_ENDPOINT_URL=*) s3_endpoint=${line#*=}; printf '%s\n' "$line" >>"$work/s3.env" ;;
        *=*) printf '%s\n' "$line" >>"$work/s3.env" ;;
    esac
done
[[ -n $s3_root && -d $s3_root && -n ${s3_bucket:-} ]] ||
    { cat "$work/s3-server.err" >&2 || true; die "the S3 test server did not start"; }
grep -q '[[:space:]]' "$work/s3.env" && die "the S3 test server printed a value with whitespace"
chmod 600 "$work/s3.env"
log "S3 test server at $s3_endpoint, bucket $s3_bucket, folder $s3_root"

write_wrapper
(umask 077 && "$backupd" keygen >"$work/key")
[[ $(wc -c <"$work/key") -ge 44 ]] || die "backupd keygen printed no key"

fresh_backup_dir() { rm -rf "$backup_dir" && mkdir -p "$backup_dir"; }

# ---------------------------------------------------------------- 5. runs
load_start=$(cut -d ' ' -f 1-3 /proc/loadavg)
log "a. gzip -$level -c DB (output counted by wc -c)"
# GNU time measures gzip alone; its output goes through a pipe into wc -c
/usr/bin/time -v -o "$work/time-gzip.txt" gzip "-$level" -c "$db" | wc -c >"$work/gzip.size"
a_wall=$(time_wall "$work/time-gzip.txt")
a_rss=$(time_rss "$work/time-gzip.txt")
a_bytes=$(tr -d ' ' <"$work/gzip.size")

log "b. backupd once (no key, no bucket)"
fresh_backup_dir
measure once-plain "$work/backupd.sh" plain once
b_wall=$m_wall b_rss=$m_rss_kib
b_file=$(backup_file once-plain)
[[ $b_file == *.db.gz ]] || die "b: $b_file does not end in .db.gz"
b_bytes=$(fsize "$b_file")

log "c. backupd once with BACKUP_ENCRYPTION_KEY"
fresh_backup_dir
measure once-enc "$work/backupd.sh" enc once
c_wall=$m_wall c_rss=$m_rss_kib
c_file=$(backup_file once-enc)
[[ $c_file == *.db.gz.enc ]] || die "c: $c_file does not end in .db.gz.enc"
c_bytes=$(fsize "$c_file")
log "c. backupd verify $(basename "$c_file") with the key"
measure verify "$work/backupd.sh" enc verify "$c_file"
v_wall=$m_wall v_rss=$m_rss_kib
v_out=$(tail -n 1 "$work/verify.out")

log "d. backupd once with the key and the bucket (upload to the S3 test server)"
fresh_backup_dir
measure once-s3 "$work/backupd.sh" s3 once
d_wall=$m_wall d_rss=$m_rss_kib
d_file=$(backup_file once-s3)
[[ $d_file == *.db.gz.enc ]] || die "d: $d_file does not end in .db.gz.enc"
d_bytes=$(fsize "$d_file")
d_name=$(basename "$d_file")
object=$s3_root/$s3_bucket/$d_name
if [[ ! -f $object ]]; then
    echo "---- once-s3 stderr:" >&2
    tail -n 40 "$work/once-s3.err" >&2
    die "d: no object $d_name in the server's folder ($object): the upload failed (see above)"
fi
o_bytes=$(fsize "$object")
[[ $o_bytes == "$d_bytes" ]] || die "d: the object is $o_bytes bytes, the local file $d_bytes"
[[ -f $object.sha256 ]] || die "d: no $d_name.sha256 object in the server's folder"
[[ $(cut -d ' ' -f 1 "$object.sha256") == "$(sha256sum "$d_file" | cut -d ' ' -f 1)" ]] ||
    die "d: the .sha256 object does not match the local file"
# the store's line for the object: "uploaded target_url=s3://BUCKET/NAME bytes=… parts=N seconds=S …",
# logged when the upload ended; it splits (d) into the backup and the upload phase
up_line=$(grep -F " uploaded target_url=s3://$s3_bucket/$d_name bytes=" "$work/once-s3.err" | tail -n 1 || true)
up_parts=$(sed -nE 's/.* parts=([0-9]+) .*/\1/p' <<<"$up_line")
up_secs=$(sed -nE 's/.* seconds=([0-9.]+).*/\1/p' <<<"$up_line")
[[ -n $up_parts && -n $up_secs ]] || die "d: no 'uploaded target_url=…/$d_name' line with parts and seconds in backupd's log"
up_end=$(log_epoch "$up_line")
up_start=$(awk -v e="$up_end" -v s="$up_secs" 'BEGIN { printf "%.3f", e - s }')
d_rss_backup=$(peak_between once-s3 0 "$up_start")
d_rss_upload=$(peak_between once-s3 "$up_start" "$up_end")
d_rss_after=$(peak_between once-s3 "$up_end" 9999999999)
fresh_backup_dir
rm -f "$object" "$object.sha256"
stop_server

# ---------------------------------------------------------------- 6. results
summary() {
    echo "| command | wall s | peak RSS MiB | output MiB | MiB/s of database |"
    echo "|---|---:|---:|---:|---:|"
    echo "| a. \`gzip -$level -c DB\` (single thread, reference) | $a_wall | $(kib_mib "$a_rss") | $(mib "$a_bytes") | $(rate "$db_mib" "$a_wall") |"
    echo "| b. \`backupd once\` (parallel gzip) | $b_wall | $(kib_mib "$b_rss") | $(mib "$b_bytes") | $(rate "$db_mib" "$b_wall") |"
    echo "| c. \`backupd once\` + \`BACKUP_ENCRYPTION_KEY\` (gzip + Fernet) | $c_wall | $(kib_mib "$c_rss") | $(mib "$c_bytes") | $(rate "$db_mib" "$c_wall") |"
    echo "| d. c + \`AWS_S3_BUCKET\` (upload, ${up_parts:-?} parts) | $d_wall | $(kib_mib "$d_rss") | $(mib "$d_bytes") | $(rate "$db_mib" "$d_wall") |"
    echo "| \`backupd verify\` of (c), with the key | $v_wall | $(kib_mib "$v_rss") | - | $(rate "$(awk -v b="$c_bytes" 'BEGIN { print b / 1048576 }')" "$v_wall") of file |"
}
derived() {
    awk -v a="$a_wall" -v b="$b_wall" -v c="$c_wall" -v d="$d_wall" \
        -v bb="$b_bytes" -v cb="$c_bytes" -v db="$d_bytes" -v up="${up_secs:-}" '
    function m(x) { return x / 1048576 }
    BEGIN {
        printf "- backupd without encryption (b) vs gzip -6 (a): %.2fx the speed\n", a / b
        printf "- encryption overhead (c vs b): %+.2f s, %+.1f%% wall time; ", c - b, 100 * (c - b) / b
        if (c - b > 0.05)
            printf "%.0f MiB/s of ciphertext for the added time (%.1f MiB / %.2f s)\n", m(cb) / (c - b), m(cb), c - b
        else
            printf "within the run-to-run noise, so no marginal rate\n"
        printf "- (c) overall: %.1f MiB/s of ciphertext written; the .enc file is %.3fx the .gz (Fernet is base64)\n", m(cb) / c, cb / bb
        printf "- upload (d vs c): %+.2f s, %+.1f%% wall time", d - c, 100 * (d - c) / c
        if (d - c > 0.05) printf ", %.0f MiB/s of object for the added time", m(db) / (d - c)
        if (up != "") printf "; the upload itself took %.2f s by backupd'"'"'s log (%.0f MiB/s)", up, m(db) / up
        printf "\n"
    }'
}
mkdir -p "$results_dir"
md_base=$results_dir/$(date +%Y-%m-%d)-offsite
md=$md_base.md
n=2
while [[ -e $md ]]; do md=$md_base-$n.md; n=$((n + 1)); done
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
{
    echo "# backupd benchmark: encryption and upload, ${size_mib} MiB SQLite database"
    echo
    echo "- $(date -u '+%Y-%m-%d %H:%M UTC'); load average before the runs: $load_start, at the end: $(cut -d ' ' -f 1-3 /proc/loadavg)"
    echo "- database: $(mib "$db_bytes") MiB ($db_bytes bytes) of random blobs (incompressible), one run per command, warm page cache"
    echo "- host: $(uname -srm), ${cpu:-unknown CPU}, $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
    echo "- backupd: $backupd ($version), BACKUP_COMPRESSION_LEVEL=$level; $(gzip --version | head -n 1)"
    echo "- S3: examples/s3_test_server.rs (s3s-fs with SigV4 checks, separate process, 127.0.0.1, same disk)"
    tuning=$(env | grep -E '^(MALLOC_[A-Z_]*|GLIBC_TUNABLES|TOKIO_WORKER_THREADS)=' | sort | tr '\n' ' ' || true)
    echo "- allocator/runtime settings in the environment (passed on to backupd): ${tuning:-none}"
    echo
    summary
    echo
    derived
    echo
    echo "Peak RSS: GNU time -v \"Maximum resident set size\" (backupd has no child process for SQLite)."
    echo "VmRSS was also sampled every 50 ms. Highest samples: b $(kib_mib "$(peak_between once-plain 0 9999999999)") MiB,"
    echo "c $(kib_mib "$(peak_between once-enc 0 9999999999)") MiB, verify $(kib_mib "$(peak_between verify 0 9999999999)") MiB; (d) split at the upload"
    echo "(its start = the time of backupd's \`uploaded\` log line minus the \`seconds\` it gives):"
    echo
    echo "| (d) phase | peak VmRSS sampled, MiB |"
    echo "|---|---:|"
    echo "| snapshot, gzip, Fernet (up to the upload) | $(kib_mib "$d_rss_backup") |"
    echo "| multipart upload ($up_parts parts, $(printf '%.2f' "$up_secs") s) | $(kib_mib "$d_rss_upload") |"
    echo "| after it (the .sha256 object, status file) | $(kib_mib "$d_rss_after") |"
    echo
    echo "Checks passed: (c) is \`$(basename "$c_file")\` and \`backupd verify\` said: \`${v_out//|/\\|}\`;"
    echo "(d)'s object \`$d_name\` is in the server's folder with the local file's size ($d_bytes bytes) and a matching \`.sha256\` object."
    echo "(a)'s output goes through a pipe into \`wc -c\` (to count it); GNU time measures gzip alone."
} >"$md"

log "summary (${size_mib} MiB database)"
sed -n '/^| command/,$p' "$md"
echo "results: $md"

# ---------------------------------------------------------------- RSS limit
over=()
for pair in "b. once:$b_rss" "c. once + key:$c_rss" "d. once + key + bucket:$d_rss" "verify:$v_rss"; do
    kib=${pair##*:}
    if ((kib >= limit_mib * 1024)); then over+=("${pair%:*} peaked at $(kib_mib "$kib") MiB"); fi
done
if [[ ${#over[@]} -gt 0 ]]; then
    die "peak RSS limit of $limit_mib MiB exceeded: $(IFS=';'; echo "${over[*]}") (see $md)"
fi
log "every backupd run stayed under $limit_mib MiB of peak RSS"
