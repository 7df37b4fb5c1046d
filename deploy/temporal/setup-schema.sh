#!/bin/sh
# Brings the schemas of Temporal's two databases (made by deploy/postgres/init-databases.sh) to the
# version of this admin-tools image. Safe on every start: setup-schema leaves a database that already
# has a schema version alone, and update-schema applies only the versions it lacks. The password
# comes in SQL_PASSWORD, which temporal-sql-tool reads, so it is not on any command line.
set -eu

: "${POSTGRES_SEEDS:?POSTGRES_SEEDS is not set}"
: "${POSTGRES_USER:?POSTGRES_USER is not set}"
: "${SQL_PASSWORD:?SQL_PASSWORD is not set}"
port="${DB_PORT:-5432}"
schemas=/etc/temporal/schema/postgresql/v12

sql_tool() {
    temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$port" -u "$POSTGRES_USER" "$@"
}

for database in temporal temporal_visibility; do
    case "$database" in
        temporal) versions="$schemas/temporal/versioned" ;;
        *) versions="$schemas/visibility/versioned" ;;
    esac
    echo "schema of $database"
    sql_tool --db "$database" setup-schema -v 0.0
    sql_tool --db "$database" update-schema -d "$versions"
done
echo "Temporal's schemas are up to date"
