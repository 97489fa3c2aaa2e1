//! Outgoing mail: how a [`crate::desk::decide::Reply`] becomes an outbox row ([`compose`]; the row type,
//! [`OutboxItem`], belongs to the store that keeps it), rendering ([`render`]), transports ([`transport`])
//! and the delivering worker ([`worker`]).
//!
//! A reply is rendered and fixed (Message-ID included) when it is queued, in the same store transaction as
//! the change that caused it; the worker only carries rows to the transport. A resend after a crash is then
//! byte-for-byte the same mail, which receivers can drop as a duplicate.
//!
//! A template that fails at run time (an override using a variable its event does not have) does not stop
//! the change: [`compose`] still makes the row, `failed` with the reason, and keeps the template context in
//! it ([`Unrendered`]), so that once the template is fixed [`rerender`] can make the mail (`outbox retry`).

pub mod contract;
pub mod limit;
pub mod msgid;
pub mod render;
pub mod transport;
pub mod worker;

use chrono::{DateTime, Utc};

use crate::config::RegionConfig;
use crate::desk::reply::{Event, Reply};
use crate::desk::ticket::Ticket;
use render::{RenderError, Renderer};

#[cfg(test)]
pub(crate) use crate::store::outbox::sample_item;
/// The outbox row belongs to the store, which keeps it; re-exported here where it is built and sent.
pub use crate::store::outbox::{OutboxItem, OutboxStatus, OutboxView, Unrendered};

/// The RFC 3834 value for an event: answers to a customer's mail are `auto-replied`, everything else that
/// postdesk starts by itself is `auto-generated`.
fn auto_submitted_for(event: Event) -> &'static str {
    match event {
        // Written by a person: not automatic at all.
        Event::AgentReply => "no",
        Event::Ack | Event::CustomerReminder | Event::Oversize => "auto-replied",
        Event::StatusChanged
        | Event::Resolved
        | Event::Closed
        | Event::Survey
        | Event::AgentNotify
        | Event::SlaReminder
        | Event::Escalation
        | Event::CommandError => "auto-generated",
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

/// A reply whose template failed at run time: the row recording it (`failed`, the reason in `last_error`,
/// the context kept for [`rerender`]) and the error.
#[derive(Debug)]
pub struct RenderFailed {
    pub item: OutboxItem,
    pub error: RenderError,
}

/// Render a reply for a ticket into an outbox row with id `outbox_id`, queued. When the template fails, the
/// row is made all the same, `failed` (see [`RenderFailed`]): the caller stores it with the change.
pub fn compose(
    reply: &Reply,
    ticket: &Ticket,
    region: &RegionConfig,
    composer: &Composer,
    outbox_id: u64,
    now: DateTime<Utc>,
) -> Result<OutboxItem, Box<RenderFailed>> {
    let event = reply.event();
    let context = render::context(reply, ticket, region);
    let mut item = OutboxItem {
        id: outbox_id,
        ticket: ticket.id.clone(),
        kind: event.as_str().to_string(),
        from: region.address.clone(),
        from_name: region.desk_name(),
        to: reply.to.clone(),
        subject: String::new(),
        text: String::new(),
        html: None,
        message_id: msgid::make(
            event.as_str(),
            &ticket.id,
            outbox_id,
            region.domain(),
            &composer.secret,
        ),
        in_reply_to: ticket.last_customer_message_id.clone(),
        references: ticket.thread_ids.clone(),
        auto_submitted: auto_submitted_for(event).to_string(),
        attachments: reply.attachments.clone(),
        status: OutboxStatus::Queued,
        attempts: 0,
        last_error: None,
        created_at: now,
        sent_at: None,
        next_attempt_at: now,
        requeued_at: None,
        unrendered: None,
    };
    match composer
        .renderer
        .render(event.as_str(), reply.locale, &context)
    {
        Ok(rendered) => {
            item.subject = rendered.subject;
            item.text = rendered.text;
            item.html = rendered.html;
            Ok(item)
        }
        Err(error) => {
            item.status = OutboxStatus::Failed;
            item.last_error = Some(format!(
                "not rendered: {error}; fix the template (`postdesk check-config`), reload the daemon, then `postdesk outbox retry {outbox_id}`"
            ));
            item.unrendered = Some(Unrendered {
                locale: reply.locale,
                context,
            });
            Err(Box::new(RenderFailed { item, error }))
        }
    }
}

/// Why a row could not be rendered again.
#[derive(Debug, thiserror::Error)]
pub enum RerenderError {
    #[error("outbox row {id} has kind {kind:?}, which is no template event")]
    UnknownEvent { id: u64, kind: String },
    #[error(transparent)]
    Render(#[from] RenderError),
}

/// Render a row whose template failed when it was queued (see [`Unrendered`]) with the templates as they
/// are now. On success the row has its subject and text and no longer needs rendering; a row that was
/// rendered already is left as it is.
pub fn rerender(item: &mut OutboxItem, composer: &Composer) -> Result<(), RerenderError> {
    let Some(unrendered) = &item.unrendered else {
        return Ok(());
    };
    let event: Event = item.kind.parse().map_err(|_| RerenderError::UnknownEvent {
        id: item.id,
        kind: item.kind.clone(),
    })?;
    let rendered =
        composer
            .renderer
            .render(event.as_str(), unrendered.locale, &unrendered.context)?;
    item.subject = rendered.subject;
    item.text = rendered.text;
    item.html = rendered.html;
    item.unrendered = None;
    Ok(())
}

#[cfg(test)]
mod tests;
