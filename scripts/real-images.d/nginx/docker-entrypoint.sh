#!/bin/sh
# nginx with the interface of Docker Hub's nginx image: before nginx starts, the executable
# /docker-entrypoint.d/*.sh scripts run in order (images built FROM this one add their own).
set -eu

case "${1:-}" in
nginx | nginx-debug)
	for script in /docker-entrypoint.d/*.sh; do
		[ -e "$script" ] || continue
		if [ -x "$script" ]; then
			[ -n "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ] || echo "$0: launching $script"
			"$script"
		else
			[ -n "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ] || echo "$0: ignoring $script, not executable"
		fi
	done
	[ -n "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ] || echo "$0: ready for start up"
	;;
esac

exec "$@"
