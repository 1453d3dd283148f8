#!/bin/sh
# Before the Temporal server starts (temporalio/admin-tools): bring the persistence and visibility schemas to
# the version this admin-tools image ships. Safe to run on every `up`: a schema already at a version is only
# moved forward. Keep the admin-tools tag equal to the server's (compose.yaml) when upgrading Temporal.
set -eu
: "${SQL_PASSWORD:?set in secrets/temporal-db.env}"
tool() {
  temporal-sql-tool --plugin postgres12 --ep postgres -p 5432 -u temporal "$@"
}
schemas=/etc/temporal/schema/postgresql/v12
tool --db temporal setup-schema -v 0.0
tool --db temporal update-schema -d "$schemas/temporal/versioned"
tool --db temporal_visibility setup-schema -v 0.0
tool --db temporal_visibility update-schema -d "$schemas/visibility/versioned"
echo "Temporal schemas are current"
