//! Leases in the SDK: grant, keep-alive, revoke, time-to-live, list, and
//! writes attached to a lease (`put_leased`). Every call goes to the node
//! leading the system range (routed by the key `_/leases/`), whose clock
//! decides when a lease ends.
//!
//! A leased put is three steps: attach the key to the lease (so the lease's
//! end finds it), write it carrying the lease, then check the lease is
//! still there. If the lease ended in between, the put undoes itself (the
//! key is deleted if it still carries the lease) and fails with NotFound,
//! so a key never outlives its lease by more than the check.

use std::time::Duration;

use super::{Client, Retry};
use crate::api::{meta, route};
use crate::error::{Error, Result};
use crate::proto::*;
use crate::trace_context as trace;

fn lease_route() -> Vec<u8> {
    route::key(meta::LEASES_PREFIX.as_bytes())
}

impl Client {
    /// Grants a lease of `ttl_secs` seconds (`id` 0: the cluster picks it).
    pub async fn lease_grant(&self, ttl_secs: i64, id: u64) -> Result<LeaseInfo> {
        let req = LeaseGrantRequest { ttl_secs, id };
        Ok(self
            .with_retry(&lease_route(), Retry::Write, |ch| async move {
                ch.lease().grant(trace::request(req)).await
            })
            .await?
            .into_inner())
    }

    /// Restarts the lease's TTL; its new time to live.
    pub async fn lease_keep_alive(&self, id: u64) -> Result<LeaseInfo> {
        let req = LeaseIdRequest { id };
        Ok(self
            .with_retry(&lease_route(), Retry::Idempotent, |ch| async move {
                ch.lease().keep_alive(trace::request(req)).await
            })
            .await?
            .into_inner())
    }

    /// Ends the lease now; how many keys went with it.
    pub async fn lease_revoke(&self, id: u64) -> Result<u64> {
        let req = LeaseIdRequest { id };
        Ok(self
            .with_retry(&lease_route(), Retry::Write, |ch| async move {
                ch.lease().revoke(trace::request(req)).await
            })
            .await?
            .into_inner()
            .deleted)
    }

    /// The lease's TTL, time left and (with `keys`) attached keys.
    pub async fn lease_time_to_live(&self, id: u64, keys: bool) -> Result<LeaseInfo> {
        let req = LeaseTimeToLiveRequest { id, keys };
        Ok(self
            .with_retry(&lease_route(), Retry::Idempotent, |ch| async move {
                ch.lease().time_to_live(trace::request(req)).await
            })
            .await?
            .into_inner())
    }

    /// Every live lease.
    pub async fn lease_list(&self) -> Result<Vec<LeaseInfo>> {
        Ok(self
            .with_retry(&lease_route(), Retry::Idempotent, |ch| async move {
                ch.lease().list(trace::request(LeaseListRequest {})).await
            })
            .await?
            .into_inner()
            .leases)
    }

    /// Records `keys` as attached to the lease before they are written
    /// with it (`put_leased` and the etcd gateway do this).
    pub async fn lease_attach(&self, id: u64, keys: Vec<Vec<u8>>) -> Result<()> {
        let req = LeaseAttachRequest { id, keys };
        self.with_retry(&lease_route(), Retry::Idempotent, |ch| {
            let req = req.clone();
            async move { ch.lease().attach(trace::request(req)).await }
        })
        .await?;
        Ok(())
    }

    /// After a write attached keys to lease `id`: fails with NotFound,
    /// having deleted the keys that still carry it, if the lease has ended.
    pub async fn lease_recheck(&self, id: u64, keys: &[Vec<u8>]) -> Result<()> {
        match self.lease_time_to_live(id, false).await {
            Err(Error::NotFound(m)) => {
                let keys = keys.to_vec();
                let opts = super::TxnOptions {
                    deadline: Duration::from_secs(30),
                    ..Default::default()
                };
                self.transact(&opts, move |txn| {
                    let keys = keys.clone();
                    Box::pin(async move {
                        for k in &keys {
                            if let Some((_, Some(meta))) = txn.get_meta(k).await? {
                                if meta.lease == id {
                                    txn.delete(k)?;
                                }
                            }
                        }
                        Ok(())
                    })
                })
                .await?;
                Err(Error::NotFound(m))
            }
            Err(e) => Err(e),
            Ok(_) => Ok(()),
        }
    }

    /// Writes `key` attached to lease `id`: deleted when the lease ends,
    /// unless written again without it first.
    pub async fn put_leased(&self, key: &[u8], value: &[u8], id: u64) -> Result<()> {
        if id == 0 {
            return self.put(key, value).await;
        }
        self.lease_attach(id, vec![key.to_vec()]).await?;
        let req = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease: id,
        };
        self.with_retry(&route::key(key), Retry::Write, |ch| {
            let req = req.clone();
            async move { ch.kv().put(trace::request(req)).await }
        })
        .await?;
        self.lease_recheck(id, &[key.to_vec()]).await
    }
}
