#!/usr/bin/env bash
# Where an operation's time goes: a fresh local 3-node cluster (release
# build, load splits off), one `rangedb bench` run, and the nodes' own
# histograms (/metrics scraped before and after) turned into the mean time
# of every gRPC method, of a Raft proposal, of a Ready round and of the
# storage writes, with how many of each one operation caused.
# Usage: scripts/bench-breakdown.sh [bench args]   (default: --workload put --clients 1)
#   e.g. scripts/bench-breakdown.sh --workload txn --clients 1 --ranges 2 --keys 2000
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-cluster.sh
"$bin" admin config set split_qps 0 >/dev/null
[ $# -gt 0 ] || set -- --workload put --clients 1
scrape() { for p in 9081 9083 9085; do curl -fsS "http://localhost:$p/metrics"; echo; done >"$1"; }
before=$(mktemp) after=$(mktemp)
# Splits and loading happen in a first short run, outside the measurement.
"$bin" bench "$@" --duration 1 >/dev/null
scrape "$before"
j=$("$bin" --output json bench "$@" --warmup 0 --duration "$duration" | tail -1)
scrape "$after"
python3 - "$before" "$after" "$j" <<'PY'
import json, re, sys
from collections import defaultdict

def load(path):
    sums = defaultdict(float)
    for line in open(path):
        m = re.match(r'^(rangedb_[a-z_]+?)_(sum|count)(\{[^}]*\})? ([0-9.e+-]+)$', line.strip())
        if not m:
            continue
        name, part, labels, v = m.groups()
        sums[(name + (labels or ""), part)] += float(v)
    return sums

b, a = load(sys.argv[1]), load(sys.argv[2])
r = json.loads(sys.argv[3])
ops = r["ops"]
print(f'{r["workload"]}: {r["clients"]} clients, {r["ops_per_sec"]:.0f} ops/s, client-side p50 {r["p50_ms"]:.2f} ms, mean over {ops} ops')
print(f'{"histogram (all 3 nodes)":<78} {"per op":>7} {"mean ms":>8}')
names = sorted({k for k, _ in a})
for n in names:
    c = a.get((n, "count"), 0) - b.get((n, "count"), 0)
    s = a.get((n, "sum"), 0) - b.get((n, "sum"), 0)
    if c <= 0:
        continue
    print(f'{n:<78} {c / ops:>7.2f} {1000 * s / c:>8.3f}')
PY
rm -f "$before" "$after"
