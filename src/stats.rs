//! Figures for `postdesk stats`, computed from tickets (pure).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::desk::ticket::Ticket;

/// How fast agents answered for the first time.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ResponseTimes {
    /// Tickets an agent has answered.
    pub answered: usize,
    pub median_minutes: Option<i64>,
    pub p90_minutes: Option<i64>,
}

/// Satisfaction ratings: count and average (1–5).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Satisfaction {
    pub ratings: usize,
    pub average: Option<f64>,
}

/// The nearest-rank percentile `p` (0–100) of sorted values.
fn percentile(sorted: &[i64], p: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// First-response times of `tickets`, from arrival to an agent's first answer.
pub fn first_response<'a>(tickets: impl Iterator<Item = &'a Ticket>) -> ResponseTimes {
    let mut minutes: Vec<i64> = tickets
        .filter_map(|t| {
            t.first_response_at
                .map(|at| (at - t.created_at).num_minutes().max(0))
        })
        .collect();
    minutes.sort_unstable();
    ResponseTimes {
        answered: minutes.len(),
        median_minutes: percentile(&minutes, 50),
        p90_minutes: percentile(&minutes, 90),
    }
}

fn summarize(scores: &[u8]) -> Satisfaction {
    Satisfaction {
        ratings: scores.len(),
        average: (!scores.is_empty()).then(|| {
            (scores.iter().map(|&s| s as f64).sum::<f64>() / scores.len() as f64 * 10.0).round()
                / 10.0
        }),
    }
}

/// Satisfaction overall and per month of the rating (`2026-11`).
pub fn satisfaction<'a>(
    tickets: impl Iterator<Item = &'a Ticket>,
) -> (Satisfaction, BTreeMap<String, Satisfaction>) {
    let mut all = Vec::new();
    let mut months: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for s in tickets.filter_map(|t| t.satisfaction.as_ref()) {
        all.push(s.score);
        months
            .entry(s.at.format("%Y-%m").to_string())
            .or_default()
            .push(s.score);
    }
    (
        summarize(&all),
        months
            .into_iter()
            .map(|(m, v)| (m, summarize(&v)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<i64> = (1..=10).collect();
        assert_eq!(percentile(&v, 50), Some(5));
        assert_eq!(percentile(&v, 90), Some(9));
        assert_eq!(percentile(&[7], 90), Some(7));
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(summarize(&[5, 4, 4]).average, Some(4.3));
    }
}
