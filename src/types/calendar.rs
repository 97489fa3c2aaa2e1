//! Business hours: the clock SLA targets run on.
//!
//! A first-response target of "8h" means eight *working* hours when a region has business hours: a mail that
//! arrives in Tokyo on Friday at 23:00 is due on Monday afternoon, not on Saturday morning. A [`Calendar`] is
//! the region's working days, opening hours (lunch breaks allowed) and holidays, read in the region's time
//! zone. [`Calendar::add`] is a pure function of (start, duration), so it is tested with fixed instants, and
//! daylight-saving changes are handled by converting every opening and closing time through the zone.
//!
//! Customer-facing timers (reminders, auto-close) stay on the wall clock: a customer's week has seven days.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Working days, opening hours and holidays of one region, in its time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    /// The region's zone (`Asia/Tokyo`); set from `region.timezone`.
    pub tz: Tz,
    /// Monday first.
    pub days: [bool; 7],
    /// Opening spans of each working day, sorted, not overlapping (`09:00-12:00, 13:00-18:00`).
    pub spans: Vec<(NaiveTime, NaiveTime)>,
    /// Whole days off.
    pub holidays: BTreeSet<NaiveDate>,
}

impl Default for Calendar {
    /// Monday to Friday, 09:00–18:00, UTC, no holidays.
    fn default() -> Self {
        Calendar {
            tz: Tz::UTC,
            days: [true, true, true, true, true, false, false],
            spans: vec![(hm(9, 0), hm(18, 0))],
            holidays: BTreeSet::new(),
        }
    }
}

fn hm(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN)
}

/// How far [`Calendar::add`] looks ahead before giving up on finding working time (ten years).
const MAX_DAYS: u32 = 3660;

impl Calendar {
    /// Read the config's strings: `days` like `["mon-fri"]` or `["mon", "wed"]`, `hours` like
    /// `"09:00-18:00"` or `"09:00-12:00, 13:00-18:00"`, `holidays` like `["2026-12-31"]`. The error says
    /// which of the three is wrong and why.
    pub fn parse(
        days: &[String],
        hours: &str,
        holidays: &[String],
    ) -> Result<Calendar, (&'static str, String)> {
        let mut cal = Calendar {
            days: [false; 7],
            spans: Vec::new(),
            ..Calendar::default()
        };
        for d in days {
            let (a, b) = match d.split_once('-') {
                Some((a, b)) => (weekday(a), weekday(b)),
                None => (weekday(d), weekday(d)),
            };
            let (Some(a), Some(b)) = (a, b) else {
                return Err((
                    "days",
                    format!("{d:?} is not a day or range of days (mon, tue, … sun; \"mon-fri\")"),
                ));
            };
            let mut i = a;
            loop {
                cal.days[i] = true;
                if i == b {
                    break;
                }
                i = (i + 1) % 7;
            }
        }
        if !cal.days.contains(&true) {
            return Err(("days", "needs at least one working day".into()));
        }
        for span in hours.split(',') {
            let span = span.trim();
            let parsed = span.split_once('-').and_then(|(a, b)| {
                let a = NaiveTime::parse_from_str(a.trim(), "%H:%M").ok()?;
                let b = b.trim();
                // "24:00" closes at midnight.
                let b = if b == "24:00" {
                    NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_999)?
                } else {
                    NaiveTime::parse_from_str(b, "%H:%M").ok()?
                };
                Some((a, b))
            });
            match parsed {
                Some((a, b)) if a < b => cal.spans.push((a, b)),
                _ => {
                    return Err((
                        "hours",
                        format!("{span:?} is not an opening span like \"09:00-18:00\" (start before end, 24-hour clock)"),
                    ))
                }
            }
        }
        cal.spans.sort();
        if cal.spans.windows(2).any(|w| w[1].0 < w[0].1) {
            return Err(("hours", format!("{hours:?} has overlapping spans")));
        }
        for h in holidays {
            match NaiveDate::parse_from_str(h.trim(), "%Y-%m-%d") {
                Ok(d) => {
                    cal.holidays.insert(d);
                }
                Err(_) => {
                    return Err((
                        "holidays",
                        format!("{h:?} is not a date like \"2026-12-31\""),
                    ))
                }
            }
        }
        Ok(cal)
    }

    /// Whether `date` (local) is a working day.
    pub fn is_working_day(&self, date: NaiveDate) -> bool {
        self.days[date.weekday().num_days_from_monday() as usize] && !self.holidays.contains(&date)
    }

    /// The instant `work` of working time after `start`. Time before opening, after closing, at weekends
    /// and on holidays does not count.
    pub fn add(&self, start: DateTime<Utc>, work: Duration) -> DateTime<Utc> {
        if work <= Duration::zero() {
            return start;
        }
        let mut left = work;
        let mut cursor = start;
        let mut date = start.with_timezone(&self.tz).date_naive();
        for _ in 0..MAX_DAYS {
            if self.is_working_day(date) {
                for &(open, close) in &self.spans {
                    let (open, close) = (self.instant(date, open), self.instant(date, close));
                    if cursor >= close {
                        continue;
                    }
                    let from = cursor.max(open);
                    let available = close - from;
                    if left <= available {
                        return from + left;
                    }
                    left -= available;
                    cursor = close;
                }
            }
            date = match date.succ_opt() {
                Some(d) => d,
                None => break,
            };
        }
        // No working time in ten years (every day a holiday): fall back to the wall clock rather than
        // never firing.
        start + work
    }

    /// A local wall-clock time on `date` as an instant. In a daylight-saving gap the time does not exist;
    /// the first valid instant after it is used.
    fn instant(&self, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
        let local = NaiveDateTime::new(date, time);
        let mut probe = local;
        for _ in 0..4 {
            if let Some(t) = self.tz.from_local_datetime(&probe).earliest() {
                return t.with_timezone(&Utc);
            }
            probe += Duration::minutes(30);
        }
        Utc.from_utc_datetime(&local)
    }
}

fn weekday(s: &str) -> Option<usize> {
    let s = s.trim().to_ascii_lowercase();
    let i = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .position(|d| s.starts_with(d) && (s.len() == 3 || is_day_name(&s)))?;
    Some(i)
}

fn is_day_name(s: &str) -> bool {
    [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ]
    .contains(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokyo(days: &[&str], hours: &str, holidays: &[&str]) -> Calendar {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let mut c = Calendar::parse(&s(days), hours, &s(holidays)).unwrap();
        c.tz = chrono_tz::Asia::Tokyo;
        c
    }

    /// A local Tokyo time as UTC.
    fn jst(s: &str) -> DateTime<Utc> {
        let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        chrono_tz::Asia::Tokyo
            .from_local_datetime(&naive)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn friday_night_mail_is_due_on_monday() {
        // 2026-11-20 is a Friday.
        let c = tokyo(&["mon-fri"], "09:00-18:00", &[]);
        let due = c.add(jst("2026-11-20 23:00"), Duration::hours(8));
        assert_eq!(due, jst("2026-11-23 17:00"));
        // Not on Saturday morning, as the wall clock would have it.
        assert!(due > jst("2026-11-21 07:00"));
    }

    #[test]
    fn time_inside_hours_counts_and_carries_over() {
        let c = tokyo(&["mon-fri"], "09:00-18:00", &[]);
        // Thursday 16:00 + 4 working hours: 2 today, 2 on Friday from 09:00.
        assert_eq!(
            c.add(jst("2026-11-19 16:00"), Duration::hours(4)),
            jst("2026-11-20 11:00")
        );
        // Before opening: the clock starts at 09:00.
        assert_eq!(
            c.add(jst("2026-11-19 06:30"), Duration::minutes(30)),
            jst("2026-11-19 09:30")
        );
        // Ending exactly at closing time stays on that day.
        assert_eq!(
            c.add(jst("2026-11-19 09:00"), Duration::hours(9)),
            jst("2026-11-19 18:00")
        );
    }

    #[test]
    fn lunch_breaks_and_holidays_are_skipped() {
        let c = tokyo(
            &["mon-fri"],
            "09:00-12:00, 13:00-18:00",
            &["2026-11-23", "2026-11-24"],
        );
        // Friday 11:00 + 3h: 1h before lunch, 2h after.
        assert_eq!(
            c.add(jst("2026-11-20 11:00"), Duration::hours(3)),
            jst("2026-11-20 15:00")
        );
        // Friday 17:00 + 2h: 1h on Friday, Monday and Tuesday are holidays, 1h on Wednesday.
        assert_eq!(
            c.add(jst("2026-11-20 17:00"), Duration::hours(2)),
            jst("2026-11-25 10:00")
        );
    }

    #[test]
    fn korean_six_day_week_and_day_names() {
        let mut c =
            Calendar::parse(&["Monday".into(), "tue-sat".into()], "10:00-19:00", &[]).unwrap();
        c.tz = chrono_tz::Asia::Seoul;
        assert!(c.days[5] && !c.days[6]);
        // Seoul is UTC+9 like Tokyo: Saturday 2026-11-21 18:00 + 2h → Monday 11:00.
        let start = jst("2026-11-21 18:00");
        assert_eq!(c.add(start, Duration::hours(2)), jst("2026-11-23 11:00"));
    }

    #[test]
    fn daylight_saving_changes_follow_the_zone() {
        // New York springs forward on 2026-03-08 (a Sunday); opening hours are local.
        let mut c = Calendar::parse(&["mon-fri".into()], "09:00-17:00", &[]).unwrap();
        c.tz = chrono_tz::America::New_York;
        let fri_16 = chrono_tz::America::New_York
            .with_ymd_and_hms(2026, 3, 6, 16, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        let mon_10 = chrono_tz::America::New_York
            .with_ymd_and_hms(2026, 3, 9, 10, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(c.add(fri_16, Duration::hours(2)), mon_10);
    }

    #[test]
    fn a_wraparound_range_and_bad_input_are_named() {
        let c = Calendar::parse(&["sat-mon".into()], "00:00-24:00", &[]).unwrap();
        assert_eq!(c.days, [true, false, false, false, false, true, true]);
        assert_eq!(
            Calendar::parse(&["funday".into()], "09:00-18:00", &[])
                .unwrap_err()
                .0,
            "days"
        );
        assert_eq!(
            Calendar::parse(&[], "09:00-18:00", &[]).unwrap_err().0,
            "days"
        );
        assert_eq!(
            Calendar::parse(&["mon".into()], "18:00-09:00", &[])
                .unwrap_err()
                .0,
            "hours"
        );
        assert_eq!(
            Calendar::parse(&["mon".into()], "09:00-13:00,12:00-18:00", &[])
                .unwrap_err()
                .0,
            "hours"
        );
        assert_eq!(
            Calendar::parse(&["mon".into()], "9-18", &[]).unwrap_err().0,
            "hours"
        );
        assert_eq!(
            Calendar::parse(&["mon".into()], "09:00-18:00", &["31/12/2026".into()])
                .unwrap_err()
                .0,
            "holidays"
        );
    }

    #[test]
    fn all_holidays_falls_back_to_the_wall_clock() {
        let c = Calendar::parse(&["mon".into()], "09:00-10:00", &[]).unwrap();
        let mut every_monday = c.clone();
        let mut d = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        while d < NaiveDate::from_ymd_opt(2037, 1, 1).unwrap() {
            every_monday.holidays.insert(d);
            d = d.succ_opt().unwrap();
        }
        let start = Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap();
        assert_eq!(
            every_monday.add(start, Duration::hours(1)),
            start + Duration::hours(1)
        );
    }
}
