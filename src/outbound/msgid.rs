//! Message-IDs of outgoing mail: `<kind.TICKET.outbox-id.mac@region-domain>`, where `mac` is an HMAC of the
//! rest under a secret only postdesk knows.
//!
//! A reply or a bounce that names such an id in In-Reply-To/References proves its writer received that mail
//! from us: an outsider cannot forge an id for someone else's ticket, and a delivery report can be matched
//! to the very outbox row it reports on even without the Message-ID index.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::desk::reply::Event;
use crate::desk::ticket::TicketId;

/// Hex digits of the MAC kept in the id (64 bits).
const MAC_HEX: usize = 16;

fn mac(secret: &[u8], local: &str) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    m.update(local.as_bytes());
    hex::encode(m.finalize().into_bytes())[..MAC_HEX].to_string()
}

/// The Message-ID (without angle brackets) of outbox row `outbox_id` of `ticket`.
pub fn make(kind: &str, ticket: &TicketId, outbox_id: u64, domain: &str, secret: &[u8]) -> String {
    let local = format!("{kind}.{ticket}.{outbox_id}");
    format!("{local}.{}@{domain}", mac(secret, &local))
}

/// If `id` is a Message-ID postdesk made with `secret`: the ticket and outbox row it belongs to.
pub fn verify(id: &str, secret: &[u8]) -> Option<(TicketId, u64)> {
    verify_kind(id, secret).map(|(_, ticket, outbox)| (ticket, outbox))
}

/// Like [`verify`], with the template event of the mail (the MAC covers it too): whether a mail answers
/// staff mail is told by this.
pub fn verify_event(id: &str, secret: &[u8]) -> Option<(Event, TicketId, u64)> {
    let (kind, ticket, outbox) = verify_kind(id, secret)?;
    Some((kind.parse().ok()?, ticket, outbox))
}

fn verify_kind<'a>(id: &'a str, secret: &[u8]) -> Option<(&'a str, TicketId, u64)> {
    let (local, _domain) = id.rsplit_once('@')?;
    let (rest, given) = local.rsplit_once('.')?;
    if given.len() != MAC_HEX || mac(secret, rest) != given {
        return None;
    }
    let mut parts = rest.splitn(3, '.');
    let (kind, ticket, outbox) = (parts.next()?, parts.next()?, parts.next()?);
    Some((kind, ticket.parse().ok()?, outbox.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_forgery() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let t = TicketId::new("JP", 1042);
        let id = make("ack", &t, 77, "example.com", secret);
        assert!(
            id.starts_with("ack.JP-1042.77.") && id.ends_with("@example.com"),
            "{id}"
        );
        assert_eq!(verify(&id, secret), Some((t.clone(), 77)));
        assert_eq!(verify_event(&id, secret), Some((Event::Ack, t.clone(), 77)));
        // Another ticket number with the same MAC, another secret, or a mangled id: rejected.
        assert_eq!(verify(&id.replace("JP-1042", "JP-1043"), secret), None);
        assert_eq!(verify(&id, b"another secret, just as long...."), None);
        assert_eq!(verify("ack.JP-1042.77@example.com", secret), None);
        assert_eq!(verify("random@example.com", secret), None);
    }
}
