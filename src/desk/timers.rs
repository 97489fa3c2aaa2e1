//! Timers: the promises a desk keeps by itself — remind a customer who owes information, warn agents before
//! the first-response target, escalate when it is missed, close what stayed resolved.
//!
//! Pure functions of (ticket, config, now). [`schedule`] says which timers a ticket in its current state
//! should have; the store keeps them in a due-time index written in the same transaction as the ticket, so
//! the scheduler only ever reads what is due. [`on_timer`] decides what a due timer does. A timer that no
//! longer applies when it fires (the customer answered, an agent replied) does nothing: [`schedule`] of the
//! ticket's current state is the only truth.

use chrono::{DateTime, Duration, Utc};

use super::reply::{Content, Reply};
use super::ticket::{Status, Ticket, Timer, TimerKind};
use crate::config::{Config, RegionConfig, TimersConfig};

fn dur(d: std::time::Duration) -> Duration {
    Duration::from_std(d).unwrap_or(Duration::MAX)
}

/// The first-response deadline of a ticket: its target after arrival, counted in working time when the
/// region has business hours.
pub fn first_response_due(ticket: &Ticket, timers: &TimersConfig) -> DateTime<Utc> {
    timers.sla_after(
        ticket.created_at,
        dur(timers.first_response.for_priority(ticket.priority)),
    )
}

/// Set every timer a ticket in its current state should have: the conversation's ([`schedule`], with its
/// region's timers) and retention's ([`super::retention::schedule`]). Every decision ends with this, so
/// the ticket is stored with its timers (and the store's due-time index follows them).
pub fn reschedule(ticket: &mut Ticket, config: &Config) {
    let Some(region) = config.region(&ticket.region) else {
        ticket.timers = Vec::new();
        return;
    };
    // An erased ticket sends nothing any more: only retention applies to it.
    let mut timers = if ticket.erased {
        Vec::new()
    } else {
        schedule(ticket, &region.timers)
    };
    timers.extend(super::retention::schedule(ticket, &config.retention));
    ticket.timers = timers;
}

/// The conversation's timers a ticket in its current state should have.
pub fn schedule(ticket: &Ticket, timers: &TimersConfig) -> Vec<Timer> {
    let mut out = Vec::new();
    if ticket.merged_into.is_some() {
        return out;
    }
    let since = ticket.status_since.unwrap_or(ticket.updated_at);
    match ticket.status {
        Status::Pending => out.push(Timer {
            kind: TimerKind::CustomerReminder,
            due: since + dur(timers.customer_reminder_after.0) * (ticket.reminders_sent as i32 + 1),
        }),
        Status::Resolved => out.push(Timer {
            kind: TimerKind::AutoClose,
            due: since + dur(timers.autoclose_after.0),
        }),
        _ => {}
    }
    let waiting_for_first_response = matches!(ticket.status, Status::New | Status::Open)
        && ticket.first_response_at.is_none()
        && !ticket.breached;
    if waiting_for_first_response {
        let target = dur(timers.first_response.for_priority(ticket.priority));
        if !ticket.sla_warned {
            out.push(Timer {
                kind: TimerKind::SlaReminder,
                due: timers.sla_after(ticket.created_at, target * 4 / 5),
            });
        }
        out.push(Timer {
            kind: TimerKind::SlaBreach,
            due: timers.sla_after(ticket.created_at, target),
        });
    }
    out
}

/// An instant as the region's agents read it: `2026-11-23 17:00 JST`.
fn local_time(t: DateTime<Utc>, region: &RegionConfig) -> String {
    t.with_timezone(&region.timezone)
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}

/// Whether the mail that tells the customer a ticket is resolved carries the satisfaction survey: when the
/// config asks for it and it has not gone out for this ticket (it is marked sent). The survey is never a
/// mail of its own: one state change, one automatic mail.
pub fn survey(ticket: &mut Ticket, timers: &TimersConfig) -> bool {
    if !timers.survey || ticket.survey_sent || ticket.customers().is_empty() {
        return false;
    }
    ticket.survey_sent = true;
    true
}

/// What a due timer does: the changed ticket, timers rescheduled, and the mail to send; `None` when it no
/// longer applies (the customer answered, an agent replied): then the ticket only needs [`reschedule`],
/// which drops the stale entry.
pub fn on_timer(
    ticket: &Ticket,
    kind: TimerKind,
    region: &RegionConfig,
    config: &Config,
    now: DateTime<Utc>,
) -> Option<(Ticket, Vec<Reply>)> {
    let timers = &region.timers;
    let still_due = schedule(ticket, timers)
        .iter()
        .any(|t| t.kind == kind && t.due <= now);
    if !still_due {
        return None;
    }
    let mut t = ticket.clone();
    t.updated_at = now;
    let mut replies = Vec::new();
    match kind {
        TimerKind::CustomerReminder if t.reminders_sent < timers.customer_reminders => {
            t.reminders_sent += 1;
            let since = t.status_since.unwrap_or(t.updated_at);
            let content = Content::CustomerReminder {
                number: t.reminders_sent,
                total: timers.customer_reminders,
                last: t.reminders_sent == timers.customer_reminders,
                waiting_days: ((now - since).num_hours() as f64 / 24.0).round().max(1.0) as i64,
            };
            replies.push(Reply::new(t.customers(), t.locale, content));
        }
        TimerKind::CustomerReminder => {
            // No answer to the last reminder: resolved, with one notice (the survey inside it).
            let previous = t.status;
            t.change_status(Status::Resolved, now);
            let survey = survey(&mut t, timers);
            replies.push(Reply::new(
                t.customers(),
                t.locale,
                Content::Resolved {
                    previous,
                    auto_resolved: true,
                    survey,
                },
            ));
        }
        TimerKind::SlaReminder => {
            t.sla_warned = true;
            let due = first_response_due(&t, timers);
            let content = Content::SlaReminder {
                due_at: local_time(due, region),
                minutes_left: (due - now).num_minutes().max(0),
            };
            let to = region.agent_recipients(t.assignee.as_ref());
            if !to.is_empty() {
                replies.push(Reply::new(to, region.locale, content));
            }
        }
        TimerKind::SlaBreach => {
            t.breached = true;
            let due = first_response_due(&t, timers);
            let content = Content::Escalation {
                due_at: local_time(due, region),
                overdue_minutes: (now - due).num_minutes().max(0),
            };
            let mut to: Vec<String> = timers.escalate_to.iter().cloned().collect();
            to.extend(
                region
                    .agent_recipients(t.assignee.as_ref())
                    .into_iter()
                    .filter(|a| timers.escalate_to.as_ref().is_none_or(|e| e != a)),
            );
            if !to.is_empty() {
                replies.push(Reply::new(to, region.locale, content));
            }
        }
        TimerKind::AutoClose => {
            t.change_status(Status::Closed, now);
            replies.push(Reply::new(t.customers(), t.locale, Content::Closed));
        }
        // Retention deletes data, which needs the store: the service carries it out
        // (see `crate::desk::retention`).
        TimerKind::PurgeAttachments | TimerKind::PurgeTicket => return None,
    }
    replies.retain(|r| !r.to.is_empty());
    reschedule(&mut t, config);
    Some((t, replies))
}

/// A reply to the survey: a lone rating 1–5 at the start of the text (full-width digits too), and the rest
/// as the comment.
pub fn survey_answer(text: &str) -> Option<(u8, String)> {
    let t = text.trim_start();
    let first = t.chars().next()?;
    let score = match first {
        '1'..='5' => first as u8 - b'0',
        '１'..='５' => (first as u32 - '０' as u32) as u8,
        _ => return None,
    };
    let rest = &t[first.len_utf8()..];
    // "1" must stand alone: "10 items" or "3.5" are not ratings.
    if rest
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == '.' || ('０'..='９').contains(&c))
    {
        return None;
    }
    let comment = rest
        .trim_start_matches(|c: char| {
            c.is_whitespace() || matches!(c, ':' | '：' | '/' | '点' | '점' | '-' | ')' | '.')
        })
        .trim();
    Some((score, comment.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{TestConfig, TestRegion};
    use crate::desk::reply::Event;
    use crate::desk::ticket::Priority;
    use std::path::Path;

    fn config() -> Config {
        TestConfig::new(Path::new("/tmp/x"))
            .timers("customer_reminder_after = \"48h\"\ncustomer_reminders = 2\nautoclose_after = \"7d\"\nescalate_to = \"leads@example.com\"")
            .region(TestRegion::jp().agent_notify("jp-agents@example.com"))
            .parse()
    }

    fn ticket(status: Status, created: DateTime<Utc>) -> Ticket {
        Ticket::sample("JP-1000")
            .status(status)
            .created(created)
            .build()
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_new_ticket_has_the_sla_timers_of_its_priority() {
        let c = config();
        let mut t = ticket(Status::New, t0());
        let s = schedule(&t, &c.timers);
        assert_eq!(
            s,
            vec![
                Timer {
                    kind: TimerKind::SlaReminder,
                    due: t0() + Duration::minutes(24 * 60 * 4 / 5)
                },
                Timer {
                    kind: TimerKind::SlaBreach,
                    due: t0() + Duration::hours(24)
                },
            ]
        );
        t.priority = Priority::Urgent;
        assert_eq!(schedule(&t, &c.timers)[1].due, t0() + Duration::hours(4));
        t.first_response_at = Some(t0());
        assert!(
            schedule(&t, &c.timers).is_empty(),
            "answered: no SLA timers"
        );
    }

    #[test]
    fn business_hours_skip_the_weekend_in_the_region_zone() {
        let c = TestConfig::new(Path::new("/tmp/x"))
            .timers("escalate_to = \"leads@example.com\"\n[timers.business_hours]\ndays = [\"mon-fri\"]\nhours = \"09:00-18:00\"\nholidays = [\"2026-11-23\"]")
            .region(
                TestRegion::jp()
                    .line("timezone = \"Asia/Tokyo\"")
                    .agent_notify("jp-agents@example.com"),
            )
            .parse();
        let region = &c.region[0];
        let timers = &region.timers;
        // Friday 2026-11-20 23:00 in Tokyo; Monday the 23rd is a holiday (Labour Thanksgiving Day).
        let friday_night = DateTime::parse_from_rfc3339("2026-11-20T23:00:00+09:00")
            .unwrap()
            .with_timezone(&Utc);
        let jst = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let t = ticket(Status::New, friday_night);
        let s = schedule(&t, timers);
        // 24 working hours at 9 a day: Tuesday, Wednesday, then 6 hours on Thursday. 80 % = 19.2 h.
        assert_eq!(s[1].kind, TimerKind::SlaBreach);
        assert_eq!(s[1].due, jst("2026-11-26T15:00:00+09:00"));
        assert_eq!(s[0].due, jst("2026-11-26T10:12:00+09:00"));
        // Saturday morning (the wall-clock deadline would long have passed for urgent mail): nothing.
        let saturday = jst("2026-11-21T09:00:00+09:00");
        assert!(on_timer(&t, TimerKind::SlaReminder, region, &c, saturday).is_none());
        // At the deadline the escalation names it in the region's time.
        let (flagged, replies) = on_timer(&t, TimerKind::SlaBreach, region, &c, s[1].due).unwrap();
        assert!(flagged.breached);
        let Content::Escalation { due_at, .. } = &replies[0].content else {
            panic!("{replies:?}")
        };
        assert_eq!(due_at, "2026-11-26 15:00 JST");
        // Without business hours the same ticket is due 24 wall-clock hours later, on Saturday night.
        let wall = config();
        assert_eq!(
            schedule(&t, &wall.timers)[1].due,
            friday_night + Duration::hours(24)
        );
    }

    #[test]
    fn bad_business_hours_and_zones_name_the_key() {
        let err = |extra: &str| {
            TestConfig::new(Path::new("/tmp/x"))
                .region(TestRegion::new("JP", "support-jp@example.com").line(extra))
                .load()
                .unwrap_err()
                .to_string()
        };
        assert!(err("timezone=\"Asia/Tokio\"\n").contains("region[0].timezone"));
        assert!(err("[region.timers.business_hours]\nhours=\"9-18\"\n")
            .contains("region[0].timers.business_hours.hours"));
        let global = TestConfig::new(Path::new("/tmp/x"))
            .table("[timers.business_hours]\ndays = [\"weekdays\"]")
            .load()
            .unwrap_err()
            .to_string();
        assert!(global.contains("timers.business_hours.days"), "{global}");
    }

    #[test]
    fn reminders_then_auto_resolve_then_auto_close() {
        let c = config();
        let region = &c.region[0];
        let mut t = ticket(Status::Pending, t0());
        t.first_response_at = Some(t0());
        // Too early: nothing.
        assert!(on_timer(
            &t,
            TimerKind::CustomerReminder,
            region,
            &c,
            t0() + Duration::hours(47)
        )
        .is_none());
        let (t1, r1) = on_timer(
            &t,
            TimerKind::CustomerReminder,
            region,
            &c,
            t0() + Duration::hours(48),
        )
        .unwrap();
        assert_eq!(
            (t1.reminders_sent, r1[0].event()),
            (1, Event::CustomerReminder)
        );
        assert_eq!(schedule(&t1, &c.timers)[0].due, t0() + Duration::hours(96));
        let (t2, r2) = on_timer(
            &t1,
            TimerKind::CustomerReminder,
            region,
            &c,
            t0() + Duration::hours(96),
        )
        .unwrap();
        assert_eq!(t2.reminders_sent, 2);
        assert!(matches!(
            r2[0].content,
            Content::CustomerReminder { last: true, .. }
        ));
        let (t3, r3) = on_timer(
            &t2,
            TimerKind::CustomerReminder,
            region,
            &c,
            t0() + Duration::hours(144),
        )
        .unwrap();
        assert_eq!(t3.status, Status::Resolved);
        // Issue 14: one mail, the survey inside the resolved notice (before: two).
        assert_eq!(
            r3.iter().map(|r| &r.content).collect::<Vec<_>>(),
            vec![&Content::Resolved {
                previous: Status::Pending,
                auto_resolved: true,
                survey: true
            }]
        );
        assert!(t3.survey_sent);
        let close_at = t0() + Duration::hours(144) + Duration::days(7);
        assert_eq!(
            schedule(&t3, &c.timers),
            vec![Timer {
                kind: TimerKind::AutoClose,
                due: close_at
            }]
        );
        let (t4, r4) = on_timer(&t3, TimerKind::AutoClose, region, &c, close_at).unwrap();
        assert_eq!((t4.status, r4[0].event()), (Status::Closed, Event::Closed));
        assert!(schedule(&t4, &c.timers).is_empty());
    }

    #[test]
    fn a_customer_reply_cancels_the_reminder() {
        let c = config();
        let mut t = ticket(Status::Pending, t0());
        t.first_response_at = Some(t0());
        t.reminders_sent = 1;
        t.change_status(Status::Open, t0() + Duration::hours(50));
        assert_eq!(t.reminders_sent, 0);
        assert!(on_timer(
            &t,
            TimerKind::CustomerReminder,
            &c.region[0],
            &c,
            t0() + Duration::hours(96)
        )
        .is_none());
        assert!(schedule(&t, &c.timers)
            .iter()
            .all(|x| x.kind != TimerKind::CustomerReminder));
    }

    #[test]
    fn sla_reminder_and_escalation() {
        let c = config();
        let region = &c.region[0];
        let t = ticket(Status::Open, t0());
        let (t1, r1) = on_timer(
            &t,
            TimerKind::SlaReminder,
            region,
            &c,
            t0() + Duration::hours(20),
        )
        .unwrap();
        assert!(t1.sla_warned);
        assert_eq!(
            (r1[0].event(), r1[0].to.clone()),
            (
                Event::SlaReminder,
                vec!["jp-agents@example.com".to_string()]
            )
        );
        assert!(matches!(
            r1[0].content,
            Content::SlaReminder {
                minutes_left: 240,
                ..
            }
        ));
        let (t2, r2) = on_timer(
            &t1,
            TimerKind::SlaBreach,
            region,
            &c,
            t0() + Duration::hours(25),
        )
        .unwrap();
        assert!(t2.breached);
        assert_eq!(r2[0].event(), Event::Escalation);
        assert_eq!(r2[0].to, vec!["leads@example.com", "jp-agents@example.com"]);
        assert!(schedule(&t2, &c.timers).is_empty());
    }

    #[test]
    fn survey_answers() {
        assert_eq!(survey_answer("5"), Some((5, String::new())));
        assert_eq!(
            survey_answer("４ とても丁寧でした"),
            Some((4, "とても丁寧でした".into()))
        );
        assert_eq!(
            survey_answer(" 2: slow answer"),
            Some((2, "slow answer".into()))
        );
        assert_eq!(
            survey_answer("3점 빠른 답변 감사합니다"),
            Some((3, "빠른 답변 감사합니다".into()))
        );
        assert_eq!(survey_answer("10 items missing"), None);
        assert_eq!(survey_answer("6"), None);
        assert_eq!(survey_answer("The problem is back"), None);
    }
}
