//! Admin calls through the SDK (membership, splits and merges, registry,
//! settings, node status).

use super::{from_status, Client, Retry};
use crate::api::{meta, route, ReplicaChange, Timestamp, MAX_ADMIN_MESSAGE_BYTES};
use crate::error::{Error, Result};
use crate::proto::*;
use crate::trace_context as trace;

impl Client {
    /// One membership change of the range starting at `start_key` (a route key).
    pub async fn change_replicas(
        &self,
        start_key: &[u8],
        range_id: u64,
        change: ReplicaChange,
        expected_conf_ver: u64,
    ) -> Result<()> {
        use crate::proto::change_replicas_request::Kind;
        let (kind, node_id) = match change {
            ReplicaChange::AddLearner(n) => (Kind::AddLearner, n),
            ReplicaChange::Promote(n) => (Kind::Promote, n),
            ReplicaChange::Remove(n) => (Kind::Remove, n),
            ReplicaChange::TransferLeader(n) => (Kind::TransferLeader, n),
        };
        let req = ChangeReplicasRequest {
            range_id,
            kind: kind as i32,
            node_id,
            expected_conf_ver,
        };
        self.with_retry(start_key, Retry::Idempotent, |ch| async move {
            ch.admin().change_replicas(trace::request(req)).await
        })
        .await?;
        Ok(())
    }

    /// Starts draining node `node_id` (the placement driver moves its replicas).
    pub async fn decommission_node(&self, node_id: u64) -> Result<()> {
        let req = DecommissionNodeRequest { node_id };
        self.with_retry(
            &route::key(meta::NODES_PREFIX.as_bytes()),
            Retry::Idempotent,
            |ch| async move { ch.admin().decommission_node(trace::request(req)).await },
        )
        .await?;
        Ok(())
    }

    /// Asks node `node_id`, at its client address `addr`, to drain and
    /// stop; the ranges it led when it started.
    pub async fn drain_node(&self, addr: &str, node_id: u64) -> Result<u64> {
        let req = trace::request(DrainNodeRequest { node_id });
        let r = self
            .call_at(addr, |ch| async move { ch.admin().drain_node(req).await })
            .await?;
        Ok(r.leading)
    }

    /// Asks the cluster for a node id for a new node: (node id, cluster id).
    pub async fn join_cluster(
        &self,
        peer_address: &str,
        client_address: &str,
    ) -> Result<(u64, String)> {
        let req = JoinClusterRequest {
            peer_address: peer_address.into(),
            client_address: client_address.into(),
        };
        let r = self
            .with_retry(
                &route::key(meta::NODES_PREFIX.as_bytes()),
                Retry::Idempotent,
                |ch| {
                    let req = req.clone();
                    async move { ch.admin().join_cluster(trace::request(req)).await }
                },
            )
            .await?
            .into_inner();
        Ok((r.node_id, r.cluster_id))
    }

    /// Records this node's addresses in the registry.
    pub async fn register_node(
        &self,
        node_id: u64,
        peer_address: &str,
        client_address: &str,
    ) -> Result<()> {
        let req = RegisterNodeRequest {
            node_id,
            peer_address: peer_address.into(),
            client_address: client_address.into(),
        };
        self.with_retry(
            &route::key(meta::NODES_PREFIX.as_bytes()),
            Retry::Idempotent,
            |ch| {
                let req = req.clone();
                async move { ch.admin().register_node(trace::request(req)).await }
            },
        )
        .await?;
        Ok(())
    }

    /// Changes a cluster setting; returns the full key written.
    pub async fn set_config(&self, key: &str, value: &str) -> Result<String> {
        let req = SetConfigRequest {
            key: key.to_string(),
            value: value.to_string(),
        };
        // Setting a key to a value is idempotent: an ambiguous failure (the
        // leader removed mid-write, seed 2513) is safely retried.
        let resp = self
            .with_retry(
                &route::key(meta::CONFIG_PREFIX.as_bytes()),
                Retry::Idempotent,
                |ch| {
                    let req = req.clone();
                    async move { ch.admin().set_config(trace::request(req)).await }
                },
            )
            .await?;
        Ok(resp.into_inner().key)
    }

    /// Pins an open transaction's start timestamp against MVCC GC until
    /// it could no longer commit (`txn_max_duration`); `release_pin` ends
    /// it. Idempotent.
    pub async fn pin_timestamp(&self, id: &str, start_ts: Timestamp) -> Result<()> {
        self.pin_step(id, start_ts.0, false, 0).await
    }

    /// Ends the pin `pin_timestamp` made (nothing if there is none).
    pub async fn release_pin(&self, id: &str) -> Result<()> {
        self.pin_step(id, 0, true, 0).await
    }

    /// One PinTimestamp request (`lease_ms` > 0: a leased pin).
    pub(super) async fn pin_step(
        &self,
        id: &str,
        start_ts: u64,
        release: bool,
        lease_ms: u64,
    ) -> Result<()> {
        let req = PinTimestampRequest {
            id: id.to_string(),
            start_ts,
            release,
            lease_ms,
        };
        self.with_retry(
            &route::key(meta::pin_key(id).as_bytes()),
            Retry::Idempotent,
            |ch| {
                let req = req.clone();
                async move { ch.admin().pin_timestamp(trace::request(req)).await }
            },
        )
        .await
        .map(drop)
    }

    /// Records a range descriptor in the range directory (idempotent: the
    /// directory keeps the newest epoch).
    pub async fn publish_range(&self, desc: RangeDescriptorMsg) -> Result<()> {
        self.with_retry(
            &route::key(meta::PARTITIONS_PREFIX.as_bytes()),
            Retry::Idempotent,
            |ch| {
                let req = desc.clone();
                async move { ch.admin().publish_range(trace::request(req)).await }
            },
        )
        .await?;
        Ok(())
    }

    /// Splits the range holding `key` at `key` (an admin operation). A
    /// `sticky` split is never merged away by the placement driver.
    pub async fn split(&self, key: &[u8], sticky: bool) -> Result<()> {
        let req = SplitRangeRequest {
            key: key.to_vec(),
            sticky,
        };
        self.with_retry(&route::key(key), Retry::Idempotent, |ch| {
            let req = req.clone();
            async move { ch.admin().split_range(trace::request(req)).await }
        })
        .await?;
        Ok(())
    }

    /// Freezes range `range_id` (starting at internal key `start_key`) for a
    /// merge: its final descriptor and data.
    pub async fn freeze_range(
        &self,
        start_key: &[u8],
        range_id: u64,
        expected_version: u64,
    ) -> Result<FreezeRangeResponse> {
        let req = FreezeRangeRequest {
            range_id,
            expected_version,
        };
        let resp = self
            .with_retry(start_key, Retry::Idempotent, |ch| async move {
                ch.admin()
                    .max_decoding_message_size(MAX_ADMIN_MESSAGE_BYTES)
                    .freeze_range(trace::request(req))
                    .await
            })
            .await?;
        Ok(resp.into_inner())
    }

    /// Merges the frozen right neighbour (from `freeze_range`) into range
    /// `range_id` (starting at internal key `start_key`).
    pub async fn merge_ranges(
        &self,
        start_key: &[u8],
        range_id: u64,
        expected_version: u64,
        frozen: FreezeRangeResponse,
    ) -> Result<()> {
        let req = MergeRangesRequest {
            range_id,
            expected_version,
            rhs: frozen.descriptor,
            pairs: frozen.pairs,
        };
        self.with_retry(start_key, Retry::Idempotent, |ch| {
            let req = req.clone();
            async move {
                ch.admin()
                    .max_encoding_message_size(MAX_ADMIN_MESSAGE_BYTES)
                    .merge_ranges(trace::request(req))
                    .await
            }
        })
        .await?;
        Ok(())
    }

    /// Tells the node at `addr` that its replica of `range_id` is stale.
    pub async fn gc_replica(
        &self,
        addr: &str,
        range_id: u64,
        conf_ver: u64,
        merged: bool,
    ) -> Result<()> {
        let ch = self.channel(addr)?;
        let req = GcReplicaRequest {
            range_id,
            conf_ver,
            merged,
        };
        match tokio::time::timeout(
            self.opts.rpc_timeout,
            ch.admin().gc_replica(trace::request(req)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(s)) => Err(from_status(&s)),
            Err(_) => Err(Error::Timeout(format!("{addr} did not answer"))),
        }
    }

    /// The status of the node at `addr` (no routing).
    pub async fn node_status(&self, addr: &str) -> Result<NodeStatusResponse> {
        let req = trace::request(NodeStatusRequest {});
        self.call_at(addr, |ch| async move {
            ch.admin()
                .max_decoding_message_size(MAX_ADMIN_MESSAGE_BYTES)
                .node_status(req)
                .await
        })
        .await
    }
}
