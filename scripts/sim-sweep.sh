#!/usr/bin/env bash
# Runs the cargo simulation tests (sim/tests/*.rs) once per seed, one process per seed (statics must
# not leak between seeds), and checks determinism on the first seed.
# Usage: scripts/sim-sweep.sh <first-seed> <count>
set -uo pipefail
first=${1:-1}
count=${2:-20}
target=${SIM_TARGET_DIR:-target/sim}
export RUSTFLAGS="--cfg madsim"
export CARGO_TARGET_DIR="$target"

failed=()
start=$(date +%s)
# Every seed that ever found a bug (seeds/*.toml), then the sweep.
corpus=$(sed -n 's/^seed *= *\([0-9][0-9]*\).*/\1/p' seeds/*.toml 2>/dev/null | sort -n | uniq)
seeds=($corpus)
for ((s = first; s < first + count; s++)); do seeds+=("$s"); done
for s in "${seeds[@]}"; do
  if ! MADSIM_TEST_SEED=$s cargo test -q -p rangedb-sim >"/tmp/rangedb-sim-$s.log" 2>&1; then
    failed+=("$s")
    echo "seed $s FAILED (log: /tmp/rangedb-sim-$s.log); replay: make sim-tests SEED=$s"
    grep -E "panicked|replay:" "/tmp/rangedb-sim-$s.log" | head -5
  fi
done
echo "determinism check on seed $first"
# madsim's check runs a test twice in one process. A node that stops by
# itself (the fsync test) exits through madsim's node teardown, whose
# hash-ordered state is (we infer) seeded afresh only for a process's first run, so
# the in-process check reports a difference there that a replay never
# shows. That test is checked the way a replay works: two processes, the
# same seed, identical output.
if ! MADSIM_TEST_SEED=$first MADSIM_TEST_CHECK_DETERMINISM=1 cargo test -q -p rangedb-sim -- --skip a_failed_fsync >"/tmp/rangedb-sim-det.log" 2>&1; then
  failed+=("determinism:$first")
  echo "seed $first is NOT deterministic (log: /tmp/rangedb-sim-det.log)"
  grep -E "non-determinism|panicked" /tmp/rangedb-sim-det.log | head -5
fi
for run in 1 2; do
  MADSIM_TEST_SEED=$first RUST_LOG=info cargo test -q -p rangedb-sim --test fsync -- --nocapture 2>&1 |
    grep -v "finished in" >"/tmp/rangedb-sim-det-fsync-$run.log"
done
if ! cmp -s /tmp/rangedb-sim-det-fsync-1.log /tmp/rangedb-sim-det-fsync-2.log; then
  failed+=("determinism:fsync:$first")
  echo "seed $first of the fsync test replays differently (diff /tmp/rangedb-sim-det-fsync-{1,2}.log)"
fi
secs=$(( $(date +%s) - start ))
total=$(( ${#seeds[@]} + 1 ))
echo "simulation sweep: corpus [${corpus//$'\n'/ }] + seeds $first..$((first + count - 1)) + determinism, in ${secs}s"
echo "$(( total - ${#failed[@]} )) passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
