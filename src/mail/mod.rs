//! Mail as postdesk reads it: [`parse`] turns raw bytes into one decoded [`parse::Inbound`] (with
//! [`header`] decoding header values and parameters from their raw bytes, [`address`] reading address
//! lists, and [`charset`] mapping labels and detecting what is unlabelled); [`classify`] says whether a
//! person or a machine wrote it, in which language, and how urgent it is; [`html`] turns HTML mail into
//! structured text; [`quote`] keeps what a reply adds (no history, no signature card).

pub mod address;
pub mod authres;
pub mod charset;
pub mod classify;
pub mod header;
pub mod html;
pub mod parse;
pub mod quote;
pub mod redact;

pub use parse::{parse, Inbound, Mailbox, NotMail};
