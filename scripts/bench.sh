#!/usr/bin/env bash
# Group-commit benchmark: a fresh local 3-node cluster, then put throughput
# with 1 and with 64 clients. Prints both figures and their ratio.
set -euo pipefail
source scripts/bench-cluster.sh
one=$("$bin" bench --workload put --clients 1 --duration "$duration" | tee -a /dev/stderr | tail -1)
many=$("$bin" bench --workload put --clients 64 --duration "$duration" | tee -a /dev/stderr | tail -1)
"$bin" bench --workload get --clients 64 --duration "$duration" --keys 2000 | tee -a /dev/stderr >/dev/null
python3 - "$one" "$many" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"group commit: 1 client {a['ops_per_sec']:.0f} puts/s, 64 clients {b['ops_per_sec']:.0f} puts/s, ratio {b['ops_per_sec']/max(a['ops_per_sec'],1):.1f}x")
PY
