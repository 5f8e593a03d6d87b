//! RangeDB: a range-partitioned, Raft-replicated key-value database, built
//! simulation-first — every line of server code also runs inside madsim
//! (`--cfg madsim`), where one seed decides every schedule, fault and message.
//!
//! Layers, bottom-up (each imports only from layers below it):
//! - `error`, `api`, `config`, `clock`, `chaos`, `metrics`: the error type,
//!   the public contract shared with clients (limits, `_/` names), typed
//!   settings, the node clock, the simulator's instruments, and the node's
//!   Prometheus registry;
//! - `keys`: the physical keyspace;
//! - `storage`: the `Engine` trait, RocksDB (production) and MemEngine
//!   (tests and simulation, with an explicit durability model);
//! - `raft`: raft-rs over the engine (log, hard state, apply state, snapshots);
//!   `mvcc` beside it: versions and locks by timestamp, transaction actions;
//! - `range`: descriptors, replicated commands, the state machine, `Replica`;
//! - `node`: the multi-Raft `Store` (batched Ready loop, group commit) and the
//!   peer transport;
//! - `server`: gRPC services and node bootstrap; `wire`: Error <-> Status;
//! - `client`: the SDK (sees only `proto`, `wire` and `error`); `cli`: the
//!   command line (sees only `client` and `server::serve`).
//!
//! Glossary: a *range* is a key span `[start, end)` replicated by one Raft
//! group; a *replica* is one node's member of that group; the *epoch*
//! (`conf_ver`, `version`) changes with membership and span changes.

#[cfg(all(feature = "sim", not(madsim)))]
compile_error!(
    "the `sim` feature needs the madsim cfg, which a feature cannot set: run `make sim` \
     (it builds with RUSTFLAGS=\"--cfg madsim\" in target/sim)"
);

// The client SDK and what it shares with the server (always built).
pub mod api;
pub mod chaos;
pub mod client;
pub mod error;
pub mod tls;
pub mod trace_context;
pub mod wire;

// The server and the CLI (the default `server` feature; see Cargo.toml).
#[cfg(all(not(madsim), feature = "server"))]
pub mod cli;
#[cfg(feature = "server")]
pub mod clock;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod etcd;
#[cfg(all(test, feature = "server"))]
mod golden;
#[cfg(feature = "server")]
pub mod keys;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod mvcc;
#[cfg(feature = "server")]
pub mod node;
#[cfg(feature = "server")]
pub mod placement;
#[cfg(feature = "server")]
pub mod raft;
#[cfg(feature = "server")]
pub mod range;
#[cfg(feature = "server")]
pub mod security;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod status;
#[cfg(feature = "server")]
pub mod storage;
#[cfg(all(not(madsim), feature = "server"))]
pub mod telemetry;

/// The generated gRPC API (real tonic, or madsim's under `--cfg madsim`).
#[allow(clippy::all)]
pub mod proto {
    tonic::include_proto!("rangedb");
}

/// etcd's v3 API messages and services (vendored protos, `proto/etcd/`),
/// served by the gateway (`etcd`).
#[cfg(feature = "server")]
#[allow(clippy::all, clippy::pedantic)]
pub mod etcdpb {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

pub use error::{Error, Result};
