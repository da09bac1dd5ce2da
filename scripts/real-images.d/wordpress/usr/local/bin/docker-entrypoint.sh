#!/bin/sh
# WordPress with the interface of Docker Hub's wordpress image (Apache variant): on the first
# start the files of /usr/src/wordpress are copied into the (empty) working folder, the
# /var/www/html volume, and wp-config.php is written from WORDPRESS_DB_HOST (host[:port]),
# WORDPRESS_DB_USER, WORDPRESS_DB_PASSWORD, WORDPRESS_DB_NAME, WORDPRESS_TABLE_PREFIX,
# WORDPRESS_DEBUG and WORDPRESS_CONFIG_EXTRA, with fresh keys and salts.
set -eu

# One line of output; unlike dash's echo it keeps backslashes (passwords may have some).
line() {
	printf '%s\n' "$*"
}

# A value inside '...' of PHP: backslashes and quotes escaped.
php_string() {
	printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g"
}

salt() {
	tr -dc 'A-Za-z0-9!#%()*+,.:;<=>?@^_{|}~-' </dev/urandom | head -c 64
}

write_config() {
	{
		line "<?php"
		line "// Written at the container's first start from its WORDPRESS_* environment."
		line "define( 'DB_NAME', '$(php_string "${WORDPRESS_DB_NAME:-wordpress}")' );"
		line "define( 'DB_USER', '$(php_string "${WORDPRESS_DB_USER:-example username}")' );"
		line "define( 'DB_PASSWORD', '$(php_string "${WORDPRESS_DB_PASSWORD:-example password}")' );"
		line "define( 'DB_HOST', '$(php_string "${WORDPRESS_DB_HOST:-mysql}")' );"
		line "define( 'DB_CHARSET', '$(php_string "${WORDPRESS_DB_CHARSET:-utf8}")' );"
		line "define( 'DB_COLLATE', '$(php_string "${WORDPRESS_DB_COLLATE:-}")' );"
		for key in AUTH_KEY SECURE_AUTH_KEY LOGGED_IN_KEY NONCE_KEY \
			AUTH_SALT SECURE_AUTH_SALT LOGGED_IN_SALT NONCE_SALT; do
			line "define( '$key', '$(salt)' );"
		done
		line "\$table_prefix = '$(php_string "${WORDPRESS_TABLE_PREFIX:-wp_}")';"
		if [ -n "${WORDPRESS_DEBUG:-}" ]; then
			line "define( 'WP_DEBUG', true );"
		else
			line "define( 'WP_DEBUG', false );"
		fi
		# Behind a reverse proxy that ends TLS, links must stay https.
		line "if ( isset( \$_SERVER['HTTP_X_FORWARDED_PROTO'] ) && strpos( \$_SERVER['HTTP_X_FORWARDED_PROTO'], 'https' ) !== false ) {"
		line "	\$_SERVER['HTTPS'] = 'on';"
		line "}"
		if [ -n "${WORDPRESS_CONFIG_EXTRA:-}" ]; then
			printf '%s\n' "$WORDPRESS_CONFIG_EXTRA"
		fi
		line "if ( ! defined( 'ABSPATH' ) ) {"
		line "	define( 'ABSPATH', __DIR__ . '/' );"
		line "}"
		line "require_once ABSPATH . 'wp-settings.php';"
	} >wp-config.php
}

case "${1:-}" in
apache2*)
	if [ "$(id -u)" = 0 ]; then
		owner=www-data:www-data
	else
		owner="$(id -u):$(id -g)"
	fi
	if [ ! -e index.php ] && [ ! -e wp-includes/version.php ]; then
		echo "WordPress not found in $PWD - copying now..."
		cp -a /usr/src/wordpress/. .
		[ "$(id -u)" != 0 ] || chown -R "$owner" .
		echo "Complete! WordPress has been successfully copied to $PWD"
	fi
	if [ ! -e wp-config.php ] && env | grep -q '^WORDPRESS_'; then
		write_config
		chown "$owner" wp-config.php
		chmod 640 wp-config.php
	fi
	;;
esac

exec "$@"
