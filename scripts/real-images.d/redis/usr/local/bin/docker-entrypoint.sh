#!/bin/sh
# Redis with the interface of Docker Hub's redis image: options or a config file as the
# arguments run redis-server; redis-server drops from root to the redis user, in /data.
set -eu

# `IMAGE --option value` or `IMAGE /path/redis.conf`: arguments of redis-server.
case "${1:-}" in -* | *.conf) set -- redis-server "$@" ;; esac

if [ "${1:-}" = redis-server ] && [ "$(id -u)" = 0 ]; then
	# The volume may arrive root-owned. exec keeps stdin, so `redis-server -` still reads its
	# configuration from the pipe the caller gave this script.
	find . ! -user redis -exec chown redis '{}' +
	exec gosu redis "$0" "$@"
fi

if [ "${1:-}" = redis-server ]; then
	# The official image turns protected mode off at build time (the container's network is
	# the boundary); Debian's build keeps it on, so say it on the command line, unless the
	# caller set it or brought a config file (whose setting then holds).
	case "$*" in
	*protected-mode*) ;;
	*)
		case "${2:-}" in
		"" | -*) set -- "$@" --protected-mode no ;;
		esac
		;;
	esac
	# Files the server writes are the redis user's only, as in the official image.
	if [ "$(umask)" = 0022 ]; then umask 0077; fi
fi

exec "$@"
