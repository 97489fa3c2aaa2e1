//! Reads of tickets, messages, indexes and blobs: what a decision looks up ([`crate::store::Lookup`]) and
//! the ticket listing.

use chrono::{DateTime, Utc};

use super::keys::{
    auto_count_key, auto_log_key, dedupe_key, from_json, minute_of, parse_ticket_key, seq_key,
    ticket_key, u64_of,
};
use super::{engine_error, Store};
use crate::desk::ticket::{Message, Status, Ticket, TicketId};
use crate::store::StoreError;

pub(super) fn ticket(store: &Store, id: &TicketId) -> Result<Option<Ticket>, StoreError> {
    store
        .h()?
        .tickets
        .get(ticket_key(id))
        .map_err(engine_error)?
        .map(|v| from_json("tickets", &v))
        .transpose()
}

/// Tickets, optionally of one region and/or status, in id order.
pub(super) fn tickets(
    store: &Store,
    region: Option<&str>,
    status: Option<Status>,
) -> Result<Vec<Ticket>, StoreError> {
    let prefix = region
        .map(|r| format!("{r}-").into_bytes())
        .unwrap_or_default();
    let mut out = Vec::new();
    for kv in store.h()?.tickets.scan_prefix(prefix) {
        let (_, v) = kv.map_err(engine_error)?;
        let t: Ticket = from_json("tickets", &v)?;
        if status.is_none_or(|s| t.status == s) {
            out.push(t);
        }
    }
    Ok(out)
}

/// A ticket's messages with their indexes (a merge leaves gaps).
pub(super) fn messages_indexed(
    store: &Store,
    id: &TicketId,
) -> Result<Vec<(u32, Message)>, StoreError> {
    let prefix = ticket_key(id);
    let mut out = Vec::new();
    for kv in store.h()?.messages.scan_prefix(&prefix) {
        let (k, v) = kv.map_err(engine_error)?;
        // The prefix of `JP-<8 bytes>` is exact: message keys are 4 bytes longer.
        if let Some(index) = k
            .get(prefix.len()..)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
        {
            out.push((u32::from_be_bytes(index), from_json("messages", &v)?));
        }
    }
    Ok(out)
}

pub(super) fn tickets_for_message_id(
    store: &Store,
    message_id: &str,
) -> Result<Vec<TicketId>, StoreError> {
    match store
        .h()?
        .msgid
        .get(message_id.as_bytes())
        .map_err(engine_error)?
    {
        Some(v) => from_json("msgid", &v),
        None => Ok(Vec::new()),
    }
}

pub(super) fn duplicate_of(
    store: &Store,
    message_id: &str,
    content_hash: &str,
) -> Result<Option<TicketId>, StoreError> {
    match store
        .h()?
        .dedupe
        .get(dedupe_key(message_id, content_hash))
        .map_err(engine_error)?
    {
        Some(v) => Ok(Some(from_json("dedupe", &v)?)),
        None => Ok(None),
    }
}

pub(super) fn tickets_of_requester(
    store: &Store,
    address: &str,
) -> Result<Vec<TicketId>, StoreError> {
    let mut prefix = address.to_ascii_lowercase().into_bytes();
    prefix.push(0);
    let mut out = Vec::new();
    for kv in store.h()?.requester.scan_prefix(&prefix) {
        let (k, _) = kv.map_err(engine_error)?;
        if let Some(id) = parse_ticket_key(&k[prefix.len()..]) {
            out.push(id);
        }
    }
    Ok(out)
}

pub(super) fn next_ticket_number(
    store: &Store,
    region: &str,
    first: u64,
) -> Result<u64, StoreError> {
    Ok(store
        .h()?
        .meta
        .get(seq_key(region))
        .map_err(engine_error)?
        .and_then(|v| u64_of(&v))
        .unwrap_or(first))
}

/// Costs O(mails since).
pub(super) fn auto_mail_since(
    store: &Store,
    recipient: &str,
    since: DateTime<Utc>,
    at_most: usize,
) -> Result<Vec<DateTime<Utc>>, StoreError> {
    let start = auto_log_key(recipient, since, 0);
    let mut end = recipient.as_bytes().to_vec();
    end.push(1);
    let mut out = Vec::new();
    for kv in store.h()?.auto_log.range(start..end).rev().take(at_most) {
        let (k, _) = kv.map_err(engine_error)?;
        let ms = k
            .get(recipient.len() + 1..recipient.len() + 9)
            .and_then(u64_of);
        if let Some(t) = ms.and_then(|ms| DateTime::from_timestamp_millis(ms as i64)) {
            out.push(t);
        }
    }
    Ok(out)
}

/// How many automatic mails went to `recipient` since `since`, counted by the minute (the minute `since`
/// falls in counts whole): at most 61 keys read, however busy the address.
pub(super) fn auto_mail_count(
    store: &Store,
    recipient: &str,
    since: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let start = auto_count_key(recipient, minute_of(since));
    let end = auto_count_key(recipient, u32::MAX);
    let mut n = 0u64;
    for kv in store.h()?.auto_log.range(start..=end) {
        let (_, v) = kv.map_err(engine_error)?;
        n = n.saturating_add(u64_of(&v).unwrap_or(0));
    }
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

pub(super) fn blob(store: &Store, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(id) = store
        .h()?
        .blobs
        .get(sha256.as_bytes())
        .map_err(engine_error)?
    else {
        return Ok(None);
    };
    Ok(store
        .h()?
        .blob_data
        .get(id)
        .map_err(engine_error)?
        .map(|v| v.to_vec()))
}
