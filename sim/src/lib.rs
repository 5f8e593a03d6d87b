//! RangeDB's simulation harness: the real server code, N nodes, one seed.
//!
//! Everything here runs inside madsim (`--cfg madsim`; use `make sim`):
//! - `cluster`: nodes on simulated hosts running `rangedb::server::run_node`,
//!   each with a MemEngine "disk" kept across kill/restart (a kill drops its
//!   unsynced writes) and a skewable clock; clients on their own host;
//! - `nemesis`: seeded fault schedules (partitions, one-way links, network
//!   delay/loss, crashes, restart storms, pauses, clock skew, slow disks);
//! - `workload` + `history`: seeded clients whose operations are recorded as
//!   invoke/complete events with simulated time;
//! - `checks` + `linearizability`: the checkers; `scenario`: one whole run;
//! - `auth_workload`: users, roles and a revocation under faults;
//! - the `rangedb-sim` binary (src/main.rs): seeds, sweeps, canaries, replay.
//!
//! Server-side instruments (BUGGIFY points, canary bugs, Raft safety hooks)
//! live in `rangedb::chaos` and compile to nothing outside simulation.

#[cfg(madsim)]
pub mod auth_workload;
#[cfg(madsim)]
pub mod checks;
#[cfg(madsim)]
mod cluster;
pub mod elle;
#[cfg(madsim)]
pub mod history;
#[cfg(madsim)]
pub mod lease_workload;
#[cfg(madsim)]
pub mod linearizability;
#[cfg(madsim)]
pub mod nemesis;
#[cfg(madsim)]
pub mod scenario;
#[cfg(madsim)]
pub mod txn_workload;
#[cfg(madsim)]
pub mod watch_workload;
#[cfg(madsim)]
pub mod workload;

#[cfg(madsim)]
pub use cluster::{replay_hint, Cluster, ClusterOptions, SimNode};
