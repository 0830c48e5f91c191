#!/usr/bin/env bash
# bench/issue13.sh - what issue 13 must show in numbers:
#   downtime  the app container's outage during `backupd restore --file`
#             (PostgreSQL, staging strategy), per binary and database size
#   drill     `backupd drill FILE` against `gunzip -c FILE | psql` into an
#             empty database, same backup (goal: <= 1.2x)
#   once      the manifest's cost: `backupd once` of the before binary
#             against the after binary on the same database (goal: noise)
#
# Usage (see bench/README.md):
#   BENCH_BEFORE_BIN=/path/backupd-before bench/issue13.sh      # downtime, before only
#   BENCH_BEFORE_BIN=... BENCH_AFTER_BIN=... bench/issue13.sh   # everything
#   BENCH_SCALES=20 BENCH_RUNS=1 BENCH_BEFORE_BIN=... bench/issue13.sh   # smoke
#
# The clusters are kept: $BENCH_CACHE/pg-<scale>/ holds a stopped cluster
# with benchdb at that fixture scale (its passwords in secrets, mode 600),
# one `backupd once` file per binary label (backup-before/, backup-after/,
# with whatever else once wrote beside it, e.g. the manifest) and the raw
# rows of every part run so far (*.tsv). A later run starts the cluster
# again and reuses all of it, so the before and after sides restore the same
# database; the markdown is rendered from every row file present.
#
# Variables:
#   BENCH_BEFORE_BIN  backupd before issue 13 (optional)
#   BENCH_AFTER_BIN   backupd with issue 13 (optional; drill and once need it)
#   BENCH_PARTS       which parts (default "downtime drill once"; a part whose
#                     binaries are missing is skipped with a note)
#   BENCH_SCALES      fixture scales, space-separated (default "700 2800":
#                     ~300 MB and ~1.2 GB; ~0.43 MB per unit)
#   BENCH_RUNS        restores per binary and scale, and hyperfine --runs of
#                     the drill part (default 3)
#   BENCH_ONCE_RUNS   hyperfine --runs of the once part (default 5, plus 1 warmup)
#   BENCH_ONCE_SCALE  scale of the once part (default: the first of BENCH_SCALES)
#   BENCH_SAFETY      RESTORE_SAFETY_BACKUP of the restores (default true, backupd's default)
#   BENCH_STOP_WAIT   RESTORE_STOP_WAIT_SECONDS (default: unset, backupd's default 5)
#   BENCH_START_WAIT  RESTORE_START_WAIT_SECONDS (default: unset, backupd's default 5)
#   BENCH_CACHE       where the clusters are kept (default /var/tmp/backupd-bench-cache)
#   BENCH_FRESH       1 = delete the cached cluster of each scale first
#   BENCH_RESULTS_DIR where the markdown goes (default bench/results)
#   BENCH_PG_BIN      PostgreSQL bin dir (default: newest /usr/lib/postgresql/*/bin)
#
# The app: a container `backupd-bench-app` of a locally built FROM scratch
# image (`backupd-bench/app`, /bin/busybox from busybox-static, nothing
# pulled) running `sh -c 'trap "exit 0" TERM; sleep 86400 & wait'`, so it
# stops on SIGTERM at once as a real app server does. It is named in
# RESTORE_STOP_CONTAINERS. The outage is read from the engine's own clock:
# State.FinishedAt (it exited) to State.StartedAt (it runs again) after the
# restore. The container's own stop-to-start time is measured the same way
# for `docker stop` directly followed by `docker start`.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
parts=${BENCH_PARTS:-downtime drill once}
scales=${BENCH_SCALES:-700 2800}
runs=${BENCH_RUNS:-3}
once_runs=${BENCH_ONCE_RUNS:-5}
once_scale=${BENCH_ONCE_SCALE:-${scales%% *}}
safety=${BENCH_SAFETY:-true}
cache=${BENCH_CACHE:-/var/tmp/backupd-bench-cache}
results_dir=${BENCH_RESULTS_DIR:-$repo/bench/results}
app=backupd-bench-app
image=backupd-bench/app:1

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'bench/issue13.sh: %s\n' "$*" >&2; exit 1; }

[[ $runs =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
[[ $once_runs =~ ^[1-9][0-9]*$ ]] || die "BENCH_ONCE_RUNS must be a positive integer"
for s in $scales $once_scale; do [[ $s =~ ^[1-9][0-9]*$ ]] || die "BENCH_SCALES: '$s' is not a positive integer"; done
[[ $safety =~ ^(true|false)$ ]] || die "BENCH_SAFETY must be true or false"

declare -A bin=()
[[ -n ${BENCH_BEFORE_BIN:-} ]] && bin[before]=$(realpath "$BENCH_BEFORE_BIN")
[[ -n ${BENCH_AFTER_BIN:-} ]] && bin[after]=$(realpath "$BENCH_AFTER_BIN")
[[ ${#bin[@]} -gt 0 ]] || die "set BENCH_BEFORE_BIN and/or BENCH_AFTER_BIN"
for l in "${!bin[@]}"; do [[ -x ${bin[$l]} ]] || die "$l binary ${bin[$l]} is not executable"; done
labels=()
for l in before after; do [[ -n ${bin[$l]:-} ]] && labels+=("$l"); done

# shellcheck source=bench/pgkit.sh
. "$repo/bench/pgkit.sh"
kit_install_missing busybox-static
kit_pick_pgbin
command -v docker >/dev/null || die "the docker CLI is needed"
docker version --format '{{.Server.Version}}' >/dev/null || die "no reachable Docker engine"

work=$(mktemp -d "${TMPDIR:-/tmp}/backupd-issue13.XXXXXX")
chmod 755 "$work"
mkdir -p "$cache" "$results_dir"
chmod 755 "$cache"

cleanup() {
    local rc=$?
    kit_cluster_stop fast
    docker rm -f "$app" >/dev/null 2>&1 || true
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
epoch() { date -u -d "$1" +%s.%N; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
hf() { jq -r ".results[$2].$3" "$1" | awk '{ printf "%.3f", $1 }'; }
# mean / min / max of column $2 (1-based) of TSV $1, rows matching label $3 in column 1
col_stats() {
    awk -F'\t' -v c="$2" -v l="$3" '$1 == l && $c != "" && $c != "-" { n++; s += $c; if (n == 1 || $c < lo) lo = $c; if (n == 1 || $c > hi) hi = $c }
        END { if (n) printf "%.2f (%.2f … %.2f)", s / n, lo, hi; else printf "-" }' "$1"
}

# seconds between the first log lines containing $2 and $3 in log $1, or -
log_span() {
    local a b
    a=$(grep -m 1 -F -- "$2" "$1" | cut -d ' ' -f 1 || true)
    b=$(grep -m 1 -F -- "$3" "$1" | cut -d ' ' -f 1 || true)
    if [[ -n $a && -n $b ]]; then secs "$(epoch "$a")" "$(epoch "$b")"; else echo -; fi
}

# log lines that mark the phases of a restore, in the before order
log_marks=("stopping container" "container stopped" "safety backup written" "created the staging database"
    "loading the dump" "the restored database is in place" "dropped an older previous database"
    "container started" "container health" "restore finished")
# mean over the kept restore logs of HOME for LABEL: seconds from
# "restore requested" to the first line containing MARK
mark_mean() {
    local f n=0 sum=0 v
    for f in "$1"/restore-"$2"-*.log; do
        [[ -e $f ]] || continue
        v=$(log_span "$f" 'restore requested' "$3")
        [[ $v == - ]] && continue
        sum=$(awk -v a="$sum" -v b="$v" 'BEGIN { print a + b }')
        n=$((n + 1))
    done
    if [[ $n -gt 0 ]]; then awk -v a="$sum" -v n="$n" 'BEGIN { printf "%.2f", a / n }'; else echo -; fi
}

app_image() {
    if docker image inspect "$image" >/dev/null 2>&1; then return 0; fi
    log "building $image (FROM scratch + /bin/busybox)"
    mkdir -p "$work/image"
    cp /bin/busybox "$work/image/busybox"
    cat >"$work/image/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["trap 'exit 0' TERM; sleep 86400 & wait"]
EOF
    docker build -q -t "$image" "$work/image" >/dev/null
}

app_up() {
    docker rm -f "$app" >/dev/null 2>&1 || true
    docker run -d --name "$app" --restart=no "$image" >/dev/null
}

# seconds from the container's last exit to its last start, engine clock
app_window() {
    local fin st
    fin=$(docker inspect -f '{{.State.FinishedAt}}' "$app")
    st=$(docker inspect -f '{{.State.StartedAt}}' "$app")
    printf '%s\t%s\t%s\n' "$(epoch "$fin")" "$(epoch "$st")" "$(secs "$(epoch "$fin")" "$(epoch "$st")")"
}

# ---------------------------------------------------------------- the cached cluster
# Sets: home, port, super_pw, bench_pw, url, load_s (fixtures), db facts.
cluster_up() {
    local scale=$1
    home=$cache/pg-$scale
    if [[ ${BENCH_FRESH:-0} == 1 || ! -e $home/ready ]]; then
        rm -rf "$home"
        mkdir -p "$home" && chmod 755 "$home"
        super_pw=$(random_password)
        bench_pw=$(random_password)
        (umask 077 && printf 'super_pw=%s\nbench_pw=%s\n' "$super_pw" "$bench_pw" >"$home/secrets")
        port=$(free_port) || die "no free TCP port found"
        kit_cluster_init "$home"
        kit_cluster_start "$home"
        kit_load_fixtures "$scale"
        su_psql -c "ALTER ROLE bench CREATEDB"
        su_psql -c "CHECKPOINT"
        printf 'load_s=%s\n' "$load_s" >"$home/ready"
    else
        # shellcheck disable=SC1091
        . "$home/secrets"
        . "$home/ready"
        port=$(free_port) || die "no free TCP port found"
        kit_cluster_start "$home"
    fi
    kit_db_facts
    url="postgresql://bench:$bench_pw@127.0.0.1:$port/benchdb"
    (umask 077 && printf '%s\n' "$url" >"$work/url")
    log "scale $scale: benchdb $db_pretty ($db_bytes bytes; fixtures loaded in ${load_s}s when cached)"
}

# $work/env.sh LABEL CMD...: backupd of LABEL with the URL only (no PG*
# variables) and every setting the benchmark depends on pinned.
write_scripts() {
    local l extra=""
    [[ -n ${BENCH_STOP_WAIT:-} ]] && extra+=" RESTORE_STOP_WAIT_SECONDS=$BENCH_STOP_WAIT"
    [[ -n ${BENCH_START_WAIT:-} ]] && extra+=" RESTORE_START_WAIT_SECONDS=$BENCH_START_WAIT"
    for l in "${labels[@]}"; do
        cat >"$work/backupd-$l.sh" <<EOF
#!/bin/sh
url=\$(cat "$work/url") || exit 1
exec env -u PGPASSWORD -u PGPASSFILE -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE \\
    PATH="$pgbin:\$PATH" DATABASE_URL="\$url" BACKUP_DIR="$work/backups" \\
    BACKUP_RETENTION_DAYS=0 \\
    RESTORE_STATE_FILE="$work/restore-state.json" RESTORE_WATCH_DIR="$work/incoming" \\
    RESTORE_FAILED_DIR="$work/failed" RESTORE_KEEP_PREVIOUS=0 \\
    RESTORE_PG_STRATEGY=staging RESTORE_STOP_CONTAINERS=$app RESTORE_START_CONTAINERS= \\
    RESTORE_SAFETY_BACKUP=$safety$extra \\
    "${bin[$l]}" "\$@"
EOF
        chmod 700 "$work/backupd-$l.sh"
    done
    cat >"$work/psql-plain.sh" <<EOF
#!/bin/sh
PGPASSWORD='$bench_pw' exec "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 --single-transaction \\
    -h 127.0.0.1 -p $port -U bench -d benchdb_plain
EOF
    # drops what restores, drills and the baseline leave behind; with
    # "plain" also a new empty benchdb_plain
    cat >"$work/prepare.sh" <<EOF
#!/bin/sh
set -e
export PGPASSWORD='$bench_pw'
bpsql() { "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $port -U bench -d postgres "\$@"; }
bpsql >/dev/null <<'SQL'
SELECT format('DROP DATABASE %I', datname) FROM pg_database
 WHERE starts_with(datname, 'benchdb_pre_restore_') OR starts_with(datname, 'benchdb_restore_')
    OR starts_with(datname, 'benchdb_drill_') OR datname = 'benchdb_plain'
\\gexec
SQL
rm -rf "$work/backups" "$work/given" "$work/restore-state.json" "$work/incoming" "$work/failed"
mkdir -p "$work/backups" "$work/given"
if [ "\${1:-}" = plain ]; then bpsql -c 'CREATE DATABASE benchdb_plain'; fi
EOF
    chmod 700 "$work/psql-plain.sh" "$work/prepare.sh"
}

# The backup of binary LABEL at this scale, taken once and cached with
# what once wrote beside it. Sets: bfile
backup_of() {
    local l=$1 dir=$home/backup-$1 out
    if [[ ! -e $dir/done ]]; then
        log "scale $scale: one backupd once ($l) for the restores"
        "$work/prepare.sh"
        out=$("$work/backupd-$l.sh" once 2>"$work/once.err") ||
            { tail -n 20 "$work/once.err" >&2; die "backupd once ($l) failed"; }
        rm -rf "$dir" && mkdir -p "$dir"
        find "$work/backups" -maxdepth 1 -type f ! -name '.*' -exec mv -t "$dir" {} +
        basename "$(tail -n 1 <<<"$out")" >"$dir/done"
    fi
    bfile=$dir/$(cat "$dir/done")
    [[ -f $bfile ]] || die "cached backup $bfile is missing (BENCH_FRESH=1 rebuilds)"
}

# the given copy of the backup (restore may delete what it restored) and,
# for the after binary, its manifest beside it
give() {
    local src=$1 f
    for f in "$src" "$src".manifest.json "${src%.gz}".manifest.json; do
        [[ -f $f ]] && cp "$f" "$work/given/"
    done
    true
}

# ---------------------------------------------------------------- parts
part_downtime() {
    local l r t0 t1 w rc entry dur down fin st tmp
    app_image
    app_up
    # the container's own stop -> start, nothing in between
    tmp=$home/own.tsv.new
    : >"$tmp"
    for r in $(seq 1 "$runs"); do
        docker stop -t 30 "$app" >/dev/null
        docker start "$app" >/dev/null
        printf 'own\t%s\t%s\n' "$r" "$(app_window | cut -f3)" >>"$tmp"
    done
    mv "$tmp" "$home/own.tsv"
    for l in "${labels[@]}"; do
        backup_of "$l"
        tmp=$home/downtime-$l.tsv.new
        : >"$tmp"
        for r in $(seq 1 "$runs"); do
            "$work/prepare.sh"
            give "$bfile"
            app_up
            sleep 1
            log "scale $scale: restore $r/$runs ($l)"
            t0=$(date +%s.%N)
            rc=0
            /usr/bin/time -v -o "$work/time.txt" "$work/backupd-$l.sh" restore --file "$work/given/$(basename "$bfile")" \
                >"$work/restore.out" 2>"$work/restore-$l-$r.err" || rc=$?
            t1=$(date +%s.%N)
            cp "$work/restore-$l-$r.err" "$home/restore-$l-$r.log"
            [[ $rc == 0 ]] || { tail -n 30 "$work/restore-$l-$r.err" >&2; die "restore ($l) exited $rc"; }
            entry=$(jq -c '.history[0]' "$work/restore-state.json")
            [[ $(jq -r .result <<<"$entry") == restored ]] || die "restore ($l): history says $(jq -r .result <<<"$entry")"
            dur=$(jq -r '.duration_seconds' <<<"$entry")
            down=$(jq -r '.downtime_seconds // "-"' <<<"$entry")
            IFS=$'\t' read -r fin st w < <(app_window)
            awk -v f="$fin" -v a="$t0" 'BEGIN { exit !(f > a) }' ||
                die "restore ($l): the container was not stopped during the restore (FinishedAt before the run)"
            [[ $(docker inspect -f '{{.State.Running}}' "$app") == true ]] || die "restore ($l): the container is not running afterwards"
            # columns: label run wall engine_window duration_seconds downtime_seconds
            #          stop_offset (run start -> exit) start_offset (run start -> start) peak_rss_kib
            #          load (log: "loading the dump" -> "the restored database is in place")
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$l" "$r" "$(secs "$t0" "$t1")" "$w" "$dur" "$down" \
                "$(secs "$t0" "$fin")" "$(secs "$t0" "$st")" \
                "$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/time.txt")" \
                "$(log_span "$work/restore-$l-$r.err" 'loading the dump' 'the restored database is in place')" >>"$tmp"
            tail -n 1 "$tmp" >&2
        done
        mv "$tmp" "$home/downtime-$l.tsv"
    done
    docker rm -f "$app" >/dev/null
}

# the load alone: gunzip | psql of the cached backup into an empty database
part_baseline() {
    local l=${labels[0]}
    backup_of "$l"
    log "scale $scale: hyperfine gunzip | psql into an empty database ($runs runs)"
    hyperfine --style basic --runs "$runs" --export-json "$home/baseline.json" \
        --prepare "'$work/prepare.sh' plain" -n "gunzip | psql --single-transaction ($l backup)" \
        "gunzip -c '$bfile' | '$work/psql-plain.sh'"
    "$work/prepare.sh"
}

# gunzip | psql into an empty database, and the drill of the same file
part_drill() {
    local cmds=()
    backup_of after
    "$work/prepare.sh"
    cmds+=(--prepare "'$work/prepare.sh' plain" -n 'gunzip | psql --single-transaction (empty database)'
        "gunzip -c '$bfile' | '$work/psql-plain.sh'")
    cmds+=(--prepare "'$work/prepare.sh'" -n 'backupd drill FILE' "'$work/backupd-after.sh' drill '$bfile'")
    log "scale $scale: hyperfine drill vs gunzip | psql ($runs runs)"
    hyperfine --style basic --runs "$runs" --export-json "$home/drill.json" "${cmds[@]}"
    "$work/backupd-after.sh" drill "$bfile" >"$home/drill.out" 2>"$home/drill.log" || true
    "$work/prepare.sh"
}

part_once() {
    log "scale $scale: hyperfine once before vs after ($once_runs runs + 1 warmup)"
    hyperfine --style basic --warmup 1 --runs "$once_runs" --export-json "$home/once.json" \
        --prepare "rm -rf '$work/backups' && mkdir -p '$work/backups'" \
        -n 'backupd once (before)' "'$work/backupd-before.sh' once >/dev/null" \
        -n 'backupd once (after)' "'$work/backupd-after.sh' once >/dev/null"
    ls -l "$work/backups" >"$home/once-after-files.txt"
}

# ---------------------------------------------------------------- run
has() { [[ " $parts " == *" $1 "* ]]; }
for scale in $scales; do
    cluster_up "$scale"
    write_scripts
    printf 'db_bytes=%q\ndb_pretty=%q\npg_version=%q\n' "$db_bytes" "$db_pretty" "$pg_version" >"$home/facts"
    if has downtime; then
        part_downtime
        [[ -e $home/baseline.json ]] || part_baseline
    fi
    if has drill; then
        if [[ -n ${bin[after]:-} ]]; then part_drill; else log "drill: no BENCH_AFTER_BIN, skipped"; fi
    fi
    if has once && [[ $scale == "$once_scale" ]]; then
        if [[ -n ${bin[after]:-} && -n ${bin[before]:-} ]]; then part_once; else log "once: needs both binaries, skipped"; fi
    fi
    kit_cluster_stop fast
done
if has once && [[ " $scales " != *" $once_scale "* ]]; then
    scale=$once_scale
    cluster_up "$scale"
    write_scripts
    if [[ -n ${bin[after]:-} && -n ${bin[before]:-} ]]; then part_once; fi
    kit_cluster_stop fast
fi

# ---------------------------------------------------------------- markdown
render() {
    local s h l f
    echo "# issue 13 benchmarks: restore downtime, drill, manifest cost"
    echo
    echo "- rendered $(date -u '+%Y-%m-%d %H:%M UTC'); load average $(cut -d ' ' -f 1-3 /proc/loadavg)"
    echo "- host: $(uname -srm), $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM; Docker $(docker version --format '{{.Server.Version}}'); $(hyperfine --version)"
    for l in "${labels[@]}"; do echo "- $l: ${bin[$l]} (sha256 $(sha256sum "${bin[$l]}" | cut -c1-12))"; done
    echo "- restores: RESTORE_PG_STRATEGY=staging, RESTORE_SAFETY_BACKUP=$safety, RESTORE_KEEP_PREVIOUS=0, RESTORE_STOP_WAIT_SECONDS=${BENCH_STOP_WAIT:-default}, RESTORE_START_WAIT_SECONDS=${BENCH_START_WAIT:-default}, RESTORE_STOP_CONTAINERS=$app"
    echo
    echo "## Restore downtime"
    echo
    echo "| scale | database | binary | runs | engine: stopped s | downtime_seconds | duration_seconds | load (log) s | wall s | gunzip \\| psql s |"
    echo "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"
    for s in $scales; do
        h=$cache/pg-$s
        [[ -e $h/facts ]] || continue
        # shellcheck disable=SC1091
        . "$h/facts"
        local base="-"
        [[ -e $h/baseline.json ]] && base=$(hf "$h/baseline.json" 0 mean)
        [[ -e $h/own.tsv ]] && echo "| $s | $db_pretty | \`docker stop\` + \`docker start\` | $(wc -l <"$h/own.tsv") | $(col_stats "$h/own.tsv" 3 own) | - | - | - | - | - |"
        for l in before after; do
            f=$h/downtime-$l.tsv
            [[ -e $f ]] || continue
            echo "| $s | $db_pretty | $l | $(wc -l <"$f") | $(col_stats "$f" 4 "$l") | $(col_stats "$f" 6 "$l") | $(col_stats "$f" 5 "$l") | $(col_stats "$f" 10 "$l") | $(col_stats "$f" 3 "$l") | $base |"
        done
    done
    echo
    echo "Mean (min … max). engine: stopped = State.FinishedAt → State.StartedAt of the app container after the restore."
    echo
    echo "### Where the time goes (backupd's log, mean seconds after \`restore requested\`)"
    echo
    local hdr="| event |" sep="|---|" m
    for s in $scales; do for l in before after; do
        [[ -e $cache/pg-$s/downtime-$l.tsv ]] && { hdr+=" $s $l |"; sep+="---:|"; }
    done; done
    echo "$hdr"
    echo "$sep"
    for m in "${log_marks[@]}"; do
        local row="| $m |"
        for s in $scales; do for l in before after; do
            [[ -e $cache/pg-$s/downtime-$l.tsv ]] && row+=" $(mark_mean "$cache/pg-$s" "$l" "$m") |"
        done; done
        echo "$row"
    done
    echo
    echo "## Drill vs gunzip | psql"
    echo
    echo "| scale | database | gunzip \\| psql mean s (min … max) | drill mean s (min … max) | ratio |"
    echo "|---:|---|---:|---:|---:|"
    for s in $scales; do
        h=$cache/pg-$s
        [[ -e $h/drill.json ]] || continue
        . "$h/facts"
        echo "| $s | $db_pretty | $(hf "$h/drill.json" 0 mean) ($(hf "$h/drill.json" 0 min) … $(hf "$h/drill.json" 0 max)) | $(hf "$h/drill.json" 1 mean) ($(hf "$h/drill.json" 1 min) … $(hf "$h/drill.json" 1 max)) | $(awk -v a="$(hf "$h/drill.json" 1 mean)" -v b="$(hf "$h/drill.json" 0 mean)" 'BEGIN { printf "%.2f", a / b }') |"
    done
    echo
    echo "## once: before vs after"
    echo
    echo "| scale | binary | mean s | stddev s | min s | max s | user+sys s |"
    echo "|---:|---|---:|---:|---:|---:|---:|"
    h=$cache/pg-$once_scale
    if [[ -e $h/once.json ]]; then
        for f in 0 1; do
            echo "| $once_scale | $(jq -r ".results[$f].command" "$h/once.json") | $(hf "$h/once.json" $f mean) | $(hf "$h/once.json" $f stddev) | $(hf "$h/once.json" $f min) | $(hf "$h/once.json" $f max) | $(jq -r ".results[$f] | .user + .system" "$h/once.json" | awk '{ printf "%.3f", $1 }') |"
        done
    fi
}
out=$results_dir/$(date +%Y-%m-%d)-issue13-raw.md
render >"$out"
cat "$out"
echo "results: $out"
