# Sourced by the benchmark scripts: a fresh local 3-node cluster (stopped
# on exit), $bin, $duration (DURATION, default 10 s) and RANGEDB_ENDPOINTS.
bin=${RANGEDB:-${CARGO_TARGET_DIR:-target}/release/rangedb}
# The cluster runs the same binary (cluster.sh reads RANGEDB).
export RANGEDB=$bin
if [ ! -x "$bin" ]; then
  echo "no release binary at $bin: run \`make release\` (benchmarks use the release profile)" >&2
  exit 2
fi
export CLUSTER_DIR=${CLUSTER_DIR:-$(mktemp -d /tmp/rangedb-bench.XXXXXX)}
duration=${DURATION:-10}
trap 'bash scripts/cluster.sh stop' EXIT
bash scripts/cluster.sh start
export RANGEDB_ENDPOINTS=localhost:8081,localhost:8083,localhost:8085
