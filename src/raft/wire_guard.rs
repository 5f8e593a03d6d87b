//! A guard in front of rust-protobuf 2 (raft-rs 0.7's codec) for Raft
//! messages from the network.
//!
//! rust-protobuf before 3.7.2 skips unknown fields of the (proto2) group
//! wire types by recursion without a depth limit, so a few megabytes of
//! nested group tags overflow the stack and abort the process
//! (RUSTSEC-2024-0437). eraftpb is proto3 and never uses groups, so this
//! walks the bytes once, descending into exactly the fields eraftpb
//! declares as messages (Message.entries, Message.snapshot,
//! Snapshot.metadata, SnapshotMetadata.conf_state), and refuses any group
//! tag or malformed field. Depth is bounded by the schema (four levels),
//! and it allocates nothing. What it accepts, rust-protobuf parses without
//! recursing deeper than the schema.

/// Why bytes were refused.
pub type Refused = &'static str;

/// The eraftpb message types the walk knows, by their message-typed fields.
#[derive(Clone, Copy)]
enum Schema {
    Message,
    Snapshot,
    SnapshotMetadata,
    /// Entry, ConfState, HardState: no message-typed fields.
    Flat,
}

impl Schema {
    /// The schema of field `field` when it is a message.
    fn child(self, field: u64) -> Option<Schema> {
        match (self, field) {
            (Schema::Message, 7) => Some(Schema::Flat), // entries: Entry
            (Schema::Message, 9) => Some(Schema::Snapshot),
            (Schema::Snapshot, 2) => Some(Schema::SnapshotMetadata),
            (Schema::SnapshotMetadata, 1) => Some(Schema::Flat), // conf_state
            _ => None,
        }
    }
}

/// Checks an encoded `eraftpb::Message`.
pub fn check_message(b: &[u8]) -> Result<(), Refused> {
    walk(b, Schema::Message)
}

/// Checks an encoded message with no message-typed fields (Entry,
/// HardState, ConfState).
pub fn check_flat(b: &[u8]) -> Result<(), Refused> {
    walk(b, Schema::Flat)
}

fn walk(mut b: &[u8], schema: Schema) -> Result<(), Refused> {
    while !b.is_empty() {
        let tag = varint(&mut b)?;
        let field = tag >> 3;
        if field == 0 {
            return Err("field number 0");
        }
        match tag & 7 {
            0 => {
                varint(&mut b)?;
            }
            1 => b = skip(b, 8)?,
            5 => b = skip(b, 4)?,
            2 => {
                let len = usize::try_from(varint(&mut b)?).map_err(|_| "length too large")?;
                if len > b.len() {
                    return Err("truncated field");
                }
                let (body, rest) = b.split_at(len);
                if let Some(child) = schema.child(field) {
                    walk(body, child)?;
                }
                b = rest;
            }
            3 | 4 => return Err("protobuf groups are not part of Raft messages"),
            _ => return Err("unknown wire type"),
        }
    }
    Ok(())
}

fn skip(b: &[u8], n: usize) -> Result<&[u8], Refused> {
    b.get(n..).ok_or("truncated field")
}

fn varint(b: &mut &[u8]) -> Result<u64, Refused> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&byte, rest) = b.split_first().ok_or("truncated varint")?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::Message as _;
    use raft::eraftpb::{ConfState, Entry, Message, MessageType, Snapshot};

    #[test]
    fn real_messages_pass() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.to = 2;
        m.from = 1;
        m.term = 7;
        let e = Entry {
            index: 5,
            data: vec![0x0b; 300].into(), // group-like bytes inside a bytes field
            ..Default::default()
        };
        m.entries = vec![e.clone(), e.clone()].into();
        let mut s = Snapshot {
            data: vec![0x0c; 40].into(),
            ..Default::default()
        };
        let cs = ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        };
        s.mut_metadata().set_conf_state(cs);
        s.mut_metadata().index = 9;
        m.set_snapshot(s);
        let bytes = m.write_to_bytes().unwrap();
        assert_eq!(check_message(&bytes), Ok(()));
        assert_eq!(check_flat(&e.write_to_bytes().unwrap()), Ok(()));
        assert_eq!(check_message(&[]), Ok(()));
    }

    #[test]
    fn nested_groups_and_malformed_bytes_are_refused() {
        // RUSTSEC-2024-0437: a deep nest of unknown groups (field 100).
        let deep: Vec<u8> = std::iter::repeat_n([0xa3, 0x06], 100_000)
            .flatten()
            .collect();
        assert!(check_message(&deep).is_err());
        // The same hidden inside an entry (Message.entries, field 7).
        let mut hidden = vec![0x3a, 4];
        hidden.extend_from_slice(&[0xa3, 0x06, 0xa3, 0x06]);
        assert!(check_message(&hidden).is_err());
        assert!(check_message(&[0x3a, 200, 1]).is_err()); // truncated
        assert!(check_message(&[0x08]).is_err()); // truncated varint
        assert!(check_message(&[0x00, 0x01]).is_err()); // field 0
        assert!(check_message(&[0x0f]).is_err()); // wire type 7
        assert!(check_message(&[0x08; 11]).is_err());
    }
}
