#!/bin/sh
# The health checks of Docker Hub's mariadb image that the catalog uses: each option given is a
# test, and all must pass. The healthcheck user's credentials come from the .my-healthcheck.cnf
# written at initialisation, so none are needed on the command line.
#   --connect                     the server accepts a TCP connection (the set-up is over)
#   --innodb_initialized          InnoDB is ready
#   --innodb_buffer_pool_loaded   the buffer pool dump was loaded
#   --datadir=DIR                 where .my-healthcheck.cnf is (default /var/lib/mysql)
#   --su-mysql, --su=USER         accepted: the checks need no file access as another user
set -eu

datadir=/var/lib/mysql
tests=""
for arg in "$@"; do
	case "$arg" in
	--connect | --innodb_initialized | --innodb_buffer_pool_loaded) tests="$tests ${arg#--}" ;;
	--datadir=*) datadir="${arg#*=}" ;;
	--su-mysql | --su=*) ;;
	*)
		echo "healthcheck.sh: unknown option $arg" >&2
		exit 2
		;;
	esac
done
if [ -z "$tests" ]; then
	echo "healthcheck.sh: give at least one test, e.g. --connect --innodb_initialized" >&2
	exit 2
fi

cnf="$datadir/.my-healthcheck.cnf"
if [ -r "$cnf" ]; then
	defaults="--defaults-extra-file=$cnf"
else
	defaults="--no-defaults"
fi

query() {
	mariadb "$defaults" --skip-column-names --batch -e "$1"
}

for test in $tests; do
	case "$test" in
	connect)
		query 'SELECT 1' >/dev/null || { echo "healthcheck connect failed" >&2; exit 1; } ;;
	innodb_initialized)
		[ "$(query "SELECT 1 FROM information_schema.ENGINES WHERE engine = 'innodb' AND support IN ('YES', 'DEFAULT', 'ENABLED')")" = 1 ] ||
			{ echo "healthcheck innodb_initialized failed" >&2; exit 1; } ;;
	innodb_buffer_pool_loaded)
		query "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'Innodb_buffer_pool_load_status'" |
			grep -q '^Buffer pool(s) load completed' ||
			{ echo "healthcheck innodb_buffer_pool_loaded failed" >&2; exit 1; } ;;
	esac
done
