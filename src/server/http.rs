//! The node's HTTP listener (production only: the simulator's nodes have
//! none): `/healthz` and `/readyz`, for load balancers, orchestrators
//! (Kubernetes probes) and people.
//!
//! - `/healthz`: 200 `ok` when the process answers and its Store loop
//!   turns (a status request answered within `LOOP_DEADLINE`), else 503.
//! - `/readyz`: 200 `ready` when this node can serve: it is not draining,
//!   its Store answers, and it holds a range and knows a leader for each (`health::readiness`,
//!   grpc.health.v1's rule, so the two never disagree); else 503.
//!   `?verbose` lists each check and, for a failing one, why.
//! - `/metrics`: Prometheus text exposition (`observe`).
//! - `/` and `/api/v1/`: the web console and its JSON API (`console`).

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use tokio::sync::watch;

use crate::node::StoreHandle;

/// How long the Store loop may take to answer a status request.
const LOOP_DEADLINE: Duration = Duration::from_secs(2);

/// `?verbose`.
#[derive(Deserialize)]
struct Verbose {
    verbose: Option<String>,
}

/// Serves on `listener` until `stop` turns true.
/// The console's API reads the cluster through `client_address`.
pub async fn serve(
    listener: super::conn_limit::CappedListener,
    store: StoreHandle,
    client_address: &str,
    tls: Option<std::sync::Arc<crate::tls::TlsMaterial>>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let console = super::console::routes(client_address, tls).map_err(std::io::Error::other)?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(store)
        .merge(console);
    axum::serve(listener, app)
        .with_graceful_shutdown(super::until_shutdown(stop))
        .await
}

async fn metrics(State(store): State<StoreHandle>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        super::observe::metrics_text(&store).await,
    )
}

async fn healthz(State(store): State<StoreHandle>) -> (StatusCode, String) {
    match tokio::time::timeout(LOOP_DEADLINE, store.status()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ok\n".into()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {e}\n")),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: the store loop did not answer within {LOOP_DEADLINE:?}\n"),
        ),
    }
}

async fn readyz(
    State(store): State<StoreHandle>,
    Query(q): Query<Verbose>,
) -> (StatusCode, String) {
    let mut checks: Vec<(&str, Result<(), String>)> = Vec::new();
    checks.push((
        "draining",
        if store.is_draining() {
            Err("the node is draining: its leaderships are moving away before it stops".into())
        } else {
            Ok(())
        },
    ));
    match tokio::time::timeout(LOOP_DEADLINE, store.status()).await {
        Ok(Ok(s)) => {
            checks.push(("store", Ok(())));
            checks.push(("ranges", super::health::readiness(&s)));
        }
        Ok(Err(e)) => checks.push(("store", Err(e.to_string()))),
        Err(_) => checks.push(("store", Err(format!("no answer within {LOOP_DEADLINE:?}")))),
    }
    let ready = checks.iter().all(|(_, r)| r.is_ok());
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = String::new();
    if q.verbose.is_some() {
        for (name, r) in &checks {
            match r {
                Ok(()) => body.push_str(&format!("[+] {name} ok\n")),
                Err(why) => body.push_str(&format!("[-] {name} failed: {why}\n")),
            }
        }
    }
    body.push_str(if ready { "ready\n" } else { "not ready\n" });
    (code, body)
}
