//! `postdesk ingest --region JP < mail`: delivery from an MTA (Postfix `pipe`, OpenSMTPD `mda`, procmail…).
//!
//! The exit code is the contract with the MTA (sysexits.h): 0 once the mail is durably stored (or was
//! already), 75 (EX_TEMPFAIL, "try again later") when it could not be stored, 65 (EX_DATAERR, "bounce it")
//! only when the input is not a mail at all.
//!
//! A mail larger than the region's `max_message_bytes` is handled as IMAP handles one: stored from its
//! headers and the first 256 KiB of its text, with the `oversize` notice to the customer; the original
//! cannot stay in its source (the MTA forgets it on exit 0), so its first `max_message_bytes` are kept in
//! the store's quarantine.

use std::io::Read;

use chrono::Utc;

use crate::desk::decide::Delivery;
use crate::service::{Desk, Outcome};
use crate::store::Storage;

pub const EX_OK: i32 = 0;
pub const EX_DATAERR: i32 = 65;
pub const EX_TEMPFAIL: i32 = 75;

/// Most bytes read from stdin; no region's `max_message_bytes` is larger.
pub const MAX_PIPE_BYTES: u64 = crate::config::MAX_INGEST_BYTES;

/// What `ingest` read of its standard input.
#[derive(Debug)]
pub struct Input {
    /// The mail, through `limit + 1` bytes at most (one more than a region stores whole, so that an
    /// oversized mail is known as one).
    pub raw: Vec<u8>,
    /// The whole input's size: the rest was read too, but only counted.
    pub size: u64,
}

impl Input {
    /// Whether `raw` is only the start of the input.
    pub fn cut(&self) -> bool {
        self.size > self.raw.len() as u64
    }
}

/// Read `input` to its end: the first `limit + 1` bytes (at most [`MAX_PIPE_BYTES`] + 1) are kept, the rest
/// counted, so that the MTA's write never breaks its pipe and the `oversize` notice tells the customer the
/// real size. Memory stays bounded whatever the MTA sends.
pub fn read_input(input: &mut impl Read, limit: u64) -> std::io::Result<Input> {
    let mut raw = Vec::new();
    let keep = limit.min(MAX_PIPE_BYTES) + 1;
    input.take(keep).read_to_end(&mut raw)?;
    let rest = std::io::copy(input, &mut std::io::sink())?;
    Ok(Input {
        size: raw.len() as u64 + rest,
        raw,
    })
}

/// Store one mail for `region_code`; returns (exit code, one line for stderr/stdout). `size`: the whole
/// mail's, when `raw` holds only its start (see [`read_input`]).
pub async fn deliver(
    desk: &Desk,
    region_code: &str,
    raw: &[u8],
    size: Option<u64>,
) -> (i32, String) {
    let Some(region) = desk.config.region(region_code) else {
        let known: Vec<&str> = desk.config.region.iter().map(|r| r.code.as_str()).collect();
        return (
            EX_TEMPFAIL,
            format!("postdesk: no region {region_code:?} in the config (configured: {}); fix the MTA's --region argument", known.join(", ")),
        );
    };
    let began = std::time::Instant::now();
    let cap = region.max_message_bytes;
    let truncated;
    // The client's config may give a smaller cap than this one (changed, not yet reloaded): a cut input
    // is oversized whatever the cap here says.
    let cut = size.is_some_and(|s| s > raw.len() as u64);
    let (raw, delivery) = if raw.len() as u64 > cap || cut {
        // What the store accepts of the original, kept; the ticket gets the truncated form.
        let size = size.unwrap_or(0).max(raw.len() as u64);
        let kept = &raw[..raw.len().min(cap as usize)];
        let reason = format!("oversized mail ({size} bytes, limit {cap}): its first {cap} bytes, as delivered by the MTA");
        let q = match desk.store.quarantine(&region.code, "pipe", &reason, kept) {
            Ok(q) => q,
            Err(e) => {
                return (
                    EX_TEMPFAIL,
                    format!("postdesk: could not store the mail, the MTA should retry: {e}"),
                )
            }
        };
        tracing::warn!(region = %region.code, quarantine = q.id, size, limit = cap, "oversized mail stored truncated; its first {cap} bytes are in quarantine");
        truncated = match super::oversize::truncated(raw, cap) {
            Ok(t) => t,
            Err(e) => return (EX_TEMPFAIL, format!("postdesk: cannot read the mail: {e}")),
        };
        let kept = format!("its first {cap} bytes are in quarantine (id {})", q.id);
        let delivery = super::oversize::delivery(size, cap, &kept);
        (&truncated[..], delivery)
    } else {
        (raw, Delivery::normal())
    };
    let result = desk.ingest(region, raw, "pipe", &delivery, false, Utc::now());
    let outcome = match result {
        Ok(Ok(o)) => o,
        Ok(Err(not_mail)) => {
            return (
                EX_DATAERR,
                format!("postdesk: input is not a mail: {not_mail}"),
            )
        }
        Err(e) => {
            return (
                EX_TEMPFAIL,
                format!("postdesk: could not store the mail, the MTA should retry: {e}"),
            )
        }
    };
    if let Err(e) = desk.store.flush_async().await {
        return (
            EX_TEMPFAIL,
            format!("postdesk: could not flush the store, the MTA should retry: {e}"),
        );
    }
    desk.telemetry.observe_ingest(&region.code, began.elapsed());
    let line = match outcome {
        Outcome::Stored {
            ticket, new: true, ..
        } => format!("stored as new ticket {ticket}"),
        Outcome::Stored {
            ticket, new: false, ..
        } => format!("added to ticket {ticket}"),
        Outcome::Duplicate(t) => format!("already stored in ticket {t}"),
        Outcome::Quarantined { id, reason } => format!("quarantined as {id}: {reason}"),
    };
    (EX_OK, line)
}
