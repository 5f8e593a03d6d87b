#!/bin/bash
# rangedb-healthcheck [healthz|readyz]: probes this container's node over its
# HTTP listener; exit 0 when the endpoint answers 200, 1 otherwise (Docker's
# HEALTHCHECK contract).
#
# The address comes from RANGEDB_HTTP_ADDRESS, else from the --http-address
# of the running server (PID 1, started by rangedb-entrypoint), else
# 127.0.0.1:9081. An address on 0.0.0.0 is probed on 127.0.0.1.
set -uo pipefail

path=${1:-healthz}
case "$path" in
  healthz|readyz|livez) ;;
  *) echo "usage: rangedb-healthcheck [healthz|readyz]" >&2; exit 2 ;;
esac

addr=${RANGEDB_HTTP_ADDRESS:-}
if [ -z "$addr" ] && [ -r /proc/1/cmdline ]; then
  mapfile -d '' argv </proc/1/cmdline || true
  for ((i = 0; i < ${#argv[@]}; i++)); do
    case "${argv[$i]}" in
      --http-address=*) addr=${argv[$i]#*=} ;;
      --http-address) addr=${argv[$((i + 1))]:-} ;;
    esac
  done
fi
addr=${addr:-127.0.0.1:9081}
case "$addr" in
  0.0.0.0:*) addr=127.0.0.1:${addr#0.0.0.0:} ;;
  \[::\]:*) addr=127.0.0.1:${addr#\[::\]:} ;;
esac

exec curl --silent --show-error --fail --max-time 4 --output /dev/null "http://$addr/$path"
