#!/usr/bin/env bash
# Transaction benchmark: a fresh local 3-node cluster; in one run, a single
# put and a 2-key cross-range transaction at 1 client (p50 ratio), then
# transactions/s at 64 clients, a read-only transaction against a get at 1
# client, and put/get at 64 clients. The last line of each `rangedb bench`
# run is a JSON record; a summary follows.
set -euo pipefail
source scripts/bench-cluster.sh
run() { "$bin" bench --duration "$duration" --ranges 2 --keys 2000 "$@" | tee -a /dev/stderr | tail -1; }
put1=$(run --workload put --clients 1)
txn1=$(run --workload txn --clients 1)
txn64=$(run --workload txn --clients 64)
get1=$(run --workload get --clients 1)
rtxn1=$(run --workload read-txn --clients 1)
put64=$(run --workload put --clients 64)
get64=$(run --workload get --clients 64)
python3 - "$put1" "$txn1" "$txn64" "$get1" "$rtxn1" "$put64" "$get64" <<'PY'
import json, sys
put1, txn1, txn64, get1, rtxn1, put64, get64 = (json.loads(a) for a in sys.argv[1:])
def p50(r): return r["p50_ms"]
print(f"txn (2 keys, 2 ranges) p50 {p50(txn1):.2f} ms vs put p50 {p50(put1):.2f} ms: {p50(txn1)/p50(put1):.2f}x (target <= 2.5x)")
print(f"read-only txn p50 {p50(rtxn1):.2f} ms vs get p50 {p50(get1):.2f} ms: {p50(rtxn1)/p50(get1):.2f}x")
print(f"64 clients: txn {txn64['ops_per_sec']:.0f}/s, put {put64['ops_per_sec']:.0f}/s, get {get64['ops_per_sec']:.0f}/s")
PY
