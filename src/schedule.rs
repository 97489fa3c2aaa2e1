//! The scheduler: fires tickets' timers when they are due.
//!
//! It sleeps until the earliest entry of the store's due-time index (woken early whenever tickets' timers
//! are rewritten), then fires what is due through [`Desk::fire_timer`], which re-checks the ticket and
//! rewrites its timers in the same transaction as the mail it queues. A tick reads only due entries, never
//! all tickets. After a crash or a long downtime every missed timer is simply due: it fires once, late, and
//! the fired entry is gone with the same commit, so it never fires twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::service::{blocking, Desk, IngestError};
use crate::store::Storage;

/// Timers handled per tick.
const TICK: usize = 256;

/// Fire every timer due now; returns how many were handled.
pub fn tick(desk: &Desk) -> Result<usize, IngestError> {
    tick_at(desk, Utc::now())
}

/// Fire every timer due at `now` (at most one batch); the clock is a parameter for tests and benchmarks.
pub fn tick_at(desk: &Desk, now: DateTime<Utc>) -> Result<usize, IngestError> {
    let due = desk.store.timers_due(now, TICK)?;
    for (id, kind, _) in &due {
        desk.fire_timer(id, *kind, now)?;
    }
    Ok(due.len())
}

/// Run until `shutdown`.
pub async fn run(desk: Arc<Desk>, shutdown: CancellationToken) {
    let wake = desk.store.wake().timers.clone();
    loop {
        let handled = match blocking(|| tick(&desk)) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(
                    "scheduler: {e}; retrying in 10s (timers stay due, nothing is lost)"
                );
                0
            }
        };
        if handled > 0 {
            if let Err(e) = desk.store.flush_async().await {
                tracing::error!("scheduler: cannot flush the store: {e}");
            }
            if !shutdown.is_cancelled() {
                continue;
            }
        }
        let sleep = match desk.store.timers_next() {
            Ok(Some(at)) => (at - Utc::now())
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_secs(60)),
            Ok(None) => Duration::from_secs(60),
            Err(_) => Duration::from_secs(10),
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sleep.max(Duration::from_millis(5))) => {}
        }
    }
}
