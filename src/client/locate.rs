//! Loading the routing cache in bulk. A client learns a range's span and
//! leader from each redirect (`NotLeader`, `KeyNotInRange`): one wasted
//! round trip per range it had not met, which a fresh client spread over
//! many ranges pays again and again (64 fresh benchmark clients over 1,024
//! ranges ran at 60% of their warm throughput). After `LOCATE_AFTER`
//! redirects, the client asks the node that redirected it where every
//! range it holds is and who leads it (`Kv/Locate`), in the background.
//!
//! Invariants: at most one load in flight per client, at most one started
//! per `LOCATE_EVERY`; best effort (a failed load changes nothing, the
//! redirects go on teaching); what it learns is only a hint — the server
//! checks every request's range and epoch, so a stale entry costs one
//! redirect, never a wrong answer.

use std::time::Duration;

use super::Client;
use crate::error::{Result, Span};
use crate::proto::{LocateRequest, RangeLocation};
use crate::trace_context as trace;

/// Redirects after which the client loads the cache in bulk.
const LOCATE_AFTER: u32 = 8;
/// The least time between two bulk loads.
const LOCATE_EVERY: Duration = Duration::from_secs(10);

/// Bulk-load bookkeeping (in the client's state).
#[derive(Default)]
pub(super) struct Locating {
    /// Redirects since the last load.
    redirects: u32,
    /// When the last load started.
    last: Option<tokio::time::Instant>,
    running: bool,
}

impl Client {
    /// `addr` redirected a request: after enough of them, load the routing
    /// cache from `addr` in the background.
    pub(super) fn note_redirect(&self, addr: &str) {
        let start = {
            let mut st = self.lock();
            let l = &mut st.locating;
            l.redirects += 1;
            let due = l.last.is_none_or(|t| t.elapsed() >= LOCATE_EVERY);
            if l.redirects < LOCATE_AFTER || l.running || !due {
                false
            } else {
                l.redirects = 0;
                l.running = true;
                l.last = Some(tokio::time::Instant::now());
                true
            }
        };
        if start {
            let (client, addr) = (self.clone(), addr.to_string());
            tokio::spawn(async move {
                match client.locate_from(&addr).await {
                    Ok(n) => tracing::debug!(n, %addr, "routing cache loaded"),
                    Err(e) => tracing::debug!(%e, %addr, "routing cache not loaded"),
                }
                client.lock().locating.running = false;
            });
        }
    }

    /// Learns every range `addr` knows the leader of; how many.
    async fn locate_from(&self, addr: &str) -> Result<usize> {
        let ranges = self.locate(addr).await?;
        let n = ranges.len();
        let mut st = self.lock();
        for r in ranges {
            let leader = (!r.leader.is_empty()).then_some(r.leader);
            Client::learn_into(&mut st, &Span::new(r.start, r.end), leader);
        }
        Ok(n)
    }

    /// What the node at `addr` knows of where ranges are (`Kv/Locate`):
    /// each range it holds a replica of and whose leader it knows, in key
    /// order, spans as route keys (`api::route`).
    pub async fn locate(&self, addr: &str) -> Result<Vec<RangeLocation>> {
        let req = trace::request(LocateRequest {
            from: Vec::new(),
            limit: 0,
        });
        let r = self
            .call_at(addr, |ch| async move { ch.kv().locate(req).await })
            .await?;
        Ok(r.ranges)
    }
}

#[cfg(test)]
mod tests {
    use super::super::State;
    use super::*;

    fn cached(st: &State) -> Vec<(&[u8], &[u8], Option<&str>)> {
        st.ranges
            .iter()
            .map(|(s, (e, l))| (s.as_slice(), e.as_slice(), l.as_deref()))
            .collect()
    }

    #[test]
    fn learning_a_span_replaces_exactly_what_it_overlaps() {
        let mut st = State::default();
        let learn = |st: &mut State, s: &[u8], e: &[u8], l: &str| {
            Client::learn_into(st, &Span::new(s.to_vec(), e.to_vec()), Some(l.into()))
        };
        learn(&mut st, b"a", b"c", "n1");
        learn(&mut st, b"c", b"f", "n2");
        learn(&mut st, b"f", b"k", "n3");
        learn(&mut st, b"m", b"p", "n1");
        // b..g overlaps a..c (reaching in from before), c..f, f..k; not m..p.
        learn(&mut st, b"b", b"g", "n2");
        assert_eq!(
            cached(&st),
            vec![(&b"b"[..], &b"g"[..], Some("n2")), (b"m", b"p", Some("n1"))]
        );
        // Adjacent spans do not overlap; empty and unknown spans are ignored.
        learn(&mut st, b"g", b"m", "n3");
        learn(&mut st, b"x", b"x", "n3");
        Client::learn_into(&mut st, &Span::new(b"q".to_vec(), Vec::new()), None);
        assert_eq!(
            cached(&st),
            vec![
                (&b"b"[..], &b"g"[..], Some("n2")),
                (b"g", b"m", Some("n3")),
                (b"m", b"p", Some("n1"))
            ]
        );
    }
}
