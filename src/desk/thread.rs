//! Which ticket a mail belongs to. Pure: the caller looks up the candidate tickets, this module chooses.
//!
//! The order is ARCHITECTURE.md's: a valid `[JP-1042]` tag whose ticket exists, else a Message-ID in
//! In-Reply-To/References that postdesk received or sent for a ticket, else a new ticket. A sender who is
//! neither the ticket's requester, one of its participants, nor one of its region's agents never joins it:
//! guessing or quoting a ticket number gives an outsider a ticket of their own, nothing more.

use super::ticket::{Status, Ticket, TicketId};
use crate::config::Config;

/// Reply and forward prefixes mail clients put before a subject, in the languages the desk serves. Compared
/// case-insensitively, each optionally followed by a counter (`Re[2]:`, `RE(3):`) and a colon (ASCII or
/// full-width).
const PREFIXES: [&str; 22] = [
    "re", "fwd", "fw", "aw", "wg", "sv", "vs", "antw", "doorst", "tr", "rif", "enc", "res", "odp",
    "回复", "答复", "转发", "返信", "転送", "회신", "답장", "전달",
];

/// The most tags of one subject that threading considers: a sender cannot make the desk look up more
/// tickets than this for one mail, however many tags the subject carries.
pub const MAX_TAGS: usize = 8;

/// Ticket tags (`[JP-1042]`) anywhere in a subject, in order of appearance, each once, at most
/// [`MAX_TAGS`] of them.
///
/// One pass: a tag is what stands between a `]` and the last `[` before it (text holding a `[` is never a
/// ticket id), so every byte is looked at once, however the brackets are arranged.
pub fn tags_in_subject(subject: &str) -> Vec<TicketId> {
    let mut out = Vec::new();
    let mut open = None;
    for (at, b) in subject.bytes().enumerate() {
        match b {
            b'[' => open = Some(at + 1),
            b']' => {
                if let Some(start) = open.take() {
                    if let Ok(id) = subject[start..at].parse::<TicketId>() {
                        if !out.contains(&id) {
                            out.push(id);
                            if out.len() == MAX_TAGS {
                                break;
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The ticket id of a tag at the very start of `s` and what follows it.
fn leading_tag(s: &str) -> Option<(TicketId, &str)> {
    let inner = s.strip_prefix('[')?;
    // A tag holds no `[`: stop at the first bracket of either kind, so a bracket storm is read once.
    let end = inner.find(['[', ']'])?;
    if !inner[end..].starts_with(']') {
        return None;
    }
    let id = inner[..end].parse::<TicketId>().ok()?;
    Some((id, &inner[end + 1..]))
}

/// Strip one leading reply/forward prefix, if there is one.
fn strip_one_prefix(s: &str) -> Option<&str> {
    let s = s.trim_start();
    for p in PREFIXES {
        let Some(head) = s.get(..p.len()) else {
            continue;
        };
        if !head.eq_ignore_ascii_case(p) {
            continue;
        }
        let mut rest = &s[p.len()..];
        // Optional counter: Re[2]: / RE(2): / Re^2:. Only digits are read, so a prefix without its
        // closing bracket costs the digits after it, not the rest of the subject.
        for (open, close) in [('[', ']'), ('(', ')')] {
            if let Some(r) = rest.strip_prefix(open) {
                let digits = r.bytes().take_while(u8::is_ascii_digit).count();
                if let Some(after) = r[digits..].strip_prefix(close) {
                    rest = after;
                }
            }
        }
        let rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix(':').or_else(|| rest.strip_prefix('：')) {
            return Some(r);
        }
    }
    None
}

/// The subject without reply/forward prefixes and without ticket tags: what a new ticket is titled.
///
/// Linear in the subject: every round strips something from its start, and the tags are removed in one pass.
pub fn clean_subject(subject: &str) -> String {
    let mut s = subject.trim();
    loop {
        let before = s;
        while let Some(r) = strip_one_prefix(s) {
            s = r.trim_start();
        }
        // A leading tag may stand between prefixes ("Re: [JP-1] Re: …").
        if let Some((_, r)) = leading_tag(s) {
            s = r.trim_start();
        }
        if s.len() == before.len() {
            break;
        }
    }
    let tags = tags_in_subject(s);
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    // Remove `[TAG]` wherever it appears, for the tags found (the same ones the old repeated `replace` removed).
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        rest = &rest[open..];
        match leading_tag(rest) {
            Some((id, after)) if tags.contains(&id) && is_exact_tag(rest, &id) => rest = after,
            _ => {
                out.push('[');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `s` starts with exactly `[{id}]` (no white space or leading zeros inside the brackets).
fn is_exact_tag(s: &str, id: &TicketId) -> bool {
    let canonical = format!("[{id}]");
    s.starts_with(&canonical)
}

/// The outcome of threading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Thread {
    /// Add the mail to this ticket.
    Existing(TicketId),
    /// Open a new ticket, linked to these (a late reply to a closed ticket links to it).
    New { links: Vec<TicketId> },
}

/// Whether `sender` may write into `ticket`: its requester, a participant, or an agent of its region whose
/// mail is verified (`agent_verified`: see `[agents] trust_authserv_id`; an agent address that fails it is
/// an outsider's).
pub fn may_write(ticket: &Ticket, sender: &str, agent_verified: bool, config: &Config) -> bool {
    ticket.admits_customer(sender)
        || agent_verified
            && config
                .region(&ticket.region)
                .is_some_and(|r| r.is_agent(sender))
}

/// Choose the ticket for a mail from `sender`, given the existing tickets its subject tags name (`tagged`,
/// in subject order) and those its In-Reply-To/References name (`referenced`, most specific first).
/// `agent_verified`: mail from an agent address is the agent's (see [`may_write`]).
pub fn choose(
    sender: Option<&str>,
    agent_verified: bool,
    tagged: &[Ticket],
    referenced: &[Ticket],
    config: &Config,
) -> Thread {
    let Some(sender) = sender else {
        return Thread::New { links: Vec::new() };
    };
    for ticket in tagged.iter().chain(referenced) {
        if !may_write(ticket, sender, agent_verified, config) {
            continue;
        }
        if ticket.status == Status::Closed {
            return Thread::New {
                links: vec![ticket.id.clone()],
            };
        }
        return Thread::Existing(ticket.id.clone());
    }
    Thread::New { links: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{TestConfig, TestRegion};

    #[test]
    fn finds_tags_after_every_prefix() {
        let subjects = [
            "[JP-1042] 注文について",
            "Re: [JP-1042] 注文について",
            "RE: [JP-1042] x",
            "Fwd: [JP-1042] x",
            "FW: [JP-1042] x",
            "AW: [JP-1042] x",
            "SV: [JP-1042] x",
            "Re[2]: [JP-1042] x",
            "回复: [JP-1042] x",
            "答复: [JP-1042] x",
            "转发: [JP-1042] x",
            "返信: [JP-1042] x",
            "회신: [JP-1042] x",
            "답장: [JP-1042] x",
            "Re: Re: AW: 返信: [JP-1042] x",
            "お問い合わせの件 [JP-1042]",
            "x [JP-1042] y",
        ];
        for s in subjects {
            assert_eq!(tags_in_subject(s), vec![TicketId::new("JP", 1042)], "{s}");
        }
        assert!(tags_in_subject("[jp-1042] lower case is not ours").is_empty());
        assert!(tags_in_subject("[JP 1042]").is_empty());
        assert!(tags_in_subject("[JP-]").is_empty());
        assert_eq!(tags_in_subject("[KR-7] and [JP-8]").len(), 2);
    }

    #[test]
    fn clean_subject_strips_prefixes_and_tags() {
        assert_eq!(clean_subject("Re: [JP-1042] 注文について"), "注文について");
        assert_eq!(clean_subject("RE: AW: Fwd: hello"), "hello");
        assert_eq!(
            clean_subject("Re[2]: 返信: 답장: 회신: 回复：hello"),
            "hello"
        );
        assert_eq!(clean_subject("Reply needed"), "Reply needed");
        assert_eq!(clean_subject("Re: [JP-1] Re: [KR-2] x"), "x");
        assert_eq!(clean_subject(""), "");
    }

    /// Runs `f` and says whether it finished within `secs` (generous: the quadratic scans took minutes on
    /// these sizes, the linear ones take milliseconds).
    fn finishes_within<T>(secs: u64, f: impl FnOnce() -> T) -> T {
        let started = std::time::Instant::now();
        let out = f();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(secs),
            "took {:?}",
            started.elapsed()
        );
        out
    }

    #[test]
    fn a_bracket_storm_subject_is_scanned_in_linear_time() {
        // 200,000 `[` took 11.6 s and 400,000 took 40.6 s; 1,000,000 would take minutes.
        let storm = "[".repeat(1_000_000);
        assert!(finishes_within(10, || tags_in_subject(&storm)).is_empty());
        assert_eq!(finishes_within(10, || clean_subject(&storm)), storm);
        let storm = format!("{}JP-1]", "[".repeat(1_000_000));
        assert_eq!(
            finishes_within(10, || tags_in_subject(&storm)),
            vec![TicketId::new("JP", 1)]
        );
        let storm = "[JP-".repeat(300_000);
        assert!(finishes_within(10, || tags_in_subject(&storm)).is_empty());
    }

    #[test]
    fn a_prefix_storm_subject_is_cleaned_in_linear_time() {
        for (storm, want) in [
            (format!("{}x", "Re: ".repeat(300_000)), "x".to_string()),
            (
                format!("{}x", "Re: [JP-1] ".repeat(100_000)),
                "x".to_string(),
            ),
            (
                format!("Re: {}", "Re[".repeat(300_000)),
                "Re[".repeat(300_000),
            ),
            (
                format!("Re: {}", "Re(".repeat(300_000)),
                "Re(".repeat(300_000),
            ),
            (
                format!("Re[{}", "1".repeat(300_000)),
                format!("Re[{}", "1".repeat(300_000)),
            ),
            (
                format!("Re: {}", "[JP-1".repeat(200_000)),
                "[JP-1".repeat(200_000),
            ),
        ] {
            assert_eq!(finishes_within(10, || clean_subject(&storm)), want);
        }
    }

    #[test]
    fn a_subject_yields_at_most_eight_tags() {
        let subject: String = (1..=100).map(|n| format!("[JP-{n}] ")).collect();
        let tags = tags_in_subject(&subject);
        assert_eq!(tags.len(), 8);
        assert_eq!(tags[0], TicketId::new("JP", 1));
        assert_eq!(tags[7], TicketId::new("JP", 8));
        // Repeats and invalid tags do not use up the budget.
        let subject = format!("{}[x] [JP-9]", "[JP-1] ".repeat(50));
        assert_eq!(
            tags_in_subject(&subject),
            vec![TicketId::new("JP", 1), TicketId::new("JP", 9)]
        );
        // Nested and unclosed brackets: the innermost tag counts.
        assert_eq!(tags_in_subject("[[JP-3]"), vec![TicketId::new("JP", 3)]);
        assert_eq!(
            tags_in_subject("[JP-4 [KR-5]]"),
            vec![TicketId::new("KR", 5)]
        );
    }

    fn ticket(id: &str, requester: &str, status: Status) -> Ticket {
        Ticket::sample(id)
            .requester(requester)
            .status(status)
            .participants(&["cc@example.com"])
            .build()
    }

    fn config() -> Config {
        TestConfig::new(std::path::Path::new("/tmp/x"))
            .region(TestRegion::new("JP", "support-jp@example.com").agents(&["agent@example.com"]))
            .region(TestRegion::new("KR", "support-kr@example.com"))
            .parse()
    }

    #[test]
    fn requester_participant_and_agent_join() {
        let c = config();
        let t = ticket("JP-1000", "a@example.com", Status::Open);
        for who in ["a@example.com", "cc@example.com", "agent@example.com"] {
            assert_eq!(
                choose(Some(who), true, std::slice::from_ref(&t), &[], &c),
                Thread::Existing(t.id.clone()),
                "{who}"
            );
        }
    }

    #[test]
    fn stranger_with_someone_elses_tag_gets_a_new_ticket() {
        let c = config();
        let t = ticket("JP-1000", "a@example.com", Status::Open);
        assert_eq!(
            choose(
                Some("mallory@example.com"),
                true,
                std::slice::from_ref(&t),
                std::slice::from_ref(&t),
                &c
            ),
            Thread::New { links: vec![] }
        );
    }

    #[test]
    fn an_agent_of_another_region_is_a_stranger() {
        let c = config();
        let t = ticket("KR-1000", "a@example.com", Status::Open);
        assert_eq!(
            choose(Some("agent@example.com"), true, &[t], &[], &c),
            Thread::New { links: vec![] }
        );
    }

    #[test]
    fn tag_wins_over_references_and_references_work_alone() {
        let c = config();
        let a = ticket("JP-1000", "a@example.com", Status::Open);
        let b = ticket("JP-1001", "a@example.com", Status::Open);
        assert_eq!(
            choose(
                Some("a@example.com"),
                true,
                std::slice::from_ref(&a),
                std::slice::from_ref(&b),
                &c
            ),
            Thread::Existing(a.id.clone())
        );
        assert_eq!(
            choose(
                Some("a@example.com"),
                true,
                &[],
                std::slice::from_ref(&b),
                &c
            ),
            Thread::Existing(b.id.clone())
        );
    }

    #[test]
    fn reply_to_closed_ticket_opens_a_linked_one() {
        let c = config();
        let t = ticket("JP-1000", "a@example.com", Status::Closed);
        assert_eq!(
            choose(
                Some("a@example.com"),
                true,
                std::slice::from_ref(&t),
                &[],
                &c
            ),
            Thread::New { links: vec![t.id] }
        );
    }

    #[test]
    fn an_unverified_agent_is_a_stranger() {
        let c = config();
        let t = ticket("JP-1000", "a@example.com", Status::Open);
        assert_eq!(
            choose(
                Some("agent@example.com"),
                false,
                std::slice::from_ref(&t),
                &[],
                &c
            ),
            Thread::New { links: vec![] }
        );
        assert_eq!(
            choose(
                Some("a@example.com"),
                false,
                std::slice::from_ref(&t),
                &[],
                &c
            ),
            Thread::Existing(t.id.clone()),
            "only agents are verified"
        );
    }

    #[test]
    fn no_sender_never_joins() {
        let c = config();
        let t = ticket("JP-1000", "a@example.com", Status::Open);
        assert_eq!(
            choose(None, true, &[t], &[], &c),
            Thread::New { links: vec![] }
        );
    }
}
