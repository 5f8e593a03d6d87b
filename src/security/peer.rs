//! Who may claim to be which node on the peer port.
//!
//! Every Raft batch names its sender: a node id, that node's peer address
//! and its client address. Receivers act on those claims (the batch's
//! messages are fed to that node's Raft peers; the addresses go into the
//! peer table and the leader-hint directory), so a claim must be backed by
//! the sender's certificate. With mutual TLS the sender's identity comes
//! from its verified certificate (`server_tls::identity`):
//! - a node certificate (common name `node`) names the hosts a node may
//!   run on; a batch is believed only if both claimed addresses are on one
//!   of those hosts, and the claimed node id is not known at an address
//!   outside them;
//! - a user's client certificate may call the client services but never
//!   speak Raft.
//!
//! The check runs on the envelope (decoded by prost, which bounds its
//! recursion) before any Raft message in it is decoded by rust-protobuf
//! (which does not: RUSTSEC-2024-0437). Without TLS (plaintext on loopback,
//! `--insecure`, the simulator) identities are unverified and claims are
//! believed, as before.

use std::net::IpAddr;

/// The common name of every node certificate (users may not take it).
pub const NODE_COMMON_NAME: &str = "node";

/// The verified identity of the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    /// No TLS: nothing was verified.
    Unverified,
    /// A node certificate, valid for these hosts (DNS names and IPs).
    Node { hosts: Vec<String> },
    /// A user's client certificate.
    User(String),
}

/// Why a sender's claim is refused (the status message).
pub type Refusal = String;

/// Whether `id` may send Raft traffic as node `from_node` with these
/// addresses; `known_peer` is the peer address this node already has for
/// `from_node`, if any.
pub fn check_raft_sender(
    id: &PeerIdentity,
    from_node: u64,
    claimed_peer: &str,
    claimed_client: &str,
    known_peer: Option<&str>,
) -> Result<(), Refusal> {
    let hosts = match id {
        PeerIdentity::Unverified => return Ok(()),
        PeerIdentity::User(user) => {
            return Err(format!(
                "a client certificate (user {user:?}) may not send Raft traffic; nodes present node certificates"
            ))
        }
        PeerIdentity::Node { hosts } => hosts,
    };
    if from_node == 0 {
        return Err("a Raft batch must name its sender (node id 0)".into());
    }
    for (what, addr) in [("peer", claimed_peer), ("client", claimed_client)] {
        if addr.is_empty() {
            continue;
        }
        if !covers(hosts, host_of(addr)) {
            return Err(format!(
                "node {from_node} claims {what} address {addr}, but its certificate is valid only for {}",
                hosts.join(", ")
            ));
        }
    }
    if let Some(known) = known_peer {
        if !covers(hosts, host_of(known)) {
            return Err(format!(
                "node {from_node} is at {known}, which the sender's certificate (valid for {}) does not cover",
                hosts.join(", ")
            ));
        }
    }
    Ok(())
}

/// The host part of `host:port` (`[v6]:port` too); the whole string when
/// it has no port.
pub fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((host, _)) if !host.contains(':') => host,
        Some(_) => addr,
        None => addr,
    }
}

/// Whether one of a certificate's `hosts` names `host`: IPs compare as
/// addresses, DNS names without regard to case (no wildcards).
pub fn covers(hosts: &[String], host: &str) -> bool {
    let ip = host.parse::<IpAddr>().ok();
    hosts.iter().any(|h| match (ip, h.parse::<IpAddr>()) {
        (Some(a), Ok(b)) => a == b,
        (None, Err(_)) => h.eq_ignore_ascii_case(host),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(hosts: &[&str]) -> PeerIdentity {
        PeerIdentity::Node {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_of("n1:8080"), "n1");
        assert_eq!(host_of("[::1]:8080"), "::1");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn a_node_certificate_covers_only_its_hosts() {
        let id = node(&["localhost", "127.0.0.1"]);
        assert!(check_raft_sender(&id, 2, "127.0.0.1:8082", "127.0.0.1:8083", None).is_ok());
        assert!(check_raft_sender(&id, 2, "LOCALHOST:8082", "", Some("localhost:8082")).is_ok());
        let e = check_raft_sender(&id, 2, "10.0.0.9:8082", "127.0.0.1:8083", None).unwrap_err();
        assert!(e.contains("claims peer address 10.0.0.9:8082"), "{e}");
        let e = check_raft_sender(&id, 2, "127.0.0.1:8082", "evil.example:80", None).unwrap_err();
        assert!(e.contains("client address"), "{e}");
        // Node 3 is known elsewhere: this certificate cannot speak for it.
        let e = check_raft_sender(&id, 3, "127.0.0.1:8082", "", Some("n3:8080")).unwrap_err();
        assert!(e.contains("node 3 is at n3:8080"), "{e}");
        assert!(check_raft_sender(&id, 0, "127.0.0.1:8082", "", None).is_err());
        // An IP is not a DNS name, even if it resolves to one.
        assert!(!covers(&["localhost".into()], "127.0.0.1"));
        assert!(covers(&["::1".into()], "0:0:0:0:0:0:0:1"));
    }

    #[test]
    fn users_never_speak_raft_and_plaintext_is_unverified() {
        let e = check_raft_sender(&PeerIdentity::User("root".into()), 1, "", "", None).unwrap_err();
        assert!(e.contains("client certificate"), "{e}");
        assert!(check_raft_sender(&PeerIdentity::Unverified, 7, "x:1", "y:2", None).is_ok());
    }
}
