#!/bin/bash
# The image's entrypoint.
#
#   rangedb-entrypoint server [flags]   start a node (defaults below, then exec)
#   rangedb-entrypoint <rangedb command> [args]   e.g. `put k v`, `--endpoints h:8081 get k`
#   rangedb-entrypoint <program> [args]           e.g. `bash`
#
# A node started here listens where it advertises: `rangedb server` binds its
# peer and client listeners to the address its --peer-address/--client-address
# host names resolve to (it has no separate listen address). Inside a
# container the default host is the container's own host name, which resolves
# to the container's IP: other containers and published ports reach it, but
# 127.0.0.1 inside the container does not (`rangedb` on PATH, the wrapper
# rangedb-cli.sh, points client commands at this node's --client-address).
#
# Defaults, each only when its flag is absent:
#   --peer-address    $RANGEDB_ADVERTISE_HOST:8080   (host default: `hostname`)
#   --client-address  $RANGEDB_ADVERTISE_HOST:8081
#   --http-address    0.0.0.0:<client port + 1000>   (HTTP is never advertised)
#   --data-dir        $RANGEDB_DATA_DIR              (/var/lib/rangedb/data)
#
# Kubernetes StatefulSet mode (RANGEDB_K8S_SERVICE=<headless service>): the
# host is the pod's DNS name <pod>.<service>.<namespace>.svc.<domain>, and the
# pod's ordinal picks the bootstrap: pod 0 `--peers <pods 0..N-1> --cluster-init`,
# pods 1..N-1 `--join <same list>` (ids 2..N), pods >= N join as new nodes.
# N = RANGEDB_INITIAL_NODES (default 3). The DNS suffix comes from the pod's
# `hostname -f` (<pod>.<service>.<namespace>.svc.<domain>, from kubelet's
# /etc/hosts), else from POD_NAMESPACE (or the service account's namespace
# file) and RANGEDB_K8S_DOMAIN (default cluster.local).
#
# A node started with --cluster-init on an empty data directory first asks
# the other listed peers whether they already form a cluster, and refuses to
# start a second one (RANGEDB_FORCE_INIT=1 overrides; see the end).
#
# RANGEDB_ENTRYPOINT_DRY_RUN=1 prints the command instead of running it.
set -euo pipefail

run() {
  if [ "${RANGEDB_ENTRYPOINT_DRY_RUN:-}" = 1 ]; then
    printf '%q ' "$@"
    echo
    exit 0
  fi
  exec "$@"
}

die() {
  echo "rangedb-entrypoint: $*" >&2
  exit 2
}

if [ $# -eq 0 ]; then
  set -- server --cluster-init
fi

case "$1" in
  server) shift ;;
  -*|put|get|delete|range|batch|txn|repl|bench|admin|help)
    run rangedb "$@" ;;
  *)
    run "$@" ;;
esac

args=("$@")

# has_flag NAME: whether --NAME or --NAME=... is among the server's flags.
has_flag() {
  local a
  for a in "${args[@]}"; do
    case "$a" in
      --"$1"|--"$1"=*) return 0 ;;
    esac
  done
  return 1
}

# flag_value NAME: the value of --NAME (either form), empty when absent.
flag_value() {
  local i
  for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
      --"$1"=*) echo "${args[$i]#*=}"; return ;;
      --"$1") echo "${args[$((i + 1))]:-}"; return ;;
    esac
  done
}

host=${RANGEDB_ADVERTISE_HOST:-}
extra=()

if [ -n "${RANGEDB_K8S_SERVICE:-}" ]; then
  service=$RANGEDB_K8S_SERVICE
  pod=${POD_NAME:-$(hostname)}
  ordinal=${pod##*-}
  set_name=${pod%-*}
  case "$ordinal" in
    ''|*[!0-9]*) die "pod name $pod does not end in -<ordinal> (a StatefulSet pod?)" ;;
  esac
  initial=${RANGEDB_INITIAL_NODES:-3}
  case "$initial" in
    ''|*[!0-9]*|0) die "RANGEDB_INITIAL_NODES must be a positive number, not '$initial'" ;;
  esac
  peer_port=${RANGEDB_PEER_PORT:-8080}
  # The pod's FQDN as kubelet wrote it into /etc/hosts (any cluster domain),
  # else <service>.<namespace>.svc.<domain>.
  fqdn=$(hostname -f 2>/dev/null || true)
  if [ -z "${RANGEDB_K8S_DOMAIN:-}" ] && [[ "$fqdn" == "$pod.$service."* ]]; then
    suffix=${fqdn#"$pod".}
  else
    namespace=${POD_NAMESPACE:-}
    if [ -z "$namespace" ] && [ -r /var/run/secrets/kubernetes.io/serviceaccount/namespace ]; then
      namespace=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)
    fi
    [ -n "$namespace" ] || die "set POD_NAMESPACE (downward API: metadata.namespace)"
    suffix="$service.$namespace.svc.${RANGEDB_K8S_DOMAIN:-cluster.local}"
  fi
  host=${host:-$pod.$suffix}
  peers=""
  for ((i = 0; i < initial; i++)); do
    peers+="${peers:+,}$set_name-$i.$suffix:$peer_port"
  done
  if ! has_flag peers && ! has_flag join && ! has_flag cluster-init; then
    if [ "$ordinal" -eq 0 ]; then
      extra+=(--peers="$peers" --cluster-init)
    else
      extra+=(--join="$peers")
    fi
  fi
fi

host=${host:-$(hostname)}
has_flag peer-address || extra+=(--peer-address="$host:${RANGEDB_PEER_PORT:-8080}")
if ! has_flag client-address; then
  extra+=(--client-address="$host:${RANGEDB_CLIENT_PORT:-8081}")
  client=$host:${RANGEDB_CLIENT_PORT:-8081}
else
  client=$(flag_value client-address)
fi
if ! has_flag http-address; then
  port=${client##*:}
  case "$port" in
    ''|*[!0-9]*) die "cannot read the client port from --client-address '$client'" ;;
  esac
  extra+=(--http-address="0.0.0.0:$((port + 1000))")
fi
if ! has_flag data-dir; then
  extra+=(--data-dir="${RANGEDB_DATA_DIR:-/var/lib/rangedb/data}")
fi

# A node that creates the cluster (--cluster-init) on an empty data directory
# while its peers already belong to a cluster has lost its data (a deleted
# volume, a new PVC): starting would make a second cluster beside the first.
# Refuse, unless RANGEDB_FORCE_INIT=1. (Peers that are starting or joining
# answer with no cluster id yet, or not at all: a new cluster goes ahead.)
all=("${extra[@]}" "${args[@]}")
args=("${all[@]}")
if has_flag cluster-init && [ "${RANGEDB_FORCE_INIT:-}" != 1 ]; then
  data_dir=$(flag_value data-dir)
  if [ -z "$(ls -A "$data_dir" 2>/dev/null)" ]; then
    self=$(flag_value peer-address)
    others=()
    IFS=, read -r -a listed <<<"$(flag_value peers)"
    for p in "${listed[@]}"; do
      [ -n "$p" ] && [ "$p" != "$self" ] && others+=("$p")
    done
    for p in "${others[@]}"; do
      # Peer listeners serve the admin API too.
      id=$(rangedb --endpoints "$p" --timeout 3 --output json admin node status 2>/dev/null \
        | sed -n 's/.*"cluster_id":"\([^"][^"]*\)".*/\1/p' | head -n 1) || true
      if [ -n "$id" ]; then
        die "refusing --cluster-init: the data directory $data_dir is empty, but peer $p already belongs \
to cluster $id. This node's data is gone (a new volume?); starting would create a second cluster. \
Restore its data directory, or set RANGEDB_FORCE_INIT=1 to start a new cluster anyway."
      fi
    done
  fi
fi

run rangedb server "${args[@]}"
