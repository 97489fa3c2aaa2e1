//! Telemetry: what `/healthz` and `/metrics` report, gathered where things happen.
//!
//! One [`Telemetry`] lives as long as the daemon process (it is created once and handed to every service
//! `Desk` built from a reloaded config, so counters and intake states survive a SIGHUP). It holds two things:
//!
//! - the **intake health registry**: per (region, mailbox) the state of the intake task (`starting`,
//!   `connected`, `idle`, `failing`), the time of its last successful poll, since when it has been failing
//!   and the *kind* of its last error (`auth`, `connect`, … — never server text, which may carry user names);
//! - the **Prometheus metrics** (the `prometheus-client` crate): counters bumped by intake, the desk and the
//!   outbox worker; latency histograms; and gauges (tickets by region and status, outbox rows by status)
//!   that are read from the store at scrape time, so they are right even for changes made by another
//!   process before the daemon started.
//!
//! Whether the daemon is healthy is a pure decision ([`unhealthy`]) over a snapshot of the registry, the
//! time and the configured threshold, so it is tested without servers.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::config::{Config, IntakeConfig};
use crate::store::{OutboxCounts, Storage, Store, StoreError};
use crate::types::Status;

/// Every metric name starts with this (`postdesk_mails_ingested_total`).
pub const PREFIX: &str = "postdesk";

/// What an intake task is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IntakeState {
    /// Started, nothing succeeded yet.
    Starting,
    /// Connected (IMAP logged in), taking mail.
    Connected,
    /// Swept successfully; waiting for new mail (IMAP IDLE, or the poll interval).
    Idle,
    /// The last attempt failed; it is retried with backoff.
    Failing,
}

/// One intake's entry in the health registry, as `/healthz` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IntakeHealth {
    pub region: String,
    /// The IMAP mailbox, or the Maildir path.
    pub mailbox: String,
    pub state: IntakeState,
    /// The end of the last successful poll (sweep or scan).
    pub last_ok: Option<DateTime<Utc>>,
    /// The first failure since the last success; cleared by a successful poll.
    pub failing_since: Option<DateTime<Utc>>,
    /// The kind of the last error (`auth`, `connect`, `tls`, `timeout`, `protocol`, `store`, `no_mailbox`, `maildir`).
    pub last_error: Option<String>,
}

/// The intakes that make the daemon unhealthy: failing (without a success since) for at least `threshold`.
/// An intake that is failing but has not reached the threshold yet is not counted: a server restart or a
/// dropped connection heals by itself within a few backoff rounds.
pub fn unhealthy(
    intakes: &[IntakeHealth],
    now: DateTime<Utc>,
    threshold: Duration,
) -> Vec<&IntakeHealth> {
    intakes
        .iter()
        .filter(|h| {
            h.failing_since
                .is_some_and(|since| (now - since).to_std().unwrap_or_default() >= threshold)
        })
        .collect()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabel {
    pub region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TicketLabels {
    region: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

type HistogramFamily = Family<RegionLabel, Histogram, fn() -> Histogram>;

fn ingest_histogram() -> Histogram {
    // 5 ms … 41 s: a single mail on loopback to a 500-mail batch from a slow server.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Health registry and metrics of one daemon process. Share it as `Arc<Telemetry>`.
pub struct Telemetry {
    intakes: Mutex<BTreeMap<(String, String), IntakeHealth>>,
    /// Woken when an intake's state or error kind changes, so the daemon's status line for systemd follows
    /// within moments instead of at its next periodic refresh ([`Telemetry::intake_changed`]).
    intake_changed: tokio::sync::Notify,
    /// Since when sending has been failing temporarily (the relay down, refusing, timing out), cleared by
    /// the next mail that goes out: what `[alerts]` tells the admin about.
    outbound_failing_since: Mutex<Option<DateTime<Utc>>>,
    /// Configured region codes, so every region shows its series (at zero) from the start.
    regions: Mutex<Vec<String>>,
    registry: Registry,
    /// Serialises scrapes: the gauges are set, then encoded.
    scrape: Mutex<()>,
    mails_ingested: Family<RegionLabel, Counter>,
    parse_failures: Family<RegionLabel, Counter>,
    quarantined: Family<RegionLabel, Counter>,
    auto_replies_suppressed: Family<RegionLabel, Counter>,
    staff_mail_held_back: Family<RegionLabel, Counter>,
    render_failures: Family<RegionLabel, Counter>,
    imap_reconnects: Family<RegionLabel, Counter>,
    sla_breaches: Family<RegionLabel, Counter>,
    outbox_sent: Counter,
    outbox_failed: Counter,
    outbox_bounced: Counter,
    tickets: Family<TicketLabels, Gauge>,
    outbox: Family<StatusLabel, Gauge>,
    ingest_seconds: HistogramFamily,
    send_seconds: Histogram,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

fn region(code: &str) -> RegionLabel {
    RegionLabel {
        region: code.to_string(),
    }
}

impl Telemetry {
    /// An empty registry with every metric registered.
    pub fn new() -> Telemetry {
        let mut t = Telemetry {
            intakes: Mutex::new(BTreeMap::new()),
            intake_changed: tokio::sync::Notify::new(),
            outbound_failing_since: Mutex::new(None),
            regions: Mutex::new(Vec::new()),
            registry: Registry::with_prefix(PREFIX),
            scrape: Mutex::new(()),
            mails_ingested: Family::default(),
            parse_failures: Family::default(),
            quarantined: Family::default(),
            auto_replies_suppressed: Family::default(),
            staff_mail_held_back: Family::default(),
            render_failures: Family::default(),
            imap_reconnects: Family::default(),
            sla_breaches: Family::default(),
            outbox_sent: Counter::default(),
            outbox_failed: Counter::default(),
            outbox_bounced: Counter::default(),
            tickets: Family::default(),
            outbox: Family::default(),
            ingest_seconds: Family::new_with_constructor(ingest_histogram as fn() -> Histogram),
            send_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
        };
        t.registry.register(
            "mails_ingested",
            "Mails stored in a ticket, by the region whose intake took them",
            t.mails_ingested.clone(),
        );
        t.registry.register(
            "parse_failures",
            "Input that could not be read as a mail",
            t.parse_failures.clone(),
        );
        t.registry.register(
            "quarantined",
            "Input kept in quarantine instead of a ticket (see postdesk stats)",
            t.quarantined.clone(),
        );
        t.registry.register(
            "auto_replies_suppressed",
            "Automatic mails held back by the per-recipient rate limits (likely mail loops)",
            t.auto_replies_suppressed.clone(),
        );
        t.registry.register(
            "staff_mail_held_back",
            "Staff mails held back by the staff breaker (outbound.staff_per_hour; a loop with a staff auto-responder)",
            t.staff_mail_held_back.clone(),
        );
        t.registry.register(
            "render_failures",
            "Mails whose template failed at run time: recorded as failed in the outbox (see postdesk outbox list)",
            t.render_failures.clone(),
        );
        t.registry.register(
            "imap_reconnects",
            "IMAP connection attempts after a failed or lost session",
            t.imap_reconnects.clone(),
        );
        t.registry.register(
            "sla_breaches",
            "Tickets whose first-response SLA was breached",
            t.sla_breaches.clone(),
        );
        t.registry.register(
            "outbox_sent",
            "Outbox mails delivered to the transport",
            t.outbox_sent.clone(),
        );
        t.registry.register(
            "outbox_failed",
            "Outbox mails given up on (permanent error, or retried until max_age)",
            t.outbox_failed.clone(),
        );
        t.registry.register(
            "outbox_bounced",
            "Outbox mails a delivery report said bounced",
            t.outbox_bounced.clone(),
        );
        t.registry.register(
            "tickets",
            "Tickets by region and status (read from the store at scrape time)",
            t.tickets.clone(),
        );
        t.registry.register(
            "outbox",
            "Outbox rows by status (read from the store at scrape time)",
            t.outbox.clone(),
        );
        t.registry.register_with_unit(
            "ingest",
            "Time from fetching a batch of mail to its durable commit",
            prometheus_client::registry::Unit::Seconds,
            t.ingest_seconds.clone(),
        );
        t.registry.register_with_unit(
            "send",
            "Time to hand one outbox mail to the transport",
            prometheus_client::registry::Unit::Seconds,
            t.send_seconds.clone(),
        );
        t
    }

    /// Take in a (new or reloaded) config: its regions get their series at zero, and the health entries of
    /// intakes it no longer has are dropped. Entries that remain keep their state across a reload.
    pub fn configure(&self, config: &Config) {
        let codes: Vec<String> = config.region.iter().map(|r| r.code.clone()).collect();
        for code in &codes {
            let label = region(code);
            for family in [
                &self.mails_ingested,
                &self.parse_failures,
                &self.quarantined,
                &self.auto_replies_suppressed,
                &self.staff_mail_held_back,
                &self.render_failures,
                &self.sla_breaches,
            ] {
                let _ = family.get_or_create(&label);
            }
            let _ = self.ingest_seconds.get_or_create(&label);
        }
        let mut expected = Vec::new();
        for r in &config.region {
            match &r.intake {
                Some(IntakeConfig::Imap(imap)) => {
                    let _ = self.imap_reconnects.get_or_create(&region(&r.code));
                    for m in &imap.mailboxes {
                        expected.push((r.code.clone(), m.clone()));
                    }
                }
                Some(IntakeConfig::Maildir(m)) => {
                    expected.push((r.code.clone(), m.path.display().to_string()))
                }
                None => {}
            }
        }
        let mut intakes = lock(&self.intakes);
        intakes.retain(|k, _| expected.contains(k));
        for (region, mailbox) in expected {
            intakes
                .entry((region.clone(), mailbox.clone()))
                .or_insert_with(|| IntakeHealth {
                    region,
                    mailbox,
                    state: IntakeState::Starting,
                    last_ok: None,
                    failing_since: None,
                    last_error: None,
                });
        }
        *lock(&self.regions) = codes;
    }

    fn update(&self, region: &str, mailbox: &str, f: impl FnOnce(&mut IntakeHealth)) {
        let mut intakes = lock(&self.intakes);
        let entry = intakes
            .entry((region.to_string(), mailbox.to_string()))
            .or_insert_with(|| IntakeHealth {
                region: region.to_string(),
                mailbox: mailbox.to_string(),
                state: IntakeState::Starting,
                last_ok: None,
                failing_since: None,
                last_error: None,
            });
        let before = (entry.state, entry.last_error.clone());
        f(entry);
        if (entry.state, &entry.last_error) != (before.0, &before.1) {
            self.intake_changed.notify_one();
        }
    }

    /// Resolves once an intake's state or error kind changed since the last call returned (one waiter: the
    /// daemon's main loop; a change with nobody waiting is kept for the next call).
    pub async fn intake_changed(&self) {
        self.intake_changed.notified().await
    }

    /// The intake is connected (logged in) and about to take mail. A failure streak is not over until a
    /// poll succeeds, so `failing_since` stays.
    pub fn intake_connected(&self, region: &str, mailbox: &str) {
        self.update(region, mailbox, |h| h.state = IntakeState::Connected);
    }

    /// A poll (sweep, scan) succeeded at `now`: the intake is healthy and waits for mail.
    pub fn intake_ok(&self, region: &str, mailbox: &str, now: DateTime<Utc>) {
        self.update(region, mailbox, |h| {
            h.state = IntakeState::Idle;
            h.last_ok = Some(now);
            h.failing_since = None;
            h.last_error = None;
        });
    }

    /// An attempt failed at `now` with an error of `kind` (a fixed word, never server text).
    pub fn intake_failed(&self, region: &str, mailbox: &str, kind: &str, now: DateTime<Utc>) {
        self.update(region, mailbox, |h| {
            h.state = IntakeState::Failing;
            h.failing_since.get_or_insert(now);
            h.last_error = Some(kind.to_string());
        });
    }

    /// A snapshot of the health registry, ordered by region and mailbox.
    pub fn intakes(&self) -> Vec<IntakeHealth> {
        lock(&self.intakes).values().cloned().collect()
    }

    pub fn mails_ingested(&self, region_code: &str, n: u64) {
        if n > 0 {
            self.mails_ingested
                .get_or_create(&region(region_code))
                .inc_by(n);
        }
    }

    pub fn parse_failure(&self, region_code: &str) {
        self.parse_failures
            .get_or_create(&region(region_code))
            .inc();
    }

    pub fn quarantined(&self, region_code: &str) {
        self.quarantined.get_or_create(&region(region_code)).inc();
    }

    pub fn auto_replies_suppressed(&self, region_code: &str, n: u64) {
        if n > 0 {
            self.auto_replies_suppressed
                .get_or_create(&region(region_code))
                .inc_by(n);
        }
    }

    pub fn staff_mail_held_back(&self, region_code: &str, n: u64) {
        if n > 0 {
            self.staff_mail_held_back
                .get_or_create(&region(region_code))
                .inc_by(n);
        }
    }

    pub fn render_failures(&self, region_code: &str, n: u64) {
        if n > 0 {
            self.render_failures
                .get_or_create(&region(region_code))
                .inc_by(n);
        }
    }

    pub fn imap_reconnect(&self, region_code: &str) {
        self.imap_reconnects
            .get_or_create(&region(region_code))
            .inc();
    }

    pub fn sla_breach(&self, region_code: &str) {
        self.sla_breaches.get_or_create(&region(region_code)).inc();
    }

    pub fn outbox_sent(&self) {
        self.outbox_sent.inc();
    }

    pub fn outbox_failed(&self) {
        self.outbox_failed.inc();
    }

    /// How many outbox rows were marked failed since the process started.
    pub fn outbox_failed_total(&self) -> u64 {
        self.outbox_failed.get()
    }

    /// A mail went out at `now`: sending works (again).
    pub fn outbound_ok(&self) {
        *lock(&self.outbound_failing_since) = None;
    }

    /// A send failed temporarily at `now` (it will be retried): the first one since the last success
    /// starts the failure streak.
    pub fn outbound_error(&self, now: DateTime<Utc>) {
        lock(&self.outbound_failing_since).get_or_insert(now);
    }

    /// Since when sending has been failing, if it is.
    pub fn outbound_failing_since(&self) -> Option<DateTime<Utc>> {
        *lock(&self.outbound_failing_since)
    }

    pub fn outbox_bounced(&self) {
        self.outbox_bounced.inc();
    }

    /// One batch of `region_code` went from fetch to durable commit in `took`.
    pub fn observe_ingest(&self, region_code: &str, took: Duration) {
        self.ingest_seconds
            .get_or_create(&region(region_code))
            .observe(took.as_secs_f64());
    }

    /// One outbox send took `took`.
    pub fn observe_send(&self, took: Duration) {
        self.send_seconds.observe(took.as_secs_f64());
    }

    /// The OpenMetrics text of every metric, the gauges read from `store` now (its running counts: a few
    /// keys, whatever the store holds).
    pub fn render(&self, store: &Store) -> Result<String, StoreError> {
        let counts = store.counts()?;
        let outbox = store.outbox_counts()?;
        let _scrape = lock(&self.scrape);
        self.tickets.clear();
        for code in lock(&self.regions).iter() {
            for status in Status::ALL {
                self.tickets
                    .get_or_create(&TicketLabels {
                        region: code.clone(),
                        status: status.as_str().to_string(),
                    })
                    .set(0);
            }
        }
        for (code, status, n) in counts {
            self.tickets
                .get_or_create(&TicketLabels {
                    region: code,
                    status: status.as_str().to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let OutboxCounts {
            queued,
            sent,
            failed,
            bounced,
        } = outbox;
        for (status, n) in [
            ("queued", queued),
            ("sent", sent),
            ("failed", failed),
            ("bounced", bounced),
        ] {
            self.outbox
                .get_or_create(&StatusLabel {
                    status: status.to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        Ok(text)
    }
}

/// A lock whose holder panicked is still consistent here (plain values, no invariants across fields).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{TestConfig, TestRegion};

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn a_failure_is_unhealthy_only_once_it_lasts_the_threshold() {
        let t = Telemetry::new();
        t.intake_connected("JP", "INBOX");
        t.intake_ok("JP", "INBOX", at(0));
        t.intake_failed("KR", "INBOX", "auth", at(10));
        // Later failures do not move the start of the streak.
        t.intake_failed("KR", "INBOX", "connect", at(200));
        let snap = t.intakes();
        let minutes5 = Duration::from_secs(300);
        assert!(unhealthy(&snap, at(309), minutes5).is_empty());
        let bad = unhealthy(&snap, at(310), minutes5);
        assert_eq!(bad.len(), 1);
        assert_eq!(
            (bad[0].region.as_str(), bad[0].last_error.as_deref()),
            ("KR", Some("connect"))
        );
        assert_eq!(bad[0].failing_since, Some(at(10)));
        // Reconnecting is not enough; a successful poll ends the streak.
        t.intake_connected("KR", "INBOX");
        assert_eq!(unhealthy(&t.intakes(), at(400), minutes5).len(), 1);
        t.intake_ok("KR", "INBOX", at(401));
        let snap = t.intakes();
        assert!(unhealthy(&snap, at(10_000), minutes5).is_empty());
        assert!(snap
            .iter()
            .all(|h| h.state == IntakeState::Idle && h.last_error.is_none()));
    }

    #[test]
    fn reconfiguring_keeps_remaining_intakes_and_drops_removed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let maildir = |code: &str, address: &str, path: &str| {
            TestRegion::new(code, address).intake(&format!("kind = \"maildir\"\npath = \"{path}\""))
        };
        let jp = maildir("JP", "jp@example.com", "/m/jp");
        let kr = maildir("KR", "kr@example.com", "/m/kr");
        let load = |regions: &[TestRegion]| {
            TestConfig::new(dir.path())
                .regions(regions.iter().cloned())
                .parse()
        };
        let t = Telemetry::new();
        t.configure(&load(&[jp.clone(), kr]));
        assert_eq!(t.intakes().len(), 2);
        assert!(t.intakes().iter().all(|h| h.state == IntakeState::Starting));
        t.intake_failed("JP", "/m/jp", "maildir", at(0));
        t.configure(&load(&[jp]));
        let snap = t.intakes();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].failing_since, Some(at(0)));
    }

    #[test]
    fn metrics_render_counters_and_store_gauges() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t = Telemetry::new();
        t.mails_ingested("JP", 3);
        t.outbox_sent();
        t.observe_send(Duration::from_millis(20));
        let text = t.render(&store).unwrap();
        assert!(
            text.contains("postdesk_mails_ingested_total{region=\"JP\"} 3"),
            "{text}"
        );
        assert!(text.contains("postdesk_outbox_sent_total 1"), "{text}");
        assert!(
            text.contains("postdesk_outbox{status=\"queued\"} 0"),
            "{text}"
        );
        assert!(text.contains("postdesk_send_seconds_count 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
