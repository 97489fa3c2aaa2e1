//! Mail as postdesk reads it: [`parse`] turns raw bytes into one decoded [`parse::Inbound`];
//! [`classify`] says whether a person or a machine wrote it, in which language, and how urgent it is;
//! [`charset`] holds the second opinions on charsets that real East Asian mail needs; [`html`] turns HTML
//! mail into structured text; [`quote`] keeps what a reply adds (no history, no signature card).

pub mod authres;
pub mod charset;
pub mod classify;
pub mod html;
pub mod parse;
pub mod quote;
pub mod redact;

pub use parse::{parse, Inbound, Mailbox, NotMail};
