#!/usr/bin/env bash
# Builds the two local base images the Dockerfile starts from, without an
# image registry (none is reachable on the development and CI machines):
#
#   rangedb-base:bookworm     Debian bookworm (debootstrap, minbase) plus
#                             ca-certificates and curl: the runtime stage.
#   rangedb-builder:bookworm  the same plus clang/libclang-dev, g++, make,
#                             pkg-config and this machine's Rust toolchain
#                             (copied from rustup: rustup's downloads are
#                             not reachable either): the build stage.
#
# Only deb.debian.org is needed. Idempotent: an image that exists is kept
# (--force rebuilds both). Needs root (debootstrap, chroot) and Docker.
#
#   bash deploy/base-image.sh [--force]
#
# Environment: RANGEDB_BASE_IMAGE, RANGEDB_BUILDER_IMAGE (image names),
# DEBIAN_MIRROR (default http://deb.debian.org/debian), RUST_TOOLCHAIN_DIR
# (default: the sysroot of the `rustc` on PATH; must be >= 1.88),
# RANGEDB_EXTRA_CA_DIR (default /usr/local/share/ca-certificates: its *.crt,
# e.g. a TLS-inspecting proxy's CA, are trusted in the builder image, so that
# cargo reaches crates.io from inside the build as it does from this machine).
set -euo pipefail

BASE_IMAGE=${RANGEDB_BASE_IMAGE:-rangedb-base:bookworm}
BUILDER_IMAGE=${RANGEDB_BUILDER_IMAGE:-rangedb-builder:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
MIN_RUST=1.88
EXTRA_CA_DIR=${RANGEDB_EXTRA_CA_DIR:-/usr/local/share/ca-certificates}
RUNTIME_PACKAGES=ca-certificates,curl
BUILD_PACKAGES=(clang libclang-dev g++ make pkg-config ca-certificates git)

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

log() { echo "base-image: $*" >&2; }
die() { echo "base-image: error: $*" >&2; exit 1; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

need_base=1
need_builder=1
if [ "$force" -eq 0 ]; then
  have_image "$BASE_IMAGE" && need_base=0
  have_image "$BUILDER_IMAGE" && need_builder=0
fi
if [ "$need_base" -eq 0 ] && [ "$need_builder" -eq 0 ]; then
  log "$BASE_IMAGE and $BUILDER_IMAGE exist (--force rebuilds them)"
  exit 0
fi

docker info >/dev/null 2>&1 || die "no Docker daemon answers (docker info failed)"
[ "$(id -u)" -eq 0 ] || die "debootstrap and chroot need root: run it with sudo"

if ! command -v debootstrap >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || die "install debootstrap (Debian/Ubuntu: apt-get install debootstrap)"
  log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# The Rust toolchain for the builder image, found before the long steps.
toolchain=""
if [ "$need_builder" -eq 1 ]; then
  toolchain=${RUST_TOOLCHAIN_DIR:-}
  if [ -z "$toolchain" ]; then
    command -v rustc >/dev/null 2>&1 || die "no rustc on PATH: set RUST_TOOLCHAIN_DIR to a Rust toolchain (>= $MIN_RUST)"
    toolchain=$(rustc --print sysroot)
  fi
  if ! [ -x "$toolchain/bin/cargo" ] || ! [ -x "$toolchain/bin/rustc" ]; then
    die "$toolchain has no bin/cargo and bin/rustc (want a rustup toolchain dir)"
  fi
  version=$("$toolchain/bin/rustc" -V | awk '{print $2}')
  if [ "$(printf '%s\n%s\n' "$MIN_RUST" "${version%%-*}" | sort -V | head -n1)" != "$MIN_RUST" ]; then
    die "rustc $version in $toolchain is older than $MIN_RUST"
  fi
  log "Rust toolchain: $toolchain (rustc $version)"
fi

work=$(mktemp -d /var/tmp/rangedb-base.XXXXXX)
root="$work/rootfs"
mounted=()
# Unmounts what mount_root mounted, innermost first.
umount_all() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount -l "${mounted[$i]}" 2>/dev/null || true
  done
  mounted=()
}
cleanup() {
  umount_all
  # --one-file-system: never into a mount (/dev, /proc) left behind.
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

log "debootstrap $SUITE (minbase) from $MIRROR into $root"
debootstrap --variant=minbase --include="$RUNTIME_PACKAGES" "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }

cat >"$root/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
# Images stay small: no docs, man pages or apt caches.
cat >"$root/etc/dpkg/dpkg.cfg.d/01-docker-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
cat >"$root/etc/apt/apt.conf.d/01-docker-clean" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
EOF
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
mount_root() {
  mount -t proc proc "$root/proc" && mounted+=("$root/proc")
  mount --bind /dev "$root/dev" && mounted+=("$root/dev")
  mount --bind /dev/pts "$root/dev/pts" && mounted+=("$root/dev/pts")
  cp /etc/resolv.conf "$root/etc/resolv.conf"
}
umount_root() {
  umount_all
  : >"$root/etc/resolv.conf"
}
clean_root() {
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/log/* "$root"/tmp/* "$root"/usr/share/doc/*/changelog* "$root"/usr/share/man/*
}
# `docker import` of the root filesystem, with the image settings a
# Dockerfile's FROM would have.
import_root() {
  local image=$1
  shift
  tar -C "$root" --numeric-owner -c . | docker import "$@" \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    - "$image" >/dev/null
  log "imported $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
}

mount_root
log "apt-get update && upgrade (security fixes)"
in_root apt-get update -qq
in_root apt-get -y -qq upgrade >/dev/null 2>"$work/apt.log" || { cat "$work/apt.log" >&2; die "apt-get upgrade failed"; }
umount_root
clean_root

if [ "$need_base" -eq 1 ]; then
  import_root "$BASE_IMAGE" --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
fi

if [ "$need_builder" -eq 1 ]; then
  mount_root
  log "installing ${BUILD_PACKAGES[*]}"
  in_root apt-get update -qq
  in_root apt-get install -y -qq "${BUILD_PACKAGES[@]}" >/dev/null 2>"$work/apt.log" \
    || { cat "$work/apt.log" >&2; die "apt-get install failed"; }
  umount_root
  # cargo fetches crates over HTTPS: a machine behind a TLS-inspecting proxy
  # trusts extra CAs, and so must the build (builder image only).
  shopt -s nullglob
  cas=("$EXTRA_CA_DIR"/*.crt)
  shopt -u nullglob
  if [ ${#cas[@]} -gt 0 ]; then
    log "trusting this machine's extra CAs in the builder: ${cas[*]##*/}"
    cp "${cas[@]}" "$root/usr/local/share/ca-certificates/"
    in_root update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates failed"
  fi
  clean_root
  log "copying the Rust toolchain into /usr/local/rust (without its docs)"
  mkdir -p "$root/usr/local/rust" "$root/usr/local/cargo"
  tar -C "$toolchain" --exclude=./share/doc -c . | tar -C "$root/usr/local/rust" -x
  import_root "$BUILDER_IMAGE" \
    --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'WORKDIR /src'
  # (In a container: rustc finds its libraries through /proc/self/exe.)
  if ! docker run --rm "$BUILDER_IMAGE" bash -c 'rustc -V && cargo -V && clang --version | head -n 1' >&2; then
    docker rmi "$BUILDER_IMAGE" >/dev/null 2>&1 || true
    die "the toolchain copied into $BUILDER_IMAGE does not run there"
  fi
fi
log "done"
