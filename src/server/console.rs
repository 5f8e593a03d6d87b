//! The web console and its JSON API, on the node's HTTP listener
//! (production only, like the listener).
//!
//! - `/`, `/console.js`, `/console.css`: static files from `web/`,
//!   embedded in the binary (no JavaScript build chain); the page renders
//!   the API below and refreshes itself.
//! - `/api/v1/cluster`: the document `rangedb admin cluster status
//!   --output json` prints; `/api/v1/backups`: `rangedb admin backup list
//!   --output json`; `/api/v1/node`: this node's `rangedb admin node status
//!   --output json`. All three come from `crate::status`, so the CLI and
//!   the console never disagree on a field.
//!
//! The API reads the cluster through this node's own client port, like any
//! client would: a node that cannot reach a quorum answers 503 with
//! `{"error": "..."}`, never a stale or partial document.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::client::{Client, ClientOptions};
use crate::error::Result;
use crate::status;
use crate::tls::TlsMaterial;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const CONSOLE_JS: &str = include_str!("../../web/console.js");
const CONSOLE_CSS: &str = include_str!("../../web/console.css");

/// One API call's budget: the page refreshes every 2 s.
const API_DEADLINE: Duration = Duration::from_secs(4);

/// The console's routes, reading the cluster through `client_address`.
pub fn routes<S>(client_address: &str, tls: Option<Arc<TlsMaterial>>) -> Result<Router<S>> {
    let opts = ClientOptions {
        deadline: API_DEADLINE,
        rpc_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        tls,
        token: None,
    };
    let addr = connectable(client_address);
    let client = Client::new(vec![addr.clone()], opts)?;
    Ok(Router::new()
        .route("/", get(|| async { page("text/html", INDEX_HTML) }))
        .route(
            "/console.js",
            get(|| async { page("text/javascript", CONSOLE_JS) }),
        )
        .route(
            "/console.css",
            get(|| async { page("text/css", CONSOLE_CSS) }),
        )
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/backups", get(backups))
        .route("/api/v1/node", get(node))
        .with_state(Api { client, addr }))
}

#[derive(Clone)]
struct Api {
    client: Client,
    /// This node's client address, as the API connects to it.
    addr: String,
}

fn page(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, format!("{kind}; charset=utf-8")),
            (header::CACHE_CONTROL, "no-cache".to_string()),
        ],
        body,
    )
        .into_response()
}

fn document(r: Result<Value>) -> Response {
    match r {
        Ok(v) => ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"error": e.to_string()}).to_string(),
        )
            .into_response(),
    }
}

async fn cluster(State(api): State<Api>) -> Response {
    document(status::cluster(&api.client).await)
}

async fn backups(State(api): State<Api>) -> Response {
    document(status::backups(&api.client).await.map(Value::Array))
}

async fn node(State(api): State<Api>) -> Response {
    document(
        api.client
            .node_status(&api.addr)
            .await
            .map(|s| status::node_status_json(&api.addr, &s)),
    )
}

/// A listen address made connectable: a wildcard host (`0.0.0.0`, `[::]`,
/// empty) becomes loopback.
fn connectable(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some(("0.0.0.0" | "", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::connectable;

    #[test]
    fn wildcard_hosts_become_loopback() {
        assert_eq!(connectable("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(connectable(":8080"), "127.0.0.1:8080");
        assert_eq!(connectable("[::]:8080"), "[::1]:8080");
        assert_eq!(connectable("node1:8080"), "node1:8080");
    }
}
