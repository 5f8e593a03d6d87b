#!/usr/bin/env bash
# Overload (issue 12, item 6): a fresh local 3-node cluster (release build)
# under 1,024 closed-loop clients, then under a flood of 4 MB batches, while
# the nodes' RSS is sampled every second. Prints, per phase: ops/s, busy
# answers, the largest RSS of any node, and the leader changes during it
# (overload must not cost leaderships: heartbeats keep flowing).
#
#   DURATION (20 s per phase)  CLIENTS (1024)  BATCH_CLIENTS (64)
set -euo pipefail
cd "$(dirname "$0")/.."
export DURATION=${DURATION:-20}
clients=${CLIENTS:-1024}
batch_clients=${BATCH_CLIENTS:-64}
driver=${CARGO_TARGET_DIR:-target}/release/rangedb-bench
if [ ! -x "$driver" ]; then
  echo "no release rangedb-bench at $driver: run \`cargo build --release -p rangedb-bench\`" >&2
  exit 2
fi
# shellcheck source=scripts/bench-cluster.sh
source scripts/bench-cluster.sh
# Load splits off: one data range, its leader takes the whole load.
"$bin" --endpoints "$RANGEDB_ENDPOINTS" admin config set split_qps 0 >/dev/null

metric() { # sum of one metric over the three nodes
  for p in 9081 9083 9085; do
    curl -s "http://127.0.0.1:$p/metrics" | awk -v m="$1" '$1 == m { print $2 }'
  done | awk '{ s += $1 } END { printf "%d\n", s }'
}
max_rss_mib() { # the largest RSS among the cluster's rangedb processes
  ps -C rangedb -o rss= | sort -n | tail -1 | awk '{ printf "%d\n", $1 / 1024 }'
}
phase() { # name, then rangedb-bench arguments
  local name=$1
  shift
  local before peak=0 rss out
  before=$(metric rangedb_raft_leader_changes_total)
  "$driver" --system rangedb --endpoints "$RANGEDB_ENDPOINTS" --duration "$DURATION" \
    --warmup 1 "$@" >"$CLUSTER_DIR/out" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    rss=$(max_rss_mib)
    [ "${rss:-0}" -gt "$peak" ] && peak=$rss
    sleep 1
  done
  wait "$pid" || { cat "$CLUSTER_DIR/out"; return 1; }
  out=$(grep -v '^{' "$CLUSTER_DIR/out" | head -2 | tr '\n' ' ')
  echo "$name: $out"
  echo "$name: peak RSS of a node ${peak} MiB; leader changes during it: $(( $(metric rangedb_raft_leader_changes_total) - before ))"
}
"$driver" --system rangedb --endpoints "$RANGEDB_ENDPOINTS" --workload load --clients 64 >/dev/null
echo "idle after loading 10,000 keys: peak RSS of a node $(max_rss_mib) MiB"
phase "put, $clients clients" --workload put --clients "$clients"
phase "4 MB batches, $batch_clients clients" --workload batch --batch 1000 \
  --value-size 4000 --clients "$batch_clients"
