#!/bin/bash
# The image's `rangedb` command: the binary (/usr/local/libexec/rangedb/rangedb),
# except that a client command run inside a node's container
# (`docker exec <container> rangedb get /user/123`) talks to that node by
# default. The node listens on its advertised address, not on 127.0.0.1, so
# the binary's default endpoint (127.0.0.1:8081) would not answer there.
# RANGEDB_ENDPOINTS or --endpoints, when given, win.
set -uo pipefail

bin=/usr/local/libexec/rangedb/rangedb

if [ -z "${RANGEDB_ENDPOINTS:-}" ] && [ "${1:-}" != server ] && [ -r /proc/1/cmdline ] \
  && [ "$(cat /proc/1/comm 2>/dev/null)" = rangedb ]; then
  mapfile -d '' argv </proc/1/cmdline || true
  for ((i = 0; i < ${#argv[@]}; i++)); do
    case "${argv[$i]}" in
      --client-address=*) export RANGEDB_ENDPOINTS=${argv[$i]#*=} ;;
      --client-address) export RANGEDB_ENDPOINTS=${argv[$((i + 1))]:-} ;;
    esac
  done
fi

exec "$bin" "$@"
