//! The data commands the original README promised: `put`, `get`,
//! `delete`, `range`, `batch put`, and how their answers print (text as
//! the README shows it, or one JSON document with `--output json`).

use std::io::Write;
use std::process::ExitCode;

use super::{BatchCommand, Command};
use crate::client::{Client, ReadConsistency};
use crate::error::{Error, Result};

pub(super) async fn run(
    out: &mut impl Write,
    client: &Client,
    cmd: Command,
    json: bool,
) -> Result<ExitCode> {
    match cmd {
        Command::Put { key, value, lease } => {
            match lease {
                Some(id) => {
                    let id = super::lease::parse_id(&id)?;
                    client
                        .put_leased(key.as_bytes(), value.as_bytes(), id)
                        .await?;
                }
                None => client.put(key.as_bytes(), value.as_bytes()).await?,
            }
            print_ok(out, json);
        }
        Command::Get { key, local } => {
            let c = if local {
                ReadConsistency::Local
            } else {
                ReadConsistency::Linearizable
            };
            return print_value(out, client, &key, c, json).await;
        }
        Command::Delete { key } => {
            client.delete(key.as_bytes()).await?;
            print_ok(out, json);
        }
        Command::Range {
            start,
            end,
            limit,
            reverse,
        } => {
            let pairs = client
                .scan(
                    start.as_bytes(),
                    end.as_bytes(),
                    limit.unwrap_or(0),
                    reverse,
                )
                .await?;
            print_pairs(out, &pairs, json);
        }
        Command::Batch(BatchCommand::Put { pairs }) => batch_put(out, client, pairs, json).await?,
        Command::Server(_)
        | Command::Bench(_)
        | Command::Admin(_)
        | Command::Txn { .. }
        | Command::Cert(_)
        | Command::User(_)
        | Command::Role(_)
        | Command::Login { .. }
        | Command::Logout
        | Command::Watch(_)
        | Command::Lease(_)
        | Command::Repl => {}
    }
    Ok(ExitCode::SUCCESS)
}

async fn batch_put(
    out: &mut impl Write,
    client: &Client,
    pairs: Vec<String>,
    json: bool,
) -> Result<()> {
    if !pairs.len().is_multiple_of(2) {
        return Err(Error::InvalidArgument(format!(
            "batch put takes key value pairs; got {} arguments (the last key has no value)",
            pairs.len()
        )));
    }
    let n = pairs.len() / 2;
    let kvs = pairs
        .chunks(2)
        .map(|c| (c[0].clone().into_bytes(), c[1].clone().into_bytes()))
        .collect();
    client.batch_put(kvs).await?;
    if json {
        let _ = writeln!(out, "{}", serde_json::json!({"ok": true, "keys": n}));
    } else {
        let _ = writeln!(out, "OK ({n} keys)");
    }
    Ok(())
}

pub(super) fn print_pairs(out: &mut impl Write, pairs: &[(Vec<u8>, Vec<u8>)], json: bool) {
    if json {
        let items: Vec<_> = pairs
            .iter()
            .map(|(k, v)| serde_json::json!({"key": lossy(k), "value": lossy(v)}))
            .collect();
        let _ = writeln!(out, "{}", serde_json::Value::Array(items));
    } else {
        for (k, v) in pairs {
            let _ = out.write_all(k);
            let _ = out.write_all(b": ");
            let _ = out.write_all(v);
            let _ = writeln!(out);
        }
    }
}

/// Prints a key's value; exit code 1 (and one line on stderr) if missing.
pub(super) async fn print_value(
    out: &mut impl Write,
    client: &Client,
    key: &str,
    consistency: ReadConsistency,
    json: bool,
) -> Result<ExitCode> {
    match client.get_with(key.as_bytes(), consistency).await? {
        Some(v) => {
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"key": key, "value": lossy(&v)})
                );
            } else {
                let _ = out.write_all(&v);
                let _ = writeln!(out);
            }
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("Error: key not found: {key}");
            Ok(ExitCode::from(1))
        }
    }
}

pub(super) fn print_ok(out: &mut impl Write, json: bool) {
    let _ = if json {
        writeln!(out, "{}", serde_json::json!({"ok": true}))
    } else {
        writeln!(out, "OK")
    };
}

pub(super) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
