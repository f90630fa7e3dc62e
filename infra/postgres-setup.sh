#!/usr/bin/env bash
# Create a PostgreSQL role and a database it owns, for the shared MLflow server (or for a
# cluster search's Optuna study). Safe to re-run: an existing role gets the new password, an
# existing database is kept.
#
#   export MIXMO_DB_PASSWORD="$(openssl rand -hex 24)"     # keep it; nothing here stores it
#   sudo -u postgres --preserve-env=MIXMO_DB_PASSWORD bash -s mlflow < infra/postgres-setup.sh
#
# Usage: postgres-setup.sh ROLE [DATABASE]   (DATABASE defaults to ROLE); fed on stdin as above,
# the postgres user needs no access to your checkout.
# psql connects as a superuser with the usual libpq variables (PGHOST, PGPORT, PGUSER, and
# PGPASSWORD or PGPASSFILE); without them, over the local socket as the user running it.
# The password travels in an environment variable, not on a command line that `ps` shows.
set -euo pipefail
role="${1:?usage: postgres-setup.sh ROLE [DATABASE]}"
db="${2:-$role}"
: "${MIXMO_DB_PASSWORD:?set MIXMO_DB_PASSWORD to the password for the role (e.g. from: openssl rand -hex 24)}"

psql --no-psqlrc --quiet -v ON_ERROR_STOP=1 -v role="$role" -v db="$db" <<'SQL'
\set pw `printenv MIXMO_DB_PASSWORD`
SELECT format('CREATE ROLE %I LOGIN', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'role', :'pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
-- only its owner (and superusers) may connect to the database
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
SQL
echo "role $role owns database $db; its URI: postgresql://$role@HOST:${PGPORT:-5432}/$db" \
    "(give the password through PGPASSFILE or PGPASSWORD, not in the URI)"
