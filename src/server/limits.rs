//! Explicit limits on every gRPC listener (production only: madsim's
//! server ignores them). tonic leaves most HTTP/2 protections off by
//! default; each one here bounds what one client can make a node hold.
//!
//! - concurrent streams per connection: an SDK multiplexes every call of a
//!   process over one connection per node, so the cap is generous, but a
//!   stream flood stops there (the h2 client queues beyond it);
//! - resets: streams a client resets before the node accepts them
//!   (Rapid Reset) and streams the node must reset for a client's protocol
//!   errors, both bounded;
//! - the header list a request may carry;
//! - HTTP/2 keepalive pings: a connection whose peer stopped answering is
//!   closed, so dead clients do not hold connections forever;
//! - the TLS handshake (`security::server_tls::HANDSHAKE_TIMEOUT`).
//!
//! Request message sizes are per service (`server::spawn_services`): Kv
//! keeps tonic's 4 MiB, Txn `api::MAX_TXN_MESSAGE_BYTES`, Admin
//! `api::MAX_ADMIN_MESSAGE_BYTES`, Raft `MAX_RAFT_BATCH_BYTES`.

use std::time::Duration;

use tonic::transport::Server;

/// Streams one connection may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Streams a client may reset before the node has accepted them.
pub const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the node may reset because of a client's errors (per connection).
pub const MAX_LOCAL_ERROR_RESETS: usize = 256;
/// Bytes of request headers (gRPC metadata included).
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Ping an idle connection this often; close it if no answer comes in
/// KEEPALIVE_TIMEOUT.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server builder with the limits set.
pub fn apply(b: Server) -> Server {
    b.max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS))
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .accept_http1(false)
}
