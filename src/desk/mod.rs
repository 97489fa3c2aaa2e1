//! The desk: the ticket model and the pure decisions made on it.
//!
//! [`ticket`] holds the vocabulary, [`thread`] chooses the ticket a mail belongs to, [`lifecycle`] is the
//! status machine, [`timers`] and [`retention`] say what happens with time, [`privacy`] what erasing a customer leaves, and [`decide`] puts them together into one [`decide::Decision`] per mail. Nothing in
//! here does I/O: the store and the intake carry the decisions out.

pub mod agent;
pub mod calendar;
pub mod decide;
pub mod lifecycle;
pub mod privacy;
pub mod retention;
pub mod thread;
pub mod ticket;
pub mod timers;
