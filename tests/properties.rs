//! Property test of threading: random sequences of customer mail — new conversations, replies by the tag in
//! the subject, by References, to the desk's own acknowledgement, forwards, mail from strangers and agents,
//! exact duplicates — go through the real intake ([`Desk::ingest`] one by one, or [`Desk::ingest_batch`] in
//! random batches) into a temporary sled store, next to a small model that predicts where each mail belongs.
//!
//! Invariants checked:
//! - one ticket per conversation: every mail lands where the model says (its conversation's ticket, or a
//!   new one), and each ticket holds exactly the mails of its conversation, in order;
//! - no message in two tickets;
//! - an exact duplicate changes nothing (its outcome names the original's ticket; nothing is stored);
//! - ticket numbers strictly increase per region, from the region's first number, without gaps;
//! - a stranger (anyone not the requester, a participant or an agent of the ticket's region) never joins
//!   someone else's ticket: every customer message of a ticket is from its requester or a participant.
//!
//! No servers: the store is a temporary directory. `PROPTEST_CASES` changes the case count (default 48).

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use postdesk::config::Config;
use postdesk::desk::decide::Delivery;
use postdesk::desk::ticket::{Direction, TicketId};
use postdesk::intake::{Desk, Incoming, Outcome};
use postdesk::store::{Lookup, Storage, Store};
use proptest::prelude::*;
use support::{Region, TestConfig};

const REGIONS: [&str; 2] = ["JP", "KR"];
const AGENT: &str = "agent@example.com";
/// Customers who open conversations, and outsiders who write in; any of them is a stranger to a ticket that
/// does not admit them.
const PEOPLE: [&str; 7] = [
    "aiko@example.net",
    "bora@example.net",
    "chen@example.net",
    "dana@example.net",
    "eve@example.org",
    "mallory@example.org",
    "trudy@example.org",
];

fn config(dir: &Path) -> Config {
    // The JP desk has an agent; to a KR ticket that agent is a stranger.
    TestConfig::new(dir)
        .region(Region::jp().agents(&[AGENT]))
        .region(Region::kr().first_number(500))
        .parse()
}

#[derive(Clone, Debug)]
enum Who {
    Requester,
    /// The conversation's participant (its requester if it has none).
    Participant,
    /// The n-th person the ticket does not admit.
    Stranger(usize),
    Agent,
}

#[derive(Clone, Debug)]
enum Op {
    /// A customer starts a conversation, perhaps with someone in Cc.
    New {
        from: usize,
        cc: Option<usize>,
        region: usize,
    },
    /// "Re: [JP-1000] …", no References.
    ReplyByTag {
        conv: usize,
        who: Who,
        region: usize,
    },
    /// In-Reply-To/References to a mail of the conversation, no tag.
    ReplyByReferences {
        conv: usize,
        who: Who,
        pick: usize,
        region: usize,
    },
    /// The requester answers one of the desk's own mails (References to its Message-ID, no tag).
    ReplyToDesk { conv: usize, pick: usize },
    /// A forward with the original attached as message/rfc822; the attached mail's own Message-ID and
    /// In-Reply-To must not thread. Tagged or not.
    Forward {
        conv: usize,
        who: Who,
        tagged: bool,
        region: usize,
    },
    /// The very same bytes as an earlier mail, delivered again.
    Duplicate { pick: usize },
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![
        3 => Just(Who::Requester),
        1 => Just(Who::Participant),
        2 => (0..PEOPLE.len()).prop_map(Who::Stranger),
        1 => Just(Who::Agent),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let conv = 0..64usize;
    let region = 0..REGIONS.len();
    prop_oneof![
        3 => (0..PEOPLE.len(), proptest::option::weighted(0.3, 0..PEOPLE.len()), region.clone())
            .prop_map(|(from, cc, region)| Op::New { from, cc, region }),
        3 => (conv.clone(), who(), region.clone()).prop_map(|(conv, who, region)| Op::ReplyByTag { conv, who, region }),
        3 => (conv.clone(), who(), 0..16usize, region.clone())
            .prop_map(|(conv, who, pick, region)| Op::ReplyByReferences { conv, who, pick, region }),
        1 => (conv.clone(), 0..16usize).prop_map(|(conv, pick)| Op::ReplyToDesk { conv, pick }),
        1 => (conv, who(), any::<bool>(), region).prop_map(|(conv, who, tagged, region)| Op::Forward { conv, who, tagged, region }),
        2 => (0..64usize).prop_map(|pick| Op::Duplicate { pick }),
    ]
}

/// One conversation as the model sees it: the ticket it must be.
#[derive(Clone, Debug)]
struct Conv {
    ticket: TicketId,
    requester: String,
    participant: Option<String>,
    subject: String,
    /// Message-IDs of the mails that joined it, in order.
    mails: Vec<String>,
}

impl Conv {
    fn admits(&self, who: &str) -> bool {
        self.requester == who || self.participant.as_deref() == Some(who)
    }
}

/// What a mail must do.
#[derive(Clone, Debug, PartialEq)]
enum Expect {
    Join(TicketId),
    Open(TicketId),
    Duplicate(TicketId),
}

struct Model {
    config: Config,
    convs: Vec<Conv>,
    next: HashMap<String, u64>,
    /// Every mail stored so far: (raw bytes, Message-ID, the ticket it went to, region delivered to).
    sent: Vec<(Vec<u8>, String, TicketId, usize)>,
    counter: usize,
}

fn mail(
    from: &str,
    to: &str,
    cc: Option<&str>,
    subject: &str,
    message_id: &str,
    references: &[String],
    body: &str,
) -> Vec<u8> {
    let mut m = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\nDate: Sat, 21 Nov 2026 09:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    );
    if let Some(cc) = cc {
        m.push_str(&format!("Cc: {cc}\r\n"));
    }
    if let Some(last) = references.last() {
        m.push_str(&format!("In-Reply-To: <{last}>\r\n"));
        let refs: Vec<String> = references.iter().map(|r| format!("<{r}>")).collect();
        m.push_str(&format!("References: {}\r\n", refs.join(" ")));
    }
    m.push_str(&format!(
        "Content-Type: text/plain; charset=UTF-8\r\n\r\n{body}\r\n"
    ));
    m.into_bytes()
}

impl Model {
    fn region_address(&self, region: usize) -> String {
        self.config.region[region].address.clone()
    }

    fn new_id(&mut self, region: usize) -> TicketId {
        let r = &self.config.region[region];
        let n = self.next.entry(r.code.clone()).or_insert(r.first_number);
        let id = TicketId::new(&r.code, *n);
        *n += 1;
        id
    }

    fn fresh_message_id(&mut self) -> String {
        self.counter += 1;
        format!("p{}@example.net", self.counter)
    }

    /// The address `who` stands for, writing into conversation `c`.
    fn sender(&self, c: &Conv, who: &Who) -> String {
        match who {
            Who::Requester => c.requester.clone(),
            Who::Participant => c.participant.clone().unwrap_or_else(|| c.requester.clone()),
            Who::Agent => AGENT.to_string(),
            Who::Stranger(n) => {
                let outsiders: Vec<&str> =
                    PEOPLE.iter().copied().filter(|p| !c.admits(p)).collect();
                outsiders[n % outsiders.len()].to_string()
            }
        }
    }

    /// Whether `sender` may write into the conversation's ticket: what threading must respect.
    fn may_join(&self, c: &Conv, sender: &str) -> bool {
        c.admits(sender) || (sender == AGENT && c.ticket.region == "JP")
    }

    /// Record a mail that joins conversation `ci`, or opens a new one in `region` (about `subject`, without
    /// prefixes and tags); the mail to deliver, where, and the expectation.
    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        raw: Vec<u8>,
        ci: Option<usize>,
        sender: &str,
        cc: Option<&str>,
        subject: &str,
        region: usize,
        message_id: &str,
    ) -> (Vec<u8>, Expect, usize) {
        let expect = self.expect(ci, sender, cc, subject, region, message_id);
        let ticket = match &expect {
            Expect::Join(t) | Expect::Open(t) | Expect::Duplicate(t) => t.clone(),
        };
        self.sent
            .push((raw.clone(), message_id.to_string(), ticket, region));
        (raw, expect, region)
    }

    fn expect(
        &mut self,
        ci: Option<usize>,
        sender: &str,
        cc: Option<&str>,
        subject: &str,
        region: usize,
        message_id: &str,
    ) -> Expect {
        if let Some(ci) = ci.filter(|&ci| self.may_join(&self.convs[ci], sender)) {
            self.convs[ci].mails.push(message_id.to_string());
            return Expect::Join(self.convs[ci].ticket.clone());
        }
        let ticket = self.new_id(region);
        self.convs.push(Conv {
            ticket: ticket.clone(),
            requester: sender.to_string(),
            // The agent is never a participant; nor is the requester.
            participant: cc
                .filter(|c| *c != sender && *c != AGENT)
                .map(str::to_string),
            subject: subject.to_string(),
            mails: vec![message_id.to_string()],
        });
        Expect::Open(ticket)
    }

    /// Turn an operation into a mail and its expected outcome. `desk_ids` gives the Message-IDs of the mail
    /// the desk sent for a ticket (only what is already committed).
    fn step(
        &mut self,
        op: &Op,
        desk_ids: &dyn Fn(&TicketId) -> Vec<String>,
    ) -> (Vec<u8>, Expect, usize) {
        let n = self.convs.len();
        let op = match op {
            // Nothing to answer yet: a new conversation instead.
            Op::ReplyByTag { region, .. }
            | Op::ReplyByReferences { region, .. }
            | Op::Forward { region, .. }
                if n == 0 =>
            {
                Op::New {
                    from: 0,
                    cc: None,
                    region: *region,
                }
            }
            Op::ReplyToDesk { .. } | Op::Duplicate { .. } if n == 0 => Op::New {
                from: 1,
                cc: Some(2),
                region: 0,
            },
            Op::Duplicate { .. } if self.sent.is_empty() => Op::New {
                from: 1,
                cc: None,
                region: 1,
            },
            other => other.clone(),
        };
        match op {
            Op::New { from, cc, region } => {
                let (from, cc) = (PEOPLE[from], cc.map(|c| PEOPLE[c]));
                let mid = self.fresh_message_id();
                let subject = format!("question {}", self.counter);
                let raw = mail(
                    from,
                    &self.region_address(region),
                    cc,
                    &subject,
                    &mid,
                    &[],
                    "Where is my order?",
                );
                self.route(raw, None, from, cc, &subject, region, &mid)
            }
            Op::ReplyByTag { conv, who, region } => {
                let c = self.convs[conv % n].clone();
                let sender = self.sender(&c, &who);
                let mid = self.fresh_message_id();
                let subject = format!("Re: [{}] {}", c.ticket, c.subject);
                let raw = mail(
                    &sender,
                    &self.region_address(region),
                    None,
                    &subject,
                    &mid,
                    &[],
                    "Any news?",
                );
                self.route(raw, Some(conv % n), &sender, None, &c.subject, region, &mid)
            }
            Op::ReplyByReferences {
                conv,
                who,
                pick,
                region,
            } => {
                let c = self.convs[conv % n].clone();
                let sender = self.sender(&c, &who);
                let mid = self.fresh_message_id();
                let refs = vec![c.mails[0].clone(), c.mails[pick % c.mails.len()].clone()];
                let subject = format!("Re: {}", c.subject);
                let raw = mail(
                    &sender,
                    &self.region_address(region),
                    None,
                    &subject,
                    &mid,
                    &refs,
                    "Following up.",
                );
                self.route(raw, Some(conv % n), &sender, None, &c.subject, region, &mid)
            }
            Op::ReplyToDesk { conv, pick } => {
                let c = self.convs[conv % n].clone();
                let ours = desk_ids(&c.ticket);
                let region = REGIONS
                    .iter()
                    .position(|r| *r == c.ticket.region)
                    .unwrap_or(0);
                let mid = self.fresh_message_id();
                // The desk may not have written yet (same batch, or no acknowledgement to a machine or an
                // agent): then the customer quotes the tag instead.
                let (subject, refs) = match ours.get(pick % ours.len().max(1)) {
                    Some(ours) => (format!("Re: {}", c.subject), vec![ours.clone()]),
                    None => (format!("Re: [{}] {}", c.ticket, c.subject), vec![]),
                };
                let sender = c.requester.clone();
                let raw = mail(
                    &sender,
                    &self.region_address(region),
                    None,
                    &subject,
                    &mid,
                    &refs,
                    "Thanks, here is the number: 12345.",
                );
                self.route(raw, Some(conv % n), &sender, None, &c.subject, region, &mid)
            }
            Op::Forward {
                conv,
                who,
                tagged,
                region,
            } => {
                let c = self.convs[conv % n].clone();
                let sender = self.sender(&c, &who);
                let mid = self.fresh_message_id();
                let subject = if tagged {
                    format!("Fwd: [{}] {}", c.ticket, c.subject)
                } else {
                    format!("Fwd: {}", c.subject)
                };
                // The attached original claims a mail of the conversation; only the envelope mail counts.
                let inner = String::from_utf8(mail(
                    &c.requester,
                    &self.region_address(region),
                    None,
                    &c.subject,
                    &c.mails[0],
                    &c.mails,
                    "The original.",
                ))
                .expect("utf-8");
                let raw = format!(
                    "From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{mid}>\r\nDate: Sat, 21 Nov 2026 09:05:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"fwd\"\r\n\r\n--fwd\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nSee the mail below.\r\n--fwd\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--fwd--\r\n",
                    to = self.region_address(region)
                )
                .into_bytes();
                let joins = tagged.then_some(conv % n);
                self.route(raw, joins, &sender, None, &c.subject, region, &mid)
            }
            Op::Duplicate { pick } => {
                let (raw, _, ticket, region) = self.sent[pick % self.sent.len()].clone();
                (raw, Expect::Duplicate(ticket), region)
            }
        }
    }
}

fn check_outcome(got: &Outcome, want: &Expect) -> Result<(), TestCaseError> {
    match (got, want) {
        (
            Outcome::Stored {
                ticket, new: false, ..
            },
            Expect::Join(w),
        ) if ticket == w => Ok(()),
        (
            Outcome::Stored {
                ticket, new: true, ..
            },
            Expect::Open(w),
        ) if ticket == w => Ok(()),
        (Outcome::Duplicate(t), Expect::Duplicate(w)) if t == w => Ok(()),
        _ => Err(TestCaseError::fail(format!(
            "outcome {got:?}, expected {want:?}"
        ))),
    }
}

/// What a duplicate must leave alone: every ticket and the outbox.
fn snapshot(store: &Store) -> (String, usize) {
    let tickets =
        serde_json::to_string(&store.tickets(None, None).expect("tickets")).expect("json");
    (tickets, store.outbox_all().expect("outbox").len())
}

fn run(ops: Vec<Op>, batch: usize) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let store = Arc::new(Store::open(&config.storage.path).expect("store"));
    let desk = Desk::new(config.clone(), store.clone()).expect("desk");
    let mut model = Model {
        config: config.clone(),
        convs: Vec::new(),
        next: HashMap::new(),
        sent: Vec::new(),
        counter: 0,
    };
    let desk_ids = |id: &TicketId| -> Vec<String> {
        let mut ids: Vec<String> = store
            .outbox_of_ticket(id)
            .expect("outbox")
            .into_iter()
            .map(|o| o.message_id)
            .collect();
        ids.sort();
        ids
    };
    for chunk in ops.chunks(batch) {
        let mails: Vec<(Vec<u8>, Expect, usize)> =
            chunk.iter().map(|op| model.step(op, &desk_ids)).collect();
        let outcomes: Vec<Outcome> = if batch == 1 {
            let (raw, expect, region) = &mails[0];
            let before = snapshot(&store);
            let outcome = desk
                .ingest(
                    &config.region[*region],
                    raw,
                    "proptest",
                    &Delivery::normal(),
                    true,
                    chrono::Utc::now(),
                )
                .expect("ingest")
                .expect("a mail");
            if matches!(expect, Expect::Duplicate(_)) {
                prop_assert_eq!(before, snapshot(&store), "a duplicate changed the store");
            }
            vec![outcome]
        } else {
            // A batch is for one region, as one mailbox delivers it: split where the region changes.
            let mut outcomes = Vec::new();
            for group in mails.chunk_by(|a, b| a.2 == b.2) {
                let items = group
                    .iter()
                    .map(|(raw, _, _)| Incoming {
                        raw,
                        source: "proptest".into(),
                        delivery: Delivery::normal(),
                        state: None,
                    })
                    .collect();
                outcomes.extend(
                    desk.ingest_batch(&config.region[group[0].2], items, chrono::Utc::now())
                        .expect("ingest batch"),
                );
            }
            outcomes
        };
        prop_assert_eq!(outcomes.len(), mails.len());
        for ((_, expect, _), got) in mails.iter().zip(&outcomes) {
            check_outcome(got, expect)?;
        }
    }

    // The store holds the model's conversations and nothing else.
    let tickets = store.tickets(None, None).expect("tickets");
    prop_assert_eq!(
        tickets.len(),
        model.convs.len(),
        "one ticket per conversation"
    );
    let mut seen: HashSet<String> = HashSet::new();
    let mut stored_mails = 0;
    for conv in &model.convs {
        let ticket = store
            .ticket(&conv.ticket)
            .expect("read")
            .expect("ticket exists");
        let messages = store.messages(&conv.ticket).expect("messages");
        let ids: Vec<String> = messages.iter().map(|m| m.message_id.clone()).collect();
        prop_assert_eq!(
            &ids,
            &conv.mails,
            "ticket {} holds its conversation",
            conv.ticket
        );
        for m in &messages {
            prop_assert!(
                seen.insert(m.message_id.clone()),
                "{} is in two tickets",
                m.message_id
            );
            match m.direction {
                Direction::In => prop_assert!(
                    ticket.admits_customer(&m.from),
                    "{} wrote into {} (requester {}, participants {:?})",
                    m.from,
                    ticket.id,
                    ticket.requester,
                    ticket.participants
                ),
                Direction::Out | Direction::Note => prop_assert!(
                    m.from == AGENT && ticket.region == "JP",
                    "{} acted on {} as an agent",
                    m.from,
                    ticket.id
                ),
            }
        }
        stored_mails += messages.len();
    }
    let delivered: HashSet<&str> = model.sent.iter().map(|s| s.1.as_str()).collect();
    prop_assert_eq!(stored_mails, delivered.len(), "duplicates stored nothing");
    // Ticket numbers: in the order the tickets were opened, strictly increasing per region, no gaps.
    for region in &config.region {
        let numbers: Vec<u64> = model
            .convs
            .iter()
            .filter(|c| c.ticket.region == region.code)
            .map(|c| c.ticket.number)
            .collect();
        let want: Vec<u64> = (region.first_number..).take(numbers.len()).collect();
        prop_assert_eq!(&numbers, &want, "numbers of region {}", region.code);
        let stored: Vec<u64> = store
            .tickets(Some(&region.code), None)
            .expect("tickets")
            .iter()
            .map(|t| t.id.number)
            .collect();
        prop_assert_eq!(&stored, &want, "stored numbers of region {}", region.code);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        // A failure shrinks to a short sequence; keep the shrinking bounded in time.
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_mail_sequences_keep_the_threading_invariants(
        ops in proptest::collection::vec(op(), 1..40),
        batch in 1..5usize,
    ) {
        run(ops, batch)?;
    }
}
