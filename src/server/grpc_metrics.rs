//! The gRPC edge's request metrics (production only: tower layers do not
//! run in simulation): a layer over every service of a listener that counts
//! each request by method and status code and times it until its response
//! headers are sent (the whole call for unary methods).
//!
//! The Raft transport's stream is not counted: it lives as long as the
//! connection, and its messages are counted by the Store.
//!
//! With tracing export on (`--otlp-endpoint`), each request is served in
//! its `rpc` span, a child of the caller's trace (`telemetry::rpc_span`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tracing::Instrument;

use crate::metrics::NodeMetrics;

/// Wraps a listener's services (`Server::builder().layer(..)`).
#[derive(Clone)]
pub struct MetricsLayer(Arc<NodeMetrics>);

impl MetricsLayer {
    pub fn new(metrics: Arc<NodeMetrics>) -> Self {
        MetricsLayer(metrics)
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<NodeMetrics>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method_label(req.uri().path());
        let span = method
            .as_ref()
            .and_then(|_| crate::telemetry::rpc_span(req.uri().path(), req.headers()));
        let fut = match &span {
            Some(span) => span.in_scope(|| self.inner.call(req)),
            None => self.inner.call(req),
        };
        let Some(method) = method else {
            return Box::pin(fut);
        };
        let span = span.unwrap_or_else(tracing::Span::none);
        let metrics = self.metrics.clone();
        let began = Instant::now();
        Box::pin(
            async move {
                let r = fut.await;
                let code = match &r {
                    Ok(resp) => code_label(resp.headers()),
                    Err(_) => "Unknown".into(),
                };
                metrics.observe_request(&method, &code, began.elapsed());
                tracing::Span::current().record("rpc.grpc.status_code", code.as_str());
                r
            }
            .instrument(span),
        )
    }
}

/// `/rangedb.Kv/Put` -> `Kv/Put`; `None` for the Raft stream. Paths of
/// no service of ours map to one label, so labels stay few.
fn method_label(path: &str) -> Option<String> {
    let path = path.trim_start_matches('/');
    let (service, method) = path.split_once('/')?;
    let service = service.rsplit('.').next().unwrap_or(service);
    match service {
        "RaftTransport" => None,
        "Kv" | "Txn" | "Admin" | "Health" => Some(format!("{service}/{method}")),
        _ => Some("other".into()),
    }
}

/// The gRPC status of a response whose headers carry one (an error is
/// sent "trailers-only"); a response without one is on its way to OK.
fn code_label(headers: &http::HeaderMap) -> String {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from_i32)
        .unwrap_or(tonic::Code::Ok);
    match code {
        tonic::Code::Ok => "OK".into(),
        c => format!("{c:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_codes_have_few_label_values() {
        assert_eq!(method_label("/rangedb.Kv/Put").as_deref(), Some("Kv/Put"));
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check").as_deref(),
            Some("Health/Check")
        );
        assert_eq!(method_label("/rangedb.RaftTransport/Stream"), None);
        assert_eq!(method_label("/x.Y/Z").as_deref(), Some("other"));
        let mut h = http::HeaderMap::new();
        assert_eq!(code_label(&h), "OK");
        h.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(code_label(&h), "Unavailable");
    }
}
