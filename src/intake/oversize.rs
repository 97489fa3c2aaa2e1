//! Mail larger than `max_message_bytes`, the same for every source as for IMAP: the ticket gets its headers
//! and the first [`TEXT_BYTES`] of its text (recorded as damage, the customer gets the `oversize` notice), and
//! the original is kept outside the ticket (IMAP: the `postdesk-quarantine` folder; Maildir: the Maildir++
//! folder `.postdesk-quarantine`; the pipe: the first `max_message_bytes` in the store's quarantine). The
//! truncated form is read from the source without reading the rest, so a 150 MB file costs 256 KiB of memory.

use std::io::{BufRead, BufReader, Read};

use crate::desk::decide::Delivery;

/// Bytes of an oversized mail's text that are still stored (as IMAP fetches them).
pub const TEXT_BYTES: u64 = 256 * 1024;

/// The headers and the first [`TEXT_BYTES`] of the text of the mail read from `input`, at most `cap` bytes
/// in all (a header block larger than the cap is cut too); nothing past them is read.
pub fn truncated(input: impl Read, cap: u64) -> std::io::Result<Vec<u8>> {
    let mut r = BufReader::new(input.take(cap));
    let mut raw = Vec::new();
    loop {
        let before = raw.len();
        if r.read_until(b'\n', &mut raw)? == 0 {
            return Ok(raw); // the end: headers only
        }
        let line = &raw[before..];
        if line == b"\r\n" || line == b"\n" {
            break; // the blank line ending the headers
        }
    }
    r.take(TEXT_BYTES).read_to_end(&mut raw)?;
    Ok(raw)
}

/// The delivery of a mail of `size` bytes stored truncated under `cap`; `kept` says where the original is.
pub fn delivery(size: u64, cap: u64, kept: &str) -> Delivery {
    Delivery {
        may_acknowledge: true,
        damage: Some(format!(
            "oversized mail ({size} bytes, limit {cap}): stored from its headers and first {} KiB of text; {kept}",
            TEXT_BYTES / 1024
        )),
        oversize: Some((size, cap)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_the_start_of_the_text_only() {
        let mut mail = b"From: a@example.com\r\nSubject: x\r\n\r\n".to_vec();
        mail.extend(std::iter::repeat_n(b'a', 1_000_000));
        let t = truncated(&mail[..], 10_000_000).unwrap();
        assert_eq!(t.len() as u64, 35 + TEXT_BYTES);
        assert!(t.starts_with(b"From: a@example.com\r\nSubject: x\r\n\r\naaa"));
        // The cap bounds the headers too.
        let mut headers = Vec::new();
        for i in 0..100_000 {
            headers.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        assert_eq!(truncated(&headers[..], 50_000).unwrap().len(), 50_000);
    }
}
