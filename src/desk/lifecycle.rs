//! The status machine: received → in progress → waiting for the customer → resolved → closed.
//!
//! Pure functions of (status, event) → new status, so every transition can be tested exhaustively. Every
//! status change of a ticket is [`next`] followed by [`crate::desk::ticket::Ticket::change_status`], which
//! records when it changed (what reminders, auto-close and retention count from).

use super::ticket::Status;

/// What happened to a ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The customer (requester or participant) wrote.
    CustomerReply,
    /// An agent or admin set the status explicitly.
    Set(Status),
    /// An agent merged the ticket into another: its conversation continues there.
    Merged,
    /// An agent answered the customer without setting a status: the answer asks for nothing, so the ticket
    /// is in progress (`new` → `open`) and waits for nobody; any other status stays (a ticket already
    /// waiting for the customer keeps waiting, a resolved one stays resolved). Only `#ask` or
    /// `#status pending` make a ticket wait for the customer (and only then do reminders run).
    AgentAnswer,
}

/// Why a transition is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LifecycleError {
    #[error("the ticket is already {0}")]
    Unchanged(Status),
    #[error("a ticket cannot go back to `new`; use `open` to reopen it")]
    BackToNew,
}

/// The status after `event`. A customer reply moves a ticket that waited for them (`pending`) or was
/// `resolved` back to `open`; `closed` tickets never receive replies (threading opens a new linked ticket);
/// a `spam` ticket stays spam until an agent releases it (`#status open`).
pub fn next(status: Status, event: Event) -> Result<Status, LifecycleError> {
    match event {
        Event::CustomerReply => Ok(match status {
            Status::Pending | Status::Resolved => Status::Open,
            other => other,
        }),
        Event::Set(target) if target == status => Err(LifecycleError::Unchanged(status)),
        Event::Set(Status::New) => Err(LifecycleError::BackToNew),
        Event::Set(target) => Ok(target),
        Event::Merged => Ok(Status::Closed),
        Event::AgentAnswer => Ok(match status {
            Status::New => Status::Open,
            other => other,
        }),
    }
}

/// Whether the customers hear of a change from `previous` to `next`: never when either is `spam` (the
/// sender of spam is told nothing, and a released false positive was never told it was spam).
pub fn tells_customer(previous: Status, next: Status) -> bool {
    previous != next && previous != Status::Spam && next != Status::Spam
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_replies() {
        let expect = [
            (Status::New, Status::New),
            (Status::Open, Status::Open),
            (Status::Pending, Status::Open),
            (Status::Resolved, Status::Open),
            (Status::Closed, Status::Closed),
            (Status::Spam, Status::Spam),
        ];
        for (from, to) in expect {
            assert_eq!(next(from, Event::CustomerReply), Ok(to), "{from}");
        }
    }

    #[test]
    fn a_plain_answer_never_makes_a_ticket_wait() {
        for &from in Status::ALL {
            let to = next(from, Event::AgentAnswer).unwrap();
            assert_ne!(
                (from != Status::Pending, to),
                (true, Status::Pending),
                "{from}"
            );
        }
        assert_eq!(next(Status::New, Event::AgentAnswer), Ok(Status::Open));
    }

    #[test]
    fn a_merged_ticket_is_closed_from_any_status() {
        for &from in Status::ALL {
            assert_eq!(next(from, Event::Merged), Ok(Status::Closed), "{from}");
        }
    }

    #[test]
    fn explicit_changes_exhaustively() {
        for &from in Status::ALL {
            for &to in Status::ALL {
                let got = next(from, Event::Set(to));
                if from == to {
                    assert_eq!(got, Err(LifecycleError::Unchanged(from)));
                } else if to == Status::New {
                    assert_eq!(got, Err(LifecycleError::BackToNew));
                } else {
                    assert_eq!(got, Ok(to));
                }
            }
        }
    }
}
