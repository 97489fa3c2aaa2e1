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

/// Ticket tags (`[JP-1042]`) anywhere in a subject, in order of appearance.
pub fn tags_in_subject(subject: &str) -> Vec<TicketId> {
    let mut out = Vec::new();
    let mut rest = subject;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        if let Some(close) = rest.find(']') {
            if let Ok(id) = rest[..close].parse::<TicketId>() {
                if !out.contains(&id) {
                    out.push(id);
                }
            }
        }
    }
    out
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
        // Optional counter: Re[2]: / RE(2): / Re^2:
        for (open, close) in [('[', ']'), ('(', ')')] {
            if let Some(r) = rest.strip_prefix(open) {
                if let Some(end) = r.find(close) {
                    if r[..end].bytes().all(|b| b.is_ascii_digit()) {
                        rest = &r[end + 1..];
                    }
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
pub fn clean_subject(subject: &str) -> String {
    let mut s = subject.trim();
    loop {
        let before = s;
        while let Some(r) = strip_one_prefix(s) {
            s = r.trim_start();
        }
        // A leading tag may stand between prefixes ("Re: [JP-1] Re: …").
        if let Some(r) = s.strip_prefix('[') {
            if let Some(end) = r.find(']') {
                if r[..end].parse::<TicketId>().is_ok() {
                    s = r[end + 1..].trim_start();
                }
            }
        }
        if s == before {
            break;
        }
    }
    let mut out = s.to_string();
    for tag in tags_in_subject(&out) {
        out = out.replace(&format!("[{tag}]"), "");
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
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
    use crate::desk::ticket::{Locale, Priority};
    use chrono::Utc;

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

    fn ticket(id: &str, requester: &str, status: Status) -> Ticket {
        let id: TicketId = id.parse().unwrap();
        Ticket {
            region: id.region.clone(),
            id,
            status,
            priority: Priority::Normal,
            category: "other".into(),
            subject: "s".into(),
            requester: requester.into(),
            requester_name: String::new(),
            participants: vec!["cc@example.com".into()],
            locale: Locale::Ja,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            message_count: 1,
            last_customer_message_id: None,
            thread_ids: vec![],
            links: vec![],
            assignee: None,
            merged_into: None,
            status_since: None,
            first_response_at: None,
            reminders_sent: 0,
            sla_warned: false,
            breached: false,
            survey_sent: false,
            satisfaction: None,
            timers: Vec::new(),
            erased: false,
            attachments_purged: false,
        }
    }

    fn config() -> Config {
        Config::from_toml(
            "[storage]\npath=\"/tmp/x\"\n[outbound]\ntransport=\"file\"\nfile_dir=\"/tmp/o\"\n[[region]]\ncode=\"JP\"\naddress=\"support-jp@example.com\"\nagents=[\"agent@example.com\"]\n[[region]]\ncode=\"KR\"\naddress=\"support-kr@example.com\"\n",
            std::path::Path::new("t"),
        )
        .unwrap()
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
