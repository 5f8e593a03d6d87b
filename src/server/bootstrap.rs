//! Store identity and cluster bootstrap.
//!
//! The first write into an empty data directory is the data format version
//! and the store identity (node id, peer address, initial peer list,
//! cluster id). Every later start checks both — a directory of another data
//! format is refused with one line naming its format, one of another node or
//! cluster with one line saying whose it is — and a directory that has data
//! but no identity is treated as damaged and never touched.
//!
//! A new cluster keeps `replication_factor` at its default (3) even on one
//! node: its ranges show as under-replicated until nodes join, and then the
//! placement driver up-replicates them.

use crate::api::{meta, NodeEntry};
use crate::config::{same_address, ServerConfig, Setting, DEFAULT_REPLICATION_FACTOR};
use crate::error::{Error, Result};
use crate::keys;
use crate::range::{RangeDescriptor, Replica};
use crate::storage::{Engine, WriteBatch};

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct StoreIdent {
    /// Empty on a joining node until it learns the cluster from its peers.
    #[prost(string, tag = "1")]
    pub cluster_id: String,
    #[prost(uint64, tag = "2")]
    pub node_id: u64,
    #[prost(string, tag = "3")]
    pub peer_address: String,
    #[prost(string, repeated, tag = "4")]
    pub peers: Vec<String>,
}

/// Reads (or, for an empty engine, creates) the store identity.
pub fn prepare_store(cfg: &ServerConfig, engine: &dyn Engine) -> Result<StoreIdent> {
    let dir = cfg.data_dir.display();
    check_format(cfg, engine)?;
    if let Some(b) = engine.get(keys::STORE_IDENT_KEY)? {
        let ident = <StoreIdent as prost::Message>::decode(b.as_slice()).map_err(|e| {
            Error::DataDir(format!("data directory {dir} is damaged (store identity unreadable: {e}); refusing to start"))
        })?;
        if !same_address(&ident.peer_address, &cfg.peer_address) {
            return Err(Error::DataDir(format!(
                "data directory {dir} belongs to node {} (peer address {}) of cluster {}, but this server was started \
                 with --peer-address {}; use that address or another --data-dir",
                ident.node_id,
                ident.peer_address,
                display_cluster(&ident.cluster_id),
                cfg.peer_address
            )));
        }
        let given = cfg.initial_peers();
        let same_peers = given.len() == ident.peers.len()
            && given
                .iter()
                .zip(&ident.peers)
                .all(|(a, b)| same_address(a, b));
        if !cfg.peers.is_empty() && !same_peers {
            return Err(Error::DataDir(format!(
                "data directory {dir} belongs to a cluster whose nodes are [{}], but this server was started with \
                 peers [{}]; refusing to start",
                ident.peers.join(","),
                given.join(",")
            )));
        }
        return Ok(ident);
    }
    if !engine.is_empty()? {
        return Err(Error::DataDir(format!(
            "data directory {dir} holds data but no RangeDB store identity: it is damaged or not RangeDB's; refusing to touch it"
        )));
    }
    let peers = cfg.initial_peers();
    let node_id = cfg.node_id()?;
    let joining = !cfg.cluster_init;
    if joining && cfg.peers.is_empty() {
        return Err(Error::Config(format!(
            "data directory {dir} is empty: start with --cluster-init to create a new cluster, or with --join=<peer addresses> to join one"
        )));
    }
    let cluster_id = if joining {
        String::new()
    } else {
        new_cluster_id()
    };
    let ident = StoreIdent {
        cluster_id: cluster_id.clone(),
        node_id,
        peer_address: cfg.peer_address.clone(),
        peers,
    };
    let mut wb = WriteBatch::new();
    stage_ident(&mut wb, &ident);
    if !joining {
        stage_new_cluster(&mut wb, cfg, &ident);
        tracing::info!(%cluster_id, nodes = ident.peers.len(), "initialized a new cluster");
    }
    engine.write(&wb, true)?;
    Ok(ident)
}

/// Refuses a data directory written in another data format (one line that
/// names it); nothing is migrated or rewritten.
fn check_format(cfg: &ServerConfig, engine: &dyn Engine) -> Result<()> {
    let format = engine.get(keys::FORMAT_KEY)?;
    let format1 = engine.get(keys::FORMAT_1_IDENT_KEY)?.is_some();
    keys::check_format(format.as_deref(), format1).map_err(|e| {
        Error::DataDir(format!(
            "data directory {} cannot be opened: {}",
            cfg.data_dir.display(),
            e
        ))
    })
}

/// The format version and identity records of a new store.
fn stage_ident(wb: &mut WriteBatch, ident: &StoreIdent) {
    wb.put(keys::FORMAT_KEY.to_vec(), keys::encode_format());
    wb.put(
        keys::STORE_IDENT_KEY.to_vec(),
        prost::Message::encode_to_vec(ident),
    );
}

/// A new cluster: the initial ranges on the first `replication_factor`
/// nodes (the placement driver puts replicas on the others as needed), the
/// cluster id, `replication_factor` at its default, the registry and the
/// range directory.
fn stage_new_cluster(wb: &mut WriteBatch, cfg: &ServerConfig, ident: &StoreIdent) {
    let voters = ident.peers.len().min(DEFAULT_REPLICATION_FACTOR) as u64;
    let descs = RangeDescriptor::initial((1..=voters).collect());
    for d in &descs {
        Replica::bootstrap(wb, d);
    }
    wb.put(
        keys::system(meta::CLUSTER_ID),
        ident.cluster_id.as_bytes().to_vec(),
    );
    wb.put(
        keys::system(&meta::config_key(Setting::ReplicationFactor.name())),
        DEFAULT_REPLICATION_FACTOR.to_string().into_bytes(),
    );
    for (i, p) in ident.peers.iter().enumerate() {
        // The other nodes register their client addresses once they
        // start; this one's is known now (and must be: if it died before
        // registering, the placement driver could not probe it).
        let id = i as u64 + 1;
        let client = (id == ident.node_id).then_some(cfg.client_address.as_str());
        wb.put(
            keys::system(&meta::node_key(id)),
            NodeEntry::new(p, client).encode(),
        );
    }
    for d in &descs {
        wb.put(
            RangeDescriptor::directory_key(d.range_id),
            d.directory_value(),
        );
    }
}

fn display_cluster(id: &str) -> &str {
    if id.is_empty() {
        "(not yet joined)"
    } else {
        id
    }
}

fn new_cluster_id() -> String {
    // From the runtime RNG: seeded (and so replayable) in simulation.
    let a: u64 = madsim::rand::random();
    let b: u32 = madsim::rand::random();
    format!(
        "{:08x}-{:04x}-{:04x}",
        (a >> 32) as u32,
        (a & 0xffff) as u16,
        (b & 0xffff) as u16
    )
}

/// The store identity of a new node that the cluster gave `node_id`.
pub fn prepare_new_node(
    cfg: &ServerConfig,
    engine: &dyn Engine,
    node_id: u64,
    cluster_id: String,
) -> Result<StoreIdent> {
    if !engine.is_empty()? {
        return Err(Error::DataDir(format!(
            "data directory {} holds data but no RangeDB store identity; refusing to touch it",
            cfg.data_dir.display()
        )));
    }
    let ident = StoreIdent {
        cluster_id,
        node_id,
        peer_address: cfg.peer_address.clone(),
        peers: cfg.peers.clone(),
    };
    let mut wb = WriteBatch::new();
    stage_ident(&mut wb, &ident);
    engine.write(&wb, true)?;
    Ok(ident)
}

/// Refuses a non-empty directory that is not a RocksDB data directory;
/// returns whether the directory is new (missing or empty).
#[cfg(not(madsim))]
pub fn check_data_dir(dir: &std::path::Path) -> Result<bool> {
    let mut entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => {
            return Err(Error::DataDir(format!(
                "cannot read data directory {}: {e}",
                dir.display()
            )))
        }
    };
    if entries.next().is_none() {
        return Ok(true);
    }
    if !dir.join("CURRENT").exists() {
        return Err(Error::DataDir(format!(
            "{} is not empty and is not a RangeDB data directory (or it is damaged); refusing to touch it",
            dir.display()
        )));
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemEngine;

    fn cfg(peer: &str, peers: &[&str], init: bool) -> ServerConfig {
        ServerConfig {
            peer_address: peer.into(),
            client_address: "127.0.0.1:9999".into(),
            peers: peers.iter().map(|s| s.to_string()).collect(),
            cluster_init: init,
            ..Default::default()
        }
    }

    #[test]
    fn init_then_restart_then_foreign_flags_refused() {
        let e = MemEngine::new();
        let ident = prepare_store(&cfg("127.0.0.1:8080", &[], true), &e).unwrap();
        assert_eq!(ident.node_id, 1);
        assert!(!ident.cluster_id.is_empty());
        assert!(e.get(&keys::system(meta::CLUSTER_ID)).unwrap().is_some());
        // Restart without --cluster-init keeps the identity.
        let again = prepare_store(&cfg("127.0.0.1:8080", &[], false), &e).unwrap();
        assert_eq!(again, ident);
        // Another node's flags on this data are refused and nothing is written.
        let before = e.dump();
        let err = prepare_store(&cfg("127.0.0.1:8082", &[], true), &e).unwrap_err();
        assert!(matches!(err, Error::DataDir(_)), "{err}");
        let err = prepare_store(
            &cfg(
                "127.0.0.1:8080",
                &["127.0.0.1:8080", "127.0.0.1:8082"],
                true,
            ),
            &e,
        )
        .unwrap_err();
        assert!(err.to_string().contains("refusing"), "{err}");
        assert_eq!(e.dump(), before);
    }

    #[test]
    fn damaged_or_foreign_data_is_never_touched() {
        let e = MemEngine::new();
        let mut wb = WriteBatch::new();
        wb.put("something", "else");
        e.write(&wb, true).unwrap();
        let err = prepare_store(&cfg("127.0.0.1:8080", &[], true), &e).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
        assert_eq!(e.dump().len(), 1);

        let e = MemEngine::new();
        let mut wb = WriteBatch::new();
        wb.put(keys::STORE_IDENT_KEY.to_vec(), b"\xff\xff garbage".to_vec());
        e.write(&wb, true).unwrap();
        assert!(prepare_store(&cfg("127.0.0.1:8080", &[], true), &e).is_err());
    }

    /// Defect (issue 9): a single node started with `--cluster-init` (the
    /// README's quick start) fixed `replication_factor` at 1, so nodes that
    /// joined later never received replicas. Failed before the fix with
    /// `left: Some("1")`.
    #[test]
    fn a_single_node_cluster_keeps_replication_factor_3() {
        let e = MemEngine::new();
        prepare_store(&cfg("127.0.0.1:8080", &[], true), &e).unwrap();
        let rf = e
            .get(&keys::system(&meta::config_key("replication_factor")))
            .unwrap()
            .map(|v| String::from_utf8(v).unwrap());
        assert_eq!(rf.as_deref(), Some("3"));
        let d = e.get(&keys::descriptor_key(1)).unwrap().unwrap();
        assert_eq!(RangeDescriptor::decode(&d).unwrap().replicas, vec![1]);
        let entry = e.get(&keys::system(&meta::node_key(1))).unwrap().unwrap();
        let entry = NodeEntry::decode(b"", &entry).unwrap();
        assert_eq!(entry.client_address.as_deref(), Some("127.0.0.1:9999"));
    }

    #[test]
    fn a_directory_of_another_data_format_is_refused_and_untouched() {
        // Format 1 kept the identity at 0x02 "ident" and no format record.
        let e = MemEngine::new();
        let mut wb = WriteBatch::new();
        wb.put(keys::FORMAT_1_IDENT_KEY.to_vec(), b"old".to_vec());
        e.write(&wb, true).unwrap();
        let before = e.dump();
        let err = prepare_store(&cfg("127.0.0.1:8080", &[], true), &e).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::DataDir(_)), "{msg}");
        assert!(
            msg.contains("data format 1") && msg.contains("reads only format 3"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "one line");
        assert_eq!(e.dump(), before, "nothing written");
    }

    #[test]
    fn empty_dir_needs_init_or_join() {
        let e = MemEngine::new();
        let err = prepare_store(&cfg("127.0.0.1:8080", &[], false), &e).unwrap_err();
        assert!(err.to_string().contains("--cluster-init"), "{err}");
        assert!(e.dump().is_empty());
        let peers = ["127.0.0.1:8080", "127.0.0.1:8082"];
        let joiner = prepare_store(&cfg("127.0.0.1:8082", &peers, false), &e).unwrap();
        assert_eq!((joiner.node_id, joiner.cluster_id.as_str()), (2, ""));
        assert!(
            e.get(&keys::descriptor_key(1)).unwrap().is_none(),
            "a joiner creates no ranges itself"
        );
    }
}
