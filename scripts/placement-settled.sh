#!/usr/bin/env bash
# Waits until the placement driver has no job left (replicas and leaders
# balanced), for at most MAX_SECS (default 600), polling every 5 s.
# Usage: scripts/placement-settled.sh [MAX_SECS]   (RANGEDB: the binary; RANGEDB_ENDPOINTS)
bin=${RANGEDB:-${CARGO_TARGET_DIR:-target}/debug/rangedb}
max=${1:-600}
for _ in $(seq 1 $(( max / 5 ))); do
  jobs=$("$bin" --output json admin cluster status 2>/dev/null |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["placement"].get("jobs", [])))' 2>/dev/null || echo 1)
  [ "$jobs" = 0 ] && exit 0
  sleep 5
done
exit 0
