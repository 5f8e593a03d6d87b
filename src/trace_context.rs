//! Trace context on outgoing requests (no tracing dependency: the client
//! SDK and the node use it; the production edge installs the injector,
//! `telemetry`): every RPC the SDK sends is built by
//! `request`, which lets an installed injector (W3C `traceparent` from the
//! current tracing span, see the server's `telemetry` module) write into the
//! request's gRPC metadata, so spans on the receiving node join the
//! caller's trace — across the CLI -> node and node -> node hops alike.
//!
//! No injector is installed unless tracing export was asked for
//! (`--otlp-endpoint`): then `request` is `Request::new` plus one atomic
//! load. Simulation builds never install one.

use std::sync::OnceLock;

use tonic::metadata::MetadataMap;
use tonic::Request;

/// Writes the current trace context into outgoing metadata.
pub type Injector = fn(&mut MetadataMap);

static INJECTOR: OnceLock<Injector> = OnceLock::new();

/// Installs the process's injector (the first call wins).
pub fn set_injector(f: Injector) {
    let _ = INJECTOR.set(f);
}

/// Whether trace context is being propagated (an injector is installed).
pub fn enabled() -> bool {
    INJECTOR.get().is_some()
}

/// An outgoing request carrying the current trace context, if any.
pub fn request<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(inject) = INJECTOR.get() {
        inject(r.metadata_mut());
    }
    r
}
