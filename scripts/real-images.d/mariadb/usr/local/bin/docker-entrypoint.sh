#!/bin/sh
# MariaDB with the interface of Docker Hub's mariadb image (and the MYSQL_* names of the mysql
# image): *_ROOT_PASSWORD, *_ROOT_HOST, *_DATABASE, *_USER, *_PASSWORD,
# MARIADB_ALLOW_EMPTY_ROOT_PASSWORD / MYSQL_ALLOW_EMPTY_PASSWORD, *_RANDOM_ROOT_PASSWORD and
# /docker-entrypoint-initdb.d/*.sh|*.sql|*.sql.gz on the first start.
set -eu

DATADIR=/var/lib/mysql
SOCKET=/run/mysqld/mysqld.sock

# `IMAGE --option`: options for the server.
case "${1:-}" in -*) set -- mariadbd "$@" ;; esac

server=false
case "${1:-}" in mariadbd | mysqld) server=true ;; esac

if $server && [ "$(id -u)" = 0 ]; then
	# The volume may arrive root-owned and /run is a fresh tmpfs: hand both to mysql, then run
	# this script again as mysql (exec, so that the server ends up as PID 1).
	mkdir -p "$DATADIR" /run/mysqld
	find "$DATADIR" ! -user mysql -exec chown mysql:mysql '{}' +
	chown mysql:mysql /run/mysqld
	exec gosu mysql "$0" "$@"
fi

# MARIADB_X, else MYSQL_X, else the default.
setting() {
	eval "printf '%s' \"\${MARIADB_$1:-\${MYSQL_$1:-${2:-}}}\""
}

# One line of output; unlike dash's echo it keeps backslashes (passwords may have some).
line() {
	printf '%s\n' "$*"
}

# A value inside '...' of SQL: backslashes and quotes escaped.
sql_string() {
	printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g"
}

random_password() {
	tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32
}

client() {
	mariadb --defaults-extra-file="$client_cnf" --protocol=socket --socket="$SOCKET" "$@"
}

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
		*.sql) echo "$0: running $script"; client ${database:+"$database"} <"$script" ;;
		*.sql.gz) echo "$0: running $script"; gunzip -c "$script" | client ${database:+"$database"} ;;
		*.sql.xz) echo "$0: running $script"; xz -dc "$script" | client ${database:+"$database"} ;;
		*) if [ -e "$script" ]; then echo "$0: ignoring $script"; fi ;;
		esac
	done
}

initialise() {
	root_password="$(setting ROOT_PASSWORD)"
	allow_empty="${MARIADB_ALLOW_EMPTY_ROOT_PASSWORD:-${MYSQL_ALLOW_EMPTY_PASSWORD:-}}"
	random_root="$(setting RANDOM_ROOT_PASSWORD)"
	root_host="$(setting ROOT_HOST %)"
	database="$(setting DATABASE)"
	user="$(setting USER)"
	password="$(setting PASSWORD)"
	if [ -z "$root_password" ] && [ -z "$allow_empty" ] && [ -z "$random_root" ]; then
		echo "Error: the database is uninitialized and no root password option is set." >&2
		echo "Set one of MARIADB_ROOT_PASSWORD, MARIADB_ALLOW_EMPTY_ROOT_PASSWORD or" >&2
		echo "MARIADB_RANDOM_ROOT_PASSWORD (or their MYSQL_ names)." >&2
		exit 1
	fi
	if [ -n "$random_root" ]; then
		root_password="$(random_password)"
		echo "GENERATED ROOT PASSWORD: $root_password"
	fi
	if [ "$user" = root ]; then
		echo "Error: MARIADB_USER=root: the root user is set up by the *_ROOT_* variables." >&2
		exit 1
	fi

	echo "Initializing database files"
	mariadb-install-db --datadir="$DATADIR" --rpm --auth-root-authentication-method=normal \
		--skip-test-db --skip-name-resolve --skip-log-bin >/dev/null
	echo "Database files initialized"

	# A server on the Unix socket only, so that no client connects before the set-up is done.
	mariadbd --skip-networking --skip-log-bin --socket="$SOCKET" &
	pid=$!
	umask 077
	client_cnf="$(mktemp)"
	printf '[client]\nuser=root\n' >"$client_cnf"
	tries=0
	until client -e 'SELECT 1' >/dev/null 2>&1; do
		tries=$((tries + 1))
		if [ $tries -gt 60 ] || ! kill -0 $pid 2>/dev/null; then
			echo "Error: the temporary server did not start" >&2
			exit 1
		fi
		sleep 1
	done

	# The healthcheck user needs no rights and no password on healthcheck.sh's command line.
	health_password="$(random_password)"
	printf '[mariadb-client]\nport=3306\nsocket=%s\nuser=healthcheck\npassword=%s\nprotocol=tcp\nhost=127.0.0.1\n' \
		"$SOCKET" "$health_password" >"$DATADIR/.my-healthcheck.cnf"

	root_sql="$(sql_string "$root_password")"
	{
		line "SET @@SESSION.SQL_LOG_BIN=0;"
		line "DROP USER IF EXISTS root@'127.0.0.1', root@'::1', ''@'localhost';"
		line "EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS root@\\'', @@hostname, '\\'');"
		line "SET PASSWORD FOR 'root'@'localhost' = PASSWORD('$root_sql');"
		if [ "$root_host" != localhost ]; then
			host_sql="$(sql_string "$root_host")"
			line "CREATE USER 'root'@'$host_sql' IDENTIFIED BY '$root_sql';"
			line "GRANT ALL ON *.* TO 'root'@'$host_sql' WITH GRANT OPTION;"
			line "GRANT PROXY ON ''@'%' TO 'root'@'$host_sql' WITH GRANT OPTION;"
		fi
		health_sql="$(sql_string "$health_password")"
		for host in 127.0.0.1 ::1 localhost; do
			line "CREATE USER 'healthcheck'@'$host' IDENTIFIED BY '$health_sql';"
		done
		if [ -n "$database" ]; then
			line "CREATE DATABASE IF NOT EXISTS \`$(printf '%s' "$database" | sed 's/`/``/g')\`;"
		fi
		if [ -n "$user" ] && [ -n "$password" ]; then
			user_sql="$(sql_string "$user")"
			line "CREATE USER '$user_sql'@'%' IDENTIFIED BY '$(sql_string "$password")';"
			if [ -n "$database" ]; then
				line "GRANT ALL ON \`$(printf '%s' "$database" | sed 's/`/``/g')\`.* TO '$user_sql'@'%';"
			fi
		fi
		line "FLUSH PRIVILEGES;"
	} | client
	# From now on root has its password; the later clients read it from the same file.
	printf '[client]\nuser=root\npassword=%s\n' "$root_password" >"$client_cnf"
	umask 022

	run_initdb_scripts
	rm -f "$client_cnf"
	kill $pid
	wait $pid || true
	echo "MariaDB init process done. Ready for start up."
}

if $server; then
	if [ -d "$DATADIR/mysql" ]; then
		echo "MariaDB database directory appears to contain a database; skipping initialization"
	else
		initialise
	fi
fi

exec "$@"
