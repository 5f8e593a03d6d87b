//! Keeps MVCC GC behind the SDK's long-running transactions.
//!
//! GC collects versions older than `gc_ttl` behind the oracle's time,
//! except below the oldest pinned start timestamp (`Admin.PinTimestamp`,
//! `_/txn/pins/<id>`). Pinning every transaction would cost a Raft write
//! each, so a client pins only when one of its transactions has been open
//! for `PIN_AFTER`: one pin per client (`sdk-<hex>`), holding the oldest
//! start among its open transactions, moved as they finish and released
//! when none is left. Short transactions — nearly all — cost nothing.
//!
//! Best effort, never a correctness device: a transaction GC passed anyway
//! (a pin not yet seen by the nodes, a `gc_ttl` shorter than `PIN_AFTER`)
//! is refused by the range with `TxnTooOld` (`RangeDescriptor::
//! check_gc_horizon`), never answered from collected versions. A pin lives
//! at most `txn_max_duration` past its start (nodes remove expired ones),
//! so a client that dies leaves nothing behind for long.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::{Client, Inner};
use crate::api::Timestamp;

/// A transaction open this long gets its start pinned.
pub const PIN_AFTER: Duration = Duration::from_secs(2);

/// How often the pinner looks at the open transactions.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The client's open transactions and its pin.
#[derive(Default)]
pub(super) struct OpenTxns {
    next: u64,
    /// ticket -> (start, when it opened here).
    open: BTreeMap<u64, (Timestamp, Instant)>,
    /// This client's pin id, once it pinned (from the first start it saw:
    /// oracle timestamps are unique cluster-wide).
    id: Option<String>,
    /// What the pin holds now.
    pinned: Option<Timestamp>,
    /// Whether the pinner task runs.
    running: bool,
}

impl OpenTxns {
    /// What the pin should hold at `now`: the oldest open start, once any
    /// transaction has been open `PIN_AFTER`.
    fn wanted(&self, now: Instant) -> Option<Timestamp> {
        let old = self.open.values().any(|(_, at)| now >= *at + PIN_AFTER);
        old.then(|| self.open.values().map(|(s, _)| *s).min())
            .flatten()
    }
}

impl Client {
    /// Registers an open transaction; the ticket for `txn_closed`.
    pub(super) fn txn_opened(&self, start: Timestamp) -> u64 {
        let (ticket, start_pinner) = {
            let mut o = self.open_txns.lock().unwrap_or_else(|e| e.into_inner());
            o.next += 1;
            let ticket = o.next;
            o.open.insert(ticket, (start, Instant::now()));
            o.id.get_or_insert_with(|| format!("sdk-{:016x}", start.0));
            (ticket, !std::mem::replace(&mut o.running, true))
        };
        if start_pinner {
            tokio::spawn(pinner(Arc::downgrade(&self.0)));
        }
        ticket
    }

    /// The transaction `ticket` ended (committed, rolled back or dropped).
    pub(super) fn txn_closed(&self, ticket: u64) {
        let mut o = self.open_txns.lock().unwrap_or_else(|e| e.into_inner());
        o.open.remove(&ticket);
    }

    /// Releases this client's pin if no transaction is open (before the
    /// process exits: `Client::flush`).
    pub(super) async fn release_idle_pin(&self) {
        let id = {
            let o = self.open_txns.lock().unwrap_or_else(|e| e.into_inner());
            match (&o.id, o.pinned, o.open.is_empty()) {
                (Some(id), Some(_), true) => id.clone(),
                _ => return,
            }
        };
        if self.release_pin(&id).await.is_ok() {
            let mut o = self.open_txns.lock().unwrap_or_else(|e| e.into_inner());
            if o.open.is_empty() {
                o.pinned = None;
            }
        }
    }
}

/// Moves the pin to what the open transactions need, every `CHECK_EVERY`,
/// until the client is gone or nothing is open and nothing pinned.
async fn pinner(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let client = Client(inner);
        let (id, wanted, pinned) = {
            let mut o = client.open_txns.lock().unwrap_or_else(|e| e.into_inner());
            if o.open.is_empty() && o.pinned.is_none() {
                o.running = false;
                return;
            }
            (o.id.clone(), o.wanted(Instant::now()), o.pinned)
        };
        let Some(id) = id else { continue };
        if wanted == pinned {
            continue;
        }
        let done = match wanted {
            Some(ts) => client.pin_timestamp(&id, ts).await,
            None => client.release_pin(&id).await,
        };
        match done {
            Ok(()) => {
                let mut o = client.open_txns.lock().unwrap_or_else(|e| e.into_inner());
                o.pinned = wanted;
            }
            Err(e) => tracing::debug!(%e, "the client's GC pin was not moved"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_transaction_open_long_enough_pins_the_oldest_start() {
        let t = Instant::now();
        let mut o = OpenTxns::default();
        o.open.insert(1, (Timestamp(500), t));
        o.open.insert(2, (Timestamp(300), t + PIN_AFTER));
        assert_eq!(
            o.wanted(t + Duration::from_millis(10)),
            None,
            "short: no pin"
        );
        assert_eq!(
            o.wanted(t + PIN_AFTER),
            Some(Timestamp(300)),
            "the oldest start"
        );
        o.open.remove(&2);
        assert_eq!(o.wanted(t + PIN_AFTER), Some(Timestamp(500)));
        o.open.clear();
        assert_eq!(o.wanted(t + PIN_AFTER), None);
    }
}
