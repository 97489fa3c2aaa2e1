//! Outgoing mail: how a [`crate::desk::decide::Reply`] becomes an outbox row ([`compose`]; the row type,
//! [`OutboxItem`], belongs to the store that keeps it), rendering ([`render`]), transports ([`transport`])
//! and the delivering worker ([`worker`]).
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

use crate::config::{Config, RegionConfig};
use crate::desk::decide::Reply;
use crate::desk::ticket::Ticket;
use render::{RenderError, Renderer};

#[cfg(test)]
pub(crate) use crate::store::outbox::sample_item;
/// The outbox row belongs to the store, which keeps it; re-exported here where it is built and sent.
pub use crate::store::outbox::{OutboxItem, OutboxStatus, OutboxView};

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
