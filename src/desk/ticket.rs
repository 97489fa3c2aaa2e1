//! The ticket model: the records the store keeps (tickets, messages, attachments, timers).
//!
//! The ids, statuses, priorities and locales they are made of live in [`crate::types`] (lower layers need them
//! too) and are re-exported here under their old paths. Serde names are the names scripts see (ARCHITECTURE.md, *JSON*), so they change only together with README.md.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::types::{BadTicketId, Locale, Priority, Status, TicketId};

/// Who wrote a message, seen from the desk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From a customer (or anyone outside) to the desk.
    In,
    /// From the desk to a customer.
    Out,
    /// Internal, never sent to the customer.
    Note,
}

/// A stored attachment: the bytes live once per sha256 in the blob store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRef {
    /// The name as it is safe to use on a filesystem (see `mail::parse::safe_filename`).
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
}

/// One message of a ticket.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Message {
    pub direction: Direction,
    pub from: String,
    #[serde(default)]
    pub from_name: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    /// The Date header (or the arrival time when it is missing or unreadable), RFC 3339.
    pub date: DateTime<Utc>,
    /// When postdesk stored it.
    pub received_at: DateTime<Utc>,
    /// Without angle brackets; synthetic (`…@postdesk.invalid`) when the mail had none.
    pub message_id: String,
    #[serde(default)]
    pub in_reply_to: Vec<String>,
    #[serde(default)]
    pub references: Vec<String>,
    pub subject: String,
    pub text: String,
    pub attachments: Vec<AttachmentRef>,
    /// Why this message was not answered automatically (`auto-replied`, `list`, `bounce`, …), if it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<String>,
    /// What went wrong while decoding it (charset guessed, MIME truncated, …): the mail is kept regardless.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damage: Vec<String>,
    /// Identity of the content for de-duplication (see `mail::parse::content_hash`).
    pub content_hash: String,
    /// sha256 of the raw mail, kept in the blob store when decoding it recorded damage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_sha256: Option<String>,
    /// For outgoing mail: the outbox row that carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_id: Option<u64>,
}

/// A ticket, without its messages (they are stored beside it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ticket {
    pub id: TicketId,
    pub region: String,
    pub status: Status,
    pub priority: Priority,
    pub category: String,
    pub subject: String,
    /// The customer's address, lower-cased.
    pub requester: String,
    #[serde(default)]
    pub requester_name: String,
    /// Other customers in the conversation (To/Cc of customer mail), lower-cased, without postdesk's addresses.
    pub participants: Vec<String>,
    pub locale: Locale,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Number of messages stored (the next message gets this index).
    #[serde(default)]
    pub message_count: u32,
    /// Message-ID of the last customer mail, for In-Reply-To of what the desk sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_customer_message_id: Option<String>,
    /// Message-IDs of the conversation, oldest first, for References (bounded).
    #[serde(default)]
    pub thread_ids: Vec<String>,
    /// Related tickets (a closed ticket and the one its late reply opened).
    #[serde(default)]
    pub links: Vec<TicketId>,
    /// Assigned agent, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// Set when an agent merged this ticket into another: its messages live there now, and mail for this
    /// ticket lands there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<TicketId>,
    /// When the status last changed (reminders and auto-close count from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_since: Option<DateTime<Utc>>,
    /// When an agent first answered the customer (the SLA's first response).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_response_at: Option<DateTime<Utc>>,
    /// Reminders sent to the customer since the ticket last waited for them.
    #[serde(default)]
    pub reminders_sent: u32,
    /// The agents were reminded that the first-response target is near.
    #[serde(default)]
    pub sla_warned: bool,
    /// The first-response target was missed.
    #[serde(default)]
    pub breached: bool,
    /// A satisfaction survey went out when the ticket was resolved.
    #[serde(default)]
    pub survey_sent: bool,
    /// The customer's rating, 1–5, and comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub satisfaction: Option<Satisfaction>,
    /// The timers scheduled for this ticket (mirrored in the store's due-time index).
    #[serde(default)]
    pub timers: Vec<Timer>,
    /// The customer's data was erased (`postdesk customer erase`): what is left is an anonymised skeleton
    /// kept for statistics.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub erased: bool,
    /// Retention deleted the attachments of this closed ticket (`[retention] closed_attachments_after`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attachments_purged: bool,
}

/// A customer's answer to the satisfaction survey.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Satisfaction {
    pub score: u8,
    #[serde(default)]
    pub comment: String,
    pub at: DateTime<Utc>,
}

/// What a timer does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// Remind the customer who owes information (or resolve after the last reminder).
    CustomerReminder,
    /// 80 % of the first-response target: remind the agents.
    SlaReminder,
    /// The first-response target is missed: escalate.
    SlaBreach,
    /// Resolved long enough: close.
    AutoClose,
    /// Closed long enough (`[retention] closed_attachments_after`): delete the attachments.
    PurgeAttachments,
    /// Closed long enough (`[retention] closed_tickets_after`): delete the whole ticket.
    PurgeTicket,
}

impl TimerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::CustomerReminder => "customer_reminder",
            TimerKind::SlaReminder => "sla_reminder",
            TimerKind::SlaBreach => "sla_breach",
            TimerKind::AutoClose => "auto_close",
            TimerKind::PurgeAttachments => "purge_attachments",
            TimerKind::PurgeTicket => "purge_ticket",
        }
    }

    /// One byte for the due-time index key.
    pub fn code(self) -> u8 {
        match self {
            TimerKind::CustomerReminder => 1,
            TimerKind::SlaReminder => 2,
            TimerKind::SlaBreach => 3,
            TimerKind::AutoClose => 4,
            TimerKind::PurgeAttachments => 5,
            TimerKind::PurgeTicket => 6,
        }
    }

    /// Whether the timer carries out `[retention]` (deletes data) rather than a step of the conversation.
    pub fn is_retention(self) -> bool {
        matches!(self, TimerKind::PurgeAttachments | TimerKind::PurgeTicket)
    }

    pub fn from_code(c: u8) -> Option<TimerKind> {
        Some(match c {
            1 => TimerKind::CustomerReminder,
            2 => TimerKind::SlaReminder,
            3 => TimerKind::SlaBreach,
            4 => TimerKind::AutoClose,
            5 => TimerKind::PurgeAttachments,
            6 => TimerKind::PurgeTicket,
            _ => return None,
        })
    }
}

/// A scheduled timer of a ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub kind: TimerKind,
    pub due: DateTime<Utc>,
}

impl Ticket {
    /// A ticket just opened by `requester`'s mail at `now`: new, normal priority, not yet classified
    /// (`other`), no messages stored yet, every other field empty. The desk fills in what it decided.
    pub fn new(id: TicketId, requester: &str, locale: Locale, now: DateTime<Utc>) -> Ticket {
        Ticket {
            region: id.region.clone(),
            id,
            status: Status::New,
            priority: Priority::Normal,
            category: "other".into(),
            subject: String::new(),
            requester: requester.into(),
            requester_name: String::new(),
            participants: Vec::new(),
            locale,
            created_at: now,
            updated_at: now,
            message_count: 0,
            last_customer_message_id: None,
            thread_ids: Vec::new(),
            links: Vec::new(),
            assignee: None,
            merged_into: None,
            status_since: None,
            first_response_at: None,
            reminders_sent: 0,
            sla_warned: false,
            breached: false,
            survey_sent: false,
            satisfaction: None,
            timers: Vec::new(),
            erased: false,
            attachments_purged: false,
        }
    }

    /// Move to `status` at `now`: the time it changed is what reminders and auto-close count from, and a
    /// ticket that stops waiting for the customer forgets the reminders it sent.
    pub fn change_status(&mut self, status: Status, now: DateTime<Utc>) {
        if status != self.status {
            self.status = status;
            self.status_since = Some(now);
            if status != Status::Pending {
                self.reminders_sent = 0;
            }
            // A reopened ticket may gather new attachments: retention looks again once it is closed again.
            if status != Status::Closed {
                self.attachments_purged = false;
            }
        }
    }

    /// The customers of the ticket: requester and participants (none once erased).
    pub fn customers(&self) -> Vec<String> {
        let mut v = Vec::new();
        // Erased: the addresses left are pseudonyms, and nothing more is sent about this ticket.
        if self.erased {
            return v;
        }
        if !self.requester.is_empty() {
            v.push(self.requester.clone());
        }
        v.extend(self.participants.iter().cloned());
        v
    }

    /// Whether `address` (lower-cased) may write to this ticket as a customer.
    pub fn admits_customer(&self, address: &str) -> bool {
        self.requester == address || self.participants.iter().any(|p| p == address)
    }
}

/// The most References entries a ticket remembers: enough for any mail client's threading.
pub const MAX_THREAD_IDS: usize = 20;

/// The ticket builder of the unit tests (the integration tests have theirs in `tests/support/ticket.rs`):
/// a test cares about two or three of a ticket's thirty fields.
#[cfg(test)]
impl Ticket {
    /// Ticket `id` (`"JP-1000"`; its region is the id's): new, normal priority, category `other`, subject
    /// `s`, a Japanese ticket of `a@example.com` created now, one message long, every other field empty.
    pub(crate) fn sample(id: &str) -> TicketBuilder {
        let id: TicketId = id
            .parse()
            .unwrap_or_else(|e| panic!("ticket id {id:?}: {e}"));
        TicketBuilder(Ticket {
            subject: "s".into(),
            message_count: 1,
            ..Ticket::new(id, "a@example.com", Locale::Ja, Utc::now())
        })
    }
}

/// See [`Ticket::sample`]; [`TicketBuilder::build`] gives the ticket.
#[cfg(test)]
pub(crate) struct TicketBuilder(Ticket);

#[cfg(test)]
impl TicketBuilder {
    pub(crate) fn status(mut self, status: Status) -> Self {
        self.0.status = status;
        self
    }

    pub(crate) fn requester(mut self, address: &str) -> Self {
        self.0.requester = address.into();
        self
    }

    pub(crate) fn participants(mut self, addresses: &[&str]) -> Self {
        self.0.participants = addresses.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Created (and last updated) at `at`, in its current status since then.
    pub(crate) fn created(mut self, at: DateTime<Utc>) -> Self {
        self.0.created_at = at;
        self.0.updated_at = at;
        self.0.status_since = Some(at);
        self
    }

    pub(crate) fn message_count(mut self, n: u32) -> Self {
        self.0.message_count = n;
        self
    }

    pub(crate) fn build(self) -> Ticket {
        self.0
    }
}
