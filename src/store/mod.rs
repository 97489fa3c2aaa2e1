//! Storage: the interface postdesk asks of a storage engine ([`Storage`], in `api.rs`), the outbox row it
//! keeps ([`outbox`]), and the embedded default engine, sled ([`Store`], in `sled/`).
//!
//! The interface is ours, in postdesk's types, so that a second engine (PostgreSQL is planned) is an
//! implementation and moving to sled's successor touches one directory. Its contract, whatever the engine:
//! - Every change one event causes (a mail, a timer, a status change) is one [`Change`] committed
//!   atomically by [`Tx::commit_all`]: ticket, messages, indexes, blobs, outbox rows, timers, the ticket
//!   sequence and the intake position. A batch of mails is several changes in one commit.
//! - Writers are serialised: [`StorageExt::write`] runs its closure with the writer held, so reading what a
//!   decision needs, deciding and committing see one state. Commits are reachable only through it.
//! - Nothing is acknowledged at its source (IMAP, Maildir, the MTA) before [`Storage::flush_async`]
//!   returned after the commit, and no send outcome is reported before its update was flushed.
//! - What a rewrite deleted is gone from the engine's files after [`Storage::compact`] (erasure calls it):
//!   an engine that keeps old versions (sled's log, PostgreSQL's dead tuples) rewrites them away there.
//!
//! Engine-specific (not on the trait, see [`Store`]): opening, backup and restore, a full scan for tests.

mod api;
pub mod outbox;
mod sled;

#[cfg(test)]
pub(crate) mod conformance;

pub use self::sled::{backup, Store, MIN_FREE_BYTES};
pub use api::{
    Change, Committed, Compacted, Flush, Lookup, Quarantined, Removed, Rewrite, Storage,
    StorageExt, StoreError, Timer, Tx, Wake,
};
pub use outbox::{OutboxCounts, OutboxFilter};
