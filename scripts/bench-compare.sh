#!/usr/bin/env bash
# RangeDB against etcd on this machine, in one run (`make bench-compare`).
#
# Starts etcd (3 members, from Debian's etcd-server package, installed when
# missing) and RangeDB (3 nodes, release build) on loopback, loads the same
# 10,000 keys into both, then interleaves runs of the same driver
# (rangedb-bench) against them — etcd, RangeDB, etcd, RangeDB, … — ROUNDS
# times per row, and prints the medians, their ratio and the target of each
# row. Everything it starts is stopped on exit. Bounded: about
# ROUNDS × 5 rows × 2 systems × (DURATION + WARMUP + 1) seconds.
#
#   ROUNDS (3)  DURATION (10 s per run)  WARMUP (1 s)  KEEP=1 keeps the data
#   SPLIT_QPS (0: RangeDB's load splits off, one data range like etcd's one group)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
duration=${DURATION:-10}
warmup=${WARMUP:-1}
target_dir=${CARGO_TARGET_DIR:-target}
rangedb=$target_dir/release/rangedb
driver=$target_dir/release/rangedb-bench
work=$(mktemp -d /tmp/rangedb-compare.XXXXXX)
results=$work/results.jsonl

if ! command -v etcd >/dev/null; then
  echo "installing etcd from Debian's etcd-server package"
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -q etcd-server >/dev/null
  else
    sudo apt-get install -y -q etcd-server >/dev/null
  fi
fi
for p in 2379 2380 22379 22380 32379 32380 8080 8081 8082 8083 8084 8085; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p is in use: stop what listens there first (etcd or RangeDB already running?)" >&2
    exit 2
  fi
done

echo "building the release binaries (rangedb, rangedb-bench)"
cargo build --release --bin rangedb -p rangedb -q
cargo build --release -p rangedb-bench -q

etcd_pids=()
stop_all() {
  for pid in "${etcd_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  RANGEDB=$rangedb CLUSTER_DIR=$work/rangedb bash scripts/cluster.sh stop || true
  for pid in "${etcd_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap stop_all EXIT

echo "starting etcd: 3 members on loopback ($(etcd --version | head -1))"
cluster=e1=http://127.0.0.1:2380,e2=http://127.0.0.1:22380,e3=http://127.0.0.1:32380
for m in 1 2 3; do
  case $m in 1) c=2379 p=2380 ;; 2) c=22379 p=22380 ;; 3) c=32379 p=32380 ;; esac
  etcd --name "e$m" --data-dir "$work/etcd$m" \
    --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
    --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token bench \
    --log-level error --logger zap >"$work/etcd$m.log" 2>&1 &
  etcd_pids+=($!)
done
etcd_eps=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
for _ in $(seq 1 100); do
  ETCDCTL_API=3 etcdctl --endpoints="$etcd_eps" put /probe ok >/dev/null 2>&1 && break
  sleep 0.2
done

echo "starting RangeDB: 3 nodes on loopback (release build)"
RANGEDB=$rangedb CLUSTER_DIR=$work/rangedb bash scripts/cluster.sh start
rangedb_eps=localhost:8081,localhost:8083,localhost:8085
# The same layout as etcd: one replicated group of three for the data. Load
# splits (split_qps) would cut the hot range into several Raft groups on the
# same three processes sharing two cores: more messages and fsync rounds,
# no more CPU (measured here: put at 64 clients 6,400/s falling to 4,600/s
# as the range split, against 8,800/s with split_qps 0). SPLIT_QPS=2500
# runs with the default instead.
"$rangedb" --endpoints "$rangedb_eps" admin config set split_qps "${SPLIT_QPS:-0}" >/dev/null
sleep 3 # leadership settles (leader balancing) before anything is measured

run() { # system endpoints workload clients
  "$driver" --system "$1" --endpoints "$2" --workload "$3" --clients "$4" \
    --duration "$duration" --warmup "$warmup" | tee /dev/stderr | tail -1 >>"$results"
}
echo "loading 10,000 keys into each"
"$driver" --system etcd --endpoints "$etcd_eps" --workload load --clients 64 | tail -1 >/dev/null
"$driver" --system rangedb --endpoints "$rangedb_eps" --workload load --clients 64 | tail -1 >/dev/null

rows=("put 1" "put 64" "get 64" "ycsb-a 64" "scan 64")
for r in $(seq 1 "$rounds"); do
  echo "round $r of $rounds"
  for row in "${rows[@]}"; do
    read -r w c <<<"$row"
    run etcd "$etcd_eps" "$w" "$c" 2>&1 >/dev/null | grep -v "^{" | sed 's/^/  /'
    run rangedb "$rangedb_eps" "$w" "$c" 2>&1 >/dev/null | grep -v "^{" | sed 's/^/  /'
  done
done

python3 - "$results" "$rounds" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
rounds = sys.argv[2]
def med(system, w, c, field):
    xs = [r[field] for r in runs if r["system"] == system and r["workload"] == w and r["clients"] == c]
    return statistics.median(xs) if xs else float("nan")
rows = [
    ("put, 1 client, p50 latency", "put", 1, "p50_ms", "ms", "<=", 0.5),
    ("put, 64 clients", "put", 64, "ops_per_sec", "/s", ">=", 2.0),
    ("linearizable get, 64 clients", "get", 64, "ops_per_sec", "/s", ">=", 2.0),
    ("YCSB-A (zipfian 0.99), 64 clients", "ycsb-a", 64, "ops_per_sec", "/s", ">=", 2.0),
    ("100-key scan, 64 clients", "scan", 64, "ops_per_sec", "/s", ">=", 3.0),
]
print()
print(f"medians of {rounds} interleaved runs (same driver, same machine)")
print(f"| row | etcd | RangeDB | RangeDB / etcd | target | met | CPU busy etcd / RangeDB |")
print(f"|---|---|---|---|---|---|---|")
met_all = True
for name, w, c, f, unit, op, target in rows:
    e, g = med("etcd", w, c, f), med("rangedb", w, c, f)
    ratio = g / e if e else float("nan")
    met = ratio <= target if op == "<=" else ratio >= target
    met_all &= met
    fmt = (lambda x: f"{x:.2f} ms") if unit == "ms" else (lambda x: f"{x:,.0f}/s")
    ce, cg = med("etcd", w, c, "cpu_busy_pct"), med("rangedb", w, c, "cpu_busy_pct")
    print(f"| {name} | {fmt(e)} | {fmt(g)} | {ratio:.2f}x | {op} {target}x | {'yes' if met else 'NO'} | {ce:.0f}% / {cg:.0f}% |")
print()
print("every target met" if met_all else "not every target met")
PY
