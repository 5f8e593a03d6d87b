#!/usr/bin/env bash
# A/B two RangeDB binaries (e.g. before and after a change): for each round,
# a fresh local 3-node cluster per binary (A then B), load splits off, the
# same 10,000 keys loaded, then the same runs of rangedb-bench — puts at 64
# clients for 20 s (which leaves about 15 versions per key), then scans,
# gets, YCSB-A and puts at 64 clients, and puts at 1 client. One line per
# run: binary, workload, clients, ops/s, p50 ms, machine CPU busy %.
#
#   bash scripts/bench-ab.sh OLD_BINARY NEW_BINARY [ROUNDS (2)]
#   DRIVER: the rangedb-bench binary (default: the release build's)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: bash scripts/bench-ab.sh OLD_BINARY NEW_BINARY [ROUNDS]" >&2
  exit 2
fi
a=$1 b=$2 rounds=${3:-2}
driver=${DRIVER:-${CARGO_TARGET_DIR:-target}/release/rangedb-bench}
for bin in "$a" "$b" "$driver"; do
  [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }
done
eps=localhost:8081,localhost:8083,localhost:8085

one() { # label binary
  local dir
  dir=$(mktemp -d /tmp/rangedb-ab.XXXXXX)
  RANGEDB=$2 CLUSTER_DIR=$dir bash scripts/cluster.sh start >/dev/null
  # shellcheck disable=SC2064
  trap "RANGEDB=$2 CLUSTER_DIR=$dir bash scripts/cluster.sh stop >/dev/null 2>&1 || true; rm -rf $dir" EXIT
  "$2" --endpoints $eps admin config set split_qps 0 >/dev/null
  sleep 3 # leadership settles
  "$driver" --system rangedb --endpoints $eps --workload load --clients 64 >/dev/null
  for run in "put 64 20" "scan 64 8" "get 64 8" "ycsb-a 64 8" "put 64 8" "put 1 5"; do
    read -r w c d <<<"$run"
    "$driver" --system rangedb --endpoints $eps --workload "$w" --clients "$c" \
      --duration "$d" --warmup 1 | tail -1 | python3 -c '
import json, sys
j = json.load(sys.stdin)
print(sys.argv[1], j["workload"], j["clients"], "%.0f/s" % j["ops_per_sec"],
      "p50 %.2f ms" % j["p50_ms"], "cpu %.0f%%" % j["cpu_busy_pct"])' "$1"
  done
  RANGEDB=$2 CLUSTER_DIR=$dir bash scripts/cluster.sh stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  trap - EXIT
}

for r in $(seq 1 "$rounds"); do
  echo "round $r of $rounds"
  one A "$a"
  one B "$b"
done
