//! The one ticket builder of the tests: a `Ticket` has some thirty fields, and a test cares about two or
//! three. [`ticket("JP-1000")`](ticket) gives a new, normal-priority Japanese ticket of `a@example.com`
//! created now, one message long, with every other field empty; the methods set what a test varies.
//!
//! ```ignore
//! let t = ticket("JP-1000").status(Status::Closed).created(t0).build();
//! ```

use chrono::{DateTime, Utc};
use postdesk::desk::ticket::{Locale, Priority, Status, Ticket, TicketId, Timer};

/// A builder for [`Ticket`]; see the module overview.
#[derive(Clone, Debug)]
pub struct TicketBuilder(Ticket);

/// A ticket `id` (`"JP-1000"`; its region is the id's) with the defaults of the module overview.
pub fn ticket(id: &str) -> TicketBuilder {
    let id: TicketId = id
        .parse()
        .unwrap_or_else(|e| panic!("ticket id {id:?}: {e}"));
    TicketBuilder(Ticket {
        subject: "s".into(),
        message_count: 1,
        ..Ticket::new(id, "a@example.com", Locale::Ja, Utc::now())
    })
}

impl TicketBuilder {
    pub fn status(mut self, status: Status) -> Self {
        self.0.status = status;
        self
    }

    pub fn priority(mut self, priority: Priority) -> Self {
        self.0.priority = priority;
        self
    }

    pub fn locale(mut self, locale: Locale) -> Self {
        self.0.locale = locale;
        self
    }

    pub fn subject(mut self, subject: &str) -> Self {
        self.0.subject = subject.into();
        self
    }

    pub fn requester(mut self, address: &str) -> Self {
        self.0.requester = address.into();
        self
    }

    pub fn participants(mut self, addresses: &[&str]) -> Self {
        self.0.participants = addresses.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Created (and last updated) at `at`, in its current status since then.
    pub fn created(mut self, at: DateTime<Utc>) -> Self {
        self.0.created_at = at;
        self.0.updated_at = at;
        self.0.status_since = Some(at);
        self
    }

    pub fn message_count(mut self, n: u32) -> Self {
        self.0.message_count = n;
        self
    }

    pub fn assignee(mut self, agent: &str) -> Self {
        self.0.assignee = Some(agent.into());
        self
    }

    pub fn merged_into(mut self, id: &str) -> Self {
        self.0.merged_into = Some(id.parse().expect("ticket id"));
        self
    }

    pub fn timers(mut self, timers: Vec<Timer>) -> Self {
        self.0.timers = timers;
        self
    }

    /// Any other change, for the fields without a method of their own.
    pub fn with(mut self, f: impl FnOnce(&mut Ticket)) -> Self {
        f(&mut self.0);
        self
    }

    pub fn build(self) -> Ticket {
        self.0
    }
}
