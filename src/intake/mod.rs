//! Intake: the sources mail comes in from — IMAP ([`imap`]), Maildir ([`maildir`]) and the MTA pipe
//! ([`pipe`]). Each hands raw mail to the application service ([`crate::service::Desk::ingest`],
//! [`crate::service::Desk::ingest_batch`]), flushes the store once, and only then acknowledges the mail at
//! its source (IMAP `\Seen`/MOVE, Maildir new→cur, exit 0 to the MTA).

pub mod imap;
pub mod maildir;
pub mod oversize;
pub mod pipe;

// The service's types under their old paths, for callers from before it had a module of its own.
pub use crate::service::{blocking, Desk, DeskError, Incoming, IngestError, Outcome};
