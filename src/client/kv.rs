//! Reads and writes through the SDK: each routed by its route key.

use super::{predecessor, Client, ReadConsistency, Retry};
use crate::api::route;
use crate::error::{Error, Result};
use crate::proto::*;
use crate::trace_context as trace;

impl Client {
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_with(key, ReadConsistency::Linearizable).await
    }

    pub async fn get_with(
        &self,
        key: &[u8],
        consistency: ReadConsistency,
    ) -> Result<Option<Vec<u8>>> {
        let req = GetRequest {
            key: key.to_vec(),
            consistency: consistency as i32,
        };
        let resp = self
            .with_retry(&route::key(key), Retry::Idempotent, |ch| {
                let req = req.clone();
                async move { ch.kv().get(trace::request(req)).await }
            })
            .await?
            .into_inner();
        Ok(resp.found.then_some(resp.value))
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let req = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease: 0,
        };
        self.with_retry(&route::key(key), Retry::Write, |ch| {
            let req = req.clone();
            async move { ch.kv().put(trace::request(req)).await }
        })
        .await?;
        Ok(())
    }

    pub async fn delete(&self, key: &[u8]) -> Result<()> {
        let req = DeleteRequest { key: key.to_vec() };
        self.with_retry(&route::key(key), Retry::Write, |ch| {
            let req = req.clone();
            async move { ch.kv().delete(trace::request(req)).await }
        })
        .await?;
        Ok(())
    }

    /// Writes every pair atomically: in one command when they share a
    /// range, as one transaction when they do not.
    pub async fn batch_put(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        let Some(first) = pairs.first().map(|(k, _)| route::key(k)) else {
            return Ok(());
        };
        let req = BatchPutRequest {
            pairs: pairs
                .iter()
                .map(|(key, value)| KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    meta: None,
                })
                .collect(),
        };
        let result = self
            .with_retry(&first, Retry::Batch, |ch| {
                let req = req.clone();
                async move { ch.kv().batch_put(trace::request(req)).await }
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(Error::KeyNotInRange { .. }) => {
                let opts = super::TxnOptions::default();
                self.transact(&opts, |txn| {
                    let pairs = pairs.clone();
                    Box::pin(async move {
                        for (k, v) in &pairs {
                            txn.put(k, v)?;
                        }
                        Ok(())
                    })
                })
                .await
                .map(drop)
            }
            Err(e) => Err(e),
        }
    }

    /// Pairs with `start <= key < end` (empty `end`: to the end), at most
    /// `limit` (0: server default), in key order or reversed.
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_with(start, end, limit, reverse, ReadConsistency::Linearizable)
            .await
    }

    pub async fn scan_with(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        reverse: bool,
        consistency: ReadConsistency,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let want = if limit == 0 {
            crate::api::DEFAULT_SCAN_LIMIT
        } else {
            limit as usize
        };
        let (mut start, mut end) = (start.to_vec(), end.to_vec());
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        loop {
            let remaining = (want - out.len()) as u32;
            let req = ScanRequest {
                start: start.clone(),
                end: end.clone(),
                limit: remaining,
                reverse,
                consistency: consistency as i32,
            };
            // Route by the key the scan begins at: the start, or (reverse) the end.
            let route = if reverse && !end.is_empty() {
                // In the namespace the server scans: the start's.
                let end = if crate::api::is_system_key(&start) {
                    route::key(&end)
                } else {
                    route::user(&end)
                };
                predecessor(&end)
            } else {
                route::key(&start)
            };
            let (pairs, resume) = self
                .with_retry(&route, Retry::Idempotent, |ch| {
                    let req = req.clone();
                    async move {
                        let mut stream = ch.kv().scan(trace::request(req)).await?.into_inner();
                        let mut pairs = Vec::new();
                        let mut resume = Vec::new();
                        while let Some(chunk) = stream.message().await? {
                            pairs.extend(chunk.pairs.into_iter().map(|kv| (kv.key, kv.value)));
                            if !chunk.resume_key.is_empty() {
                                resume = chunk.resume_key;
                            }
                        }
                        Ok((pairs, resume))
                    }
                })
                .await?;
            out.extend(pairs);
            if resume.is_empty() || out.len() >= want {
                out.truncate(want);
                return Ok(out);
            }
            if reverse {
                end = resume;
            } else {
                start = resume;
            }
        }
    }
}
