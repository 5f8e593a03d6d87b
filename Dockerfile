# RangeDB container image: one `rangedb` binary (server and CLI) on Debian
# bookworm, run as a non-root user, data in a volume.
#
# No image registry is needed: the two base images are built locally by
#   bash deploy/base-image.sh        # rangedb-base:bookworm, rangedb-builder:bookworm
# then
#   docker build -t rangedb:latest .                             # all cores
#   docker build --build-arg JOBS=1 -t rangedb .     # gentle on a shared machine
# See docs/docker-deployment.md.

ARG BUILDER_IMAGE=rangedb-builder:bookworm
ARG BASE_IMAGE=rangedb-base:bookworm

# ---------------------------------------------------------------- build ----
FROM ${BUILDER_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Parallel compile jobs (unset or empty: one per core).
ARG JOBS=""
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
WORKDIR /src

# 1. The dependencies alone (RocksDB's C++ build is ~30 CPU-minutes),
#    against stub sources and a stub build script (so the build-dependencies
#    compile here too): this layer stays cached until Cargo.toml or
#    Cargo.lock change. (The legacy builder has no cache mounts.)
COPY Cargo.toml Cargo.lock ./
COPY sim/Cargo.toml sim/Cargo.toml
COPY bench/Cargo.toml bench/Cargo.toml
RUN mkdir -p src sim/src bench/src \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > build.rs \
 && echo 'fn main() {}' > bench/src/main.rs \
 && touch src/lib.rs sim/src/lib.rs \
 && cargo build --release --locked --bin rangedb ${JOBS:+--jobs "$JOBS"} \
 && rm -rf src build.rs target/release/rangedb target/release/deps/rangedb-* \
       target/release/deps/librangedb-* target/release/.fingerprint/rangedb-* \
       target/release/build/rangedb-*

# 2. RangeDB itself (a few minutes). The whole context (see .dockerignore),
#    so files the crate embeds are there wherever they live; the stubs'
#    fingerprints are gone and the sources touched, so cargo rebuilds it.
COPY . .
RUN find src proto build.rs -type f -exec touch {} + \
 && cargo build --release --locked --bin rangedb ${JOBS:+--jobs "$JOBS"} \
 && install -D -m 0755 target/release/rangedb /out/rangedb \
 && /out/rangedb --version

# -------------------------------------------------------------- runtime ----
FROM ${BASE_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
LABEL org.opencontainers.image.title="RangeDB" \
      org.opencontainers.image.description="A range-partitioned, Raft-replicated key-value database" \
      org.opencontainers.image.licenses="MIT"

# A fixed uid/gid so volumes and Kubernetes fsGroup line up.
RUN groupadd --system --gid 10001 rangedb \
 && useradd --system --uid 10001 --gid rangedb --home-dir /home/rangedb --create-home \
      --shell /usr/sbin/nologin rangedb \
 && install -d -o rangedb -g rangedb -m 0750 /var/lib/rangedb

# `rangedb` on PATH is a small wrapper: inside a node's container, client
# commands default to that node (see deploy/docker/rangedb-cli.sh).
COPY --from=build /out/rangedb /usr/local/libexec/rangedb/rangedb
COPY deploy/docker/rangedb-cli.sh /usr/local/bin/rangedb
COPY deploy/docker/rangedb-entrypoint.sh /usr/local/bin/rangedb-entrypoint
COPY deploy/docker/rangedb-healthcheck.sh /usr/local/bin/rangedb-healthcheck

# 8080 peer (Raft, inter-node), 8081 client (gRPC Kv API), 9081 HTTP
# (/healthz, /readyz, /metrics). The entrypoint's defaults; a node given other
# ports (the compose files use the original README's 8080-8085) serves those.
EXPOSE 8080 8081 9081
# The data directory is /var/lib/rangedb/data (a subdirectory: a fresh
# volume may hold lost+found).
VOLUME ["/var/lib/rangedb"]
WORKDIR /var/lib/rangedb
USER 10001:10001
ENV RANGEDB_DATA_DIR=/var/lib/rangedb/data

# Liveness: /healthz on the node's HTTP listener (200 while the process and
# its store loop answer). `rangedb-healthcheck readyz` probes readiness.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["rangedb-healthcheck", "healthz"]

# `server ...` starts a node (listening on the container's hostname, see the
# entrypoint); any other rangedb command runs the CLI; anything else runs as is.
# SIGTERM (docker stop) drains the node for up to --drain-timeout (10 s), then
# stops it: run it with `docker run --stop-timeout 30` (Docker's default is 10 s).
ENTRYPOINT ["rangedb-entrypoint"]
CMD ["server", "--cluster-init"]
