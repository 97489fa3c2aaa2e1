//! What the desk decides to send: a typed [`Reply`] per mail, one [`Content`] variant per template event.
//!
//! A decision is complete: each variant carries the values its event's templates need (beyond the ticket's
//! own fields, which every template gets), and [`Reply::audience`] says whom it is for, which decides how it
//! is protected against mail loops. [`Event::as_str`] is the only place the event's name is spelled: it names
//! the templates (`templates/<locale>/<event>.*.hbs`), and it is the outbox row's `kind` in the JSON contract
//! (rows on disk keep the string). The shell matches on [`Event`], never on the string.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::ticket::{AttachmentRef, Locale, Status, TicketId};

/// The template event of a mail postdesk sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// A new ticket's acknowledgement, with its number.
    Ack,
    /// The acknowledgement of a mail stored truncated because it was too large.
    Oversize,
    /// The ticket's status changed (an agent's command, the CLI); to `resolved`, it is [`Event::Resolved`].
    StatusChanged,
    /// An agent's answer, relayed to the customer.
    AgentReply,
    /// The ticket waits for the customer: a reminder.
    CustomerReminder,
    /// The ticket was resolved (by an agent's `#status resolved` without an answer, the CLI, or the desk
    /// after the last unanswered reminder): the notice, with the survey when it goes out.
    Resolved,
    /// Resolved long enough: closed, with a notice.
    Closed,
    /// The satisfaction survey on its own. The desk no longer decides it: the survey goes out inside the
    /// mail that says the ticket is resolved (`resolved`, `agent_reply`). Kept so that rows and template
    /// overrides of earlier versions still parse and render.
    Survey,
    /// The agents are told of a new ticket or a customer's reply.
    AgentNotify,
    /// 80 % of the first-response target has passed.
    SlaReminder,
    /// The first-response target was missed.
    Escalation,
    /// An agent's mail had a bad command: it goes back to that agent.
    CommandError,
}

/// Whom a mail is for, which decides how it is protected against mail loops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Audience {
    /// Customers (acknowledgements, status updates, reminders, notices, agents' answers): automatic mail to
    /// them is bounded by the per-recipient limits of `[outbound.rate_limit]`.
    Customer,
    /// The desk's own people (agent notifications, assignee notices, SLA reminders, escalations, command
    /// errors): never throttled by those limits; an answer from their auto-responders is recognised instead
    /// (see `desk::decide`), and a generous breaker (`[outbound] staff_per_hour`) bounds the rest.
    Staff,
}

impl Event {
    /// Every event, in the order of the template directory listing.
    pub const ALL: [Event; 12] = [
        Event::Ack,
        Event::CommandError,
        Event::StatusChanged,
        Event::AgentReply,
        Event::CustomerReminder,
        Event::Resolved,
        Event::Closed,
        Event::Survey,
        Event::AgentNotify,
        Event::SlaReminder,
        Event::Escalation,
        Event::Oversize,
    ];

    /// The template name and the outbox row's `kind` (the JSON contract).
    pub const fn as_str(self) -> &'static str {
        match self {
            Event::Ack => "ack",
            Event::Oversize => "oversize",
            Event::StatusChanged => "status_changed",
            Event::AgentReply => "agent_reply",
            Event::CustomerReminder => "customer_reminder",
            Event::Resolved => "resolved",
            Event::Closed => "closed",
            Event::Survey => "survey",
            Event::AgentNotify => "agent_notify",
            Event::SlaReminder => "sla_reminder",
            Event::Escalation => "escalation",
            Event::CommandError => "command_error",
        }
    }

    /// Whom mail of this event is for.
    pub fn audience(self) -> Audience {
        match self {
            Event::Ack
            | Event::Oversize
            | Event::StatusChanged
            | Event::AgentReply
            | Event::CustomerReminder
            | Event::Resolved
            | Event::Closed
            | Event::Survey => Audience::Customer,
            Event::AgentNotify | Event::SlaReminder | Event::Escalation | Event::CommandError => {
                Audience::Staff
            }
        }
    }

    /// Whether postdesk writes this mail by itself. An agent's answer is a person writing: no limit on
    /// automatic mail applies to it, and it is not marked `Auto-Submitted`.
    pub fn is_automatic(self) -> bool {
        self != Event::AgentReply
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Event {
    type Err = String;
    fn from_str(s: &str) -> Result<Event, String> {
        Event::ALL
            .iter()
            .copied()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a template event"))
    }
}

/// What an acknowledgement asks for, by category, when the customer's mail does not give it yet: the template
/// shows a line in the customer's language for each flag that is true.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub order_number: bool,
    pub payment_details: bool,
    pub device_details: bool,
    pub account_id: bool,
}

/// An attachment of the customer's mail as the agents' notification lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AttachmentNote {
    /// The name as it is safe to show (see `mail::parse::safe_filename`).
    pub filename: String,
    pub size_kb: u64,
}

/// The closed ticket a customer's late reply was about, as the new ticket's notification names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EarlierTicket {
    pub id: TicketId,
    /// The last answer an agent sent the customer on it (bounded like the customer's text); empty when it
    /// had none.
    pub last_answer: String,
}

/// What one mail says, by event: the values its templates need beyond the ticket's own fields.
#[derive(Clone, Debug, PartialEq)]
pub enum Content {
    Ack {
        needs: Needs,
    },
    Oversize {
        size_mb: f64,
        limit_mb: f64,
    },
    StatusChanged {
        /// The status before the change.
        previous: Status,
    },
    AgentReply {
        /// The status before the agent's mail.
        previous: Status,
        /// What the agent wrote, without the quoted history and the commands.
        body: String,
        /// Empty unless `[agents] show_name` is set.
        agent_name: String,
        /// The agent marked the answer as asking the customer something (`#ask`, `#status pending`): the
        /// mail asks for a reply, and the ticket waits for it. A plain answer asks for nothing.
        asks: bool,
        /// The answer resolves the ticket and carries the satisfaction survey (one mail, not two).
        survey: bool,
    },
    CustomerReminder {
        /// 1 for the first reminder.
        number: u32,
        /// How many reminders are sent before the ticket is resolved.
        total: u32,
        last: bool,
        waiting_days: i64,
    },
    Resolved {
        /// The status before it was resolved.
        previous: Status,
        /// Resolved by the desk after the last unanswered reminder (not by an agent).
        auto_resolved: bool,
        /// The notice carries the satisfaction survey (`[timers] survey`): one mail, not two.
        survey: bool,
    },
    Closed,
    Survey,
    AgentNotify {
        /// A new ticket (else a customer's reply to an existing one).
        is_new: bool,
        /// What the customer wrote, without the quoted history.
        customer_text: String,
        attachments: Vec<AttachmentNote>,
        /// Cc/To addresses of a customer's reply that did not become participants: the reply was not
        /// authenticated. An agent adds them with `#cc add`.
        not_added: Vec<String>,
        /// A new ticket opened by a reply to a closed one: that ticket and its last answer.
        earlier: Option<EarlierTicket>,
    },
    SlaReminder {
        /// The first-response deadline in the region's time (`2026-11-23 17:00 JST`).
        due_at: String,
        minutes_left: i64,
    },
    Escalation {
        /// The first-response deadline in the region's time.
        due_at: String,
        overdue_minutes: i64,
    },
    CommandError {
        /// One line per bad command.
        errors: String,
    },
}

impl Content {
    pub fn event(&self) -> Event {
        match self {
            Content::Ack { .. } => Event::Ack,
            Content::Oversize { .. } => Event::Oversize,
            Content::StatusChanged { .. } => Event::StatusChanged,
            Content::AgentReply { .. } => Event::AgentReply,
            Content::CustomerReminder { .. } => Event::CustomerReminder,
            Content::Resolved { .. } => Event::Resolved,
            Content::Closed => Event::Closed,
            Content::Survey => Event::Survey,
            Content::AgentNotify { .. } => Event::AgentNotify,
            Content::SlaReminder { .. } => Event::SlaReminder,
            Content::Escalation { .. } => Event::Escalation,
            Content::CommandError { .. } => Event::CommandError,
        }
    }

    /// The status the mail reports as the one before (the templates' `previous_status`), when it is not the
    /// ticket's current one.
    pub fn previous_status(&self) -> Option<Status> {
        match self {
            Content::StatusChanged { previous }
            | Content::AgentReply { previous, .. }
            | Content::Resolved { previous, .. } => Some(*previous),
            _ => None,
        }
    }
}

/// Mail postdesk should send because of a change; rendered and queued by the shell.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub to: Vec<String>,
    pub locale: Locale,
    /// Files to attach (an agent's attachments, relayed): blobs in the store.
    pub attachments: Vec<AttachmentRef>,
    pub content: Content,
}

impl Reply {
    /// A reply without attachments.
    pub fn new(to: Vec<String>, locale: Locale, content: Content) -> Reply {
        Reply {
            to,
            locale,
            attachments: Vec::new(),
            content,
        }
    }

    pub fn event(&self) -> Event {
        self.content.event()
    }

    pub fn audience(&self) -> Audience {
        self.event().audience()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip_and_staff_mail_is_what_goes_to_the_desk() {
        for e in Event::ALL {
            assert_eq!(e.as_str().parse::<Event>(), Ok(e));
        }
        assert!("acknowledgement".parse::<Event>().is_err());
        let staff: Vec<&str> = Event::ALL
            .iter()
            .filter(|e| e.audience() == Audience::Staff)
            .map(|e| e.as_str())
            .collect();
        assert_eq!(
            staff,
            [
                "command_error",
                "agent_notify",
                "sla_reminder",
                "escalation"
            ]
        );
        assert!(!Event::AgentReply.is_automatic() && Event::Ack.is_automatic());
    }
}
