#!/usr/bin/env bash
# The container packaging, tested for real: builds the image from the
# Dockerfile, starts docker-compose.3-node.yml under a unique project name,
# runs the original README's commands (inside the network and from the host
# through the published ports), then keeps a writer running that records
# every acknowledged key while one node is killed (`docker kill`) and
# restarted, and while another is cut off (`docker network disconnect`) and
# reconnected. Every acknowledged key must then read back, with its value,
# through every node's endpoint and from every node's own replica.
#
#   bash scripts/docker-test.sh          (make docker-test)
#
# Without a Docker daemon it prints one SKIPPED line and exits 0.
# Environment:
#   RANGEDB_IMAGE           image tag to build and test (rangedb:latest)
#   RANGEDB_SKIP_BUILD=1    test the image as it is (no docker build)
#   RANGEDB_BUILD_CONTEXT   worktree (default: the files as they are) or a
#                           git revision, e.g. HEAD (its committed files only)
#   RANGEDB_BUILD_STAGE_IMAGE  tag kept on the build stage (rangedb-build:latest)
#   CARGO_BUILD_JOBS        compile jobs inside the build (default: all cores)
#   RANGEDB_TEST_PHASE_SECS seconds of writing in each phase (default 12)
#   RANGEDB_TEST_KEEP=1     leave the cluster running after the test
set -euo pipefail
cd "$(dirname "$0")/.." || exit 1

if ! docker info >/dev/null 2>&1; then
  echo "docker-test: SKIPPED: no Docker daemon"
  exit 0
fi
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "docker-test: SKIPPED: docker-compose is not installed"
  exit 0
fi

IMAGE=${RANGEDB_IMAGE:-rangedb:latest}
PHASE=${RANGEDB_TEST_PHASE_SECS:-12}
COMPOSE_FILE=docker-compose.3-node.yml
PROJECT=rangedbtest$$
NET=${PROJECT}_rangedb
WRITER=${PROJECT}_writer
LOGDIR=${RANGEDB_TEST_LOGDIR:-/tmp/rangedb-docker-test.$$}
mkdir -p "$LOGDIR"
NODES=(rangedb1 rangedb2 rangedb3)
declare -A CLIENT_PORT=([rangedb1]=8081 [rangedb2]=8083 [rangedb3]=8085)
declare -A HTTP_PORT=([rangedb1]=9081 [rangedb2]=9083 [rangedb3]=9085)
ENDPOINTS=rangedb1:8081,rangedb2:8083,rangedb3:8085
T0=$(date +%s)
failures=()
summary=()

say() { printf '[%4ds] %s\n' "$(($(date +%s) - T0))" "$*"; }
fail() {
  say "FAIL: $*"
  failures+=("$*")
}
note() { summary+=("$*"); }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

compose() { docker-compose -f "$COMPOSE_FILE" -p "$PROJECT" "$@"; }
container() { compose ps -q "$1"; }
# rdb NODE ARGS...: the CLI inside NODE's container, against the cluster.
rdb() {
  local node=$1
  shift
  docker exec -e RANGEDB_ENDPOINTS="$ENDPOINTS" "$(container "$node")" rangedb "$@"
}
ready() { docker exec "$(container "$1")" rangedb-healthcheck readyz >/dev/null 2>&1; }
# wait_ready SECONDS NODE...: until every NODE's /readyz answers 200.
wait_ready() {
  local limit=$1 start n pending
  shift
  start=$(date +%s)
  while :; do
    pending=()
    for n in "$@"; do ready "$n" || pending+=("$n"); done
    [ ${#pending[@]} -eq 0 ] && return 0
    if [ $(($(date +%s) - start)) -ge "$limit" ]; then
      fail "not ready after ${limit}s: ${pending[*]}"
      return 1
    fi
    sleep 1
  done
}

teardown() {
  local rc=$?
  set +e
  docker exec "$WRITER" touch /tmp/stop >/dev/null 2>&1
  if [ -n "$(docker ps -aq -f "name=^${WRITER}$")" ]; then
    docker logs "$WRITER" >"$LOGDIR/writer.log" 2>&1
    docker rm -f -v "$WRITER" >/dev/null 2>&1
  fi
  if [ -n "$(docker ps -aq -f "label=com.docker.compose.project=$PROJECT")" ]; then
    compose logs --no-color >"$LOGDIR/cluster.log" 2>&1
    if [ "${RANGEDB_TEST_KEEP:-}" = 1 ]; then
      say "cluster left running: docker-compose -f $COMPOSE_FILE -p $PROJECT down -v"
    else
      compose down -v --remove-orphans >/dev/null 2>&1
    fi
  fi
  say "logs in $LOGDIR"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- image ----
say "base images (deploy/base-image.sh; skipped when present)"
bash deploy/base-image.sh
if [ "${RANGEDB_SKIP_BUILD:-}" = 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "using $IMAGE as it is (RANGEDB_SKIP_BUILD=1)"
else
  context=${RANGEDB_BUILD_CONTEXT:-worktree}
  say "docker build -t $IMAGE (context: $context; log: $LOGDIR/build.log)"
  b0=$(now)
  build=(docker build --build-arg JOBS="${CARGO_BUILD_JOBS:-}")
  # The build stage first, tagged (RANGEDB_BUILD_STAGE_IMAGE): its layers,
  # the compiled dependencies above all, are then no dangling images that
  # `docker image prune` would delete; the second build reuses them.
  stage_tag=${RANGEDB_BUILD_STAGE_IMAGE:-rangedb-build:latest}
  if [ "$context" = worktree ]; then
    build_image() { "${build[@]}" --target build -t "$stage_tag" . && "${build[@]}" -t "$IMAGE" .; }
  else
    build_image() {
      git archive --format=tar -o "$LOGDIR/context.tar" "$context" \
        && "${build[@]}" --target build -t "$stage_tag" - <"$LOGDIR/context.tar" \
        && "${build[@]}" -t "$IMAGE" - <"$LOGDIR/context.tar"
    }
  fi
  if ! build_image >"$LOGDIR/build.log" 2>&1; then
    tail -n 40 "$LOGDIR/build.log"
    fail "docker build failed"
    exit 1
  fi
  rm -f "$LOGDIR/context.tar"
  note "image build: $(elapsed "$b0") s"
fi
note "image: $IMAGE, $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"

# -------------------------------------------------------------- cluster ----
# A /24 no other network uses; host ports chosen by Docker (no clash with a
# cluster already running on 8081...).
mapfile -t nets < <(docker network ls -q)
used=$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' "${nets[@]}" 2>/dev/null || true)
subnet=""
for i in $(seq 100 250); do
  case " $used " in
    *" 172.29.$i.0/"*) ;;
    *) subnet=172.29.$i; break ;;
  esac
done
export RANGEDB_IMAGE=$IMAGE RANGEDB_SUBNET=$subnet
declare -A IP=([rangedb1]=$subnet.11 [rangedb2]=$subnet.12 [rangedb3]=$subnet.13)
ADD_HOSTS=()
for n in "${NODES[@]}"; do ADD_HOSTS+=(--add-host "$n:${IP[$n]}"); done
# The compose file's host ports (8081, 9081, ...) when they are free, so the
# CLI on the host can follow leader hints (rangedb2:8083) as the docs say
# (127.0.0.1 rangedb1 rangedb2 rangedb3 in /etc/hosts); else any free ports.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
default_ports=1
for n in "${NODES[@]}"; do
  port_free "${CLIENT_PORT[$n]}" && port_free "${HTTP_PORT[$n]}" || default_ports=0
done
if [ "$default_ports" -eq 0 ]; then
  for i in 1 2 3; do
    export "RANGEDB${i}_CLIENT_PORT=" "RANGEDB${i}_HTTP_PORT="
  done
  say "host ports 8081-8085/9081-9085 are taken: publishing on free ports"
fi
say "docker-compose -f $COMPOSE_FILE -p $PROJECT up -d (subnet $subnet.0/24)"
c0=$(now)
compose up -d >"$LOGDIR/up.log" 2>&1 || { cat "$LOGDIR/up.log"; fail "compose up failed"; exit 1; }
wait_ready 180 "${NODES[@]}" || exit 1
note "3 nodes ready (/readyz 200 on each) $(elapsed "$c0") s after compose up"
say "cluster ready"

# Docker's own view: the compose health checks turn healthy.
for n in "${NODES[@]}"; do
  for _ in $(seq 1 60); do
    [ "$(docker inspect -f '{{.State.Health.Status}}' "$(container "$n")")" = healthy ] && break
    sleep 1
  done
  h=$(docker inspect -f '{{.State.Health.Status}}' "$(container "$n")")
  [ "$h" = healthy ] || fail "$n: docker health status $h"
done

# ------------------------------------------------ the README's commands ----
# expect NAME WANT ACTUAL
expect() {
  if [ "$2" = "$3" ]; then
    say "  ok: $1"
  else
    fail "$1: want '$2', got '$3'"
  fi
}
say "README commands (docker exec, inside the network)"
expect "put" "OK" "$(rdb rangedb1 put /user/123 '{"name": "John", "email": "john@example.com"}' 2>&1)"
expect "get (via node 2)" '{"name": "John", "email": "john@example.com"}' "$(rdb rangedb2 get /user/123 2>&1)"
expect "range" '/user/123: {"name": "John", "email": "john@example.com"}' "$(rdb rangedb3 range /user/ /user/z 2>&1)"
expect "batch put" "OK (2 keys)" "$(rdb rangedb1 batch put /user/456 '{"name": "Jane"}' /user/789 '{"name": "Joe"}' 2>&1)"
expect "range --limit 2" $'/user/123: {"name": "John", "email": "john@example.com"}\n/user/456: {"name": "Jane"}' \
  "$(rdb rangedb2 range /user/ /user/z --limit 2 2>&1)"
expect "delete" "OK" "$(rdb rangedb3 delete /user/789 2>&1)"
set +e
out=$(rdb rangedb1 get /user/789 2>&1)
rc=$?
set -e
expect "get of a deleted key (exit 1)" "1 Error: key not found: /user/789" "$rc $out"
status=$(rdb rangedb1 admin cluster status 2>&1 || true)
expect "admin cluster status: 3 nodes running" 3 "$(grep -c 'Status: NODE_RUNNING' <<<"$status" || true)"
echo "$status" >"$LOGDIR/cluster-status.txt"
expect "admin node status (3 endpoints)" 3 "$(rdb rangedb1 admin node status 2>&1 | grep -c '^Node ' || true)"
expect "txn commit" "OK" "$(docker exec -e RANGEDB_ENDPOINTS="$ENDPOINTS" "$(container rangedb2)" bash -c \
  'set -e; t=$(rangedb txn begin | awk "{print \$NF}"); export RANGEDB_TXN=$t
   rangedb txn put /user/555 "{\"name\": \"Ann\"}" >/dev/null; rangedb txn commit >/dev/null; echo OK' 2>&1)"
expect "get after txn" '{"name": "Ann"}' "$(rdb rangedb3 get /user/555 2>&1)"
expect "docker exec <node> rangedb get, no endpoints given (the node's own)" '{"name": "Ann"}' \
  "$(docker exec "$(container rangedb2)" env -u RANGEDB_ENDPOINTS rangedb get /user/555 2>&1)"

say "from the host, through the published ports"
host_eps=""
for n in "${NODES[@]}"; do
  cp=$(compose port "$n" "${CLIENT_PORT[$n]}")
  hp=$(compose port "$n" "${HTTP_PORT[$n]}")
  host_eps+="${host_eps:+,}$cp"
  expect "curl http://$hp/healthz" "ok" "$(curl -sS --max-time 5 "http://$hp/healthz" 2>&1)"
  expect "curl http://$hp/readyz" "ready" "$(curl -sS --max-time 5 "http://$hp/readyz" 2>&1)"
  metrics=$(curl -sS --max-time 5 "http://$hp/metrics" 2>&1 | grep -c '^# TYPE ' || true)
  if [ "$metrics" -gt 0 ]; then say "  ok: curl http://$hp/metrics ($metrics metric families)"
  else fail "curl http://$hp/metrics: no Prometheus metric families"; fi
done
# The CLI on the host's network (the image's binary): only the published
# ports are reachable from there. Leader hints name rangedb<i>:<port>: with
# the compose file's ports they resolve as the docs' /etc/hosts line makes
# them (--add-host here).
if [ "$default_ports" -eq 1 ]; then
  host_rdb() {
    docker run --rm --network host --add-host rangedb1:127.0.0.1 --add-host rangedb2:127.0.0.1 \
      --add-host rangedb3:127.0.0.1 "$IMAGE" --endpoints "$host_eps" "$@"
  }
  for i in 1 2 3; do
    expect "host: put #$i" "OK" "$(host_rdb put "/user/99$i" '{"name": "Host"}' 2>&1)"
  done
  expect "host: get" '{"name": "Host"}' "$(host_rdb get /user/991 2>&1)"
  expect "host: range" 6 "$(host_rdb range /user/ /user/z 2>&1 | grep -c '^/user/' || true)"
else
  note "host CLI not tested: the compose file's host ports were taken"
fi

# --------------------------------------------------- writer under faults ----
# One key at a time; ACK only on exit 0. Exit 3 is an unknown outcome (the
# write may or may not have applied): neither counted nor required.
say "steady writer starts"
# Each write starts at the next node of the list (a new CLI process tries
# its endpoints in order).
docker run -d --name "$WRITER" --network "$NET" "${ADD_HOSTS[@]}" \
  --entrypoint bash "$IMAGE" -c '
    eps=(rangedb1:8081,rangedb2:8083,rangedb3:8085 rangedb2:8083,rangedb3:8085,rangedb1:8081
         rangedb3:8085,rangedb1:8081,rangedb2:8083)
    i=0
    while [ ! -e /tmp/stop ]; do
      i=$((i + 1)); k=$(printf "/docker-test/k%06d" "$i")
      if out=$(rangedb --endpoints "${eps[$((i % 3))]}" --timeout 10 put "$k" "v$i" 2>&1); then
        echo "ACK $(date +%s.%N) $k v$i"
      else
        rc=$?; echo "ERR $(date +%s.%N) $k rc=$rc ${out//$'"'"'\n'"'"'/ }"
      fi
    done' >/dev/null
acks() { docker logs "$WRITER" 2>/dev/null | grep -c '^ACK' || true; }
sleep "$PHASE"
say "  $(acks) writes acknowledged before any fault"

# The node leading most ranges (the one whose loss costs most).
leader_node() {
  rdb rangedb1 --output json admin cluster status 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
nodes = sorted(s["nodes"], key=lambda n: (-len(n.get("leader_of") or []), n["node_id"]))
print("rangedb%d" % nodes[0]["node_id"])' 2>/dev/null || echo rangedb1
}

victim=$(leader_node)
say "docker kill $victim (leads the most ranges)"
before=$(acks)
docker kill "$(container "$victim")" >/dev/null
k0=$(now)
sleep "$PHASE"
during=$(($(acks) - before))
say "  $during writes acknowledged while $victim was down"
[ "$during" -gt 0 ] || fail "no write acknowledged while $victim was down"
note "docker kill $victim: $during writes acknowledged in the ${PHASE}s it was down"
docker start "$(container "$victim")" >/dev/null
wait_ready 120 "${NODES[@]}" && note "$victim ready again $(elapsed "$k0") s after the kill (restart after ${PHASE}s)"
sleep "$PHASE"

cut=$(leader_node)
cid=$(container "$cut")
ip=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$cid")
say "docker network disconnect $NET $cut ($ip; leads the most ranges)"
before=$(acks)
docker network disconnect "$NET" "$cid"
p0=$(now)
unready=""
for _ in $(seq 1 "$PHASE"); do
  if [ -z "$unready" ] && ! ready "$cut"; then unready=$(elapsed "$p0"); fi
  sleep 1
done
during=$(($(acks) - before))
say "  $during writes acknowledged while $cut was partitioned"
[ "$during" -gt 0 ] || fail "no write acknowledged while $cut was partitioned"
note "partition of $cut: $during writes acknowledged in ${PHASE}s; its /readyz turned 503 after ${unready:-never (within ${PHASE}s)} s"
docker network connect --ip "$ip" --alias "$cut" "$NET" "$cid"
wait_ready 120 "${NODES[@]}" && note "$cut ready again $(elapsed "$p0") s after the partition began (healed after ${PHASE}s)"
sleep "$PHASE"

docker exec "$WRITER" touch /tmp/stop
for _ in $(seq 1 30); do
  [ "$(docker inspect -f '{{.State.Running}}' "$WRITER")" = false ] && break
  sleep 1
done
docker logs "$WRITER" >"$LOGDIR/writer.log" 2>&1
acked=$(grep -c '^ACK' "$LOGDIR/writer.log" || true)
errors=$(grep -c '^ERR' "$LOGDIR/writer.log" || true)
unknown=$(grep -c '^ERR .* rc=3 ' "$LOGDIR/writer.log" || true)
gap=$(awk '$1 == "ACK" { if (p != "" && $2 - p > g) g = $2 - p; p = $2 } END { printf "%.1f", g }' "$LOGDIR/writer.log")
note "writer: $acked acknowledged, $errors failed ($unknown of them outcome unknown); longest gap between acknowledgements $gap s"
say "writer stopped: $acked acknowledged, $errors failed"

# ----------------------------------------------------------- read back ----
grep '^ACK' "$LOGDIR/writer.log" | awk '{print $3 ": " $4}' | sort >"$LOGDIR/acked.txt"
for n in "${NODES[@]}"; do
  # Through this node's endpoint (linearizable: routed to the leaders).
  docker exec "$(container "$n")" rangedb --endpoints "$n:${CLIENT_PORT[$n]}" \
    range /docker-test/ /docker-test0 --limit 100000 2>&1 | sort >"$LOGDIR/range-$n.txt" || true
  missing=$(comm -23 "$LOGDIR/acked.txt" "$LOGDIR/range-$n.txt" | wc -l)
  if [ "$missing" -eq 0 ]; then
    say "  ok: all $acked acknowledged keys read back through $n's endpoint"
  else
    fail "$missing acknowledged keys missing or wrong through $n's endpoint (e.g. $(comm -23 "$LOGDIR/acked.txt" "$LOGDIR/range-$n.txt" | head -n 3 | tr '\n' ' '))"
  fi
done
# From each node's own replica (`get --local`), once it has caught up; the
# three nodes at once.
check_local() {
  docker exec -i "$(container "$1")" bash -c '
    ep=$1; pending=$(cat); deadline=$((SECONDS + 60))
    while [ -n "$pending" ]; do
      left=""
      while IFS= read -r line; do
        k=${line%%: *}; v=${line#*: }
        [ "$(rangedb --endpoints "$ep" get --local "$k" 2>/dev/null)" = "$v" ] || left+="$line"$'"'"'\n'"'"'
      done <<<"$pending"
      pending=${left%$'"'"'\n'"'"'}
      [ -z "$pending" ] && break
      [ $SECONDS -ge $deadline ] && { printf "%s\n" "$pending"; exit 1; }
      sleep 2
    done' _ "$1:${CLIENT_PORT[$1]}" <"$LOGDIR/acked.txt" >"$LOGDIR/local-missing-$1.txt" 2>&1
}
declare -A checker
for n in "${NODES[@]}"; do
  check_local "$n" &
  checker[$n]=$!
done
for n in "${NODES[@]}"; do
  if wait "${checker[$n]}"; then
    say "  ok: $n's replica holds all $acked acknowledged keys (get --local)"
  else
    fail "$(wc -l <"$LOGDIR/local-missing-$n.txt") acknowledged keys missing from $n's replica after 60 s (get --local; see $LOGDIR/local-missing-$n.txt)"
  fi
done

# ------------------------------------------------------------- summary ----
echo
echo "docker-test summary ($(($(date +%s) - T0)) s):"
for s in "${summary[@]}"; do echo "  - $s"; done
if [ ${#failures[@]} -gt 0 ]; then
  echo "docker-test: FAILED (${#failures[@]}):"
  for f in "${failures[@]}"; do echo "  - $f"; done
  exit 1
fi
echo "docker-test: PASSED"
