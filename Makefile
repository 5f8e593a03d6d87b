# RangeDB — the README's commands.
#   make run    start a single-node server on the defaults
#   make test   unit + integration tests + a bounded simulation sweep
#   make sim    simulation tests (SEED=<n> for one seed, SEEDS=<n> for a sweep)
#   make bench  a local 3-node cluster and `rangedb bench` against it

CARGO ?= cargo
SIM_TARGET_DIR ?= target/sim
SIM_FLAGS := --cfg madsim
# How many seeds `make sim` sweeps (and `make test`: TEST_SEEDS), from SEED_START.
SEEDS ?= 20
TEST_SEEDS ?= 200
SEED_START ?= 1
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
RANGEDB := $(TARGET_DIR)/debug/rangedb

.PHONY: all setup build run test unit sim sim-one sim-sweep bench fmt clippy clean

all: build

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --bin rangedb

run: build
	$(RANGEDB) server --cluster-init

test: setup
	$(CARGO) test
	$(MAKE) sim-sweep SEEDS=$(TEST_SEEDS)

unit: setup
	$(CARGO) test --lib

# One seed when SEED is given (replay), else a sweep of SEEDS seeds.
sim:
ifdef SEED
	$(MAKE) sim-one SEED=$(SEED)
else
ifdef MADSIM_TEST_SEED
	$(MAKE) sim-one SEED=$(MADSIM_TEST_SEED)
else
	$(MAKE) sim-sweep
endif
endif

sim-one:
	RUSTFLAGS="$(SIM_FLAGS)" CARGO_TARGET_DIR=$(SIM_TARGET_DIR) MADSIM_TEST_SEED=$(SEED) \
	  $(CARGO) test -p rangedb-sim -- --nocapture

sim-sweep:
	RUSTFLAGS="$(SIM_FLAGS)" CARGO_TARGET_DIR=$(SIM_TARGET_DIR) $(CARGO) test -p rangedb-sim --no-run
	bash scripts/sim-sweep.sh $(SEED_START) $(SEEDS)

bench: build
	bash scripts/bench.sh

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --all-targets
	RUSTFLAGS="$(SIM_FLAGS)" CARGO_TARGET_DIR=$(SIM_TARGET_DIR) $(CARGO) clippy -p rangedb-sim --all-targets

clean:
	$(CARGO) clean
	rm -rf $(SIM_TARGET_DIR)
