#!/bin/sh
# Entrypoint of the redis stand-in, after the upstream image's docker-entrypoint.sh.
set -eu
case "$1" in
  -*|*.conf) set -- redis-server "$@" ;;
esac
if [ "$1" = redis-server ]; then
  shift
  conf=""
  case "${1:-}" in
    *.conf) conf="$1"; shift ;;
  esac
  # Without a config file Debian's build defaults protected mode on, which refuses every
  # client on the compose network; upstream's build defaults it off.
  set -- redis-server $conf --protected-mode no "$@"
  if [ "$(id -u)" = 0 ]; then
    chown -R redis:redis .
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
  fi
fi
exec "$@"
