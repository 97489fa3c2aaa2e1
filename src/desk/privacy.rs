//! Erasure: what is left of a ticket when the customer asks to be forgotten (GDPR art. 17, PIPL art. 47,
//! APPI art. 35, PIPA art. 36).
//!
//! The conversation goes: every message's text, subject, addresses of the erased person and attachments,
//! the Message-IDs that could find it again. What stays is an anonymised skeleton that statistics need and
//! that says nothing about the person: id, region, status, priority, category, timestamps, the first
//! response time, the satisfaction score (without its comment), and per message its direction and dates.
//! The person's address becomes a pseudonym `erased-<12 hex>`: a keyed hash (HMAC-SHA256 with the store's
//! secret), the same on every ticket of that person so the statistics can still tell "one customer, three
//! tickets", and not reversible by hashing guessed addresses without the secret.
//!
//! Pure: [`erase_ticket`] returns the new ticket and messages; `Desk::erase_customer` writes them.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::ticket::{Message, Ticket};

/// The pseudonym that replaces `address` (lower-cased) in erased tickets.
pub fn pseudonym(address: &str, key: &[u8]) -> String {
    let digest = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(address.to_ascii_lowercase().as_bytes());
            m.finalize().into_bytes().to_vec()
        }
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => vec![0; 6],
    };
    format!("erased-{}", hex::encode(&digest[..6]))
}

/// Whether `address` (lower-cased) is the ticket's requester or one of its participants.
pub fn involves(ticket: &Ticket, address: &str) -> bool {
    ticket.requester.eq_ignore_ascii_case(address)
        || ticket
            .participants
            .iter()
            .any(|p| p.eq_ignore_ascii_case(address))
}

/// The skeleton of `ticket` and its `messages` once `address` is erased (see the module docs).
pub fn erase_ticket(
    ticket: &Ticket,
    messages: &[Message],
    address: &str,
    pseudonym: &str,
) -> (Ticket, Vec<Message>) {
    let swap = |a: &String| {
        if a.eq_ignore_ascii_case(address) {
            pseudonym.to_string()
        } else {
            a.clone()
        }
    };
    let mut t = ticket.clone();
    t.subject = String::new();
    if t.requester.eq_ignore_ascii_case(address) {
        t.requester = pseudonym.to_string();
        t.requester_name = String::new();
    }
    t.participants = t.participants.iter().map(swap).collect();
    t.last_customer_message_id = None;
    t.thread_ids.clear();
    if let Some(s) = &mut t.satisfaction {
        s.comment = String::new();
    }
    t.erased = true;
    let messages = messages
        .iter()
        .map(|m| {
            let mut m = m.clone();
            m.from = swap(&m.from);
            if m.from == pseudonym {
                m.from_name = String::new();
            }
            m.to = m.to.iter().map(swap).collect();
            m.cc = m.cc.iter().map(swap).collect();
            m.subject = String::new();
            m.text = String::new();
            m.attachments.clear();
            m.raw_sha256 = None;
            m.message_id = String::new();
            m.in_reply_to.clear();
            m.references.clear();
            m.content_hash = String::new();
            m.damage.clear();
            m
        })
        .collect();
    (t, messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_keyed_and_short() {
        let p = pseudonym("Kim@Example.com", b"k1");
        assert_eq!(p, pseudonym("kim@example.com", b"k1"));
        assert_ne!(p, pseudonym("kim@example.com", b"k2"));
        assert_eq!(p.len(), "erased-".len() + 12);
        assert!(!p.contains("kim"));
    }
}
