#!/bin/sh
# Run by the postgres image once, when its volume is first initialised (never again: to change a
# password later, use ALTER ROLE). One role and database for hpcinfra, one role owning Temporal's two
# databases, so that neither can read the other's data; the superuser is kept for administration.
set -eu

: "${HPCINFRA_DB_PASSWORD:?HPCINFRA_DB_PASSWORD is not set}"
: "${TEMPORAL_DB_PASSWORD:?TEMPORAL_DB_PASSWORD is not set}"

# The passwords go in as psql variables, quoted by psql (:'name'), never spliced into the SQL text.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v hpcinfra_password="$HPCINFRA_DB_PASSWORD" \
    -v temporal_password="$TEMPORAL_DB_PASSWORD" <<'SQL'
CREATE ROLE hpcinfra LOGIN PASSWORD :'hpcinfra_password';
CREATE DATABASE hpcinfra OWNER hpcinfra;

CREATE ROLE temporal LOGIN PASSWORD :'temporal_password';
CREATE DATABASE temporal OWNER temporal;
CREATE DATABASE temporal_visibility OWNER temporal;

-- Each role connects to its own databases only (PostgreSQL lets every role connect to every database).
REVOKE ALL ON DATABASE hpcinfra, temporal, temporal_visibility FROM PUBLIC;

-- Temporal's visibility schema indexes with btree_gin; made here so its role needs no superuser.
\connect temporal_visibility
CREATE EXTENSION IF NOT EXISTS btree_gin;
SQL
