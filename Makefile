# RangeDB — the README's commands.
#   make run    start a single-node server on the defaults
#   make test   unit + integration tests + a bounded simulation sweep, then
#               the container files' lint and the 3-node Compose cluster test
#               (skipped, saying so, where no Docker daemon answers)
#   make fuzz   the fuzz targets, DURATION seconds each (default 60)
#   make sim    simulation sweep (SEED=<n> [CANARY=<bug>] replays one seed)
#   make bench-compare  RangeDB against etcd on this machine, one table
#   make bench  a release build, a local 3-node cluster and `rangedb bench`
#               against it (benchmarks never use the debug profile)

CARGO ?= cargo
SIM_TARGET_DIR ?= target/sim
SIM_FLAGS := --cfg madsim
# How many seeds `make sim` sweeps (and `make test`: TEST_SEEDS), from SEED_START.
SEEDS ?= 20
TEST_SEEDS ?= 1000
SEED_START ?= 1
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
RANGEDB := $(TARGET_DIR)/debug/rangedb
RANGEDB_RELEASE := $(TARGET_DIR)/release/rangedb

.PHONY: all setup build release run test unit fuzz sim sim-build sim-long sim-canaries sim-tests sim-ci bench bench-compare fmt clippy lint clean

all: build

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --bin rangedb

# The production build (the Docker image builds the same profile).
release: setup
	$(CARGO) build --release --bin rangedb

run: build
	$(RANGEDB) server --cluster-init

test: setup
	$(CARGO) test
	$(CARGO) test -p rangedb-bench
	$(MAKE) sim-ci
	$(MAKE) docker-lint
	$(MAKE) docker-test

unit: setup
	$(CARGO) test --lib

# The fuzz targets (tests/fuzz.rs) for DURATION seconds each (default 60;
# `make test` runs them for a bounded number of inputs instead).
FUZZ_SECS = $(if $(filter command line environment,$(origin DURATION)),$(DURATION),60)
fuzz: setup
	BOLERO_RANDOM_TEST_TIME_MS=$$(( $(FUZZ_SECS) * 1000 )) $(CARGO) test --test fuzz -- --test-threads 2

SIM_BIN := $(SIM_TARGET_DIR)/debug/rangedb-sim
SIM_ENV := RUSTFLAGS="$(SIM_FLAGS)" CARGO_TARGET_DIR=$(SIM_TARGET_DIR)
JOBS ?= 2
DURATION ?= 600
# Every seed that ever found a bug (seeds/*.toml).
CORPUS = $(shell sed -n 's/^seed *= *\([0-9][0-9]*\).*/\1/p' seeds/*.toml | sort -n | uniq | paste -sd, -)
CANARY_ARG = $(if $(CANARY),--canary $(CANARY),)

sim-build:
	$(SIM_ENV) $(CARGO) build -p rangedb-sim --bins

# `make sim SEED=n [CANARY=name]` replays one seed with its full report;
# `make sim` sweeps SEEDS seeds from SEED_START and checks determinism.
sim: sim-build
ifdef SEED
	$(SIM_BIN) --seed $(SEED) $(CANARY_ARG)
else
	$(SIM_BIN) --seeds $(SEED_START)..$(shell echo $$(($(SEED_START) + $(SEEDS) - 1))) --jobs $(JOBS) --check-determinism $(CANARY_ARG)
endif

# An open-ended sweep: seeds from SEED_START until DURATION seconds have passed.
sim-long: sim-build
	$(SIM_BIN) --time $(DURATION) --start $(SEED_START) --jobs $(JOBS)

# Every canary bug must be caught within 50 seeds.
sim-canaries: sim-build
	$(SIM_BIN) --canaries 50 --jobs $(JOBS)

# The simulation tests written as cargo tests (sim/tests/*.rs); SEED=n for one seed.
sim-tests:
ifdef SEED
	$(SIM_ENV) MADSIM_TEST_SEED=$(SEED) $(CARGO) test -p rangedb-sim -- --nocapture
else
	$(SIM_ENV) $(CARGO) test -p rangedb-sim --no-run
	bash scripts/sim-sweep.sh $(SEED_START) $(SEEDS)
endif

# What `make test` runs in simulation: the cargo sim tests over 20 seeds, the
# seeds/ corpus, TEST_SEEDS runner seeds with a determinism check, the canaries.
sim-ci: sim-build
	$(MAKE) sim-tests SEEDS=20
	$(SIM_BIN) --list $(CORPUS) --jobs $(JOBS)
	$(SIM_BIN) --seeds 1..$(TEST_SEEDS) --jobs $(JOBS) --check-determinism
	$(SIM_BIN) --canaries 50 --jobs $(JOBS)

bench: release
	RANGEDB=$(RANGEDB_RELEASE) bash scripts/bench.sh

# RangeDB against etcd (3 members each, loopback, one driver, interleaved
# runs, medians of ROUNDS=3); installs etcd-server when missing.
bench-compare: setup
	bash scripts/bench-compare.sh

fmt:
	$(CARGO) fmt --all

clippy: setup
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy -p rangedb-bench --all-targets -- -D warnings
	RUSTFLAGS="$(SIM_FLAGS)" CARGO_TARGET_DIR=$(SIM_TARGET_DIR) $(CARGO) clippy -p rangedb-sim --all-targets -- -D warnings

# What CI checks before the tests: formatting, then lints as errors.
lint:
	$(CARGO) fmt --all -- --check
	$(MAKE) clippy

clean:
	$(CARGO) clean
	rm -rf $(SIM_TARGET_DIR)

# Container packaging (issue 11, item 7; docs/docker-deployment.md).
# docker-lint: hadolint, the compose schema, kubernetes-validate, yamllint,
# shellcheck, all offline. docker-test: builds the image and runs the 3-node
# compose cluster through the README's commands, a `docker kill` and a
# network partition; prints "docker-test: SKIPPED: ..." without Docker.
.PHONY: docker-lint docker-test
docker-lint:
	bash scripts/docker-lint.sh

docker-test:
	bash scripts/docker-test.sh
