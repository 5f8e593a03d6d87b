#!/usr/bin/env bash
# How cost grows (docs/performance.md): throughput and p99 of puts and gets
# against the number of clients, and against the number of ranges the keys
# are spread over, plus each node's RSS against the number of ranges; then
# the plots (scripts/plot-scaling.py, matplotlib).
#
# Release build, a fresh local 3-node cluster per range count, load splits
# off (the range count is the one asked for), 10,000 keys, 100-byte values.
# Usage: scripts/bench-scaling.sh [OUT_DIR]   (default docs/)
#   CLIENTS_LIST  client counts at 1 range   (default "1 4 16 64 256")
#   RANGES_LIST   range counts at 64 clients (default "1 64 1024")
#   DURATION      seconds per run            (default 5)
# Writes OUT_DIR/scaling.csv, scaling-clients.png and scaling-ranges.png.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs}
clients_list=${CLIENTS_LIST:-1 4 16 64 256}
ranges_list=${RANGES_LIST:-1 64 1024}
duration=${DURATION:-5}
bin=${RANGEDB:-${CARGO_TARGET_DIR:-target}/release/rangedb}
export RANGEDB=$bin
if [ ! -x "$bin" ]; then
  echo "no release binary at $bin: run \`make release\` (benchmarks use the release profile)" >&2
  exit 2
fi
python3 -c 'import matplotlib' 2>/dev/null || {
  echo "installing matplotlib (pip) for the plots"
  python3 -m pip install -q matplotlib
}
export RANGEDB_ENDPOINTS=localhost:8081,localhost:8083,localhost:8085
csv="$out/scaling.csv"
mkdir -p "$out"
echo "series,workload,clients,ranges,ops_per_sec,p50_ms,p99_ms,errors,rss_mib_max,rss_mib_mean" >"$csv"

cluster_dir=""
stop() { [ -n "$cluster_dir" ] && CLUSTER_DIR=$cluster_dir bash scripts/cluster.sh stop; cluster_dir=""; }
trap stop EXIT
start() {
  stop
  cluster_dir=$(mktemp -d /tmp/rangedb-scaling.XXXXXX)
  CLUSTER_DIR=$cluster_dir bash scripts/cluster.sh start >/dev/null
  "$bin" admin config set split_qps 0 >/dev/null
}
# Waits (up to 5 minutes) until placement has no job left (replicas and
# leaders balanced after the splits), then a few seconds more.
settle() {
  bash scripts/placement-settled.sh 300
  sleep 5
}
# RSS of the three nodes in MiB: "max mean".
rss() {
  for n in n1 n2 n3; do awk '/VmRSS/ {print $2 / 1024}' "/proc/$(cat "$cluster_dir/$n.pid")/status"; done |
    awk '{s += $1; if ($1 > m) m = $1} END {printf "%.0f %.0f", m, s / NR}'
}
# One run; appends a CSV row. Args: series workload clients ranges [extra bench args].
run() {
  local series=$1 workload=$2 clients=$3 ranges=$4
  shift 4
  local j
  j=$("$bin" --output json bench --workload "$workload" --clients "$clients" --duration "$duration" \
    --keys 10000 "$@" | tail -1)
  read -r rmax rmean <<<"$(rss)"
  python3 - "$j" "$series" "$ranges" "$rmax" "$rmean" >>"$csv" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); series, ranges, rmax, rmean = sys.argv[2:]
print(f'{series},{r["workload"]},{r["clients"]},{ranges},{r["ops_per_sec"]:.0f},{r["p50_ms"]:.2f},{r["p99_ms"]:.2f},{r["errors"]},{rmax},{rmean}')
PY
  tail -1 "$csv" | awk -F, '{printf "%-8s %-4s clients %4s ranges %5s: %7s ops/s p50 %6s ms p99 %7s ms, %s errors, node RSS max %s MiB\n", $1, $2, $3, $4, $5, $6, $7, $8, $9}'
}

echo "== against clients (one range) =="
start
for c in $clients_list; do
  run clients put "$c" 1
  run clients get "$c" 1 # (a get run first writes every key once)
done

echo "== against ranges (64 clients) =="
for r in $ranges_list; do
  start
  t0=$(date +%s)
  "$bin" bench --workload put --clients 4 --duration 1 --keys 10000 --ranges "$r" 2>&1 | grep -v '^split ' | tail -1
  settle
  echo "   ($r ranges: split, balanced and settled in $(( $(date +%s) - t0 )) s)"
  run ranges put 64 "$r"
  run ranges get 64 "$r"
done
stop
python3 scripts/plot-scaling.py "$csv" "$out"
