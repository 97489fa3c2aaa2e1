//! Customers' data on request: export (a data-subject access request) and erasure (the right to be
//! forgotten). Retention (`[retention]`) is a timer: the service carries it out when it is due.
//!
//! The decisions are pure ([`crate::desk::privacy`]); this module, through the application service
//! ([`Desk`]), finds the data, writes files and commits one [`Rewrite`] per ticket — one sled transaction that changes the
//! ticket, its messages, indexes, outbox rows, timers and blobs together, so an interrupted erasure leaves
//! every ticket either untouched or fully erased.
//!
//! Export layout (directory 0700, files 0600 whatever the umask):
//! ```text
//! DIR/customer.json                      {address, exported_at, tickets: [ids], outbox: [rows sent to them]}
//! DIR/tickets/JP-1000/ticket.json        the ticket as `tickets show --json` prints it (messages included)
//! DIR/tickets/JP-1000/attachments/003-invoice.pdf    message number, then the sanitised file name
//! ```

use crate::store::{Lookup, Rewrite, Storage, StorageExt, StoreError};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::desk::privacy::{erase_ticket, involves, pseudonym};
use crate::desk::ticket::{Message, Ticket, TicketId};
use crate::mail::parse::safe_filename;
use crate::outbound::{OutboxItem, OutboxStatus};
use crate::service::{message_ids, Desk};
use crate::store::backup::{create_private_dir, create_private_file, BackupError};

/// Why an export or erasure failed.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Files(#[from] BackupError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0:?} is not an email address")]
    BadAddress(String),
}

/// The lower-cased address, or an error for something that is not one.
pub fn normalise_address(address: &str) -> Result<String, PrivacyError> {
    let a = address.trim().to_ascii_lowercase();
    let ok = a.len() >= 3
        && a.split('@').count() == 2
        && !a.starts_with('@')
        && !a.ends_with('@')
        && !a.contains(|c: char| c.is_whitespace() || c.is_control() || c == '\0');
    if ok {
        Ok(a)
    } else {
        Err(PrivacyError::BadAddress(address.to_string()))
    }
}

/// What `customer export` wrote.
#[derive(Debug, Default)]
pub struct ExportSummary {
    pub tickets: usize,
    pub messages: usize,
    pub attachments: usize,
    pub outbox_rows: usize,
}

/// What `customer erase` changed (or, as a preview, would change).
#[derive(Debug, Default)]
pub struct EraseSummary {
    pub tickets: Vec<TicketId>,
    pub messages: usize,
    pub outbox_rows: usize,
    pub cancelled: usize,
    pub blobs: usize,
    /// Quarantined input (unreadable mail) that mentioned the address, deleted.
    pub quarantined: usize,
}

#[derive(Serialize)]
struct TicketExport<'a> {
    #[serde(flatten)]
    ticket: &'a Ticket,
    messages: &'a [Message],
}

#[derive(Serialize)]
struct CustomerExport<'a> {
    address: &'a str,
    exported_at: DateTime<Utc>,
    tickets: Vec<&'a TicketId>,
    /// Mail postdesk sent or queued to this address.
    outbox: &'a [OutboxItem],
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), PrivacyError> {
    let mut f = create_private_file(path)?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|source| PrivacyError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(v).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

impl Desk {
    /// Every ticket `address` is the requester or a participant of, and every outbox row addressed to it.
    fn customer_data(&self, address: &str) -> Result<(Vec<Ticket>, Vec<OutboxItem>), StoreError> {
        let outbox: Vec<OutboxItem> = self
            .store
            .outbox_all()?
            .into_iter()
            .filter(|i| i.to.iter().any(|t| t.eq_ignore_ascii_case(address)))
            .collect();
        let mut tickets = BTreeMap::new();
        for t in self.store.tickets(None, None)? {
            let mailed = outbox.iter().any(|i| i.ticket == t.id);
            if involves(&t, address) || mailed {
                tickets.insert(t.id.clone(), t);
            }
        }
        Ok((tickets.into_values().collect(), outbox))
    }

    /// Write everything stored about `address` into `dir` (new or empty).
    pub fn export_customer(
        &self,
        address: &str,
        dir: &Path,
    ) -> Result<ExportSummary, PrivacyError> {
        let address = normalise_address(address)?;
        let (tickets, outbox) = self.customer_data(&address)?;
        create_private_dir(dir)?;
        let mut summary = ExportSummary {
            tickets: tickets.len(),
            outbox_rows: outbox.len(),
            ..ExportSummary::default()
        };
        let tickets_dir = dir.join("tickets");
        create_private_dir(&tickets_dir)?;
        for t in &tickets {
            let messages = self.store.messages(&t.id)?;
            summary.messages += messages.len();
            // Ticket ids are REGION-NUMBER: safe as a directory name.
            let tdir = tickets_dir.join(t.id.to_string());
            create_private_dir(&tdir)?;
            write_file(
                &tdir.join("ticket.json"),
                &json(&TicketExport {
                    ticket: t,
                    messages: &messages,
                }),
            )?;
            let mut adir_made = false;
            let adir = tdir.join("attachments");
            for (i, m) in messages.iter().enumerate() {
                for a in &m.attachments {
                    let Some(bytes) = self.store.blob(&a.sha256)? else {
                        continue;
                    };
                    if !adir_made {
                        create_private_dir(&adir)?;
                        adir_made = true;
                    }
                    // Never a path from the mail: the sanitised name, numbered by message, made unique.
                    let base = format!("{:03}-{}", i + 1, safe_filename(&a.filename));
                    let mut path = adir.join(&base);
                    let mut n = 1;
                    while path.exists() {
                        n += 1;
                        path = adir.join(format!("{n}-{base}"));
                    }
                    write_file(&path, &bytes)?;
                    summary.attachments += 1;
                }
            }
        }
        write_file(
            &dir.join("customer.json"),
            &json(&CustomerExport {
                address: &address,
                exported_at: Utc::now(),
                tickets: tickets.iter().map(|t| &t.id).collect(),
                outbox: &outbox,
            }),
        )?;
        tracing::info!(
            tickets = summary.tickets,
            messages = summary.messages,
            attachments = summary.attachments,
            "customer data exported"
        );
        tracing::debug!(address = %address, dir = %dir.display(), "customer data exported");
        Ok(summary)
    }

    /// Erase `address` from the store (see [`crate::desk::privacy`]). With `apply` false, only say what
    /// would be erased.
    ///
    /// After the rewrites, the store is compacted ([`Storage::compact`]): the engine keeps old versions of
    /// what was rewritten in its files (sled's log), and erasure must reach the disk, not only the trees.
    pub fn erase_customer(&self, address: &str, apply: bool) -> Result<EraseSummary, PrivacyError> {
        let address = normalise_address(address)?;
        let summary = self.erase_in_trees(&address, apply)?;
        if apply {
            // Outside the write closure: compaction takes the writer itself. Should it fail, the logical
            // erasure stands (committed above) and running the same command again compacts.
            if let Err(e) = self.store.compact() {
                tracing::error!("customer data erased from the tickets, but the store could not be rewritten, so old copies may remain in its files: {e}; run `postdesk customer erase` for the same address again");
                return Err(e.into());
            }
        }
        Ok(summary)
    }

    fn erase_in_trees(&self, address: &str, apply: bool) -> Result<EraseSummary, PrivacyError> {
        let address = address.to_string();
        self.store.write(|tx| {
            let (tickets, _) = self.customer_data(&address)?;
            let alias = pseudonym(&address, &self.composer.secret);
            let mut summary = EraseSummary::default();
            for ticket in tickets {
                let messages = tx.messages_indexed(&ticket.id)?;
                let rows = self.store.outbox_of_ticket(&ticket.id)?;
                summary.tickets.push(ticket.id.clone());
                summary.messages += messages.len();
                summary.outbox_rows += rows.len();
                summary.cancelled += rows
                    .iter()
                    .filter(|r| r.status == OutboxStatus::Queued)
                    .count();
                if !apply {
                    continue;
                }
                let plain: Vec<Message> = messages.iter().map(|(_, m)| m.clone()).collect();
                let (mut skeleton, erased) = erase_ticket(&ticket, &plain, &address, &alias);
                crate::desk::timers::reschedule(&mut skeleton, &self.config);
                let mut rw = Rewrite {
                    id: Some(ticket.id.clone()),
                    requester_entries: vec![ticket.requester.clone()],
                    dedupe: messages
                        .iter()
                        .map(|(_, m)| (m.message_id.clone(), m.content_hash.clone()))
                        .collect(),
                    message_ids: message_ids(&ticket, messages.iter().map(|(_, m)| m), &rows),
                    messages: messages
                        .iter()
                        .zip(erased)
                        .map(|((i, _), m)| (*i, Some(m)))
                        .collect(),
                    ticket: Some(skeleton),
                    ..Rewrite::default()
                };
                for row in rows {
                    let mut r = row.clone();
                    r.to =
                        r.to.iter()
                            .map(|a| {
                                if a.eq_ignore_ascii_case(&address) {
                                    alias.clone()
                                } else {
                                    a.clone()
                                }
                            })
                            .collect();
                    r.subject = String::new();
                    r.text = String::new();
                    r.html = None;
                    r.in_reply_to = None;
                    r.references.clear();
                    r.attachments.clear();
                    r.unrendered = None;
                    if r.status == OutboxStatus::Queued {
                        r.status = OutboxStatus::Failed;
                        r.last_error = Some("cancelled: the customer's data was erased".into());
                    }
                    rw.outbox.push((r.id, Some(r)));
                }
                summary.blobs += tx.rewrite(&rw)?.blobs;
            }
            if apply {
                summary.quarantined = tx.forget_address(&address)?;
                tracing::info!(
                    tickets = summary.tickets.len(),
                    messages = summary.messages,
                    outbox_rows = summary.outbox_rows,
                    cancelled = summary.cancelled,
                    blobs = summary.blobs,
                    quarantined = summary.quarantined,
                    "customer data erased"
                );
                tracing::debug!(address = %address, pseudonym = %alias, "customer data erased");
            }
            Ok(summary)
        })
    }
}
