//! Outgoing mail: the durable outbox row ([`OutboxItem`]), how a [`crate::desk::decide::Reply`] becomes one
//! ([`compose`]), rendering ([`render`]), transports ([`transport`]) and the delivering worker ([`worker`]).
//!
//! A reply is rendered and fixed (Message-ID included) when it is queued, in the same store transaction as
//! the change that caused it; the worker only carries rows to the transport. A resend after a crash is then
//! byte-for-byte the same mail, which receivers can drop as a duplicate.

pub mod limit;
pub mod msgid;
pub mod render;
pub mod transport;
pub mod worker;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Config, RegionConfig};
use crate::desk::decide::Reply;
use crate::desk::ticket::{Ticket, TicketId};
use render::{RenderError, Renderer};

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
    pub attachments: Vec<crate::desk::ticket::AttachmentRef>,
    pub status: OutboxStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub next_attempt_at: DateTime<Utc>,
    /// When an admin last queued it again (`outbox retry`): the retry age counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requeued_at: Option<DateTime<Utc>>,
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

/// The RFC 3834 value for an event: answers to a customer's mail are `auto-replied`, everything else that
/// postdesk starts by itself is `auto-generated`.
fn auto_submitted_for(kind: &str) -> &'static str {
    match kind {
        // Written by a person: not automatic at all.
        "agent_reply" => "no",
        "ack" | "customer_reminder" | "oversize" => "auto-replied",
        _ => "auto-generated",
    }
}

/// What turns a reply into a mail: the compiled templates and the Message-ID secret.
pub struct Composer {
    pub renderer: Renderer,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Composer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Composer")
    }
}

/// Render a reply for a ticket into an outbox row with id `outbox_id`.
pub fn compose(
    reply: &Reply,
    ticket: &Ticket,
    region: &RegionConfig,
    config: &Config,
    composer: &Composer,
    outbox_id: u64,
    now: DateTime<Utc>,
) -> Result<OutboxItem, RenderError> {
    let context = render::context(reply, ticket, region, config);
    let rendered = composer
        .renderer
        .render(reply.kind, reply.locale, &context)?;
    let references = ticket.thread_ids.clone();
    Ok(OutboxItem {
        id: outbox_id,
        ticket: ticket.id.clone(),
        kind: reply.kind.to_string(),
        from: region.address.clone(),
        from_name: region.desk_name(),
        to: reply.to.clone(),
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        message_id: msgid::make(
            reply.kind,
            &ticket.id,
            outbox_id,
            region.domain(),
            &composer.secret,
        ),
        in_reply_to: ticket.last_customer_message_id.clone(),
        references,
        auto_submitted: auto_submitted_for(reply.kind).to_string(),
        attachments: reply.attachments.clone(),
        status: OutboxStatus::Queued,
        attempts: 0,
        last_error: None,
        created_at: now,
        sent_at: None,
        next_attempt_at: now,
        requeued_at: None,
    })
}

/// A queued outbox row with plausible contents, for tests of the store and the worker.
#[cfg(test)]
pub(crate) fn sample_item(id: u64, ticket: u64) -> OutboxItem {
    let now = chrono::Utc::now();
    OutboxItem {
        id,
        ticket: crate::desk::ticket::TicketId::new("JP", ticket),
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
        status: OutboxStatus::Queued,
        attempts: 0,
        last_error: None,
        created_at: now,
        sent_at: None,
        next_attempt_at: now,
    }
}
