//! Alerts: the admin hears about trouble by mail (`[alerts] to`).
//!
//! A support desk whose mailbox silently stopped is the most common outage there is, so `postdesk run`
//! watches what it already knows and mails the admin once when a condition sets in and once when it is over:
//! - a region's intake failing for `unhealthy_after` (the health registry of [`crate::telemetry`], the same
//!   state `/healthz` reports: wrong password, server gone, mailbox deleted);
//! - outgoing mail failing (temporarily, retried) for `unhealthy_after`, and mail marked failed for good;
//! - the store refusing to write (the disk floor, [`crate::store::MIN_FREE_BYTES`], or a failed flush).
//!
//! Which mail to send is a pure decision ([`Tracker::step`]) over the signals of one look, so it is tested
//! without servers. At most one alert per condition in `min_interval` (a flapping link sends one alert and
//! one recovery, not one per flap); a recovery is always told.
//!
//! Alerts go **directly through the transport**, not through the outbox. The outbox lives in the store, and
//! two of the conditions are "the store refuses to write" (an alert queued there would never be queued) and
//! "sending keeps failing" (a row in the queue that alerts about the queue); besides, a failed alert then
//! cannot mark an outbox row failed or count as a failed send, so an alert is never about itself. An alert
//! that cannot be sent is logged as an error and tried again after [`RETRY_AFTER`]; nothing else comes of it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::{AlertsConfig, Config};
use crate::outbound::transport::Transport;
use crate::outbound::{OutboxItem, OutboxStatus};
use crate::service::Desk;
use crate::store::Storage;
use crate::telemetry::{unhealthy, Telemetry};
use crate::types::TicketId;

/// How soon an alert that could not be sent is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Whether a condition is a state (it sets in and recovers) or an event (it happens: mail marked failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    State,
    Event,
}

/// What one look found about one condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signal {
    /// Names the condition: `intake JP INBOX`, `outbound`, `failed mail`, `store`.
    pub key: String,
    pub kind: Kind,
    /// What is wrong (the alert's subject line), or `None` when all is well.
    pub trouble: Option<String>,
    /// What the admin can do, or what is fine again: the alert's text.
    pub detail: String,
}

/// One mail to the admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub key: String,
    /// False: the condition is over.
    pub trouble: bool,
    pub subject: String,
    pub text: String,
}

#[derive(Clone, Debug, Default)]
struct State {
    /// An alert was sent and its recovery not yet.
    alerted: bool,
    last_alert: Option<DateTime<Utc>>,
    /// After a send failed: not before then.
    retry_at: Option<DateTime<Utc>>,
    /// The trouble text of the alert last sent, for the recovery.
    about: String,
}

/// What was told, per condition.
#[derive(Debug)]
pub struct Tracker {
    min_interval: chrono::Duration,
    states: BTreeMap<String, State>,
}

impl Tracker {
    pub fn new(min_interval: Duration) -> Tracker {
        Tracker {
            min_interval: chrono::Duration::from_std(min_interval).unwrap_or(chrono::Duration::MAX),
            states: BTreeMap::new(),
        }
    }

    /// The mail to send for these signals at `now`, the state updated as if each was sent (see
    /// [`Tracker::failed`] for one that was not).
    pub fn step(&mut self, signals: &[Signal], now: DateTime<Utc>) -> Vec<Notice> {
        let mut out = Vec::new();
        for s in signals {
            let st = self.states.entry(s.key.clone()).or_default();
            if st.retry_at.is_some_and(|at| now < at) {
                continue;
            }
            match &s.trouble {
                Some(trouble) if !st.alerted => {
                    let quiet = st.last_alert.is_some_and(|at| now - at < self.min_interval);
                    if quiet {
                        continue;
                    }
                    st.alerted = s.kind == Kind::State;
                    st.last_alert = Some(now);
                    st.retry_at = None;
                    st.about = trouble.clone();
                    out.push(Notice {
                        key: s.key.clone(),
                        trouble: true,
                        subject: format!("[postdesk] trouble: {trouble}"),
                        text: s.detail.clone(),
                    });
                }
                None if st.alerted => {
                    st.alerted = false;
                    st.retry_at = None;
                    out.push(Notice {
                        key: s.key.clone(),
                        trouble: false,
                        subject: format!("[postdesk] recovered: {}", st.about),
                        text: s.detail.clone(),
                    });
                }
                _ => {}
            }
        }
        out
    }

    /// `notice` could not be sent at `now`: undo what [`Tracker::step`] recorded for it, and try again after
    /// [`RETRY_AFTER`].
    pub fn failed(&mut self, notice: &Notice, now: DateTime<Utc>) {
        let st = self.states.entry(notice.key.clone()).or_default();
        if notice.trouble {
            st.alerted = false;
            st.last_alert = None;
        } else {
            st.alerted = true;
        }
        st.retry_at = Some(now + chrono::Duration::from_std(RETRY_AFTER).unwrap_or_default());
    }
}

/// How long a condition must last before it is told: `[alerts] unhealthy_after`, else `[http]`'s, else 5m.
pub fn threshold(config: &Config, alerts: &AlertsConfig) -> Duration {
    alerts
        .unhealthy_after
        .or(config.http.as_ref().map(|h| h.unhealthy_after))
        .map(|d| d.0)
        .unwrap_or(Duration::from_secs(300))
}

/// One look at the intakes and the way out (pure, from the telemetry snapshot). `failed_new`: mails marked
/// failed since the last alert about them.
pub fn signals(
    config: &Config,
    telemetry: &Telemetry,
    threshold: Duration,
    failed_new: u64,
    now: DateTime<Utc>,
) -> Vec<Signal> {
    let intakes = telemetry.intakes();
    let bad = unhealthy(&intakes, now, threshold);
    let mut out: Vec<Signal> = intakes
        .iter()
        .filter(|h| config.region(&h.region).is_some())
        .map(|h| {
            let failing = bad.iter().any(|b| b.region == h.region && b.mailbox == h.mailbox);
            let what = format!("intake of region {} ({})", h.region, h.mailbox);
            Signal {
                key: format!("intake {} {}", h.region, h.mailbox),
                kind: Kind::State,
                trouble: failing.then(|| format!("{what} is failing")),
                detail: if failing {
                    format!(
                        "The {what} has been failing since {} (error kind: {}). New mail is not being taken \
                         in: it waits at its source. Check [[region]] intake of {} in the config (host, port, \
                         password, mailbox) and the mail server; the log of `postdesk run` and /healthz say \
                         more. You get one mail when it works again.\n",
                        h.failing_since.map(|t| t.to_rfc3339()).unwrap_or_default(),
                        h.last_error.as_deref().unwrap_or("unknown"),
                        h.region,
                    )
                } else {
                    format!(
                        "The {what} works again (last successful poll: {}).\n",
                        h.last_ok.map(|t| t.to_rfc3339()).unwrap_or_default()
                    )
                },
            }
        })
        .collect();
    let since = telemetry.outbound_failing_since();
    let failing = since.is_some_and(|t| (now - t).to_std().unwrap_or_default() >= threshold);
    out.push(Signal {
        key: "outbound".into(),
        kind: Kind::State,
        trouble: failing.then(|| "outgoing mail is failing".to_string()),
        detail: if failing {
            format!(
                "Sending mail has been failing since {} (it is retried with backoff). Check [outbound] in the \
                 config and the relay's log; `postdesk outbox list` shows the queue. You get one mail when mail \
                 goes out again (if this alert goes out at all, it took the same way).\n",
                since.map(|t| t.to_rfc3339()).unwrap_or_default()
            )
        } else {
            "Outgoing mail goes out again.\n".to_string()
        },
    });
    out.push(Signal {
        key: "failed mail".into(),
        kind: Kind::Event,
        trouble: (failed_new > 0).then(|| format!("{failed_new} outgoing mail(s) marked failed")),
        detail: format!(
            "{failed_new} outgoing mail(s) were marked failed (a permanent refusal, too many retries, or a \
             send over its budget): they will not be sent by themselves. `postdesk outbox list` shows them \
             with their errors; `postdesk outbox retry ID` sends one again.\n"
        ),
    });
    out
}

/// The signal of the store: whether it refuses to write.
pub fn store_signal(writable: Result<(), String>) -> Signal {
    let trouble = writable.err();
    Signal {
        key: "store".into(),
        kind: Kind::State,
        detail: match &trouble {
            Some(e) => format!(
                "postdesk stopped storing: {e}. Intake leaves new mail at its source and the outbox waits; both \
                 resume by themselves once there is space (free disk space under [storage] path). If a write \
                 failed, restart postdesk. You get one mail when it stores again.\n"
            ),
            None => "postdesk stores mail again.\n".to_string(),
        },
        trouble: trouble.map(|_| "postdesk stopped storing mail".to_string()),
    }
}

/// The mail of `notice`, ready for the transport (it is never an outbox row: see the module overview).
pub fn mail(
    config: &Config,
    alerts: &AlertsConfig,
    notice: &Notice,
    now: DateTime<Utc>,
) -> OutboxItem {
    let from = alerts
        .from
        .clone()
        .or_else(|| config.region.first().map(|r| r.address.clone()))
        .unwrap_or_else(|| "postdesk@localhost".to_string());
    let domain = from
        .rsplit_once('@')
        .map_or("localhost", |(_, d)| d)
        .to_string();
    let unique = now.timestamp_nanos_opt().unwrap_or_default();
    OutboxItem {
        id: 0,
        // Alerts are about no ticket; the transport wants one for its X-Postdesk-Ticket header.
        ticket: TicketId::new("ALERT", 0),
        kind: "alert".into(),
        from,
        from_name: "postdesk".into(),
        to: vec![alerts.to.trim().to_string()],
        subject: notice.subject.clone(),
        text: notice.text.clone(),
        html: None,
        message_id: format!("alert.{unique}.{}@{domain}", notice.key.replace(' ', ".")),
        in_reply_to: None,
        references: Vec::new(),
        auto_submitted: "auto-generated".into(),
        attachments: Vec::new(),
        status: OutboxStatus::Queued,
        attempts: 0,
        last_error: None,
        created_at: now,
        sent_at: None,
        next_attempt_at: now,
        requeued_at: None,
        unrendered: None,
    }
}

/// Watch and tell until `stop`; returns at once without `[alerts]`.
pub async fn run(desk: Arc<Desk>, transport: Arc<Transport>, stop: CancellationToken) {
    let Some(alerts) = desk.config.alerts.clone() else {
        return;
    };
    let threshold = threshold(&desk.config, &alerts);
    let tick = (threshold / 4).clamp(Duration::from_millis(200), Duration::from_secs(10));
    let mut tracker = Tracker::new(alerts.min_interval.0);
    // Mails marked failed before this process started were there to see already: not news.
    let mut failed_told = desk.telemetry.outbox_failed_total();
    tracing::info!(to = %alerts.to, "alerts: watching intakes, outgoing mail and the store");
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
        let now = Utc::now();
        let failed_total = desk.telemetry.outbox_failed_total();
        let mut signals = signals(
            &desk.config,
            &desk.telemetry,
            threshold,
            failed_total.saturating_sub(failed_told),
            now,
        );
        signals.push(store_signal(
            desk.store.writable().map_err(|e| e.to_string()),
        ));
        for notice in tracker.step(&signals, now) {
            let item = mail(&desk.config, &alerts, &notice, now);
            let sent = tokio::select! {
                () = stop.cancelled() => return,
                sent = transport.send(&item, &[]) => sent,
            };
            match sent {
                Ok(()) => {
                    if notice.key == "failed mail" {
                        failed_told = failed_total;
                    }
                    tracing::info!(to = %alerts.to, "alert sent: {}", notice.subject)
                }
                Err(e) => {
                    // Logged, never alerted about, and it does not count as a failed send.
                    tracing::error!(to = %alerts.to,
                        "could not send the alert \"{}\": {}; tried again in {}s. Alerts go out through \
                         [outbound] like all mail: check it and the relay's log",
                        notice.subject, crate::logging::redact_addresses(&e.to_string()), RETRY_AFTER.as_secs());
                    tracker.failed(&notice, now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(key: &str, trouble: bool) -> Signal {
        Signal {
            key: key.into(),
            kind: Kind::State,
            trouble: trouble.then(|| format!("{key} is failing")),
            detail: String::new(),
        }
    }

    fn t0() -> DateTime<Utc> {
        "2026-12-01T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn one_alert_one_recovery_per_condition() {
        let mut tr = Tracker::new(Duration::from_secs(3600));
        let at = |s: i64| t0() + chrono::Duration::seconds(s);
        let n = tr.step(&[sig("a", true), sig("b", false)], at(0));
        assert_eq!(n.len(), 1);
        assert!(n[0].trouble);
        assert_eq!(n[0].subject, "[postdesk] trouble: a is failing");
        // Still failing: nothing more.
        for s in 1..100 {
            assert!(tr
                .step(&[sig("a", true), sig("b", false)], at(s))
                .is_empty());
        }
        let n = tr.step(&[sig("a", false)], at(100));
        assert_eq!(n.len(), 1);
        assert!(!n[0].trouble);
        assert_eq!(n[0].subject, "[postdesk] recovered: a is failing");
        assert!(tr.step(&[sig("a", false)], at(101)).is_empty());
    }

    #[test]
    fn a_flapping_condition_is_told_once_per_interval() {
        let mut tr = Tracker::new(Duration::from_secs(3600));
        let at = |s: i64| t0() + chrono::Duration::seconds(s);
        assert_eq!(tr.step(&[sig("a", true)], at(0)).len(), 1);
        assert_eq!(tr.step(&[sig("a", false)], at(10)).len(), 1);
        // Failing again within the hour: quiet, and so is its recovery.
        assert!(tr.step(&[sig("a", true)], at(20)).is_empty());
        assert!(tr.step(&[sig("a", false)], at(30)).is_empty());
        // An hour after the last alert it is news again.
        assert_eq!(tr.step(&[sig("a", true)], at(3601)).len(), 1);
    }

    #[test]
    fn an_alert_that_failed_is_retried_later_and_told_once() {
        let mut tr = Tracker::new(Duration::from_secs(3600));
        let at = |s: i64| t0() + chrono::Duration::seconds(s);
        let n = tr.step(&[sig("a", true)], at(0));
        tr.failed(&n[0], at(0));
        assert!(
            tr.step(&[sig("a", true)], at(30)).is_empty(),
            "waits RETRY_AFTER"
        );
        assert_eq!(tr.step(&[sig("a", true)], at(61)).len(), 1);
        assert!(tr.step(&[sig("a", true)], at(62)).is_empty());
    }

    #[test]
    fn events_are_told_at_most_once_per_interval_without_recovery() {
        let mut tr = Tracker::new(Duration::from_secs(3600));
        let at = |s: i64| t0() + chrono::Duration::seconds(s);
        let ev = |n: bool| Signal {
            kind: Kind::Event,
            ..sig("failed mail", n)
        };
        assert_eq!(tr.step(&[ev(true)], at(0)).len(), 1);
        assert!(
            tr.step(&[ev(false)], at(1)).is_empty(),
            "no recovery for an event"
        );
        assert!(tr.step(&[ev(true)], at(2)).is_empty(), "rate-limited");
        assert_eq!(tr.step(&[ev(true)], at(3600)).len(), 1);
    }

    #[test]
    fn the_store_signal_says_what_to_do() {
        let s = store_signal(Err("disk full".into()));
        assert_eq!(s.trouble.as_deref(), Some("postdesk stopped storing mail"));
        assert!(s.detail.contains("disk full"));
        assert!(store_signal(Ok(())).trouble.is_none());
    }

    #[test]
    fn bad_alerts_and_spam_keys_are_named() {
        use crate::config::testing::{TestConfig, TestRegion};
        let err = |table: &str| {
            let text = TestConfig::new(std::path::Path::new("/tmp/x"))
                .table(table)
                .region(TestRegion::jp())
                .toml();
            Config::from_toml(&text, std::path::Path::new("config.toml"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err("[alerts]\nto = \"not an address\"").contains("alerts.to"));
        assert!(
            err("[alerts]\nto = \"ops@example.com\"\nunhealthy_after = \"0s\"")
                .contains("alerts.unhealthy_after")
        );
        assert!(err("[spam]\nkeep = \"0s\"").contains("spam.keep"));
        assert!(err("[spam]\ntrust = [\"bogofilter\"]").contains("bogofilter"));
        assert_eq!(
            err("[alerts]\nto = \"ops@example.com\"\n[spam]\nenabled = false"),
            ""
        );
        let c = TestConfig::new(std::path::Path::new("/tmp/x"))
            .table("[alerts]\nto = \"ops@example.com\"")
            .region(TestRegion::jp())
            .parse();
        let a = c.alerts.clone().unwrap();
        assert_eq!(threshold(&c, &a), Duration::from_secs(300));
        assert!(c.spam.enabled, "spam verdicts are honoured by default");
        assert_eq!(
            c.retention.spam_after.map(|d| d.0),
            Some(Duration::from_secs(30 * 86400))
        );
        let m = mail(
            &c,
            &a,
            &Notice {
                key: "store".into(),
                trouble: true,
                subject: "s".into(),
                text: "t".into(),
            },
            Utc::now(),
        );
        assert_eq!(m.to, vec!["ops@example.com"]);
        assert_eq!(m.from, "support-jp@example.com");
    }

    #[test]
    fn outgoing_mail_failing_for_the_threshold_and_failed_mail_are_signals() {
        use crate::config::testing::{TestConfig, TestRegion};
        let c = TestConfig::new(std::path::Path::new("/tmp/x"))
            .region(TestRegion::jp())
            .parse();
        let t = Telemetry::new();
        t.configure(&c);
        let threshold = Duration::from_secs(60);
        let trouble = |t: &Telemetry, failed_new: u64, now: DateTime<Utc>| -> Vec<String> {
            signals(&c, t, threshold, failed_new, now)
                .into_iter()
                .filter_map(|s| s.trouble)
                .collect()
        };
        assert!(trouble(&t, 0, t0()).is_empty());
        t.outbound_error(t0());
        t.outbound_error(t0() + chrono::Duration::seconds(30));
        assert!(trouble(&t, 0, t0() + chrono::Duration::seconds(59)).is_empty());
        assert_eq!(
            trouble(&t, 0, t0() + chrono::Duration::seconds(60)),
            vec!["outgoing mail is failing"]
        );
        t.outbound_ok();
        assert!(trouble(&t, 0, t0() + chrono::Duration::seconds(61)).is_empty());
        assert_eq!(
            trouble(&t, 2, t0()),
            vec!["2 outgoing mail(s) marked failed"]
        );
    }
}
