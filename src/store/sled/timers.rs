//! The timer queue: `timers` holds due millis + timer kind + ticket key for each ticket's scheduled timers
//! (see [`crate::desk::ticket::Ticket::timers`]). It is rewritten with the ticket in the same transaction
//! (see [`super::apply`]), so a tick reads only what is due.

use chrono::{DateTime, Utc};

use super::keys::{millis, parse_timer_key};
use super::{engine_error, Store};
use crate::store::{StoreError, Timer};

/// Timers due at `now`, soonest first, at most `limit`. Costs O(due entries), whatever the store holds.
pub(super) fn due(
    store: &Store,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Timer>, StoreError> {
    let end = (millis(now) + 1).to_be_bytes();
    store
        .h()?
        .timers
        .range(..end.as_slice())
        .take(limit)
        .map(|kv| Ok(parse_timer_key(&kv.map_err(engine_error)?.0)))
        .filter_map(|r| r.transpose())
        .collect()
}

/// When the earliest timer is due.
pub(super) fn next(store: &Store) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(store
        .h()?
        .timers
        .first()
        .map_err(engine_error)?
        .and_then(|(k, _)| parse_timer_key(&k))
        .map(|(_, _, due)| due))
}

/// Every scheduled timer, soonest first.
pub(super) fn all(store: &Store) -> Result<Vec<Timer>, StoreError> {
    store
        .h()?
        .timers
        .iter()
        .map(|kv| Ok(parse_timer_key(&kv.map_err(engine_error)?.0)))
        .filter_map(|r| r.transpose())
        .collect()
}
