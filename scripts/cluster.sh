#!/usr/bin/env bash
# Starts a local 3-node cluster (the original README's commands) in the
# background, with data and logs under ${CLUSTER_DIR:-/tmp/rangedb-cluster}.
# Usage: scripts/cluster.sh start|stop
set -euo pipefail
bin=${RANGEDB:-${CARGO_TARGET_DIR:-target}/debug/rangedb}
dir=${CLUSTER_DIR:-/tmp/rangedb-cluster}
peers=localhost:8080,localhost:8082,localhost:8084

case "${1:-start}" in
start)
  mkdir -p "$dir"
  "$bin" server --peer-address=localhost:8080 --client-address=localhost:8081 \
    --peers=$peers --cluster-init --data-dir="$dir/n1" >/dev/null 2>"$dir/n1.log" & echo $! >"$dir/n1.pid"
  "$bin" server --peer-address=localhost:8082 --client-address=localhost:8083 \
    --join=$peers --data-dir="$dir/n2" >/dev/null 2>"$dir/n2.log" & echo $! >"$dir/n2.pid"
  "$bin" server --peer-address=localhost:8084 --client-address=localhost:8085 \
    --join=$peers --data-dir="$dir/n3" >/dev/null 2>"$dir/n3.log" & echo $! >"$dir/n3.pid"
  export RANGEDB_ENDPOINTS=localhost:8081,localhost:8083,localhost:8085
  for _ in $(seq 1 100); do
    if "$bin" --timeout 2 put /cluster/probe ok >/dev/null 2>&1; then
      echo "cluster up: endpoints $RANGEDB_ENDPOINTS (data and logs in $dir)"
      exit 0
    fi
    sleep 0.3
  done
  echo "cluster did not come up; see $dir/*.log" >&2
  exit 1
  ;;
stop)
  # SIGTERM drains a node (up to 10 s) before it exits: wait for it, so
  # the ports are free when this returns.
  pids=()
  for n in n1 n2 n3; do
    if [ -f "$dir/$n.pid" ]; then
      pid=$(cat "$dir/$n.pid")
      kill "$pid" 2>/dev/null && pids+=("$pid")
      rm -f "$dir/$n.pid"
    fi
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 200); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  done
  ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
