//! RangeDB's simulation harness: the real server code, N nodes, one seed.
//!
//! Everything here runs inside madsim (`--cfg madsim`; use `make sim`). A
//! `Cluster` starts nodes with `rangedb::server::run_node` on their own
//! simulated hosts, each with a `MemEngine` "disk" the harness keeps across
//! kill and restart (a kill also drops the disk's unsynced writes); clients
//! run on their own host. Faults are plain methods: partition, heal, kill,
//! restart. Checkers live beside the tests that use them.

#[cfg(madsim)]
mod cluster;

#[cfg(madsim)]
pub use cluster::{replay_hint, Cluster, ClusterOptions, SimNode};
