//! Fuzz target `core`: the pure core of postdesk on arbitrary bytes.
//!
//! The input is up to four mails separated by two NUL bytes (a seed from `tests/fixtures` is one mail).
//! Each goes the way every intake sends it — `mail::parse` → `classify` → `thread::choose` → `decide` —
//! against a small in-memory desk: the tickets earlier mails of the same input opened, their Message-IDs
//! and dedupe keys, and two tickets every run starts with (so that a tag like `[JP-1000]` or a reference to
//! `<seed-jp@example.net>` in a seed finds something). Each decision is then applied to the in-memory desk,
//! and its replies are rendered and built into MIME messages exactly as the outbox would.
//!
//! Repetition storms (issue 13): an input that starts with `#amp` is `#amp` PREFIX NUL UNIT NUL SUFFIX and
//! stands for PREFIX, UNIT repeated up to [`AMPLIFIED`] bytes, SUFFIX — so a few bytes the fuzzer mutates
//! become a 256 KiB storm of `> q` lines, `[` in a subject, nested tags or parts anywhere in a mail. Run with a
//! per-input time limit (`scripts/fuzz.sh` passes `-timeout=2`): an input whose cost is not linear in its
//! size is then a failure like a crash (libFuzzer's `timeout-…` artifact).
//!
//! What counts as a crash: any panic outside mail-parser (postdesk catches mail-parser's own panics and
//! quarantines the mail — `NotMail::ParserPanic` — which is the behaviour under test, not a crash), an
//! arithmetic overflow (cargo-fuzz builds with overflow checks), or a broken invariant asserted below.
//!
//! Run it with `scripts/fuzz.sh [SECONDS]`.

#![no_main]

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use chrono::{DateTime, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use postdesk::config::Config;
use postdesk::desk::agent;
use postdesk::desk::decide::{self, Decision, Delivery, Known};
use postdesk::desk::thread::{self, Thread};
use postdesk::desk::ticket::{Ticket, TicketId};
use postdesk::mail::quote::strip_quoted;
use postdesk::mail::{classify, parse};
use postdesk::outbound::render::Renderer;
use postdesk::outbound::transport::build_message;
use postdesk::outbound::{compose, msgid, Composer};

/// Two regions in two languages, an agent in one, a category rule: every branch of decide is reachable.
const CONFIG: &str = r#"
[storage]
path = "/nonexistent/fuzz"
[outbound]
transport = "file"
file_dir = "/nonexistent/fuzz-out"
[categories]
payment = ["refund", "返金", "환불"]
[[region]]
code = "JP"
locale = "ja"
address = "support-jp@example.com"
agents = ["agent@example.com"]
[[region]]
code = "KR"
locale = "ko"
address = "support-kr@example.com"
"#;

struct Fixed {
    config: Config,
    composer: Composer,
    /// The desk every run starts from.
    start: Desk,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        // libfuzzer-sys aborts on every panic, even one that is caught. postdesk runs mail-parser under
        // `catch_unwind` on purpose, so a panic located in mail-parser is left to that; any other aborts.
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_parser = info
                .location()
                .is_some_and(|l| l.file().contains("mail-parser"));
            if !in_parser {
                default(info);
                std::process::abort();
            }
        }));
        let config = Config::from_toml(CONFIG, Path::new("fuzz.toml")).expect("fuzz config");
        let composer = Composer {
            renderer: Renderer::load(None).expect("built-in templates"),
            secret: b"fuzz secret, 32 bytes long......".to_vec(),
        };
        let mut start = Desk::default();
        for (region, raw) in [
            (0, "From: Aiko <aiko@example.net>\r\nTo: support-jp@example.com\r\nCc: friend@example.net\r\nSubject: 注文について\r\nMessage-ID: <seed-jp@example.net>\r\n\r\n注文した商品が届きません。\r\n"),
            (1, "From: kim@example.co.kr\r\nTo: support-kr@example.com\r\nSubject: 환불 문의\r\nMessage-ID: <seed-kr@example.co.kr>\r\n\r\n환불 부탁드립니다.\r\n"),
        ] {
            let mail = parse(raw.as_bytes(), config.region[region].locale).expect("seed mail");
            start.ingest(&config, &composer, region, &mail);
        }
        Fixed {
            config,
            composer,
            start,
        }
    })
}

/// The in-memory stand-in for the store: what `Desk::known` reads and `Store::commit` writes.
#[derive(Clone, Default)]
struct Desk {
    tickets: HashMap<TicketId, Ticket>,
    by_message_id: HashMap<String, Vec<TicketId>>,
    dedupe: HashMap<(String, String), TicketId>,
    next_number: HashMap<String, u64>,
    outbox: u64,
}

fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(1_795_000_000, 0)
        .single()
        .expect("fixed time")
}

impl Desk {
    /// Follow `merged_into` as the intake does (bounded).
    fn ticket(&self, id: &TicketId) -> Option<Ticket> {
        let mut t = self.tickets.get(id).cloned();
        for _ in 0..8 {
            match t.as_ref().and_then(|t| t.merged_into.clone()) {
                Some(next) => t = self.tickets.get(&next).cloned(),
                None => break,
            }
        }
        t
    }

    /// What the store knows about `mail`, built the way `intake::Desk::known` builds it.
    fn known(&self, config: &Config, composer: &Composer, mail: &postdesk::mail::Inbound) -> Known {
        let duplicate_of = self
            .dedupe
            .get(&(mail.message_id.clone(), mail.content_hash.clone()))
            .cloned();
        let mut known = Known {
            duplicate_of,
            ..Known::default()
        };
        if known.duplicate_of.is_some() {
            return known;
        }
        let sender = mail.from.as_ref().map(|m| m.address.as_str()).unwrap_or("");
        if config.region.iter().any(|r| r.is_agent(sender)) {
            for command in agent::parse(&strip_quoted(&mail.text)).commands {
                if let agent::Command::Merge(id) = command {
                    known.merge_target = self.tickets.get(&id).cloned();
                }
            }
        }
        known.own_message = msgid::verify(&mail.message_id, &composer.secret).is_some();
        // A fuzzer cannot forge our HMAC-signed Message-IDs: treat any delivery report as one on the first
        // ticket's first outbox row, so the bounce path is explored too.
        if mail.auto.reported_message_id.is_some() {
            let mut ids: Vec<&TicketId> = self.tickets.keys().collect();
            ids.sort_by_key(|id| (id.region.clone(), id.number));
            if let Some(t) = ids.first().and_then(|id| self.ticket(id)) {
                known.bounced = Some((t, 1));
            }
        }
        for tag in thread::tags_in_subject(&mail.subject) {
            if let Some(t) = self.ticket(&tag) {
                known.tagged.push(t);
            }
        }
        let mut seen = Vec::new();
        for mid in mail.in_reply_to.iter().chain(mail.references.iter().rev()) {
            for id in self.by_message_id.get(mid).into_iter().flatten() {
                if !seen.contains(id) {
                    if let Some(t) = self.ticket(id) {
                        known.referenced.push(t);
                    }
                    seen.push(id.clone());
                }
            }
        }
        known
    }

    /// Decide on one parsed mail for region `region` and apply the decision.
    fn ingest(
        &mut self,
        config: &Config,
        composer: &Composer,
        region: usize,
        mail: &postdesk::mail::Inbound,
    ) {
        let region = &config.region[region];
        // classify, as decide and the stats use it.
        let automatic = classify::automatic(mail, config);
        let _ = classify::customer_locale(mail, region.locale);
        let _ = classify::priority(mail);
        let _ = classify::category(mail, &config.category_rules);
        let _ = thread::clean_subject(&mail.subject);
        let known = self.known(config, composer, mail);
        let sender = mail.from.as_ref().map(|m| m.address.as_str());
        let verified = decide::agent_verified(mail, config);
        let chosen = thread::choose(sender, verified, &known.tagged, &known.referenced, config);
        let decision = decide::decide(mail, region, config, &known, &Delivery::normal(), now());
        let mut plan = match decision {
            Decision::Duplicate(id) => {
                assert_eq!(
                    Some(&id),
                    known.duplicate_of.as_ref(),
                    "a duplicate is only what the store says"
                );
                return;
            }
            Decision::Store(plan) => plan,
        };
        let bounce = plan.bounced_outbox.is_some();
        match (&chosen, plan.is_new) {
            (Thread::Existing(id), false) if !bounce => {
                assert_eq!(
                    &plan.ticket.id, id,
                    "decide stores into the ticket threading chose"
                )
            }
            (Thread::New { .. }, false) => assert!(bounce, "only a bounce joins without threading"),
            // More than one From field: never threaded (issue 13, finding 7).
            (Thread::Existing(_), true) if mail.from_fields > 1 => {}
            (Thread::Existing(_), true) => {
                panic!("threading chose a ticket, decide opened a new one")
            }
            _ => {}
        }
        if plan.is_new {
            assert!(
                plan.replies
                    .iter()
                    .all(|r| r.event().as_str() != "agent_reply"),
                "a new ticket relays nothing"
            );
            if automatic.is_some() {
                assert!(plan.replies.is_empty(), "no mail to a machine");
            }
            let first = config
                .region(&plan.ticket.region)
                .map_or(region.first_number, |r| r.first_number);
            let next = self
                .next_number
                .entry(plan.ticket.region.clone())
                .or_insert(first);
            plan.ticket.id.number = *next;
            *next += 1;
        }
        let ticket_region = config.region(&plan.ticket.region).unwrap_or(region);
        for reply in &plan.replies {
            self.outbox += 1;
            let item = compose(
                reply,
                &plan.ticket,
                ticket_region,
                composer,
                self.outbox,
                now(),
            )
            .expect("the built-in templates render every reply");
            // A customer's name or subject never breaks the outgoing mail; an address lettre rejects is an
            // error the worker records, not a panic.
            let _ = build_message(&item);
        }
        let id = plan.ticket.id.clone();
        if let Some(merge) = plan.merge.take() {
            plan.ticket.merged_into = Some(merge.survivor.id.clone());
            self.tickets
                .insert(merge.survivor.id.clone(), merge.survivor);
        }
        let ids = self
            .by_message_id
            .entry(mail.message_id.clone())
            .or_default();
        if !ids.contains(&id) {
            ids.push(id.clone());
        }
        self.dedupe.insert(
            (mail.message_id.clone(), mail.content_hash.clone()),
            id.clone(),
        );
        self.tickets.insert(id, plan.ticket);
    }
}

/// The size an amplified input grows to.
const AMPLIFIED: usize = 256 * 1024;

/// `#amp` PREFIX NUL UNIT NUL SUFFIX → PREFIX + UNIT × n + SUFFIX, about [`AMPLIFIED`] bytes; anything else
/// as it is.
fn amplify(data: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let Some(rest) = data.strip_prefix(b"#amp") else {
        return data.into();
    };
    let mut parts = rest.splitn(3, |&b| b == 0);
    let (prefix, unit, suffix) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if unit.is_empty() {
        return data.into();
    }
    let mut out = Vec::with_capacity(AMPLIFIED + prefix.len() + suffix.len());
    out.extend_from_slice(prefix);
    while out.len() < AMPLIFIED {
        out.extend_from_slice(unit);
    }
    out.extend_from_slice(suffix);
    out.into()
}

fuzz_target!(
    // Config, templates and the starting desk once, before any input: under `-timeout=2` their cost (over
    // a second under AddressSanitizer) must not be charged to the first input of every fork job.
    init: {
        fixed();
    },
    |data: &[u8]| {
    let fixed = fixed();
    let mut desk = fixed.start.clone();
    let data = amplify(data);
    for (i, raw) in split_mails(&data[..]).into_iter().take(4).enumerate() {
        let region = i % fixed.config.region.len();
        let Ok(mail) = parse(raw, fixed.config.region[region].locale) else {
            continue;
        };
        desk.ingest(&fixed.config, &fixed.composer, region, &mail);
    }
    }
);

/// Split at two NUL bytes.
fn split_mails(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(2).position(|w| w == [0, 0]) {
        out.push(&rest[..at]);
        rest = &rest[at + 2..];
    }
    out.push(rest);
    out
}
