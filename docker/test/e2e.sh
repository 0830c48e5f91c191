#!/usr/bin/env bash
# End to end on the local Docker engine, with no registry. Both images are
# built from Dockerfile.backup's layers: backupd-test/backupd:e2e (the
# runtime target, CMD backup) and backupd-test/backupd-db-restore:e2e (the
# restore target, CMD restore).
#
# 1. Through docker/compose.backup.yml: db-backup backs up a PostgreSQL
#    container with encryption on; the backup is dropped into
#    restore/incoming; db-restore stops the stand-in web container,
#    restores, starts it again, and the data matches.
# 2. Through compose.app.yml (a reconstruction of the app's own file; no
#    `command:`, db-restore mounts only /restore) with only BACKUP_IMAGE and
#    RESTORE_IMAGE changed: db-backup backs up; the app's manual backup
#    stays listed in backup-status.json's `backups` after the next run; a
#    backup dropped into restore/incoming is restored by db-restore, and its
#    safety copy is in restore/safety.
#
# Usage:  docker/test/e2e.sh [BINARY]     (default: target/debug/backupd)
# Env:    COMPOSE  "docker compose" or "docker-compose" (default: whichever works)
#         ROOTFS_CACHE  where build-base-images.sh keeps the Debian rootfs tarball
# Needs:  root (the bind-mounted folders are given to the image's uid 10001),
#         the Docker engine, debootstrap on the first run, objcopy.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BINARY=${1:-${BACKUPD_BINARY:-$REPO/target/debug/backupd}}
if [ -z "${COMPOSE:-}" ]; then
    if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE=docker-compose; fi
fi
read -r -a COMPOSE_CMD <<< "$COMPOSE"
PROJECT=backupd-e2e-$$
export BACKUP_IMAGE=backupd-test/backupd:e2e
export RESTORE_IMAGE=backupd-test/backupd-db-restore:e2e
export WEB_CONTAINER=$PROJECT-web
export DOCKER_GID; DOCKER_GID=$(stat -c %g /var/run/docker.sock)
export BACKUP_STATUS_PORT; BACKUP_STATUS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

t0=$SECONDS
lap() { printf 'e2e [%4ds] %s\n' "$((SECONDS - t0))" "$*" >&2; }
fail() { echo "e2e FAILED: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "run as root: the bind-mounted folders must be given to uid 10001"

# 1. Base images (skipped when present with the current recipe).
"$HERE/build-base-images.sh"
lap "base images ready"

# 2. The backupd image: Dockerfile.backup's runtime stage with the prebuilt
#    binary and Debian's PostgreSQL client (PGDG is not reachable here).
work=$(mktemp -d "${TMPDIR:-/tmp}/backupd-e2e.XXXXXX")
dc() {
    "${COMPOSE_CMD[@]}" -p "$PROJECT" --project-directory "$work" \
        -f "$REPO/docker/compose.backup.yml" -f "$HERE/compose.e2e.yml" "$@"
}
# Scenario 2's project: the app's own file, in $work/app.
APP_PROJECT=$PROJECT-app
dc_app() {
    "${COMPOSE_CMD[@]}" -p "$APP_PROJECT" --project-directory "$work/app" \
        -f "$HERE/compose.app.yml" -f "$HERE/compose.app-e2e.yml" "$@"
}
scenario=1
cleanup() {
    status=$?
    if [ "$status" != 0 ]; then
        if [ "$scenario" = 1 ]; then dc logs --no-color --tail 40 >&2 2>&1 || true; fi
        if [ "$scenario" = 2 ]; then dc_app logs --no-color --tail 40 >&2 2>&1 || true; fi
    fi
    dc down -v --remove-orphans >/dev/null 2>&1 || true
    dc_app down -v --remove-orphans >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/context"
cp "$REPO/Dockerfile.backup" "$work/context/"
# The debug build carries ~100 MB of DWARF the image does not need.
objcopy --strip-debug "$BINARY" "$work/context/backupd"
build_target() {
    DOCKER_BUILDKIT=0 docker build -q -f "$work/context/Dockerfile.backup" --target "$1" \
        --build-arg BASE_IMAGE=backupd-test/debian:bookworm \
        --build-arg PG_CLIENT_SOURCE=debian --build-arg PG_MAJOR=15 \
        --build-arg BACKUPD_BINARY=backupd --label backupd-test=1 \
        -t "$2" "$work/context" >/dev/null
}
build_target runtime-prebuilt "$BACKUP_IMAGE"
lap "built $BACKUP_IMAGE: $(docker image ls --format '{{.Size}}' "$BACKUP_IMAGE") (debug binary)"
# The db-restore name: the same build's restore target; every layer comes
# from the cache of the build above, only CMD (and HEALTHCHECK) differ.
build_target restore-prebuilt "$RESTORE_IMAGE"
lap "built $RESTORE_IMAGE from the same layers"
for image in "$BACKUP_IMAGE" "$RESTORE_IMAGE"; do
    [ "$(docker image inspect -f '{{.Config.User}}' "$image")" = "10001:10001" ] || fail "$image does not run as 10001"
done
[ "$(docker image inspect -f '{{json .Config.Cmd}}' "$BACKUP_IMAGE")" = '["backup"]' ] || fail "$BACKUP_IMAGE: default command is not backup"
[ "$(docker image inspect -f '{{json .Config.Cmd}}' "$RESTORE_IMAGE")" = '["restore"]' ] || fail "$RESTORE_IMAGE: default command is not restore"
[ "$(docker image inspect -f '{{json .RootFS.Layers}}' "$BACKUP_IMAGE")" = \
  "$(docker image inspect -f '{{json .RootFS.Layers}}' "$RESTORE_IMAGE")" ] || fail "the two images do not share their layers"

# 3. The operator's folders, owned by the image's user, and backup.env.
install -d -o 10001 -g 10001 "$work/backups" "$work/restore" \
    "$work/restore/incoming" "$work/restore/failed" "$work/restore/state"
cat > "$work/backup.env" <<ENV
DATABASE_URL=postgresql+psycopg://app:app-e2e-password@db:5432/app
BACKUP_ENCRYPTION_KEY=$("$BINARY" keygen)
RESTORE_STOP_CONTAINERS=$WEB_CONTAINER
RESTORE_POLL_INTERVAL=2
RESTORE_SETTLE_SECONDS=1
RESTORE_STOP_WAIT_SECONDS=0
RESTORE_START_WAIT_SECONDS=0
ENV
chmod 600 "$work/backup.env"

dc up -d --no-build db web >/dev/null 2>&1
db=$(dc ps -q db)
until [ "$(docker inspect -f '{{.State.Health.Status}}' "$db")" = healthy ]; do
    sleep 0.5
    [ $((SECONDS - t0)) -lt 600 ] || fail "PostgreSQL never became healthy"
done
lap "PostgreSQL container healthy"
psql_db() { docker exec -i "$db" psql -q -v ON_ERROR_STOP=1 -U app -d app -At "$@"; }
psql_db -c "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
            INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g;"
checksum="SELECT count(*) || ' ' || md5(string_agg(id || ':' || name, ',' ORDER BY id)) FROM items"
before=$(psql_db -c "$checksum")

# 4. db-backup takes a backup at start-up.
dc up -d --no-build db-backup >/dev/null 2>&1
until backup=$(find "$work/backups" -maxdepth 1 -name 'pg_dump-*.sql.gz.enc' | grep .); do
    sleep 0.5
    [ $((SECONDS - t0)) -lt 900 ] || fail "db-backup wrote no backup"
done
lap "backup written: $(basename "$backup") ($(stat -c %s "$backup") bytes)"
backup_container=$(dc ps -q db-backup)
until docker exec "$backup_container" backupd healthcheck >/dev/null 2>&1; do
    sleep 0.5
    [ $((SECONDS - t0)) -lt 900 ] || fail "backupd healthcheck never passed"
done
docker exec "$backup_container" backupd verify "/backups/$(basename "$backup")" >&2
# The status server through the published port.
python3 - "$BACKUP_STATUS_PORT" <<'PY' >&2 || fail "GET /healthz on the published port"
import json, sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz", timeout=10) as r:
    assert r.status == 200, r.status
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/status", timeout=10) as r:
    status = json.load(r)
assert status["last_file"].endswith(".sql.gz.enc"), status
print("status:", status["last_backup"], status["last_file"])
PY

# 5. The data changes; then the operator drops the backup for restore.
psql_db -c "DELETE FROM items WHERE id > 10; UPDATE items SET name = 'changed';"
[ "$(psql_db -c "$checksum")" != "$before" ] || fail "the change did not happen"
web_started=$(docker inspect -f '{{.State.StartedAt}}' "$WEB_CONTAINER")
dc up -d --no-build db-restore >/dev/null 2>&1
name=$(basename "$backup")
cp "$backup" "$work/restore/incoming/.$name.copying"
chown 10001:10001 "$work/restore/incoming/.$name.copying"
mv "$work/restore/incoming/.$name.copying" "$work/restore/incoming/$name"
lap "backup dropped into restore/incoming"

state=$work/restore/state/restore-state.json
until [ -s "$state" ] && python3 - "$state" "$name" <<'PY'
import json, sys
state = json.load(open(sys.argv[1]))
done = [h for h in state.get("history", []) if sys.argv[2] in h.get("file", "")]
sys.exit(0 if done and not state.get("in_progress") else 1)
PY
do
    sleep 0.5
    [ $((SECONDS - t0)) -lt 1200 ] || fail "the restore never finished"
done
lap "restore recorded in $(basename "$state")"
python3 - "$state" "$WEB_CONTAINER" <<'PY' || fail "the restore did not succeed"
import json, sys
entry = json.load(open(sys.argv[1]))["history"][0]  # newest first
print("history:", {k: entry.get(k) for k in ("result", "error", "containers_stopped", "safety_backup")}, file=sys.stderr)
assert entry.get("result") == "restored", entry
assert sys.argv[2] in entry.get("containers_stopped", []), entry
PY
after=$(psql_db -c "$checksum")
web_now=$(docker inspect -f '{{.State.Running}} {{.State.StartedAt}}' "$WEB_CONTAINER")
[ "$before" = "$after" ] || fail "data differs after the restore: before '$before', after '$after'"
[ "${web_now%% *}" = true ] || fail "the web container is not running again"
[ "${web_now#* }" != "$web_started" ] || fail "the web container was never stopped and started"
compgen -G "$work/backups/pre-restore-pg_dump-*.sql.gz.enc" >/dev/null || fail "no encrypted safety backup"
[ ! -e "$work/restore/incoming/$name" ] || fail "the restored file is still in incoming"
lap "PASS (compose.backup.yml): data restored ($after), web restarted, safety backup kept"

dc down -v --remove-orphans >/dev/null 2>&1

# ---------------------------------------------------------------------------
# 2. The app's own compose file, only the two image variables changed.
scenario=2
app=$work/app
# The operator's step from docker/README.md ("Upgrading"): folders for uid
# 10001. restore/safety is left to backupd to create.
install -d -o 10001 -g 10001 "$app/backups" "$app/restore" \
    "$app/restore/incoming" "$app/restore/failed" "$app/restore/state"
# The app's .env (its own settings, not backupd's).
printf 'POSTGRES_USER=app\nPOSTGRES_PASSWORD=app-e2e-password-2\nPOSTGRES_DB=app\n' > "$app/.env"
dc_app up -d --no-build db web >/dev/null 2>&1
db=$(dc_app ps -q db)
until [ "$(docker inspect -f '{{.State.Health.Status}}' "$db")" = healthy ]; do
    sleep 0.5
    [ $((SECONDS - t0)) -lt 1500 ] || fail "app stack: PostgreSQL never became healthy"
done
psql_db -c "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
            INSERT INTO items SELECT g, 'app item ' || g FROM generate_series(1, 500) g;"
before=$(psql_db -c "$checksum")
lap "app stack: PostgreSQL healthy"

# db-backup with the image's default command takes its start-up backup.
dc_app up -d --no-build db-backup >/dev/null 2>&1
until backup=$(find "$app/backups" -maxdepth 1 -name 'pg_dump-2*.sql.gz' | grep .); do
    sleep 0.5
    [ $((SECONDS - t0)) -lt 1600 ] || fail "app stack: db-backup wrote no backup"
done
[ "$(docker inspect -f '{{json .Config.Cmd}}' "$(dc_app ps -q db-backup)")" = '["backup"]' ] \
    || fail "app stack: db-backup does not run the image's default command backup"
lap "app stack: db-backup wrote $(basename "$backup")"

# The app's admin page takes a manual backup into its BACKUP_DIR.
manual=pg_dump-manual-$(date -u +%Y%m%dT%H%M%SZ).sql.gz
docker exec "$db" pg_dump -U app -d app | gzip \
    | dc_app exec -T web sh -c "cat > /backups/.$manual.tmp && mv /backups/.$manual.tmp /backups/$manual"
[ -s "$app/backups/$manual" ] || fail "app stack: the stand-in app wrote no manual backup"

# The next run of db-backup (a restart: BACKUP_ON_START) rewrites the status
# file; the manual backup must still be listed there, and still exist.
status_file=$app/backups/backup-status.json
first=/backups/$(basename "$backup")
until python3 - "$status_file" "$first" <<'PY' 2>/dev/null
import json, sys
sys.exit(0 if json.load(open(sys.argv[1])).get("last_file") == sys.argv[2] else 1)
PY
do
    sleep 0.5
    [ $((SECONDS - t0)) -lt 1650 ] || fail "app stack: the status file never named $first"
done
dc_app restart db-backup >/dev/null 2>&1
until python3 - "$status_file" "$first" <<'PY' 2>/dev/null
import json, sys
status = json.load(open(sys.argv[1]))
sys.exit(0 if status.get("last_file") and status["last_file"] != sys.argv[2] else 1)
PY
do
    sleep 0.5
    [ $((SECONDS - t0)) -lt 1700 ] || fail "app stack: db-backup's next run never finished"
done
python3 - "$status_file" "$manual" <<'PY' || fail "app stack: the app's manual backup is not listed in backups"
import json, os, sys
listed = [os.path.basename(b) for b in json.load(open(sys.argv[1]))["backups"]]
print("backups:", listed, file=sys.stderr)
assert sys.argv[2] in listed, listed
PY
[ -s "$app/backups/$manual" ] || fail "app stack: the manual backup was deleted"
lap "app stack: next run done, $manual still listed in backups"

# The data changes; the app's restore page drops the first backup
# (decrypted: here it was never encrypted) into /restore/incoming.
psql_db -c "DELETE FROM items WHERE id > 5; UPDATE items SET name = 'changed';"
[ "$(psql_db -c "$checksum")" != "$before" ] || fail "app stack: the change did not happen"
dc_app up -d --no-build db-restore >/dev/null 2>&1
[ "$(docker inspect -f '{{json .Config.Cmd}}' "$(dc_app ps -q db-restore)")" = '["restore"]' ] \
    || fail "app stack: db-restore does not run the image's default command restore"
name=$(basename "$backup")
dc_app exec -T web sh -c "cat > /restore/incoming/.$name.tmp && mv /restore/incoming/.$name.tmp /restore/incoming/$name" \
    < "$backup"
lap "app stack: backup dropped into restore/incoming by the app"

state=$app/restore/state/restore-state.json
until [ -s "$state" ] && python3 - "$state" "$name" <<'PY' 2>/dev/null
import json, sys
state = json.load(open(sys.argv[1]))
done = [h for h in state.get("history", []) if sys.argv[2] in h.get("file", "")]
sys.exit(0 if done and not state.get("in_progress") else 1)
PY
do
    sleep 0.5
    [ $((SECONDS - t0)) -lt 1800 ] || fail "app stack: the restore never finished"
done
python3 - "$state" <<'PY' || fail "app stack: the restore did not succeed, or its safety copy is not in /restore/safety"
import json, sys
entry = json.load(open(sys.argv[1]))["history"][0]  # newest first
print("history:", {k: entry.get(k) for k in ("result", "error", "safety_backup")}, file=sys.stderr)
assert entry.get("result") == "restored", entry
assert (entry.get("safety_backup") or "").startswith("/restore/safety/pre-restore-pg_dump-"), entry
PY
after=$(psql_db -c "$checksum")
[ "$before" = "$after" ] || fail "app stack: data differs after the restore: before '$before', after '$after'"
compgen -G "$app/restore/safety/pre-restore-pg_dump-*.sql.gz" >/dev/null \
    || fail "app stack: no safety copy in ./restore/safety"
! compgen -G "$app/backups/pre-restore-*" >/dev/null || fail "app stack: a safety copy in ./backups"
[ ! -e "$app/restore/incoming/$name" ] || fail "app stack: the restored file is still in incoming"
lap "PASS (app's compose file): restored ($after), safety copy in restore/safety, manual backup listed"
