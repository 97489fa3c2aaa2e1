//! Rate limits on automatic mail, per recipient: what keeps postdesk out of mail loops.
//!
//! Every other defence (Auto-Submitted, X-Loop, our own addresses, the auto-reply classifier) relies on the
//! other side behaving. This one does not: whatever a broken auto-responder does, a customer's address gets
//! at most `per_10min` automatic mails in any ten minutes and `per_day` in any day ([`allow`]). The day limit
//! doubles as the circuit breaker: once an address has had its day's worth, it gets nothing automatic until
//! the oldest of those mails is a day old. Incoming mail is still recorded; only the automatic answer is
//! skipped.
//!
//! Staff mail (the desk's own people: [`crate::desk::reply::Audience::Staff`]) is not held to those limits —
//! a busy hour sends the agents far more than ten notifications. The desk recognises their auto-responders
//! instead, and [`allow_staff`] is a breaker far above any real traffic (`[outbound] staff_per_hour`) that
//! only a loop reaches.

use chrono::{DateTime, Duration, Utc};

use crate::config::RateLimit;

/// Why an automatic mail may not go out now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    TenMinutes(usize),
    Day(usize),
    /// The staff breaker: this many staff mails to the address in the last hour.
    StaffHour(usize),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TenMinutes(n) => write!(f, "{n} automatic mails in the last 10 minutes"),
            Refusal::Day(n) => write!(f, "{n} automatic mails in the last 24 hours (circuit open until the oldest is a day old)"),
            Refusal::StaffHour(n) => write!(f, "{n} staff mails in the last hour (outbound.staff_per_hour)"),
        }
    }
}

/// How far back history matters.
pub fn window() -> Duration {
    Duration::hours(24)
}

/// Whether one more automatic mail may go to an address that was sent automatic mail at `history`.
pub fn allow(
    history: &[DateTime<Utc>],
    now: DateTime<Utc>,
    limits: &RateLimit,
) -> Result<(), Refusal> {
    let day = history.iter().filter(|t| **t > now - window()).count();
    if day >= limits.per_day {
        return Err(Refusal::Day(day));
    }
    let recent = history
        .iter()
        .filter(|t| **t > now - Duration::minutes(10))
        .count();
    if recent >= limits.per_10min {
        return Err(Refusal::TenMinutes(recent));
    }
    Ok(())
}

/// How far back the staff breaker looks.
pub fn staff_window() -> Duration {
    Duration::hours(1)
}

/// Whether one more staff mail may go to an address that was sent staff mail at `history` (the breaker).
pub fn allow_staff(
    history: &[DateTime<Utc>],
    now: DateTime<Utc>,
    per_hour: usize,
) -> Result<(), Refusal> {
    let hour = history
        .iter()
        .filter(|t| **t > now - staff_window())
        .count();
    allow_staff_count(hour, per_hour)
}

/// [`allow_staff`] from the count of staff mails to the address in the last hour.
pub fn allow_staff_count(sent_last_hour: usize, per_hour: usize) -> Result<(), Refusal> {
    if sent_last_hour >= per_hour {
        return Err(Refusal::StaffHour(sent_last_hour));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layered_limits() {
        let limits = RateLimit {
            per_10min: 3,
            per_day: 5,
        };
        let now = Utc::now();
        let ago = |m: i64| now - Duration::minutes(m);
        assert_eq!(allow(&[], now, &limits), Ok(()));
        assert_eq!(allow(&[ago(1), ago(2)], now, &limits), Ok(()));
        assert_eq!(
            allow(&[ago(1), ago(2), ago(3)], now, &limits),
            Err(Refusal::TenMinutes(3))
        );
        // Old enough mails no longer count against the ten minutes…
        assert_eq!(allow(&[ago(11), ago(12), ago(13)], now, &limits), Ok(()));
        // …but they do against the day.
        assert_eq!(
            allow(
                &[ago(11), ago(12), ago(13), ago(60), ago(120)],
                now,
                &limits
            ),
            Err(Refusal::Day(5))
        );
        assert_eq!(allow(&[ago(25 * 60); 10], now, &limits), Ok(()));
    }

    #[test]
    fn the_staff_breaker_counts_the_last_hour() {
        let now = Utc::now();
        let ago = |m: i64| now - Duration::minutes(m);
        assert_eq!(allow_staff(&[ago(1); 99], now, 100), Ok(()));
        assert_eq!(
            allow_staff(&[ago(1); 100], now, 100),
            Err(Refusal::StaffHour(100))
        );
        assert_eq!(allow_staff(&[ago(61); 500], now, 100), Ok(()));
    }
}
