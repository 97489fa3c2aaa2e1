//! The desk: the ticket model and the pure decisions made on it.
//!
//! [`ticket`] holds the vocabulary, [`thread`] chooses the ticket a mail belongs to, [`lifecycle`] is the
//! status machine, [`timers`] and [`retention`] say what happens with time, [`privacy`] what erasing a
//! customer leaves, [`reply`] is the typed mail to send (one variant per template event, with its
//! audience), and [`decide`] puts them together into one complete [`decide::Decision`] per mail. Nothing in
//! here does I/O: the application service (`service`) reads what a decision needs and carries it out.

pub mod agent;
pub mod calendar;
pub mod decide;
pub mod lifecycle;
pub mod privacy;
pub mod reply;
pub mod retention;
pub mod thread;
pub mod ticket;
pub mod timers;

#[cfg(test)]
mod spam_tests;
