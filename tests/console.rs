//! The web console of a real 3-node cluster: its JSON API is the document
//! the CLI prints with `--output json`, and the page, loaded in headless
//! Chromium (Debian's `chromium`), lists the 3 live nodes and every range.
//! `RANGEDB_CONSOLE_SCREENSHOT=<png>` also saves a screenshot there (the
//! one in docs/operations.md was taken so).
#![cfg(not(madsim))]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn api(http: &str, path: &str) -> Option<Value> {
    let (code, body) = http_get(http, path)?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

fn ids(v: &Value, list: &str, field: &str) -> Vec<u64> {
    let mut ids: Vec<u64> = v[list]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x[field].as_u64()).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Headless Chromium's `args` on `url`, with a throwaway profile.
fn headless(bin: &str, profile: &std::path::Path, args: &[&str], url: &str) -> String {
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.display()),
            // Let the page fetch and render (virtual time waits for fetches).
            "--virtual-time-budget=8000",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_console_shows_every_node_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let servers = start_cluster_n(dir.path(), 3);
    let endpoints = client_endpoints(&servers);
    put_when_ready(&endpoints, "/console/a", "1");
    let split = cli(&endpoints, &["admin", "split", "/console/m"]);
    assert!(split.status.success(), "{}", stderr(&split));
    let http = servers[1].http_address.clone();

    // The API: 3 running nodes, every range with a leader.
    let mut cluster = Value::Null;
    wait_until(
        Duration::from_secs(60),
        "3 live nodes and a leader per range",
        || {
            cluster = api(&http, "/api/v1/cluster").unwrap_or_default();
            let live = cluster["nodes"]
                .as_array()
                .map(|n| n.iter().filter(|n| n["status"] == "NODE_RUNNING").count());
            let ranges = cluster["ranges"].as_array().cloned().unwrap_or_default();
            live == Some(3) && ranges.len() >= 3 && ranges.iter().all(|r| r["leader"].is_u64())
        },
    );
    // The same document as `--output json`, field for field where it is
    // not a live measure.
    let cli_doc = cluster_status(&endpoints);
    for (list, field) in [
        ("nodes", "node_id"),
        ("ranges", "range_id"),
        ("partitions", "range_id"),
    ] {
        assert_eq!(
            ids(&cluster, list, field),
            ids(&cli_doc, list, field),
            "{list}"
        );
    }
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(keys(&cluster), keys(&cli_doc));
    assert_eq!(cluster["cluster_id"], cli_doc["cluster_id"]);
    let backups = cli(&endpoints, &["--output", "json", "admin", "backup", "list"]);
    let cli_backups: Value = serde_json::from_slice(&backups.stdout).unwrap();
    assert_eq!(api(&http, "/api/v1/backups"), Some(cli_backups));
    let node = api(&http, "/api/v1/node").unwrap();
    assert_eq!(node["peer_address"], servers[1].peer_address.as_str());
    assert_eq!(node["draining"], false);

    // The page, as a browser renders it.
    let (code, page) = http_get(&http, "/").unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("<title>RangeDB console</title>"), "{page}");
    let Some(bin) = chromium() else {
        eprintln!("SKIPPED: the console in a browser: no chromium (apt-get install chromium)");
        return;
    };
    let profile = dir.path().join("chromium");
    let url = format!("http://{http}/");
    let dom = headless(bin, &profile, &["--dump-dom"], &url);
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page never loaded: {dom}"
    );
    assert_eq!(dom.matches("data-status=\"live\"").count(), 3, "{dom}");
    for id in ids(&cluster, "ranges", "range_id") {
        assert!(
            dom.contains(&format!("data-range=\"{id}\"")),
            "range {id} missing: {dom}"
        );
    }
    if let Ok(png) = std::env::var("RANGEDB_CONSOLE_SCREENSHOT") {
        let png = std::path::absolute(png).unwrap();
        headless(
            bin,
            &profile,
            &[
                &format!("--screenshot={}", png.display()),
                "--window-size=1280,760",
            ],
            &url,
        );
        assert!(png.exists(), "no screenshot at {}", png.display());
    }
}
