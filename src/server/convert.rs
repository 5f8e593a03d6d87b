//! The server's side of the edge: internal types to and from the API.
//! Errors leave as statuses whose spans are route keys (`api::route`), so
//! clients never see the engine's key layout; descriptors convert to and
//! from their protobuf form.

use tonic::Status;

use crate::error::{Error, Span};
use crate::keys;
use crate::proto::RangeDescriptorMsg;
use crate::range::RangeDescriptor;
use crate::wire;

/// The status for an error, spans as route keys.
pub fn status(e: Error) -> Status {
    wire::to_status(route_spans(e))
}

fn route_span(s: Span) -> Span {
    if !s.is_known() {
        return s;
    }
    Span::new(keys::route_key(&s.start), keys::route_key(&s.end))
}

/// Rewrites the spans an error carries from data keys to route keys.
pub fn route_spans(e: Error) -> Error {
    match e {
        Error::NotLeader {
            range_id,
            leader,
            span,
        } => Error::NotLeader {
            range_id,
            leader,
            span: route_span(span),
        },
        Error::KeyNotInRange { range_id, span } => Error::KeyNotInRange {
            range_id,
            span: route_span(span),
        },
        Error::EpochMismatch {
            range_id,
            current,
            version,
        } => Error::EpochMismatch {
            range_id,
            current: route_span(current),
            version,
        },
        e => e,
    }
}

impl From<RangeDescriptor> for RangeDescriptorMsg {
    fn from(d: RangeDescriptor) -> Self {
        RangeDescriptorMsg {
            range_id: d.range_id,
            start_key: d.start_key,
            end_key: d.end_key,
            version: d.version,
            conf_ver: d.conf_ver,
            replicas: d.replicas,
            frozen: d.frozen,
            sticky: d.sticky,
            gc_horizon: d.gc_horizon,
        }
    }
}

impl From<RangeDescriptorMsg> for RangeDescriptor {
    fn from(m: RangeDescriptorMsg) -> Self {
        RangeDescriptor {
            range_id: m.range_id,
            start_key: m.start_key,
            end_key: m.end_key,
            conf_ver: m.conf_ver,
            version: m.version,
            replicas: m.replicas,
            frozen: m.frozen,
            sticky: m.sticky,
            gc_horizon: m.gc_horizon,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::route;
    use crate::wire::from_status;

    #[test]
    fn spans_leave_as_route_keys() {
        let e = Error::KeyNotInRange {
            range_id: 3,
            span: Span::new(keys::data_key(b"/a"), keys::user_data_bounds().1),
        };
        match from_status(&status(e)) {
            Error::KeyNotInRange { span, .. } => {
                assert_eq!(span.start, route::key(b"/a"));
                assert_eq!(span.end, vec![route::END]);
            }
            other => panic!("{other:?}"),
        }
    }
}
