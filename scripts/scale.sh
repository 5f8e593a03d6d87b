#!/usr/bin/env bash
# Scale check: a local 3-node cluster whose nodes each hold RANGES replicas
# (default 10,000), then idle CPU and memory per node.
# Usage: RANGES=10000 IDLE_SECS=30 scripts/scale.sh
set -euo pipefail
bin=${RANGEDB:-${CARGO_TARGET_DIR:-target}/debug/rangedb}
ranges=${RANGES:-10000}
idle=${IDLE_SECS:-30}
export CLUSTER_DIR=${CLUSTER_DIR:-$(mktemp -d /tmp/rangedb-scale.XXXXXX)}
export RANGEDB_ENDPOINTS=localhost:8081,localhost:8083,localhost:8085
here=$(dirname "$0")
# KEEP=1 leaves the cluster running afterwards (stop it with CLUSTER_DIR=... scripts/cluster.sh stop).
[ "${KEEP:-0}" = 1 ] || trap '"$here/cluster.sh" stop' EXIT
"$here/cluster.sh" start
pids=$(cat "$CLUSTER_DIR"/n{1,2,3}.pid)
hz=$(getconf CLK_TCK)
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sleep 5
declare -A base
for p in $pids; do base[$p]=$(rss "$p"); done
start=$(date +%s)
"$bin" bench --ranges "$ranges" --keys "$ranges" --clients 4 --duration 1 --workload put >/dev/null
echo "created $ranges ranges in $(( $(date +%s) - start )) s"
# Let placement finish balancing replicas and leaders (up to 10 minutes),
# then the directory publisher and hibernation settle.
RANGEDB=$bin "$here/placement-settled.sh" 600
echo "placement settled in $(( $(date +%s) - start )) s after the splits began"
sleep ${SETTLE_SECS:-30}
declare -A c0
for p in $pids; do c0[$p]=$(cpu "$p"); done
sleep "$idle"
for p in $pids; do
  used=$(( $(cpu "$p") - ${c0[$p]} ))
  r=$(rss "$p")
  awk -v u="$used" -v hz="$hz" -v s="$idle" -v r="$r" -v b="${base[$p]}" -v n="$ranges" -v p="$p" \
    'BEGIN { printf "node pid %s: idle CPU %.1f%% of one core over %ds; RSS %.0f MiB (%.1f KiB per range above the empty node)\n", p, 100*u/hz/s, s, r/1024, (r-b)/n }'
done
"$bin" admin cluster status | head -4
