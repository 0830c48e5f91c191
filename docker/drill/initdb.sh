#!/bin/sh
# Run once by the postgres image when db-drill's data folder is new
# (docker-entrypoint-initdb.d): the role backupd drills as, with CREATEDB
# (a drill loads into a new database) and nothing more.
set -eu
password=$(cat /run/secrets/drill_password)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -v password="$password" <<'SQL'
CREATE ROLE backupd_drill LOGIN CREATEDB NOSUPERUSER NOCREATEROLE PASSWORD :'password';
SQL
