//! The writer's handle: what [`crate::store::StorageExt::write`] gives its closure while the writer lock is
//! held. Reads go to the same trees as the store's (nobody else writes meanwhile); commits, rewrites and
//! erasure are only reachable from here, so no write can forget to take the lock.

use chrono::{DateTime, Utc};

use super::Store;
use crate::desk::ticket::{Message, Ticket, TicketId};
use crate::store::{Change, Committed, Lookup, Removed, Rewrite, StoreError, Tx};

/// Lives only inside [`crate::store::Storage::with_writer`], which holds the lock.
pub(super) struct Writer<'a> {
    store: &'a Store,
}

impl<'a> Writer<'a> {
    pub(super) fn new(store: &'a Store) -> Writer<'a> {
        Writer { store }
    }
}

impl Lookup for Writer<'_> {
    fn ticket(&self, id: &TicketId) -> Result<Option<Ticket>, StoreError> {
        super::read::ticket(self.store, id)
    }
    fn messages_indexed(&self, id: &TicketId) -> Result<Vec<(u32, Message)>, StoreError> {
        super::read::messages_indexed(self.store, id)
    }
    fn tickets_for_message_id(&self, message_id: &str) -> Result<Vec<TicketId>, StoreError> {
        super::read::tickets_for_message_id(self.store, message_id)
    }
    fn duplicate_of(
        &self,
        message_id: &str,
        content_hash: &str,
    ) -> Result<Option<TicketId>, StoreError> {
        super::read::duplicate_of(self.store, message_id, content_hash)
    }
    fn tickets_of_requester(&self, address: &str) -> Result<Vec<TicketId>, StoreError> {
        super::read::tickets_of_requester(self.store, address)
    }
    fn next_ticket_number(&self, region: &str, first: u64) -> Result<u64, StoreError> {
        super::read::next_ticket_number(self.store, region, first)
    }
    fn auto_mail_since(
        &self,
        recipient: &str,
        since: DateTime<Utc>,
        at_most: usize,
    ) -> Result<Vec<DateTime<Utc>>, StoreError> {
        super::read::auto_mail_since(self.store, recipient, since, at_most)
    }
    fn auto_mail_count(&self, recipient: &str, since: DateTime<Utc>) -> Result<usize, StoreError> {
        super::read::auto_mail_count(self.store, recipient, since)
    }
    fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        super::read::blob(self.store, sha256)
    }
}

impl Tx for Writer<'_> {
    fn commit_all(&self, changes: &[Change]) -> Result<Committed, StoreError> {
        super::apply::commit_all(self.store, changes)
    }
    fn rewrite(&self, rewrite: &Rewrite) -> Result<Removed, StoreError> {
        super::rewrite::rewrite(self.store, rewrite)
    }
    fn forget_address(&self, address: &str) -> Result<usize, StoreError> {
        super::rewrite::forget_address(self.store, address)
    }
}
