//! How the sled engine lays out its keys and values: big-endian numbers so that keys sort as the numbers
//! do, NUL between a variable-length part and what follows, JSON values (see the tree list in
//! [`super`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::desk::ticket::{Status, TicketId, TimerKind};
use crate::store::outbox::OutboxStatus;
use crate::store::StoreError;

/// The sort key of a ticket id: region, `-`, number big-endian (so `JP-999` sorts before `JP-1000`).
pub(super) fn ticket_key(id: &TicketId) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.region.len() + 9);
    k.extend_from_slice(id.region.as_bytes());
    k.push(b'-');
    k.extend_from_slice(&id.number.to_be_bytes());
    k
}

/// A ticket id back from the tail of a key that ends with [`ticket_key`].
pub(super) fn parse_ticket_key(key: &[u8]) -> Option<TicketId> {
    let dash = key.iter().position(|&b| b == b'-')?;
    let region = std::str::from_utf8(&key[..dash]).ok()?;
    let number = u64_of(key.get(dash + 1..)?)?;
    Some(TicketId::new(region, number))
}

pub(super) fn message_key(id: &TicketId, index: u32) -> Vec<u8> {
    let mut k = ticket_key(id);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

pub(super) fn dedupe_key(message_id: &str, hash: &str) -> Vec<u8> {
    let mut k = message_id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(hash.as_bytes());
    k
}

pub(super) fn requester_key(address: &str, id: &TicketId) -> Vec<u8> {
    let mut k = address.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&ticket_key(id));
    k
}

pub(super) fn millis(at: DateTime<Utc>) -> u64 {
    at.timestamp_millis().max(0) as u64
}

/// The key of a queued outbox row in `outbox_due`.
pub(super) fn due_key(at: DateTime<Utc>, id: u64) -> Vec<u8> {
    let mut k = millis(at).to_be_bytes().to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The key of an outbox row in `outbox_ticket` (a ticket's rows).
pub(super) fn outbox_ticket_key(ticket: &TicketId, id: u64) -> Vec<u8> {
    let mut k = ticket_key(ticket);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(super) fn timer_key(due: DateTime<Utc>, kind: TimerKind, id: &TicketId) -> Vec<u8> {
    let mut k = millis(due).to_be_bytes().to_vec();
    k.push(kind.code());
    k.extend_from_slice(&ticket_key(id));
    k
}

pub(super) fn parse_timer_key(k: &[u8]) -> Option<(TicketId, TimerKind, DateTime<Utc>)> {
    let due = DateTime::from_timestamp_millis(u64_of(k.get(..8)?)? as i64)?;
    let kind = TimerKind::from_code(*k.get(8)?)?;
    let id = parse_ticket_key(k.get(9..)?)?;
    Some((id, kind, due))
}

pub(super) fn auto_log_key(recipient: &str, at: DateTime<Utc>, id: u64) -> Vec<u8> {
    let mut k = recipient.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&millis(at).to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// `auto_log`: how many automatic mails went to `recipient` in one minute (`minute` since the epoch). The
/// leading NUL keeps these apart from the log's own keys, which start with the address.
pub(super) fn auto_count_key(recipient: &str, minute: u32) -> Vec<u8> {
    let mut k = auto_count_prefix(recipient);
    k.extend_from_slice(&minute.to_be_bytes());
    k
}

pub(super) fn auto_count_prefix(recipient: &str) -> Vec<u8> {
    let mut k = vec![0];
    k.extend_from_slice(recipient.as_bytes());
    k.push(0);
    k
}

/// The minute `at` falls in, since the epoch.
pub(super) fn minute_of(at: DateTime<Utc>) -> u32 {
    (millis(at) / 60_000).min(u64::from(u32::MAX)) as u32
}

/// `meta`: the next ticket number of a region.
pub(super) fn seq_key(region: &str) -> Vec<u8> {
    format!("seq:{region}").into_bytes()
}

/// `meta`: automatic mails the rate limits held back in a region (a [`crate::store::Storage::counter`]).
pub(super) fn suppressed_key(region: &str) -> Vec<u8> {
    format!("suppressed:{region}").into_bytes()
}

/// `meta`: a running count of tickets (see [`super::counts`]).
pub(super) fn ticket_count_key(region: &str, status: Status) -> Vec<u8> {
    format!("count:ticket:{region}:{}", status.as_str()).into_bytes()
}

pub(super) const TICKET_COUNT_PREFIX: &[u8] = b"count:ticket:";

/// `meta`: a running count of outbox rows.
pub(super) fn outbox_count_key(status: OutboxStatus) -> Vec<u8> {
    format!("count:outbox:{}", status.as_str()).into_bytes()
}

pub(super) fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Our own types serialise infallibly (no maps with non-string keys, no failing Serialize impls).
    serde_json::to_vec(v).unwrap_or_default()
}

pub(super) fn from_json<T: for<'de> Deserialize<'de>>(
    tree: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        reason: e.to_string(),
    })
}

pub(super) fn u64_of(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_keys_sort_numerically() {
        let mut keys = [
            ticket_key(&TicketId::new("JP", 1000)),
            ticket_key(&TicketId::new("JP", 999)),
            ticket_key(&TicketId::new("JPX", 1)),
        ];
        keys.sort();
        assert_eq!(keys[0], ticket_key(&TicketId::new("JP", 999)));
        assert_eq!(keys[2], ticket_key(&TicketId::new("JPX", 1)));
    }

    #[test]
    fn timer_keys_read_back() {
        let id = TicketId::new("KR", 1042);
        let due = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        let kind = TimerKind::SlaBreach;
        assert_eq!(
            parse_timer_key(&timer_key(due, kind, &id)),
            Some((id, kind, due))
        );
    }
}
