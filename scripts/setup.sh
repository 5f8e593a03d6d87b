#!/usr/bin/env bash
# Installs the system packages RangeDB's build needs, when they are missing.
# RocksDB's Rust bindings need libclang (bindgen) and a C++ compiler.
set -euo pipefail

missing=()
# bindgen needs libclang itself (libclang.so / libclang-N.so, not libclang-cpp)
# and clang's builtin headers: on Debian/Ubuntu, the libclang-dev package.
have_libclang() {
  if command -v dpkg >/dev/null 2>&1; then
    dpkg -s libclang-dev >/dev/null 2>&1
    return
  fi
  ldconfig -p 2>/dev/null | grep -qE 'libclang(-[0-9.]+)?\.so' && return 0
  ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1
}
have_libclang || missing+=(libclang-dev)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
# The REPL's pseudo-terminal test drives it with Python's pty module.
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# `make docker-lint` installs its linters from PyPI into a venv.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
# The web console's test loads the page in headless Chromium (where apt
# can install it; elsewhere that part of the test says it skips).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  missing+=(chromium)
fi
# The etcd-client crate (a dev-dependency) generates its code with protoc.
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
# The etcd gateway's tests drive it with Debian's etcdctl and compare it
# with a real etcd (tests/etcd.rs; they say they skip where neither can be
# installed).
if command -v apt-get >/dev/null 2>&1; then
  command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
  command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "setup: installing ${missing[*]} (to build RocksDB's bindings and run the tests; chromium: the console's test; etcd: the etcd gateway's)" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "setup: please install: ${missing[*]} (libclang for bindgen, a C++ compiler)" >&2
  exit 1
fi
