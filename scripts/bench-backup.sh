#!/usr/bin/env bash
# Backup and restore throughput on a local 3-node cluster: loads SIZE_MB
# (default 1024) of 1 KiB values, backs them up to a local directory, then
# restores them into a fresh 3-node cluster. Prints MB/s for both.
# Usage: RANGEDB=<bin> [SIZE_MB=1024] bash scripts/bench-backup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${RANGEDB:-${CARGO_TARGET_DIR:-target}/debug/rangedb}
size_mb=${SIZE_MB:-1024}
work=$(mktemp -d /tmp/rangedb-bench-backup.XXXXXX)
export RANGEDB_ENDPOINTS=localhost:8081,localhost:8083,localhost:8085
keys=$((size_mb * 1024))
stop() { CLUSTER_DIR=$1 RANGEDB=$bin bash scripts/cluster.sh stop; }
trap 'stop "$work/a"; stop "$work/b"' EXIT

CLUSTER_DIR=$work/a RANGEDB=$bin bash scripts/cluster.sh start
"$bin" delete /cluster/probe >/dev/null
echo "loading $keys keys of 1 KiB ($size_mb MiB)..."
"$bin" bench --workload get --keys "$keys" --value-size 1024 --ranges 16 --duration 1 --clients 1 >/dev/null
start=$(date +%s.%N)
"$bin" --timeout 60 --output json admin backup create "$work/backup" >"$work/backup.json"
end=$(date +%s.%N)
bytes=$(python3 -c "import json;print(json.load(open('$work/backup.json'))['bytes'])")
python3 -c "b=$bytes; t=$end-$start; print(f'backup:  {b/2**20:.0f} MiB in {t:.1f} s = {b/2**20/t:.1f} MiB/s')"
stop "$work/a"

CLUSTER_DIR=$work/b RANGEDB=$bin bash scripts/cluster.sh start
"$bin" delete /cluster/probe >/dev/null
start=$(date +%s.%N)
"$bin" --timeout 60 --output json admin backup restore "$work/backup" >"$work/restore.json"
end=$(date +%s.%N)
python3 -c "b=$bytes; t=$end-$start; print(f'restore: {b/2**20:.0f} MiB in {t:.1f} s = {b/2**20/t:.1f} MiB/s (checksums, writes and the final comparison)')"
du -sh "$work/backup" | sed 's/^/backup directory: /'
rm -rf "$work"
