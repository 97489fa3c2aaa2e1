//! `postdesk ingest --region JP < mail`: delivery from an MTA (Postfix `pipe`, OpenSMTPD `mda`, procmail…).
//!
//! The exit code is the contract with the MTA (sysexits.h): 0 once the mail is durably stored (or was
//! already), 75 (EX_TEMPFAIL, "try again later") when it could not be stored, 65 (EX_DATAERR, "bounce it")
//! only when the input is not a mail at all.

use std::io::Read;

use chrono::Utc;

use crate::desk::decide::Delivery;
use crate::service::{Desk, Outcome};
use crate::store::Storage;

pub const EX_OK: i32 = 0;
pub const EX_DATAERR: i32 = 65;
pub const EX_TEMPFAIL: i32 = 75;

/// Most bytes read from stdin; anything beyond is not a mail a helpdesk should take whole.
pub const MAX_PIPE_BYTES: u64 = 64 * 1024 * 1024;

/// Read the whole of `input`, bounded.
pub fn read_input(input: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    input.take(MAX_PIPE_BYTES + 1).read_to_end(&mut raw)?;
    Ok(raw)
}

/// Store one mail for `region_code`; returns (exit code, one line for stderr/stdout).
pub async fn deliver(desk: &Desk, region_code: &str, raw: &[u8]) -> (i32, String) {
    let Some(region) = desk.config.region(region_code) else {
        let known: Vec<&str> = desk.config.region.iter().map(|r| r.code.as_str()).collect();
        return (
            EX_TEMPFAIL,
            format!("postdesk: no region {region_code:?} in the config (configured: {}); fix the MTA's --region argument", known.join(", ")),
        );
    };
    if raw.len() as u64 > MAX_PIPE_BYTES {
        return (
            EX_DATAERR,
            format!("postdesk: message larger than {MAX_PIPE_BYTES} bytes"),
        );
    }
    let began = std::time::Instant::now();
    let result = desk.ingest(region, raw, "pipe", &Delivery::normal(), false, Utc::now());
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
