#!/bin/sh
# PostgreSQL with the interface of Docker Hub's postgres image: POSTGRES_PASSWORD, POSTGRES_USER,
# POSTGRES_DB, POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD, PGDATA and
# /docker-entrypoint-initdb.d/*.sh|*.sql|*.sql.gz on the first start.
set -eu

# `IMAGE -c option=value`: options for postgres.
case "${1:-}" in -*) set -- postgres "$@" ;; esac

export PGDATA="${PGDATA:-/var/lib/postgresql/data}"

if [ "${1:-}" = postgres ] && [ "$(id -u)" = 0 ]; then
	# The volume arrives root-owned and /run is a fresh tmpfs: hand both to postgres, then run
	# this script again as postgres (exec, so that postgres ends up as PID 1 and gets the signals).
	mkdir -p "$PGDATA" /var/run/postgresql
	chmod 700 "$PGDATA"
	find "$PGDATA" ! -user postgres -exec chown postgres:postgres '{}' +
	chown postgres:postgres /var/run/postgresql
	chmod 3777 /var/run/postgresql
	exec gosu postgres "$0" "$@"
fi

run_initdb_scripts() {
	for script in /docker-entrypoint-initdb.d/*; do
		case "$script" in
		*.sh)
			if [ -x "$script" ]; then
				echo "$0: running $script"
				"$script"
			else
				echo "$0: sourcing $script"
				. "$script"
			fi
			;;
		*.sql) echo "$0: running $script"; psql_run -f "$script" ;;
		*.sql.gz) echo "$0: running $script"; gunzip -c "$script" | psql_run ;;
		*.sql.xz) echo "$0: running $script"; xz -dc "$script" | psql_run ;;
		*) if [ -e "$script" ]; then echo "$0: ignoring $script"; fi ;;
		esac
	done
}

psql_run() {
	psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" "$@"
}

initialise() {
	auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
	if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
		echo "Error: the database is uninitialized and POSTGRES_PASSWORD is not set." >&2
		echo "Set it to a non-empty value (or POSTGRES_HOST_AUTH_METHOD=trust to allow any" >&2
		echo "connection without a password, which is not recommended)." >&2
		exit 1
	fi
	# The password goes through a file, never through a process's arguments.
	pwfile="$(mktemp)"
	printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
	# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of options, split on purpose
	initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
		--auth-host="$auth" ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA"
	rm -f "$pwfile"
	# Any address may connect, with the password; postgres listens on every interface.
	printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
	printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"

	# A server on the Unix socket only, so that no client connects before the set-up is done.
	pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
	if [ "$POSTGRES_DB" != postgres ]; then
		psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
			--set db="$POSTGRES_DB" <<-'SQL'
			SELECT 'CREATE DATABASE ' || quote_ident(:'db')
			WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
		SQL
	fi
	run_initdb_scripts
	pg_ctl -D "$PGDATA" -m fast -w stop
	echo "PostgreSQL init process complete; ready for start up."
}

if [ "${1:-}" = postgres ]; then
	export POSTGRES_USER="${POSTGRES_USER:-postgres}"
	export POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
	if [ -s "$PGDATA/PG_VERSION" ]; then
		echo "PostgreSQL database directory appears to contain a database; skipping initialization"
	else
		initialise
	fi
fi

exec "$@"
