//! The outbox worker: takes due rows from the store, sends them, records the outcome.
//!
//! Temporary failures are retried with exponential backoff and jitter until the row is [`MAX_AGE`] old;
//! permanent ones are marked `failed` with the server's answer. The worker sleeps until the next row is due
//! or until the store tells it (through `Notify`) that something new was queued.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::transport::{SendError, Transport};
use super::{OutboxItem, OutboxStatus};
use crate::store::{Lookup, Storage, Store};
use crate::telemetry::Telemetry;

/// Rows taken per round.
const BATCH: usize = 256;

/// How failed sends are retried (`[outbound] retry_base`, `max_age`).
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// The first delay; it doubles per attempt up to an hour.
    pub base: Duration,
    /// A mail this old that still fails temporarily is marked failed.
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(30),
            max_age: Duration::from_secs(3 * 24 * 3600),
        }
    }
}

impl RetryPolicy {
    pub fn from_config(c: &crate::config::OutboundConfig) -> RetryPolicy {
        RetryPolicy {
            base: c.retry_base.0,
            max_age: c.max_age.0,
        }
    }

    /// The delay before attempt `attempts + 1`: `base` doubling to at most an hour, with ±20 % jitter so
    /// that a queue that failed together does not retry together.
    pub fn backoff(&self, attempts: u32, jitter_seed: u64) -> Duration {
        let base = self.base.as_millis().min(3_600_000) as u64;
        let ms = base
            .saturating_mul(1u64 << attempts.min(12))
            .min(3_600_000)
            .max(base);
        let jitter = (jitter_seed % 41) as i64 - 20; // −20 … +20 %
        Duration::from_millis((ms as i64 + ms as i64 * jitter / 100).max(1) as u64)
    }
}

/// Apply the outcome of one send attempt to a row.
pub fn after_attempt(
    mut item: OutboxItem,
    outcome: Result<(), SendError>,
    now: DateTime<Utc>,
    policy: &RetryPolicy,
) -> OutboxItem {
    item.attempts += 1;
    match outcome {
        Ok(()) => {
            item.status = OutboxStatus::Sent;
            item.sent_at = Some(now);
            item.last_error = None;
        }
        Err(SendError::Permanent(e)) => {
            item.status = OutboxStatus::Failed;
            item.last_error = Some(e);
        }
        Err(e @ SendError::RecipientRefused(_)) => {
            item.status = OutboxStatus::Failed;
            item.last_error = Some(format!("{e}; {RECIPIENT_ADVICE}"));
        }
        // Set aside (quarantined): left queued, it would stall the outbox again after every restart.
        Err(e @ SendError::OverBudget(_)) => {
            item.status = OutboxStatus::Failed;
            item.last_error = Some(format!(
                "{e}; set aside so that it does not hold up the other mail. Raise send_timeout (or shorten \
                 the template's text), then `postdesk outbox retry {}`",
                item.id
            ));
        }
        Err(SendError::Temporary(e)) => {
            let age = (now - item.requeued_at.unwrap_or(item.created_at))
                .to_std()
                .unwrap_or_default();
            if age >= policy.max_age {
                item.status = OutboxStatus::Failed;
                item.last_error = Some(format!("gave up after {} attempts: {e}", item.attempts));
            } else {
                let delay =
                    policy.backoff(item.attempts, item.id ^ now.timestamp_subsec_nanos() as u64);
                item.next_attempt_at = now + chrono::Duration::from_std(delay).unwrap_or_default();
                item.last_error = Some(e);
            }
        }
    }
    item
}

/// The bytes of a row's attachments, from the blob store. A missing blob fails the row for good: it will
/// not come back by waiting.
fn attachment_bytes(store: &Store, item: &OutboxItem) -> Result<Vec<Vec<u8>>, SendError> {
    item.attachments
        .iter()
        .map(|a| match store.blob(&a.sha256) {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(SendError::Permanent(format!(
                "attachment {} ({}) is missing from the store",
                a.filename, a.sha256
            ))),
            Err(e) => Err(SendError::Temporary(format!(
                "cannot read attachment {}: {e}",
                a.filename
            ))),
        })
        .collect()
}

/// Send what is due now, `concurrency` mails in flight at once; returns how many rows were attempted.
///
/// Each send records its outcome and makes it durable (flush) itself, at once, while the other sends go on:
/// a crash between the server's "250 OK" and that flush sends the mail again after the restart, so the
/// window must be as short as the disk allows, for every mail in flight. (Recording the outcomes one after
/// another and flushing once per batch, as before, left every mail sent since sled's last background flush
/// unrecorded: tests/crash.rs counted dozens of duplicate acknowledgements per SIGKILL.)
pub async fn send_due(
    store: &Store,
    transport: &Transport,
    policy: &RetryPolicy,
    concurrency: usize,
) -> Result<usize, crate::store::StoreError> {
    send_due_until(
        store,
        transport,
        policy,
        concurrency,
        None,
        &CancellationToken::new(),
    )
    .await
}

/// [`send_due`], counting outcomes and send latency in `telemetry`, and taking no new send once `stop` is
/// cancelled: the sends already under way get [`SHUTDOWN_GRACE`] to finish and be recorded, the rest of the
/// round stays queued for the next start (a stop must not wait for a whole round of slow SMTP sends).
pub async fn send_due_until(
    store: &Store,
    transport: &Transport,
    policy: &RetryPolicy,
    concurrency: usize,
    telemetry: Option<&Telemetry>,
    stop: &CancellationToken,
) -> Result<usize, crate::store::StoreError> {
    use futures_util::StreamExt;
    // Send nothing whose outcome could not be recorded durably: it would be sent again and again.
    store.writable()?;
    let due = store.outbox_due(Utc::now(), BATCH)?;
    let results = futures_util::stream::iter(due)
        .take_until(stop.cancelled())
        .map(|item| attempt(store, transport, policy, telemetry, stop, item))
        .buffer_unordered(concurrency.max(1));
    futures_util::pin_mut!(results);
    let mut n = 0;
    let mut first_error = None;
    while let Some(result) = results.next().await {
        n += 1;
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(n),
    }
}

/// What to do about a recipient the customer's mail server refused (log line and the row's `last_error`).
pub const RECIPIENT_ADVICE: &str = "check the customer's address (a typo, or a mailbox that no longer \
    exists); this is not a problem of postdesk's settings. The ticket is kept: reach the customer another \
    way, or answer when they write from a working address";

/// How long a send under way may still take once the daemon is asked to stop: the daemon exits within
/// 10 s. A send cut short stays queued and goes out after the restart.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// One send attempt of `item`, its outcome recorded and made durable.
///
/// Each send records its outcome and makes it durable (flush) itself, at once, while the other sends go on:
/// a crash between the server's "250 OK" and that flush sends the mail again after the restart, so the
/// window must be as short as the disk allows, for every mail in flight.
async fn attempt(
    store: &Store,
    transport: &Transport,
    policy: &RetryPolicy,
    telemetry: Option<&Telemetry>,
    stop: &CancellationToken,
    item: OutboxItem,
) -> Result<(), crate::store::StoreError> {
    let began = std::time::Instant::now();
    let send = async {
        match attachment_bytes(store, &item) {
            // A row whose template failed is never sent as it is (empty): `outbox retry` renders it.
            _ if item.unrendered.is_some() => Err(SendError::Permanent(
                "not rendered (its template failed); fix it and run `postdesk outbox retry`".into(),
            )),
            Ok(files) => transport.send(&item, &files).await,
            Err(e) => Err(e),
        }
    };
    let grace = async {
        stop.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let outcome = tokio::select! {
        outcome = send => outcome,
        () = grace => {
            tracing::warn!(outbox = item.id, ticket = %item.ticket, kind = %item.kind,
                "stopping: a send still under way after {}s is cut short; the mail stays queued and is sent \
                 after the restart", SHUTDOWN_GRACE.as_secs());
            return Ok(());
        }
    };
    if let Some(t) = telemetry {
        t.observe_send(began.elapsed());
        // What `[alerts]` watches: temporary failures in a row mean the way out is broken.
        match &outcome {
            Ok(()) => t.outbound_ok(),
            Err(SendError::Temporary(_)) => t.outbound_error(Utc::now()),
            Err(_) => {}
        }
    }
    match &outcome {
        Ok(()) => {
            tracing::info!(outbox = item.id, ticket = %item.ticket, kind = %item.kind, "sent")
        }
        Err(e @ SendError::OverBudget(_)) => {
            tracing::error!(outbox = item.id, ticket = %item.ticket, kind = %item.kind, text_bytes = item.text.len(),
                "{e}: the mail is marked failed so that it does not hold up the rest of the outbox. Raise \
                 [outbound] send_timeout (or shorten the template's text), then `postdesk outbox retry {}`",
                item.id)
        }
        // Not a settings problem: blaming `[outbound]` sent admins looking in the wrong place (issue 14).
        Err(e @ SendError::RecipientRefused(_)) => {
            tracing::warn!(outbox = item.id, ticket = %item.ticket, kind = %item.kind,
                "could not send: {}; {RECIPIENT_ADVICE}",
                crate::logging::redact_addresses(&e.to_string()))
        }
        Err(e) => {
            tracing::warn!(outbox = item.id, ticket = %item.ticket, kind = %item.kind, attempt = item.attempts + 1,
            "could not send: {}; {} (`postdesk outbox list` shows the queue)",
            crate::logging::redact_addresses(&e.to_string()), transport.failure_advice())
        }
    }
    // Each outcome is made durable before the next round: a crash must not forget that a mail
    // went out, or it is sent again (tests/crash.rs found one duplicate per unflushed send).
    let item = after_attempt(item, outcome, Utc::now(), policy);
    store.outbox_update(item.clone())?;
    store.flush_async().await?;
    if let Some(t) = telemetry {
        match item.status {
            OutboxStatus::Sent => t.outbox_sent(),
            OutboxStatus::Failed => t.outbox_failed(),
            OutboxStatus::Queued | OutboxStatus::Bounced => {}
        }
    }
    Ok(())
}

/// Run until `shutdown`, `concurrency` sends in flight. Not in rounds: a slot that frees up takes the next
/// due row at once, so one slow mail (up to its budget, `[outbound] send_timeout`) holds up only its own
/// slot, never the rows queued after it. On shutdown the sends under way get [`SHUTDOWN_GRACE`].
pub async fn run(
    store: Arc<Store>,
    transport: Arc<Transport>,
    policy: RetryPolicy,
    concurrency: usize,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) {
    let wake: Arc<Notify> = store.wake().outbox.clone();
    let concurrency = concurrency.max(1);
    // Rows being sent, by the task sending them.
    let mut in_flight: std::collections::HashMap<tokio::task::Id, u64> =
        std::collections::HashMap::new();
    let mut sends = tokio::task::JoinSet::new();
    loop {
        let mut failing_store = false;
        if sends.len() < concurrency {
            // Only as many rows as there are free slots, and not the ones being sent: each row read is a
            // deserialisation, and this runs every time a send ends.
            let busy: std::collections::HashSet<u64> = in_flight.values().copied().collect();
            let due = store.writable().and_then(|()| {
                store.outbox_due_except(Utc::now(), concurrency - sends.len(), &busy)
            });
            match due {
                Ok(due) => {
                    for item in due {
                        if sends.len() >= concurrency {
                            break;
                        }
                        let (s, t, m, stop) = (
                            store.clone(),
                            transport.clone(),
                            telemetry.clone(),
                            shutdown.clone(),
                        );
                        let id = item.id;
                        let task = sends.spawn(async move {
                            attempt(&s, &t, &policy, Some(&m), &stop, item).await
                        });
                        in_flight.insert(task.id(), id);
                    }
                }
                Err(e) => {
                    // Really wait: the rows are still due, and going round at once would hammer a failing
                    // store (and, before `Storage::writable`, re-sent the same mails in a loop: tests/faults.rs).
                    tracing::error!("outbox: cannot read or update the store: {e}; retrying in 5s");
                    failing_store = true;
                }
            }
        }
        let sleep = if failing_store {
            Duration::from_secs(5)
        } else if sends.len() >= concurrency {
            // Every slot is busy: only a finished send frees one.
            Duration::from_secs(60)
        } else {
            let until = match store.outbox_next_due() {
                Ok(Some(at)) => (at - Utc::now())
                    .to_std()
                    .unwrap_or_default()
                    .min(Duration::from_secs(60)),
                _ => Duration::from_secs(60),
            };
            // What is due now and not taken is being sent: look again when a send ends, or each second.
            if sends.is_empty() {
                until
            } else {
                until.max(Duration::from_secs(1))
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(done) = sends.join_next_with_id(), if !sends.is_empty() => {
                let (task, result) = match done {
                    Ok((task, result)) => (task, result.map_err(|e| e.to_string())),
                    Err(e) => (e.id(), Err(format!("the send failed: {e}"))),
                };
                let id = in_flight.remove(&task);
                if let Err(e) = result {
                    tracing::error!(outbox = ?id, "outbox: cannot record the outcome of a send: {e}; it is tried again");
                }
            }
            _ = wake.notified(), if !failing_store => {}
            _ = tokio::time::sleep(sleep.max(Duration::from_millis(10))) => {}
        }
    }
    // The sends under way finish within their grace (see `attempt`) and are recorded.
    while sends.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> OutboxItem {
        crate::outbound::sample_item(7, 1000)
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        assert!(p.backoff(0, 20) < p.backoff(3, 20));
        for a in 0..50 {
            assert!(p.backoff(a, a as u64) <= Duration::from_secs(3600 * 12 / 10));
        }
        let fast = RetryPolicy {
            base: Duration::from_millis(200),
            ..p
        };
        assert!(fast.backoff(0, 20) <= Duration::from_millis(240));
    }

    #[test]
    fn outcomes() {
        let now = Utc::now();
        let sent = after_attempt(item(), Ok(()), now, &RetryPolicy::default());
        assert_eq!(
            (sent.status, sent.attempts, sent.sent_at),
            (OutboxStatus::Sent, 1, Some(now))
        );
        let failed = after_attempt(
            item(),
            Err(SendError::Permanent("550 no such user".into())),
            now,
            &RetryPolicy::default(),
        );
        assert_eq!(failed.status, OutboxStatus::Failed);
        assert_eq!(failed.last_error.as_deref(), Some("550 no such user"));
        let refused = after_attempt(
            item(),
            Err(SendError::RecipientRefused("550 5.1.1 no such user".into())),
            now,
            &RetryPolicy::default(),
        );
        assert_eq!(refused.status, OutboxStatus::Failed);
        let why = refused.last_error.unwrap_or_default();
        assert!(
            why.contains("refused the address") && why.contains("check the customer's address")
        );
        assert!(!why.contains("[outbound]"), "{why}");
        let retry = after_attempt(
            item(),
            Err(SendError::Temporary("421".into())),
            now,
            &RetryPolicy::default(),
        );
        assert_eq!(retry.status, OutboxStatus::Queued);
        assert!(retry.next_attempt_at > now);
        let mut old = item();
        old.created_at = now - chrono::Duration::days(4);
        assert_eq!(
            after_attempt(
                old,
                Err(SendError::Temporary("421".into())),
                now,
                &RetryPolicy::default()
            )
            .status,
            OutboxStatus::Failed
        );
    }

    #[test]
    fn built_mail_has_the_loop_headers_and_no_injected_header() {
        let mut i = item();
        i.subject = "[JP-1000] a\r\nBcc: evil@example.com".into();
        i.in_reply_to = Some("c@x".into());
        i.references = vec!["a@x".into(), "c@x".into()];
        let raw = String::from_utf8(
            super::super::transport::build_message(&i)
                .unwrap()
                .formatted(),
        )
        .unwrap();
        assert!(raw.contains("Auto-Submitted: auto-replied"), "{raw}");
        assert!(raw.contains("X-Auto-Response-Suppress: All"));
        assert!(raw.contains("Message-ID: <m7@example.com>"));
        assert!(raw.contains("In-Reply-To: <c@x>"));
        assert!(raw.contains("References: <a@x> <c@x>"));
        assert!(
            !raw.lines()
                .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
            "{raw}"
        );
    }
}
