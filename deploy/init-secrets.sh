#!/bin/sh
# Makes deploy/secrets/ for compose.yaml, once: database passwords, Lapse's three keys and the metrics token,
# each random. Files that exist are kept (run it again after deleting one to make that one anew). Back the
# directory up with the app DB (docs/production.md, "Backups"): losing LAPSE_CODEC_KEY strands every open
# run, losing LAPSE_AUDIT_KEY leaves the audit log unverifiable. Needs openssl.
set -eu
cd "$(dirname "$0")"
umask 077
mkdir -p secrets

random() { openssl rand -hex 24; }
key() { printf '%s:%s' "$1$(openssl rand -hex 4)" "$(openssl rand -base64 32)"; }  # a kid:base64key entry

if [ ! -f secrets/postgres.env ]; then
  cat > secrets/postgres.env <<END
POSTGRES_PASSWORD=$(random)
TEMPORAL_DB_PASSWORD=$(random)
APP_DB_PASSWORD=$(random)
END
fi
. ./secrets/postgres.env

if [ ! -f secrets/temporal-db.env ]; then
  cat > secrets/temporal-db.env <<END
POSTGRES_PWD=$TEMPORAL_DB_PASSWORD
SQL_PASSWORD=$TEMPORAL_DB_PASSWORD
END
fi

if [ ! -f secrets/metrics-token ]; then
  random > secrets/metrics-token
fi
# Compose mounts this file into Prometheus, which runs as another user: readable, in a directory only you enter.
chmod 0644 secrets/metrics-token

if [ ! -f secrets/lapse.env ]; then
  cat > secrets/lapse.env <<END
LAPSE_DATABASE_URL=postgresql+psycopg://lapse:$APP_DB_PASSWORD@postgres:5432/lapse
LAPSE_CODEC_KEY=$(key k)
LAPSE_AUDIT_KEY=$(key a)
LAPSE_SECRET_KEY=$(openssl rand -base64 32 | tr '+/' '-_')
LAPSE_METRICS_TOKEN=$(cat secrets/metrics-token)
END
fi
echo "secrets are in $(pwd)/secrets"
