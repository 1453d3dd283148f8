#!/bin/sh
# Runs once, when the PostgreSQL volume is first initialised (/docker-entrypoint-initdb.d): one role and its
# databases for Temporal's persistence and visibility, and one role and database for Lapse's app DB. The
# passwords come from secrets/postgres.env (made by init-secrets.sh); nothing here holds one.
set -eu
: "${TEMPORAL_DB_PASSWORD:?set in secrets/postgres.env}"
: "${APP_DB_PASSWORD:?set in secrets/postgres.env}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v temporal_password="$TEMPORAL_DB_PASSWORD" -v app_password="$APP_DB_PASSWORD" <<'SQL'
CREATE ROLE temporal LOGIN PASSWORD :'temporal_password';
CREATE DATABASE temporal OWNER temporal;
CREATE DATABASE temporal_visibility OWNER temporal;
CREATE ROLE lapse LOGIN PASSWORD :'app_password';
CREATE DATABASE lapse OWNER lapse;
REVOKE ALL ON DATABASE temporal, temporal_visibility FROM PUBLIC;
REVOKE ALL ON DATABASE lapse FROM PUBLIC;
SQL
