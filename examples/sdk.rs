//! The RangeDB client SDK from another Rust program.
//!
//! Depend on the crate without its server (no RocksDB, no raft-rs):
//!
//! ```toml
//! [dependencies]
//! rangedb = { path = "../rangedb", default-features = false }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! Run against a running server (`make run` starts one):
//!
//! ```text
//! cargo run --example sdk --no-default-features -- 127.0.0.1:8081
//! ```
//!
//! It writes two accounts, moves 10 from one to the other in a transaction
//! (retried on conflicts by `transact`), and prints the balances. Against a
//! TLS cluster, set `RANGEDB_CERTS_DIR` (and `RANGEDB_USER`, default root)
//! as for the CLI.

use std::sync::Arc;

use rangedb::client::{Client, ClientOptions, TxnOptions};
use rangedb::error::Result;

async fn balance(txn: &mut rangedb::client::Transaction<'_>, key: &[u8]) -> Result<i64> {
    Ok(txn
        .get(key)
        .await?
        .and_then(|v| String::from_utf8_lossy(&v).parse().ok())
        .unwrap_or(0))
}

#[tokio::main]
async fn main() {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".into());
    if let Err(e) = run(endpoint).await {
        eprintln!("Error: {e}");
        std::process::exit(1);
    }
}

async fn run(endpoint: String) -> Result<()> {
    let opts = ClientOptions {
        tls: rangedb::tls::client_from_env()?.map(Arc::new),
        ..ClientOptions::default()
    };
    let client = Client::new(vec![endpoint], opts)?;
    client.put(b"/example/alice", b"100").await?;
    client.put(b"/example/bob", b"100").await?;

    let (moved, commit_ts) = client
        .transact(&TxnOptions::default(), |txn| {
            Box::pin(async move {
                let alice = balance(txn, b"/example/alice").await?;
                let bob = balance(txn, b"/example/bob").await?;
                let amount = alice.min(10);
                txn.put(b"/example/alice", (alice - amount).to_string().as_bytes())?;
                txn.put(b"/example/bob", (bob + amount).to_string().as_bytes())?;
                Ok(amount)
            })
        })
        .await?;
    println!("moved {moved} in the transaction committed at {commit_ts}");

    for key in [&b"/example/alice"[..], b"/example/bob"] {
        let v = client.get(key).await?.unwrap_or_default();
        println!(
            "{}: {}",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(&v)
        );
    }
    Ok(())
}
