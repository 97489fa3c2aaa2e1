//! The outbox row: one outgoing mail, rendered, with its delivery state. It lives with the store because
//! the store keeps it (queued in the same transaction as the change that caused it, updated by the worker
//! after each attempt); `outbound` builds rows and carries them to a transport, and re-exports these types.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::desk::ticket::{AttachmentRef, Locale, TicketId};

/// Where an outgoing mail is in its delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxStatus {
    Queued,
    Sent,
    Failed,
    Bounced,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Queued => "queued",
            OutboxStatus::Sent => "sent",
            OutboxStatus::Failed => "failed",
            OutboxStatus::Bounced => "bounced",
        }
    }
}

/// One outgoing mail, rendered, with its delivery state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutboxItem {
    pub id: u64,
    pub ticket: TicketId,
    /// The template event (`ack`, `status_changed`, …).
    pub kind: String,
    pub from: String,
    pub from_name: String,
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// Without angle brackets; fixed when queued.
    pub message_id: String,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    /// RFC 3834 `Auto-Submitted` value (`no`: written by a person, no header).
    pub auto_submitted: String,
    /// Files attached (blobs in the store), e.g. an agent's attachments relayed to the customer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentRef>,
    pub status: OutboxStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub next_attempt_at: DateTime<Utc>,
    /// When an admin last queued it again (`outbox retry`): the retry age counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requeued_at: Option<DateTime<Utc>>,
    /// Set while the row's template failed to render: what rendering it again needs. Such a row is
    /// `failed` and has no subject or text; `outbox retry` renders it first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrendered: Option<Unrendered>,
}

/// What a mail whose template failed at run time needs to be rendered later: its language and the template
/// context as it was when the mail was decided (the event is the row's `kind`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Unrendered {
    pub locale: Locale,
    pub context: serde_json::Value,
}

/// The JSON shape of `postdesk outbox list --json` (ARCHITECTURE.md, "JSON"): the contract names plus a few extras.
#[derive(Serialize)]
pub struct OutboxView<'a> {
    pub id: u64,
    pub ticket: &'a TicketId,
    pub kind: &'a str,
    pub to: &'a [String],
    pub subject: &'a str,
    pub status: OutboxStatus,
    pub attempts: u32,
    pub last_error: Option<&'a str>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub message_id: &'a str,
    pub next_attempt_at: DateTime<Utc>,
}

impl OutboxItem {
    pub fn view(&self) -> OutboxView<'_> {
        OutboxView {
            id: self.id,
            ticket: &self.ticket,
            kind: &self.kind,
            to: &self.to,
            subject: &self.subject,
            status: self.status,
            attempts: self.attempts,
            last_error: self.last_error.as_deref(),
            created_at: self.created_at,
            sent_at: self.sent_at,
            message_id: &self.message_id,
            next_attempt_at: self.next_attempt_at,
        }
    }
}

/// How many outbox rows are in each status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutboxCounts {
    pub queued: u64,
    pub sent: u64,
    pub failed: u64,
    pub bounced: u64,
}

/// Which outbox rows to list (see [`crate::store::Storage::outbox_list`]).
#[derive(Clone, Copy, Debug)]
pub enum OutboxFilter<'a> {
    /// Every row, oldest first.
    All,
    /// The rows of one ticket, oldest first.
    Ticket(&'a TicketId),
    /// The row with this id, if there is one.
    One(u64),
}

/// A queued outbox row with plausible contents, for tests of the store and the worker.
#[cfg(test)]
pub(crate) fn sample_item(id: u64, ticket: u64) -> OutboxItem {
    let now = chrono::Utc::now();
    OutboxItem {
        id,
        ticket: TicketId::new("JP", ticket),
        kind: "ack".into(),
        from: "support-jp@example.com".into(),
        from_name: "JP".into(),
        to: vec!["a@example.com".into()],
        subject: "s".into(),
        text: "t".into(),
        html: None,
        message_id: format!("m{id}@example.com"),
        in_reply_to: None,
        references: vec![],
        auto_submitted: "auto-replied".into(),
        attachments: vec![],
        requeued_at: None,
        unrendered: None,
        status: OutboxStatus::Queued,
        attempts: 0,
        last_error: None,
        created_at: now,
        sent_at: None,
        next_attempt_at: now,
    }
}
