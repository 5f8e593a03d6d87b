//! The two systems under test behind one interface: RangeDB through its
//! SDK, etcd through its v3 gRPC API. Both do the same three things: put a
//! key, read a key linearizably, scan `limit` keys from a key.

use std::time::Duration;

use rangedb::client::{Client, ClientOptions};

pub mod etcdpb {
    tonic::include_proto!("etcdserverpb");
}

use etcdpb::kv_client::KvClient;
use etcdpb::{PutRequest, RangeRequest};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Rangedb,
    Etcd,
}

/// One benchmark client's connection.
pub enum Target {
    Rangedb(Client),
    Etcd(KvClient<tonic::transport::Channel>),
}

pub type Result<T> = std::result::Result<T, String>;

impl Target {
    /// Client `c`'s connection: RangeDB's SDK with the endpoints rotated by
    /// `c` (it follows leader hints from there); etcd's endpoint `c mod n`
    /// (any member serves; followers forward to the leader).
    pub async fn connect(system: System, endpoints: &[String], c: usize) -> Result<Target> {
        let n = endpoints.len();
        match system {
            System::Rangedb => {
                let eps = (0..n).map(|i| endpoints[(c + i) % n].clone()).collect();
                let opts = ClientOptions {
                    deadline: Duration::from_secs(10),
                    ..ClientOptions::default()
                };
                Client::new(eps, opts)
                    .map(Target::Rangedb)
                    .map_err(|e| e.to_string())
            }
            System::Etcd => {
                let url = format!("http://{}", endpoints[c % n].trim_start_matches("http://"));
                let channel = tonic::transport::Channel::from_shared(url.clone())
                    .map_err(|e| format!("bad etcd endpoint {url}: {e}"))?
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(Duration::from_secs(10))
                    .connect()
                    .await
                    .map_err(|e| format!("cannot reach etcd at {url}: {e}"))?;
                Ok(Target::Etcd(KvClient::new(channel)))
            }
        }
    }

    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        match self {
            Target::Rangedb(c) => c.put(key, value).await.map_err(|e| e.to_string()),
            Target::Etcd(c) => c
                .put(PutRequest {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(|e| e.message().to_string()),
        }
    }

    /// One atomic batch of puts (RangeDB only).
    pub async fn batch_put(&mut self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        match self {
            Target::Rangedb(c) => c.batch_put(pairs).await.map_err(|e| e.to_string()),
            Target::Etcd(_) => Err("the batch workload drives RangeDB only".into()),
        }
    }

    /// A linearizable read; whether the key existed.
    pub async fn get(&mut self, key: &[u8]) -> Result<bool> {
        match self {
            Target::Rangedb(c) => c
                .get(key)
                .await
                .map(|v| v.is_some())
                .map_err(|e| e.to_string()),
            Target::Etcd(c) => c
                .range(RangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                })
                .await
                .map(|r| !r.into_inner().kvs.is_empty())
                .map_err(|e| e.message().to_string()),
        }
    }

    /// A linearizable scan of at most `limit` pairs in `[start, end)`; how
    /// many it returned.
    pub async fn scan(&mut self, start: &[u8], end: &[u8], limit: u32) -> Result<usize> {
        match self {
            Target::Rangedb(c) => c
                .scan(start, end, limit, false)
                .await
                .map(|v| v.len())
                .map_err(|e| e.to_string()),
            Target::Etcd(c) => c
                .range(RangeRequest {
                    key: start.to_vec(),
                    range_end: end.to_vec(),
                    limit: limit as i64,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().kvs.len())
                .map_err(|e| e.message().to_string()),
        }
    }
}
