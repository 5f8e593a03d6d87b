//! OpenTelemetry tracing export (`--otlp-endpoint`): production edge only.
//! Simulation builds have none of it (the SDK's batch processor starts an
//! OS thread), and without an endpoint nothing here runs: no layer, no
//! injector, no request spans.
//!
//! What a trace holds: the CLI's command span (`cli`) -> each RPC as the
//! receiving node serves it (`rpc`, its parent taken from the W3C
//! `traceparent` in the request's gRPC metadata) -> the node's own RPCs to
//! other nodes (the timestamp oracle, lock resolution: the SDK injects the
//! context, `client::trace`) -> the Raft proposal (`raft.propose`, from
//! proposal to apply) -> its apply (`raft.apply`) -> the reply (the `rpc`
//! span ends with it). Every process exports under `service.name` =
//! `rangedb` and `service.instance.id` = its peer address (the CLI: `cli`).
//!
//! Which spans are exported (`export_filter`): the roots (`rpc`, `cli`)
//! and any `rangedb` span opened inside an exported span — so background
//! work (heartbeats, placement, directory publishing) never floods the
//! collector with traces nobody asked for. Logs are not exported.

use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{dynamic_filter_fn, DynFilterFn};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer as _;

use crate::error::{Error, Result};

/// The root span a node opens for each RPC it serves.
pub const RPC_SPAN: &str = "rpc";
/// The root span of a CLI command.
pub const CLI_SPAN: &str = "cli";

/// How long exporting may take at shutdown.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The running exporter; `shutdown` flushes what is buffered.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter's thread.
    pub fn shutdown(self) {
        let _ = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
    }
}

/// A tracing layer exporting spans to the OTLP/gRPC collector at
/// `endpoint` (e.g. `http://127.0.0.1:4317`) as `instance`, and the handle
/// that flushes it. Installs the W3C trace-context propagator and the
/// SDK's injector. Must run inside the tokio runtime (the exporter's
/// channel lives on it).
pub fn layer<S>(
    endpoint: &str,
    instance: &str,
) -> Result<(impl tracing_subscriber::Layer<S>, Telemetry)>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| Error::Config(format!("--otlp-endpoint {endpoint:?} is not a URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(Error::Config(format!(
            "--otlp-endpoint {endpoint:?} must be an http:// URL of an OTLP/gRPC collector, \
             e.g. http://127.0.0.1:4317"
        )));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| Error::Config(format!("cannot export traces to {endpoint}: {e}")))?;
    let resource = Resource::builder_empty()
        .with_service_name("rangedb")
        .with_attribute(KeyValue::new("service.instance.id", instance.to_string()))
        .with_attribute(KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION").to_string(),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("rangedb");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    crate::trace_context::set_injector(inject);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false)
        .with_filter(export_filter());
    Ok((layer, Telemetry { provider }))
}

/// Roots, and `rangedb` spans inside an exported span.
fn export_filter<S>() -> DynFilterFn<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    dynamic_filter_fn(|meta, cx| {
        meta.is_span()
            && meta.target().starts_with("rangedb")
            && (matches!(meta.name(), RPC_SPAN | CLI_SPAN) || cx.lookup_current().is_some())
    })
}

/// Writes the current span's trace context into outgoing gRPC metadata.
fn inject(md: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut Metadata(md)));
}

struct Metadata<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for Metadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The span a node serves one RPC in (`path`: `/rangedb.Kv/Put`), child of
/// the caller's span when the request carries a trace context; `None`
/// when tracing export is off.
pub fn rpc_span(path: &str, headers: &http::HeaderMap) -> Option<tracing::Span> {
    if !crate::trace_context::enabled() {
        return None;
    }
    let method = path.trim_start_matches('/');
    let span = tracing::info_span!(
        target: "rangedb::rpc",
        RPC_SPAN,
        otel.name = method,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    let _ = span.set_parent(parent);
    Some(span)
}

/// The span a CLI command runs in (`what`: its name), when exporting.
pub fn cli_span(what: &str) -> tracing::Span {
    tracing::info_span!(target: "rangedb::cli", CLI_SPAN, otel.name = %format!("rangedb {what}"), otel.kind = "client")
}
