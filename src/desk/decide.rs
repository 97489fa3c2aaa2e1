//! The pure heart of intake: given a parsed mail, what the store knows about it, the config and the time,
//! decide what changes. Nothing here touches the store, the network or the clock.
//!
//! The decision is complete: the ticket as it will be stored (its number for a new one, its status changed
//! through [`Ticket::change_status`], its timers scheduled), the message, the typed [`Reply`]s to send, and
//! for an agent's `#merge` the surviving ticket. The shell (the application service) only reads what
//! [`Known`] asks for, renders the replies and commits.

use chrono::{DateTime, Utc};

use super::agent;
use super::lifecycle::{self, Event};
pub use super::reply::{
    AttachmentNote, Audience, Content, EarlierTicket, Event as ReplyEvent, Needs, Reply,
};
use super::thread::{self, Thread};
use super::ticket::{
    AttachmentRef, Direction, Locale, Message, Priority, Status, Ticket, TicketId, MAX_THREAD_IDS,
};
use crate::config::{Config, RegionConfig};
use crate::mail::classify;
use crate::mail::parse::{safe_filename, Inbound};
use crate::mail::quote::strip_quoted;

/// What the store already knows that concerns this mail.
#[derive(Clone, Debug, Default)]
pub struct Known {
    /// The ticket that already holds this very mail (same Message-ID and content), if any.
    pub duplicate_of: Option<TicketId>,
    /// Existing tickets named by tags in the subject, in subject order.
    pub tagged: Vec<Ticket>,
    /// Existing tickets holding a Message-ID from In-Reply-To/References, most specific first.
    pub referenced: Vec<Ticket>,
    /// For a delivery report on mail postdesk sent (its signed Message-ID): that ticket and outbox row.
    pub bounced: Option<(Ticket, u64)>,
    /// The mail carries a Message-ID postdesk signed: one of our own mails came back (a forwarder loop).
    pub own_message: bool,
    /// For an agent's `#merge ID`: that ticket, if it exists.
    pub merge_target: Option<Ticket>,
    /// The number the mail's region gives its next new ticket; `None`: the region's sequence has not
    /// started, so its `first_number`.
    pub next_number: Option<u64>,
    /// The mail's In-Reply-To names staff mail postdesk sent (an agent notification, an SLA reminder, an
    /// escalation, a command error): the ticket that mail was about (after merges).
    pub staff_mail_answered: Option<Ticket>,
    /// For each closed ticket among `tagged` and `referenced`: the text of the last answer an agent sent
    /// on it, which the notification of the new ticket a late reply opens quotes.
    pub last_answers: Vec<(TicketId, String)>,
}

/// Options of the intake path that delivered the mail.
#[derive(Clone, Debug, Default)]
pub struct Delivery {
    /// Whether an acknowledgement may be sent (false for old mail imported on a first start).
    pub may_acknowledge: bool,
    /// What the intake knows went wrong (e.g. an oversized mail stored truncated), added to the message.
    pub damage: Option<String>,
    /// For mail stored truncated because it was too large: (its size, the limit) in bytes.
    pub oversize: Option<(u64, u64)>,
}

impl Delivery {
    /// An ordinary delivery: acknowledge new tickets, nothing to note.
    pub fn normal() -> Delivery {
        Delivery {
            may_acknowledge: true,
            damage: None,
            oversize: None,
        }
    }
}

/// An agent's `#merge`: the ticket of the mail is closed and points to `survivor`, where both conversations
/// continue.
#[derive(Clone, Debug)]
pub struct Merge {
    /// The ticket merged into, after the merge: the merged ticket's customers among its participants, its
    /// Message-IDs in the thread, linked, timers scheduled. The shell moves the messages and counts them.
    pub survivor: Ticket,
    /// Message-IDs that lead to the merged ticket and must lead to the survivor from now on.
    pub message_ids: Vec<String>,
}

/// The change one mail makes.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The ticket after the change, timers scheduled. A new ticket has its number (from [`Known`]).
    pub ticket: Ticket,
    pub is_new: bool,
    /// The message to append.
    pub message: Message,
    /// Mail to send.
    pub replies: Vec<Reply>,
    /// The outbox row a delivery report says bounced.
    pub bounced_outbox: Option<u64>,
    /// An agent's `#merge`: move this ticket's messages into the survivor (which exists: see [`Known`]).
    pub merge: Option<Merge>,
    /// Other tickets this change updates, stored in the same transaction: the closed ticket a late reply
    /// opened this one from, now linked back to it.
    pub linked: Vec<Ticket>,
}

impl Plan {
    /// A change to an existing ticket: one message, these replies, nothing else.
    fn update(ticket: Ticket, message: Message, replies: Vec<Reply>) -> Decision {
        Decision::Store(Box::new(Plan {
            ticket,
            is_new: false,
            message,
            replies,
            bounced_outbox: None,
            merge: None,
            linked: Vec::new(),
        }))
    }
}

/// The decision on one mail.
#[derive(Clone, Debug)]
pub enum Decision {
    /// Already stored: change nothing, acknowledge the source.
    Duplicate(TicketId),
    /// Store this.
    Store(Box<Plan>),
}

/// Decide what a mail that arrived for `region` changes.
pub fn decide(
    mail: &Inbound,
    region: &RegionConfig,
    config: &Config,
    known: &Known,
    delivery: &Delivery,
    now: DateTime<Utc>,
) -> Decision {
    let mut decision = decide_change(mail, region, config, known, delivery, now);
    // Whatever changed, the ticket (and a merge's survivor) leaves with the timers its new state needs.
    if let Decision::Store(plan) = &mut decision {
        super::timers::reschedule(&mut plan.ticket, config);
        if let Some(merge) = &mut plan.merge {
            super::timers::reschedule(&mut merge.survivor, config);
        }
        for other in &mut plan.linked {
            super::timers::reschedule(other, config);
        }
    }
    decision
}

fn decide_change(
    mail: &Inbound,
    region: &RegionConfig,
    config: &Config,
    known: &Known,
    delivery: &Delivery,
    now: DateTime<Utc>,
) -> Decision {
    if let Some(id) = &known.duplicate_of {
        return Decision::Duplicate(id.clone());
    }
    // Card numbers never reach the store, nor the mail relayed to agents or customers.
    let masked;
    let mail = match config
        .privacy
        .mask_card_numbers
        .then(|| mask_card_numbers(mail))
        .flatten()
    {
        Some(m) => {
            masked = m;
            &masked
        }
        None => mail,
    };
    let sender = mail.from.as_ref().map(|m| m.address.as_str());
    let automatic = classify::automatic(mail, config)
        .or(known.own_message.then_some(classify::Automatic::Loop));
    // The receiving system's spam verdict outranks every other kind but our own mail and a bounce of it.
    let automatic = match automatic {
        Some(classify::Automatic::Loop) => automatic,
        Some(classify::Automatic::Bounce) if known.bounced.is_some() => automatic,
        other => classify::spam(mail, config)
            .map(|_| classify::Automatic::Spam)
            .or(other),
    };
    let mut message = inbound_message(mail, automatic.map(|a| a.as_str()), now);
    message.damage.extend(delivery.damage.iter().cloned());
    // More than one From field: who wrote it is uncertain (mail-parser reads the last), so it joins no
    // ticket and nobody is acknowledged; it is kept, with the damage line `mail::parse` recorded.
    if mail.from_fields > 1 {
        let quiet = Delivery {
            may_acknowledge: false,
            ..delivery.clone()
        };
        return new_ticket(
            mail,
            region,
            config,
            message,
            Vec::new(),
            automatic.is_some(),
            &quiet,
            known.next_number,
            now,
        );
    }
    // A delivery report on our own mail is not a conversation: it is recorded on the ticket that mail
    // belongs to, its outbox row is marked bounced, and nothing is answered.
    if automatic == Some(classify::Automatic::Bounce) {
        if let Some((ticket, outbox_id)) = &known.bounced {
            let mut ticket = ticket.clone();
            ticket.updated_at = now;
            return Decision::Store(Box::new(Plan {
                ticket,
                is_new: false,
                message,
                replies: Vec::new(),
                bounced_outbox: Some(*outbox_id),
                merge: None,
                linked: Vec::new(),
            }));
        }
    }
    if let Some(ticket) = staff_auto_reply(mail, automatic, known, config) {
        // An auto-responder on the desk's side (an agent's out-of-office, the notification list's) answered
        // staff mail: kept on the ticket it is about, as automatic mail, and nothing is sent. Staff mail is
        // not bounded by the per-recipient limits, so this is what keeps it out of a loop.
        let mut ticket = ticket.clone();
        ticket.updated_at = now;
        if message.auto.is_none() {
            message.auto = Some(classify::Automatic::Loop.as_str().to_string());
        }
        return Plan::update(ticket, message, Vec::new());
    }

    // With `[agents] trust_authserv_id`, mail from an agent address that fails verification is an
    // outsider's in every respect: it joins no ticket it is not the requester or a participant of.
    let verified = agent_verified(mail, config);
    match thread::choose(sender, verified, &known.tagged, &known.referenced, config) {
        Thread::Existing(id) => {
            let Some(existing) = known
                .tagged
                .iter()
                .chain(&known.referenced)
                .find(|t| t.id == id)
            else {
                // `choose` only returns ids of the tickets it was given.
                return new_ticket(
                    mail,
                    region,
                    config,
                    message,
                    Vec::new(),
                    automatic.is_some(),
                    delivery,
                    known.next_number,
                    now,
                );
            };
            let mut ticket = existing.clone();
            let sender = sender.unwrap_or_default();
            let ticket_region = config.region(&ticket.region).unwrap_or(region);
            if ticket_region.is_agent(sender) && automatic.is_none() && verified {
                return agent_mail(
                    mail,
                    ticket,
                    ticket_region,
                    message,
                    known.merge_target.as_ref(),
                    config,
                    now,
                );
            }
            let mut replies = Vec::new();
            // A rating in answer to the satisfaction survey is recorded and reopens nothing.
            if automatic.is_none()
                && ticket.status == Status::Resolved
                && ticket.survey_sent
                && ticket.satisfaction.is_none()
            {
                if let Some((score, comment)) =
                    super::timers::survey_answer(&strip_quoted(&mail.text))
                {
                    ticket.satisfaction = Some(super::ticket::Satisfaction {
                        score,
                        comment,
                        at: now,
                    });
                    ticket.last_customer_message_id = Some(mail.message_id.clone());
                    remember_thread_id(&mut ticket, &mail.message_id);
                    ticket.updated_at = now;
                    return Plan::update(ticket, message, replies);
                }
            }
            // A reply's To/Cc join only when the mail is authenticated: anyone can write the requester's
            // From. Otherwise the agents are told whom it named, and add them with `#cc add`.
            let not_added = if mail_authenticated(mail, config) {
                add_participants(&mut ticket, mail, config);
                Vec::new()
            } else {
                joining(&ticket, mail, config)
            };
            // A spam ticket stays quiet until an agent releases it.
            if automatic.is_none() && ticket.status != Status::Spam {
                let next =
                    lifecycle::next(ticket.status, Event::CustomerReply).unwrap_or(ticket.status);
                ticket.change_status(next, now);
                replies.extend(notify_agents(
                    mail,
                    &ticket,
                    ticket_region,
                    config,
                    false,
                    not_added,
                ));
            }
            ticket.last_customer_message_id = Some(mail.message_id.clone());
            remember_thread_id(&mut ticket, &mail.message_id);
            ticket.updated_at = now;
            Plan::update(ticket, message, replies)
        }
        Thread::New { links } => {
            // A late reply to a closed ticket: the new ticket links to it, it links back, and the agents
            // are told which ticket it was and what they last answered there.
            let earlier = links.first().and_then(|id| {
                known
                    .tagged
                    .iter()
                    .chain(&known.referenced)
                    .find(|t| t.id == *id)
            });
            let mut decision = new_ticket(
                mail,
                region,
                config,
                message,
                links.clone(),
                automatic.is_some(),
                delivery,
                known.next_number,
                now,
            );
            if let (Decision::Store(plan), Some(old)) = (&mut decision, earlier) {
                let last_answer = known
                    .last_answers
                    .iter()
                    .find(|(id, _)| *id == old.id)
                    .map(|(_, text)| {
                        embedded_text(
                            text,
                            config.outbound.embed_max_bytes,
                            region.locale,
                            &old.id,
                        )
                    })
                    .unwrap_or_default();
                for reply in &mut plan.replies {
                    if let Content::AgentNotify { earlier, .. } = &mut reply.content {
                        *earlier = Some(EarlierTicket {
                            id: old.id.clone(),
                            last_answer: last_answer.clone(),
                        });
                    }
                }
                let mut old = old.clone();
                if !old.links.contains(&plan.ticket.id) {
                    old.links.push(plan.ticket.id.clone());
                }
                plan.linked.push(old);
            }
            decision
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn new_ticket(
    mail: &Inbound,
    region: &RegionConfig,
    config: &Config,
    message: Message,
    links: Vec<TicketId>,
    automatic: bool,
    delivery: &Delivery,
    next_number: Option<u64>,
    now: DateTime<Utc>,
) -> Decision {
    let (requester, requester_name) = mail
        .from
        .as_ref()
        .map(|m| (m.address.clone(), m.name.clone()))
        .unwrap_or_default();
    let locale = classify::customer_locale(mail, region.locale);
    let mut ticket = Ticket {
        priority: if automatic {
            Priority::Low
        } else {
            classify::priority(mail)
        },
        category: classify::category(mail, &config.category_rules),
        subject: thread::clean_subject(&mail.subject),
        requester_name,
        last_customer_message_id: Some(mail.message_id.clone()),
        links,
        ..Ticket::new(
            TicketId::new(&region.code, next_number.unwrap_or(region.first_number)),
            &requester,
            locale,
            now,
        )
    };
    add_participants(&mut ticket, mail, config);
    remember_thread_id(&mut ticket, &mail.message_id);
    // Spam is stored aside: no acknowledgement (backscatter to a forged sender), no notification.
    if message.auto.as_deref() == Some(classify::Automatic::Spam.as_str()) {
        let spam = lifecycle::next(ticket.status, Event::Set(Status::Spam)).unwrap_or(Status::Spam);
        ticket.change_status(spam, now);
    }
    let mut replies = Vec::new();
    let answerable = !automatic
        && delivery.may_acknowledge
        && !requester.is_empty()
        && !config.is_own_address(&requester)
        && !region.is_agent(&requester);
    if answerable {
        // An oversized mail was stored truncated: its acknowledgement says so and asks for another way.
        let content = match delivery.oversize {
            Some((size, limit)) => Content::Oversize {
                size_mb: megabytes(size),
                limit_mb: megabytes(limit),
            },
            None => Content::Ack {
                needs: needs(&ticket.category, mail),
            },
        };
        replies.push(Reply::new(vec![requester], locale, content));
    }
    if !automatic {
        replies.extend(notify_agents(
            mail,
            &ticket,
            region,
            config,
            true,
            Vec::new(),
        ));
    }
    Decision::Store(Box::new(Plan {
        ticket,
        is_new: true,
        message,
        replies,
        bounced_outbox: None,
        merge: None,
        linked: Vec::new(),
    }))
}

/// Whether `address` (lower-cased) belongs to the desk's people: an agent of any region, a region's
/// `agent_notify`, or an `escalate_to` address.
fn is_staff_address(address: &str, config: &Config) -> bool {
    let is = |a: &Option<String>| {
        a.as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case(address))
    };
    is(&config.timers.escalate_to)
        || config
            .region
            .iter()
            .any(|r| r.is_agent(address) || is(&r.agent_notify) || is(&r.timers.escalate_to))
}

/// The ticket an auto-responder on the desk's side answered, if this mail is one: it answers staff mail
/// postdesk sent and is not a person who may write to that ticket (it is automatic, or from someone else:
/// a member of the notification list), or it is automatic mail from a staff address about a ticket it
/// names.
fn staff_auto_reply<'a>(
    mail: &Inbound,
    automatic: Option<classify::Automatic>,
    known: &'a Known,
    config: &Config,
) -> Option<&'a Ticket> {
    let sender = mail.from.as_ref().map(|m| m.address.as_str()).unwrap_or("");
    if let Some(ticket) = &known.staff_mail_answered {
        // A person who may write to the ticket is not a machine: an agent acting, a customer the
        // notification was forwarded to.
        let person = automatic.is_none()
            && (ticket.admits_customer(sender)
                || config
                    .region(&ticket.region)
                    .is_some_and(|r| r.is_agent(sender))
                    && agent_verified(mail, config));
        if !person {
            return Some(ticket);
        }
    }
    if automatic.is_some() && !sender.is_empty() && is_staff_address(sender, config) {
        return known.tagged.iter().chain(&known.referenced).next();
    }
    None
}

/// Whether mail from an agent address may act as the agent: always, unless `[agents] trust_authserv_id`
/// asks for the mail to be authenticated (see [`mail_authenticated`]).
pub fn agent_verified(mail: &Inbound, config: &Config) -> bool {
    config.agents.trust_authserv_id.is_none() || mail_authenticated(mail, config)
}

/// Whether the receiving server named by `[agents] trust_authserv_id` vouches for the domain of the
/// mail's From address (its topmost `Authentication-Results`, aligned: see [`crate::mail::authres`]).
/// Never without that setting: nothing is authenticated then.
fn mail_authenticated(mail: &Inbound, config: &Config) -> bool {
    let (Some(server), Some(from)) = (&config.agents.trust_authserv_id, &mail.from) else {
        return false;
    };
    let domain = from.address.rsplit_once('@').map_or("", |(_, d)| d);
    agent::authenticated(&mail.auto.authentication_results, server, domain)
}

/// The notification to the region's agents (and the assignee) of a new ticket or a customer's reply.
fn notify_agents(
    mail: &Inbound,
    ticket: &Ticket,
    region: &RegionConfig,
    config: &Config,
    is_new: bool,
    not_added: Vec<String>,
) -> Option<Reply> {
    let to = region.agent_recipients(ticket.assignee.as_ref());
    if to.is_empty() {
        return None;
    }
    let attachments = mail
        .attachments
        .iter()
        .map(|a| AttachmentNote {
            filename: safe_filename(&a.filename),
            size_kb: (a.data.len() as u64).div_ceil(1024),
        })
        .collect();
    Some(Reply::new(
        to,
        region.locale,
        Content::AgentNotify {
            is_new,
            customer_text: embedded_text(
                &strip_quoted(&mail.text),
                config.outbound.embed_max_bytes,
                region.locale,
                &ticket.id,
            ),
            attachments,
            not_added,
            earlier: None,
        },
    ))
}

/// What automatic mail embeds of a customer's `text`: all of it up to `max_bytes`; past that, the first
/// `max_bytes` cut at a line (at a character when a line is longer than half of that), then a line in
/// `locale` saying how much more there is and where to read it. One huge mail must not make every mail
/// built from it huge: rendering, encoding and sending them all cost what they embed (issue 13).
pub fn embedded_text(text: &str, max_bytes: usize, locale: Locale, ticket: &TicketId) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if let Some(nl) = text[..end].rfind('\n') {
        if nl >= end / 2 {
            end = nl + 1;
        }
    }
    let kept = text[..end].trim_end();
    let more_kb = (text.len() - kept.len()).div_ceil(1024);
    let note = match locale {
        Locale::En => format!(
            "[… {more_kb} KB more of the customer's text is not shown here: the whole mail is in the ticket (`postdesk tickets show {ticket}`)]"
        ),
        Locale::Ja => format!(
            "［…以下 {more_kb} KB は省略しました。全文はチケットにあります（`postdesk tickets show {ticket}`）］"
        ),
        Locale::Ko => format!(
            "[… 나머지 {more_kb} KB는 생략되었습니다. 전체 내용은 티켓에 있습니다 (`postdesk tickets show {ticket}`)]"
        ),
        Locale::Zh => format!(
            "[… 其余 {more_kb} KB 未显示，全文见工单（`postdesk tickets show {ticket}`）]"
        ),
    };
    format!("{kept}\n\n{note}\n")
}

/// Mail from one of the ticket's agents: commands, an internal note, or a reply relayed to the customer.
fn agent_mail(
    mail: &Inbound,
    mut ticket: Ticket,
    region: &RegionConfig,
    mut message: Message,
    merge_target: Option<&Ticket>,
    config: &Config,
    now: DateTime<Utc>,
) -> Decision {
    let show_name = config.agents.show_name;
    let sender = mail
        .from
        .as_ref()
        .map(|m| m.address.clone())
        .unwrap_or_default();
    // The customer never sees an agent's address; their name only when the config says so.
    let agent_name = match (&mail.from, show_name) {
        (Some(m), true) => m.name.clone(),
        _ => String::new(),
    };
    let parsed_text = strip_quoted(&mail.text);
    let parsed = agent::parse(&parsed_text);
    // The agent's own Message-ID is not remembered for References: it names the agent's host, and what the
    // desk sends customers carries only their ids and ours. The mail still leads to the ticket: its id is
    // indexed with the message.
    ticket.updated_at = now;
    // What the ticket stays if a command is bad: none of the mail's commands apply then.
    let unchanged = ticket.clone();
    let mut errors: Vec<agent::BadLine> = parsed.errors.clone();
    let previous = ticket.status;
    let mut status_set = false;
    let mut merge_into: Option<&Ticket> = None;
    let text_lines: Vec<&str> = parsed_text.lines().collect();
    for (command, &line) in parsed.commands.iter().zip(&parsed.lines) {
        // A refused command is reported like a bad line: its line, as the agent typed it, and why.
        let mut refuse = |reason: agent::Problem| {
            errors.push(agent::BadLine {
                line,
                text: text_lines
                    .get(line.saturating_sub(1))
                    .map(|l| l.trim().to_string())
                    .unwrap_or_default(),
                reason,
            })
        };
        match command {
            agent::Command::Status(s) => match lifecycle::next(ticket.status, Event::Set(*s)) {
                Ok(next) => {
                    ticket.change_status(next, now);
                    status_set = true;
                }
                Err(lifecycle::LifecycleError::Unchanged(_)) => status_set = true,
                Err(lifecycle::LifecycleError::BackToNew) => refuse(agent::Problem::BackToNew),
            },
            agent::Command::Priority(p) => ticket.priority = *p,
            agent::Command::Category(c) => ticket.category = c.clone(),
            agent::Command::Assign(None) => ticket.assignee = Some(sender.clone()),
            agent::Command::Assign(Some(a)) if region.is_agent(a) => {
                ticket.assignee = Some(a.clone())
            }
            agent::Command::Assign(Some(_)) => refuse(agent::Problem::NotAnAgent {
                region: region.code.clone(),
            }),
            agent::Command::Note => {}
            agent::Command::CcAdd(a) if config.is_own_address(a) => {
                refuse(agent::Problem::OwnAddress)
            }
            agent::Command::CcAdd(a) if region.is_agent(a) => {
                refuse(agent::Problem::AgentNotCopied {
                    region: region.code.clone(),
                })
            }
            agent::Command::CcAdd(a) => {
                if *a != ticket.requester && !ticket.participants.contains(a) {
                    ticket.participants.push(a.clone());
                }
            }
            agent::Command::CcRemove(a) if *a == ticket.requester => {
                refuse(agent::Problem::RequesterNotRemovable)
            }
            agent::Command::CcRemove(a) => match ticket.participants.iter().position(|p| p == a) {
                Some(i) => {
                    ticket.participants.remove(i);
                }
                None => refuse(agent::Problem::NotAParticipant),
            },
            agent::Command::Merge(id) => match merge_target.filter(|t| t.id == *id) {
                _ if *id == ticket.id => refuse(agent::Problem::MergeIntoItself),
                Some(t) if t.merged_into.is_some() || t.status == Status::Closed => {
                    refuse(agent::Problem::MergeTargetClosed)
                }
                Some(t) if t.region != ticket.region => refuse(agent::Problem::MergeOtherRegion {
                    region: t.region.clone(),
                }),
                Some(t) => merge_into = Some(t),
                None => refuse(agent::Problem::NoSuchTicket),
            },
        }
    }
    errors.sort_by_key(|e| e.line);
    message.direction = Direction::Note;
    if !errors.is_empty() {
        // Nothing reaches the customer; the agent learns which line was wrong. The mail is kept as a note.
        return Plan::update(
            unchanged,
            message,
            vec![Reply::new(
                vec![sender],
                region.locale,
                Content::CommandError {
                    // In the region's language, like the rest of the error mail, each with its line.
                    errors: errors
                        .iter()
                        .map(|e| e.describe(region.locale))
                        .collect::<Vec<_>>()
                        .join("\n"),
                },
            )],
        );
    }
    if let Some(survivor) = merge_into {
        // The messages move; nothing is sent. The agent's mail stays as a note, and goes along.
        let merge = merge(&mut ticket, survivor, &mail.message_id, now);
        return Decision::Store(Box::new(Plan {
            ticket,
            is_new: false,
            message,
            replies: Vec::new(),
            bounced_outbox: None,
            merge: Some(merge),
            linked: Vec::new(),
        }));
    }
    let customers = ticket.customers();
    let mut replies = Vec::new();
    // Nothing is sent about a spam ticket (an agent's `#spam`, or one not released yet).
    let relay = !parsed.is_note()
        && !parsed.body.trim().is_empty()
        && !customers.is_empty()
        && ticket.status != Status::Spam;
    if relay && !status_set {
        // A plain answer asks for nothing: the ticket is in progress, waiting for nobody (no reminders).
        // The agent makes it wait for the customer with `#ask` or `#status pending`.
        let next = lifecycle::next(ticket.status, Event::AgentAnswer).unwrap_or(ticket.status);
        ticket.change_status(next, now);
    }
    // Resolving sends the survey inside the one mail that says so (the answer or the notice), never as a
    // mail of its own.
    let survey = ticket.status == Status::Resolved
        && previous != Status::Resolved
        && super::timers::survey(&mut ticket, &region.timers);
    if relay {
        message.direction = Direction::Out;
        message.text = parsed.body.clone();
        ticket.first_response_at.get_or_insert(now);
        replies.push(Reply {
            to: customers,
            locale: ticket.locale,
            attachments: message.attachments.clone(),
            content: Content::AgentReply {
                previous,
                body: parsed.body.clone(),
                agent_name,
                asks: status_set && ticket.status == Status::Pending,
                survey,
            },
        });
    } else if lifecycle::tells_customer(previous, ticket.status) && !customers.is_empty() {
        replies.push(Reply::new(
            customers,
            ticket.locale,
            status_content(ticket.status, previous, survey),
        ));
    }
    Plan::update(ticket, message, replies)
}

/// The mail that tells customers of a status change: the resolved notice (with the survey, when it goes
/// out) for a resolved ticket, else the status update.
fn status_content(status: Status, previous: Status, survey: bool) -> Content {
    if status == Status::Resolved {
        Content::Resolved {
            previous,
            auto_resolved: false,
            survey,
        }
    } else {
        Content::StatusChanged { previous }
    }
}

/// Close `ticket` into `survivor` (an agent's `#merge`, checked by the caller): both conversations continue
/// in the survivor, whose Message-IDs, participants and links take in the merged ticket's, and the merged
/// ticket is closed through the lifecycle, so its retention clock starts now.
fn merge(ticket: &mut Ticket, survivor: &Ticket, mail_id: &str, now: DateTime<Utc>) -> Merge {
    let mut survivor = survivor.clone();
    for customer in std::iter::once(&ticket.requester).chain(&ticket.participants) {
        if !customer.is_empty()
            && *customer != survivor.requester
            && !survivor.participants.contains(customer)
        {
            survivor.participants.push(customer.clone());
        }
    }
    for mid in &ticket.thread_ids {
        remember_thread_id(&mut survivor, mid);
    }
    // The agent's `#merge` mail leads to the survivor, but its id (the agent's host) stays out of References.
    let mut message_ids = ticket.thread_ids.clone();
    if !message_ids.iter().any(|m| m == mail_id) {
        message_ids.push(mail_id.to_string());
    }
    survivor.links.push(ticket.id.clone());
    survivor.updated_at = now;
    ticket.links.push(survivor.id.clone());
    ticket.merged_into = Some(survivor.id.clone());
    let closed = lifecycle::next(ticket.status, Event::Merged).unwrap_or(Status::Closed);
    ticket.change_status(closed, now);
    Merge {
        survivor,
        message_ids,
    }
}

/// What an acknowledgement asks for, by category, when the customer's mail does not give it yet.
fn needs(category: &str, mail: &Inbound) -> Needs {
    let no_number = !classify::has_reference_number(&mail.text)
        && !classify::has_reference_number(&mail.subject);
    Needs {
        order_number: matches!(category, "payment" | "order") && no_number,
        payment_details: category == "payment",
        device_details: category == "fault",
        account_id: category == "account",
    }
}

/// Bytes in megabytes, one decimal, for people.
fn megabytes(bytes: u64) -> f64 {
    (bytes as f64 / 1_048_576.0 * 10.0).round() / 10.0
}

/// The mail with card numbers masked in its text and subject (see [`crate::mail::redact`]); `None` when it
/// has none, so the common case copies nothing.
fn mask_card_numbers(mail: &Inbound) -> Option<Inbound> {
    use crate::mail::redact::mask_card_numbers as mask;
    use std::borrow::Cow;
    let (text, subject) = (mask(&mail.text), mask(&mail.subject));
    if matches!((&text, &subject), (Cow::Borrowed(_), Cow::Borrowed(_))) {
        return None;
    }
    let mut m = mail.clone();
    m.text = text.into_owned();
    m.subject = subject.into_owned();
    Some(m)
}

/// Build the stored form of an incoming mail.
fn inbound_message(mail: &Inbound, auto: Option<&str>, now: DateTime<Utc>) -> Message {
    let list = |v: &[crate::mail::Mailbox]| v.iter().map(|m| m.address.clone()).collect::<Vec<_>>();
    Message {
        direction: Direction::In,
        from: mail
            .from
            .as_ref()
            .map(|m| m.address.clone())
            .unwrap_or_default(),
        from_name: mail
            .from
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        to: list(&mail.to),
        cc: list(&mail.cc),
        date: mail.date.unwrap_or(now),
        received_at: now,
        message_id: mail.message_id.clone(),
        in_reply_to: mail.in_reply_to.clone(),
        references: mail.references.clone(),
        subject: mail.subject.clone(),
        text: mail.text.clone(),
        attachments: mail
            .attachments
            .iter()
            .map(|a| AttachmentRef {
                filename: safe_filename(&a.filename),
                content_type: a.content_type.clone(),
                size: a.data.len() as u64,
                sha256: a.sha256.clone(),
            })
            .collect(),
        auto: auto.map(str::to_string),
        damage: mail.damage.clone(),
        content_hash: mail.content_hash.clone(),
        raw_sha256: (!mail.damage.is_empty()).then(|| mail.raw_sha256.clone()),
        outbox_id: None,
    }
}

/// The mail's To/Cc that are not yet the ticket's people, without postdesk's own addresses, agents and the
/// requester: whom [`add_participants`] adds.
fn joining(ticket: &Ticket, mail: &Inbound, config: &Config) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in mail.to.iter().chain(&mail.cc) {
        let a = &m.address;
        let is_agent = config.region(&ticket.region).is_some_and(|r| r.is_agent(a));
        if !a.is_empty()
            && *a != ticket.requester
            && !config.is_own_address(a)
            && !is_agent
            && !ticket.participants.contains(a)
            && !out.contains(a)
        {
            out.push(a.clone());
        }
    }
    out
}

/// Add the mail's To/Cc to the ticket's participants (see [`joining`]).
fn add_participants(ticket: &mut Ticket, mail: &Inbound, config: &Config) {
    let new = joining(ticket, mail, config);
    ticket.participants.extend(new);
}

/// Keep the Message-IDs of the conversation for References, bounded (first one kept: it roots the thread).
pub fn remember_thread_id(ticket: &mut Ticket, id: &str) {
    if ticket.thread_ids.iter().any(|t| t == id) {
        return;
    }
    if ticket.thread_ids.len() >= MAX_THREAD_IDS {
        ticket.thread_ids.remove(1);
    }
    ticket.thread_ids.push(id.to_string());
}

/// Decide an explicit status change (CLI `tickets set-status`): the updated ticket, timers scheduled, and
/// the status update to send to the customers. (Agents change the status by mail: see [`agent`].)
pub fn set_status(
    ticket: &Ticket,
    status: Status,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<(Ticket, Vec<Reply>), lifecycle::LifecycleError> {
    let next = lifecycle::next(ticket.status, Event::Set(status))?;
    let mut t = ticket.clone();
    let previous = t.status;
    t.change_status(next, now);
    t.updated_at = now;
    let survey = t.status == Status::Resolved
        && config
            .region(&t.region)
            .is_some_and(|region| super::timers::survey(&mut t, &region.timers));
    let to = t.customers();
    let replies = if to.is_empty() || !lifecycle::tells_customer(previous, t.status) {
        Vec::new()
    } else {
        vec![Reply::new(
            to,
            t.locale,
            status_content(t.status, previous, survey),
        )]
    };
    super::timers::reschedule(&mut t, config);
    Ok((t, replies))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{TestConfig, TestRegion};
    use crate::desk::ticket::Locale;
    use crate::mail::parse::parse;
    use std::path::Path;

    fn config() -> Config {
        TestConfig::new(Path::new("/tmp/x"))
            .region(TestRegion::jp().agents(&["agent@example.com"]))
            .parse()
    }

    fn mail(s: &str) -> Inbound {
        parse(s.as_bytes(), Locale::Ja).unwrap()
    }

    const ACK: &Delivery = &Delivery {
        may_acknowledge: true,
        damage: None,
        oversize: None,
    };

    #[test]
    fn new_mail_makes_a_ticket_and_an_ack_in_the_customers_language() {
        let c = config();
        let m = mail("From: Kim <kim@example.co.kr>\r\nTo: support-jp@example.com, friend@example.co.kr\r\nSubject: 주문 문의\r\nMessage-ID: <1@k>\r\n\r\n주문한 상품이 아직 도착하지 않았습니다.\r\n");
        let Decision::Store(plan) =
            decide(&m, &c.region[0], &c, &Known::default(), ACK, Utc::now())
        else {
            panic!()
        };
        assert!(plan.is_new);
        assert_eq!(plan.ticket.requester, "kim@example.co.kr");
        assert_eq!(plan.ticket.participants, vec!["friend@example.co.kr"]);
        assert_eq!(plan.ticket.locale, Locale::Ko);
        assert_eq!(plan.ticket.status, Status::New);
        assert_eq!(plan.replies.len(), 1);
        assert_eq!(plan.replies[0].event(), ReplyEvent::Ack);
        assert_eq!(plan.replies[0].locale, Locale::Ko);
    }

    #[test]
    fn a_new_ticket_takes_the_number_it_is_given() {
        let c = config();
        let m = mail("From: a@example.com\r\nSubject: x\r\n\r\nbody text\r\n");
        let decide_with = |next_number| {
            let known = Known {
                next_number,
                ..Known::default()
            };
            let Decision::Store(plan) = decide(&m, &c.region[0], &c, &known, ACK, Utc::now())
            else {
                panic!()
            };
            plan.ticket.id
        };
        assert_eq!(decide_with(Some(1042)), TicketId::new("JP", 1042));
        assert_eq!(
            decide_with(None),
            TicketId::new("JP", c.region[0].first_number),
            "a region's first ticket"
        );
    }

    #[test]
    fn a_new_ticket_leaves_with_its_timers() {
        let c = config();
        let m = mail("From: a@example.com\r\nSubject: x\r\n\r\nbody text\r\n");
        let now = Utc::now();
        let Decision::Store(plan) = decide(&m, &c.region[0], &c, &Known::default(), ACK, now)
        else {
            panic!()
        };
        assert_eq!(
            plan.ticket.timers,
            super::super::timers::schedule(&plan.ticket, &c.timers)
        );
        assert!(!plan.ticket.timers.is_empty());
    }

    #[test]
    fn an_answer_to_staff_mail_from_outside_the_ticket_sends_nothing() {
        let c = config();
        let t = existing(Status::Open);
        // A member of the notification list, no automatic headers: only the answered notification tells.
        let m = mail("From: member@example.com\r\nSubject: Out of office\r\nMessage-ID: <o@m>\r\n\r\nI am away.\r\n");
        let known = Known {
            staff_mail_answered: Some(t.clone()),
            referenced: vec![t.clone()],
            ..Known::default()
        };
        let Decision::Store(plan) = decide(&m, &c.region[0], &c, &known, ACK, Utc::now()) else {
            panic!()
        };
        assert!(!plan.is_new);
        assert_eq!(plan.ticket.id, t.id);
        assert_eq!(plan.ticket.status, Status::Open);
        assert!(plan.replies.is_empty());
        assert_eq!(plan.message.auto.as_deref(), Some("loop"));
        // The agent answering it is an agent acting; the customer it was forwarded to is a customer.
        for from in ["agent@example.com", "a@example.com"] {
            let m = mail(&format!(
                "From: {from}\r\nSubject: Re: [JP-1000] x\r\n\r\nThe parcel left today.\r\n"
            ));
            let known = Known {
                staff_mail_answered: Some(t.clone()),
                tagged: vec![t.clone()],
                ..Known::default()
            };
            let Decision::Store(plan) = decide(&m, &c.region[0], &c, &known, ACK, Utc::now())
            else {
                panic!()
            };
            assert!(plan.message.auto.is_none(), "{from}");
        }
    }

    #[test]
    fn card_numbers_are_masked_in_the_stored_message_unless_configured_off() {
        let raw = "From: a@example.com\r\nSubject: refund 4111 1111 1111 1111\r\nMessage-ID: <c@a>\r\n\r\nMy card 5555555555554444 was charged twice on 2026-11-20, order 1234567.\r\n";
        let m = mail(raw);
        let c = config();
        let Decision::Store(plan) =
            decide(&m, &c.region[0], &c, &Known::default(), ACK, Utc::now())
        else {
            panic!()
        };
        assert!(
            plan.message
                .text
                .contains("************4444 was charged twice on 2026-11-20, order 1234567."),
            "{}",
            plan.message.text
        );
        assert_eq!(plan.message.subject, "refund **** **** **** 1111");
        assert_eq!(plan.ticket.subject, "refund **** **** **** 1111");
        // The agents' notification carries the masked text too.
        let notify = plan
            .replies
            .iter()
            .find(|r| r.event() == ReplyEvent::AgentNotify);
        assert!(notify.is_none_or(|r| !format!("{:?}", r.content).contains("5555555555554444")));
        // The content hash is the mail's, so a re-delivery is still recognised.
        assert_eq!(plan.message.content_hash, m.content_hash);
        let off = TestConfig::new(Path::new("/tmp/x"))
            .table("[privacy]\nmask_card_numbers = false")
            .region(TestRegion::jp())
            .parse();
        let Decision::Store(plan) =
            decide(&m, &off.region[0], &off, &Known::default(), ACK, Utc::now())
        else {
            panic!()
        };
        assert!(plan.message.text.contains("5555555555554444"));
    }

    #[test]
    fn machines_get_no_ack() {
        let c = config();
        for h in [
            "Auto-Submitted: auto-replied",
            "Precedence: bulk",
            "List-Id: <l.example.com>",
        ] {
            let m = mail(&format!(
                "From: a@example.com\r\n{h}\r\nSubject: x\r\n\r\nbody text here\r\n"
            ));
            let Decision::Store(plan) =
                decide(&m, &c.region[0], &c, &Known::default(), ACK, Utc::now())
            else {
                panic!()
            };
            assert!(plan.replies.is_empty(), "{h}");
            assert!(plan.message.auto.is_some(), "{h}");
        }
        let own = mail("From: support-jp@example.com\r\nSubject: x\r\n\r\nbody\r\n");
        let Decision::Store(plan) =
            decide(&own, &c.region[0], &c, &Known::default(), ACK, Utc::now())
        else {
            panic!()
        };
        assert!(plan.replies.is_empty());
    }

    #[test]
    fn our_own_mail_coming_back_is_a_loop() {
        let c = config();
        let m = mail("From: someone@example.com\r\nSubject: [JP-1000] x\r\n\r\nforwarded back\r\n");
        let known = Known {
            own_message: true,
            ..Known::default()
        };
        let Decision::Store(plan) = decide(&m, &c.region[0], &c, &known, ACK, Utc::now()) else {
            panic!()
        };
        assert!(plan.replies.is_empty());
        assert_eq!(plan.message.auto.as_deref(), Some("loop"));
    }

    #[test]
    fn old_mail_on_first_import_gets_no_ack() {
        let c = config();
        let m = mail("From: a@example.com\r\nSubject: x\r\n\r\nbody text\r\n");
        let Decision::Store(plan) = decide(
            &m,
            &c.region[0],
            &c,
            &Known::default(),
            &Delivery {
                may_acknowledge: false,
                damage: None,
                oversize: None,
            },
            Utc::now(),
        ) else {
            panic!()
        };
        assert!(plan.replies.is_empty());
    }

    #[test]
    fn duplicate_changes_nothing() {
        let c = config();
        let m = mail("From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n");
        let known = Known {
            duplicate_of: Some(TicketId::new("JP", 1000)),
            ..Known::default()
        };
        assert!(matches!(
            decide(&m, &c.region[0], &c, &known, ACK, Utc::now()),
            Decision::Duplicate(_)
        ));
    }

    fn existing(status: Status) -> Ticket {
        let c = config();
        let m = mail("From: a@example.com\r\nSubject: x\r\nMessage-ID: <0@a>\r\n\r\nbody text\r\n");
        let Decision::Store(plan) =
            decide(&m, &c.region[0], &c, &Known::default(), ACK, Utc::now())
        else {
            panic!()
        };
        let mut t = plan.ticket;
        t.id.number = 1000;
        t.status = status;
        t
    }

    #[test]
    fn customer_reply_reopens_and_joins() {
        let c = config();
        let t = existing(Status::Pending);
        let m = mail("From: a@example.com\r\nSubject: Re: [JP-1000] x\r\nMessage-ID: <1@a>\r\n\r\nhere it is\r\n");
        let known = Known {
            tagged: vec![t],
            ..Known::default()
        };
        let Decision::Store(plan) = decide(&m, &c.region[0], &c, &known, ACK, Utc::now()) else {
            panic!()
        };
        assert!(!plan.is_new);
        assert_eq!(plan.ticket.id.number, 1000);
        assert_eq!(plan.ticket.status, Status::Open);
        assert!(plan.replies.is_empty());
        assert_eq!(plan.ticket.thread_ids, vec!["0@a", "1@a"]);
    }

    fn agent_says(t: &Ticket, body: &str) -> Plan {
        let c = config();
        let m = mail(&format!(
            "From: agent@example.com\r\nSubject: Re: [JP-1000] x\r\n\r\n{body}\r\n"
        ));
        let known = Known {
            tagged: vec![t.clone()],
            ..Known::default()
        };
        let Decision::Store(plan) = decide(&m, &c.region[0], &c, &known, ACK, Utc::now()) else {
            panic!()
        };
        *plan
    }

    #[test]
    fn an_agent_reply_is_relayed_and_waits_for_the_customer() {
        let t = existing(Status::New);
        // Issue 14: waiting for the customer is the agent's choice (`#ask`); a plain answer asks nothing
        // (see `a_plain_answer_asks_for_nothing_and_sends_no_reminder`).
        let plan = agent_says(
            &t,
            "#ask\r\nCould you send the order number?\r\n\r\nOn Mon, Customer wrote:\r\n> help",
        );
        assert_eq!(plan.ticket.status, Status::Pending);
        assert_eq!(plan.message.direction, Direction::Out);
        assert_eq!(plan.replies.len(), 1);
        assert_eq!(plan.replies[0].event(), ReplyEvent::AgentReply);
        assert_eq!(plan.replies[0].to, vec!["a@example.com"]);
        let Content::AgentReply { body, .. } = &plan.replies[0].content else {
            panic!()
        };
        assert_eq!(body, "Could you send the order number?");
    }

    #[test]
    fn commands_set_fields_and_are_not_relayed() {
        let t = existing(Status::Open);
        let plan = agent_says(&t, "#status resolved\r\n#priority urgent\r\n#assign me\r\n#category payment\r\n\r\nRefund done.");
        assert_eq!(plan.ticket.status, Status::Resolved);
        assert_eq!(plan.ticket.priority, Priority::Urgent);
        assert_eq!(plan.ticket.assignee.as_deref(), Some("agent@example.com"));
        assert_eq!(plan.ticket.category, "payment");
        let Content::AgentReply { body, .. } = &plan.replies[0].content else {
            panic!()
        };
        assert_eq!(body, "Refund done.");
    }

    #[test]
    fn with_a_trusted_server_only_authenticated_agent_mail_acts() {
        let mut c = config();
        c.agents.trust_authserv_id = Some("mx.example.com".into());
        let t = existing(Status::Open);
        let run = |headers: &str| {
            let m = mail(&format!("{headers}From: agent@example.com\r\nSubject: Re: [JP-1000] x\r\n\r\n#status closed\r\nbye\r\n"));
            let known = Known {
                tagged: vec![t.clone()],
                ..Known::default()
            };
            let Decision::Store(plan) = decide(&m, &c.region[0], &c, &known, ACK, Utc::now())
            else {
                panic!()
            };
            plan
        };
        let forged = run("");
        // Issue 13, finding 6: an outsider's mail, so a ticket of its own (before: stored into JP-1000,
        // which stayed open); either way the command is text.
        assert!(forged.is_new);
        assert_eq!(
            forged.ticket.status,
            Status::New,
            "a forged agent's command is text"
        );
        assert_eq!(forged.message.direction, Direction::In);
        assert!(forged
            .replies
            .iter()
            .all(|r| r.event() != ReplyEvent::AgentReply));
        let real =
            run("Authentication-Results: mx.example.com; dkim=pass header.d=example.com\r\n");
        assert_eq!(real.ticket.status, Status::Closed);
        assert_eq!(real.replies[0].event(), ReplyEvent::AgentReply);
    }

    #[test]
    fn a_note_never_reaches_the_customer() {
        let t = existing(Status::Open);
        let plan = agent_says(&t, "#note\r\nCustomer seems to be a reseller.");
        assert_eq!(plan.message.direction, Direction::Note);
        assert!(plan.replies.is_empty());
        assert_eq!(plan.ticket.status, Status::Open);
        // A note that changes the status tells the customer only the status.
        let plan = agent_says(&t, "#note\r\n#status pending\r\ninternal");
        assert_eq!(plan.replies.len(), 1);
        assert_eq!(plan.replies[0].event(), ReplyEvent::StatusChanged);
    }

    #[test]
    fn a_bad_command_goes_back_to_the_agent_only() {
        let t = existing(Status::Open);
        let plan = agent_says(&t, "#priority urgent\r\n#status done\r\nHello customer");
        assert_eq!(plan.ticket.status, Status::Open);
        assert_eq!(
            plan.ticket.priority,
            Priority::Normal,
            "no command of a mail with a bad one applies"
        );
        assert_eq!(plan.message.direction, Direction::Note);
        assert_eq!(plan.replies.len(), 1);
        assert_eq!(plan.replies[0].event(), ReplyEvent::CommandError);
        assert_eq!(plan.replies[0].to, vec!["agent@example.com"]);
    }

    #[test]
    fn a_customer_writing_a_command_changes_nothing() {
        let c = config();
        let t = existing(Status::Pending);
        let m = mail("From: a@example.com\r\nSubject: Re: [JP-1000] x\r\n\r\n#status closed\r\n");
        let known = Known {
            tagged: vec![t],
            ..Known::default()
        };
        let Decision::Store(plan) = decide(&m, &c.region[0], &c, &known, ACK, Utc::now()) else {
            panic!()
        };
        assert_eq!(
            plan.ticket.status,
            Status::Open,
            "a customer reply reopens; the text is just text"
        );
        assert_eq!(plan.message.direction, Direction::In);
    }

    #[test]
    fn set_status_queues_an_update_to_requester_and_participants() {
        let mut t = existing(Status::Open);
        t.participants = vec!["cc@example.com".into()];
        let (t2, replies) = set_status(&t, Status::Resolved, &config(), Utc::now()).unwrap();
        assert_eq!(t2.status, Status::Resolved);
        assert_eq!(replies[0].to, vec!["a@example.com", "cc@example.com"]);
        assert_eq!(replies[0].content.previous_status(), Some(Status::Open));
        assert!(set_status(&t2, Status::Resolved, &config(), Utc::now()).is_err());
        // Issue 14: one mail, the resolved notice with the survey inside (before: a status update and a
        // survey of its own).
        assert_eq!(
            replies.iter().map(|r| &r.content).collect::<Vec<_>>(),
            vec![&Content::Resolved {
                previous: Status::Open,
                auto_resolved: false,
                survey: true
            }],
            "resolving sends the survey"
        );
    }

    // Issue 13: who may join a ticket, and which Authentication-Results count.

    fn trusted_config() -> Config {
        let mut c = config();
        c.agents.trust_authserv_id = Some("mx.example.com".into());
        c
    }

    /// `raw` decided against the ticket `t` its subject names.
    fn into_ticket(c: &Config, t: &Ticket, raw: &str) -> Plan {
        let known = Known {
            tagged: vec![t.clone()],
            next_number: Some(t.id.number + 1),
            ..Known::default()
        };
        let Decision::Store(plan) = decide(&mail(raw), &c.region[0], c, &known, ACK, Utc::now())
        else {
            panic!()
        };
        *plan
    }

    #[test]
    fn a_spoofed_reply_cannot_add_a_participant() {
        let mut t = existing(Status::Open);
        // Someone to notify: the assignee.
        t.assignee = Some("agent@example.com".into());
        let spoofed = "From: a@example.com\r\nTo: support-jp@example.com\r\nCc: mallory@evil.example\r\nSubject: Re: [JP-1000] x\r\nMessage-ID: <s@evil>\r\n\r\nplease also answer my colleague\r\n";
        for c in [config(), trusted_config()] {
            let plan = into_ticket(&c, &t, spoofed);
            assert_eq!(plan.ticket.id, t.id, "the requester's reply still threads");
            assert!(
                plan.ticket.participants.is_empty(),
                "{:?}",
                plan.ticket.participants
            );
            // The agents are told whom it named, and how to add them.
            let notify = plan
                .replies
                .iter()
                .find(|r| r.event() == ReplyEvent::AgentNotify)
                .expect("the agents' notification");
            let Content::AgentNotify { not_added, .. } = &notify.content else {
                panic!()
            };
            assert_eq!(not_added, &vec!["mallory@evil.example".to_string()]);
        }
        // Authenticated by the trusted server, aligned with the From domain: the Cc joins.
        let signed = format!(
            "Authentication-Results: mx.example.com; dkim=pass header.d=example.com\r\n{spoofed}"
        );
        let plan = into_ticket(&trusted_config(), &t, &signed);
        assert_eq!(plan.ticket.participants, vec!["mallory@evil.example"]);
        let Some(Content::AgentNotify { not_added, .. }) = plan
            .replies
            .iter()
            .find(|r| r.event() == ReplyEvent::AgentNotify)
            .map(|r| &r.content)
        else {
            panic!()
        };
        assert!(not_added.is_empty());
        // Without a trusted server nothing is authenticated, whatever the mail says.
        let plan = into_ticket(&config(), &t, &signed);
        assert!(plan.ticket.participants.is_empty());
    }

    #[test]
    fn an_agent_adds_a_participant_with_cc_add() {
        let t = existing(Status::Open);
        let plan = agent_says(&t, "#cc add Colleague@Example.com\r\n#note\r\nadded");
        assert_eq!(plan.ticket.participants, vec!["colleague@example.com"]);
        assert!(plan
            .replies
            .iter()
            .all(|r| r.event() != ReplyEvent::CommandError));
        // The next answer reaches them too; `#cc remove` takes them off again.
        let answer = agent_says(&plan.ticket, "The parcel left today.");
        assert_eq!(
            answer.replies[0].to,
            vec!["a@example.com", "colleague@example.com"]
        );
        let removed = agent_says(
            &plan.ticket,
            "#cc remove colleague@example.com\r\n#note\r\nx",
        );
        assert!(removed.ticket.participants.is_empty());
        // What cannot be added or removed is a command error, and nothing applies.
        for bad in [
            "#cc add support-jp@example.com",
            "#cc add agent@example.com",
            "#cc remove a@example.com",
            "#cc remove nobody@example.com",
        ] {
            let plan = agent_says(&t, &format!("{bad}\r\n#note\r\nx"));
            assert_eq!(plan.replies.len(), 1, "{bad}");
            assert_eq!(plan.replies[0].event(), ReplyEvent::CommandError, "{bad}");
            assert_eq!(plan.ticket.participants, t.participants, "{bad}");
        }
    }

    #[test]
    fn a_forged_authentication_results_below_the_real_one_is_ignored() {
        let c = trusted_config();
        let t = existing(Status::Open);
        let plan = into_ticket(&c, &t, "Authentication-Results: mx.example.com; dkim=fail header.d=example.com; spf=fail smtp.mailfrom=agent@example.com\r\nAuthentication-Results: mx.example.com; dkim=pass header.d=example.com\r\nFrom: agent@example.com\r\nSubject: Re: [JP-1000] x\r\n\r\n#status closed\r\n");
        assert_ne!(plan.ticket.status, Status::Closed);
    }

    #[test]
    fn comments_in_authentication_results_are_not_results() {
        let c = trusted_config();
        let t = existing(Status::Open);
        let plan = into_ticket(&c, &t, "Authentication-Results: mx.example.com; dkim=fail ( dkim=pass header.d=example.com ) header.d=evil.example\r\nFrom: agent@example.com\r\nSubject: Re: [JP-1000] x\r\n\r\n#status closed\r\n");
        assert_ne!(plan.ticket.status, Status::Closed);
    }

    #[test]
    fn header_i_alone_does_not_authenticate() {
        let c = trusted_config();
        let t = existing(Status::Open);
        let plan = into_ticket(&c, &t, "Authentication-Results: mx.example.com; dkim=pass header.i=@example.com\r\nFrom: agent@example.com\r\nSubject: Re: [JP-1000] x\r\n\r\n#status closed\r\n");
        assert_ne!(plan.ticket.status, Status::Closed);
    }

    #[test]
    fn unverified_agent_mail_is_an_outsiders_mail() {
        let c = trusted_config();
        let t = existing(Status::Open);
        let plan = into_ticket(&c, &t, "From: agent@example.com\r\nCc: mallory@evil.example\r\nSubject: Re: [JP-1000] x\r\nMessage-ID: <f@evil>\r\n\r\n#status closed\r\n");
        assert!(plan.is_new, "it opens a ticket of its own");
        assert_ne!(plan.ticket.id, t.id);
        assert_eq!(plan.ticket.status, Status::New);
        assert!(
            plan.replies.iter().all(|r| r.event() != ReplyEvent::Ack),
            "no acknowledgement to an agent's address"
        );
    }

    #[test]
    fn two_from_fields_never_thread() {
        let c = config();
        let t = existing(Status::Open);
        let plan = into_ticket(&c, &t, "From: mallory@evil.example\r\nFrom: a@example.com\r\nSubject: Re: [JP-1000] x\r\nMessage-ID: <2f@evil>\r\n\r\nhello\r\n");
        assert!(plan.is_new);
        assert_ne!(plan.ticket.id, t.id);
        assert!(
            plan.message.damage.iter().any(|d| d.contains("From")),
            "{:?}",
            plan.message.damage
        );
        assert!(plan.replies.iter().all(|r| r.event() != ReplyEvent::Ack));
    }

    fn config_notifying(extra: &str) -> Config {
        Config::from_toml(
            &format!("[storage]\npath=\"/tmp/x\"\n[outbound]\ntransport=\"file\"\nfile_dir=\"/tmp/o\"\n{extra}\n[[region]]\ncode=\"JP\"\nlocale=\"ja\"\naddress=\"support-jp@example.com\"\nagents=[\"agent@example.com\"]\nagent_notify=\"jp-agents@example.com\"\n"),
            std::path::Path::new("t"),
        )
        .unwrap()
    }

    fn notified_text(c: &Config, body: &str) -> String {
        let m = mail(&format!(
            "From: a@example.com\r\nSubject: x\r\nMessage-ID: <big@a>\r\n\r\n{body}"
        ));
        let Decision::Store(plan) = decide(&m, &c.region[0], c, &Known::default(), ACK, Utc::now())
        else {
            panic!()
        };
        plan.replies
            .iter()
            .find_map(|r| match &r.content {
                Content::AgentNotify { customer_text, .. } => Some(customer_text.clone()),
                _ => None,
            })
            .expect("a notification")
    }

    #[test]
    fn notifications_embed_at_most_the_configured_text() {
        let line = "注文した商品がまだ届きません。確認をお願いします。\r\n";
        let body = line.repeat((1 << 20) / line.len());
        let c = config_notifying("");
        let text = notified_text(&c, &body);
        assert!(text.len() <= 65536 + 1024, "{} bytes embedded", text.len());
        assert!(text.starts_with("注文した商品"));
        // Cut at a line, and the agents are told, in the region's language, where the rest is.
        assert!(
            text.contains("postdesk tickets show JP-1000"),
            "{}",
            &text[text.len() - 300..]
        );
        let cut = text.rfind("注文した商品").unwrap();
        assert!(
            text[cut..].contains("確認をお願いします。"),
            "cut inside a line"
        );
        // The bound is a setting.
        let c = config_notifying("embed_max_bytes = 4096");
        let text = notified_text(&c, &body);
        assert!(text.len() <= 4096 + 1024, "{} bytes embedded", text.len());
        // Text under the bound is embedded whole, with no note.
        let text = notified_text(&c, "short and sweet\r\n");
        assert_eq!(text.trim_end(), "short and sweet");
    }

    #[test]
    fn agent_message_ids_never_reach_customers() {
        let c = config();
        let t = existing(Status::Open);
        let m = mail("From: agent@example.com\r\nSubject: Re: [JP-1000] x\r\nMessage-ID: <abc@agent-laptop.internal.example.com>\r\n\r\nHere is the answer.\r\n");
        let known = Known {
            tagged: vec![t.clone()],
            ..Known::default()
        };
        let Decision::Store(plan) = decide(&m, &c.region[0], &c, &known, ACK, Utc::now()) else {
            panic!()
        };
        assert_eq!(plan.replies[0].event(), ReplyEvent::AgentReply);
        // What References of mail to the customer is made of: only the customer's and our own ids.
        assert!(
            !plan
                .ticket
                .thread_ids
                .iter()
                .any(|id| id.contains("agent-laptop")),
            "{:?}",
            plan.ticket.thread_ids
        );
        assert_ne!(
            plan.ticket.last_customer_message_id.as_deref(),
            Some("abc@agent-laptop.internal.example.com")
        );
        // Nor through a merge into another ticket.
        let mut other = existing(Status::Open);
        other.id.number = 1001;
        let m = mail("From: agent@example.com\r\nSubject: Re: [JP-1000] x\r\nMessage-ID: <merge@agent-laptop.internal.example.com>\r\n\r\n#merge JP-1001\r\n");
        let known = Known {
            tagged: vec![t],
            merge_target: Some(other),
            ..Known::default()
        };
        let Decision::Store(plan) = decide(&m, &c.region[0], &c, &known, ACK, Utc::now()) else {
            panic!()
        };
        let merge = plan.merge.expect("merged");
        assert!(
            !merge
                .survivor
                .thread_ids
                .iter()
                .any(|id| id.contains("agent-laptop")),
            "{:?}",
            merge.survivor.thread_ids
        );
        // The mail still leads to the survivor.
        assert!(merge
            .message_ids
            .iter()
            .any(|id| id.contains("merge@agent-laptop")));
    }

    // Issue 14, item 3: answers must read right.

    /// `reply` rendered as the customer (or agent) reads it: the text part.
    fn rendered(reply: &Reply, ticket: &Ticket, c: &Config) -> String {
        let r = crate::outbound::render::Renderer::load(None).unwrap();
        let ctx = crate::outbound::render::context(reply, ticket, &c.region[0]);
        r.render(reply.event().as_str(), reply.locale, &ctx)
            .unwrap()
            .text
    }

    #[test]
    fn a_plain_answer_asks_for_nothing_and_sends_no_reminder() {
        let c = config();
        let t = existing(Status::New);
        let plan = agent_says(&t, "We shipped a replacement today.");
        // In progress, answered (the SLA timers stop), waiting for nobody: no reminder is scheduled.
        assert_eq!(plan.ticket.status, Status::Open);
        assert!(plan.ticket.first_response_at.is_some());
        assert!(
            plan.ticket.timers.iter().all(|t| !matches!(
                t.kind,
                crate::desk::ticket::TimerKind::CustomerReminder
                    | crate::desk::ticket::TimerKind::SlaReminder
                    | crate::desk::ticket::TimerKind::SlaBreach
            )),
            "{:?}",
            plan.ticket.timers
        );
        assert_eq!(plan.replies.len(), 1);
        let Content::AgentReply { asks, survey, .. } = &plan.replies[0].content else {
            panic!()
        };
        assert!(!asks && !survey);
        let text = rendered(&plan.replies[0], &plan.ticket, &c);
        assert!(text.contains("replacement today"), "{text}");
        assert!(!text.contains("information requested above"), "{text}");
        // An answer to a ticket already waiting for the customer does not ask again.
        let waiting = existing(Status::Pending);
        let plan = agent_says(&waiting, "Also: the warehouse is closed on Monday.");
        assert_eq!(plan.ticket.status, Status::Pending);
        assert!(
            !rendered(&plan.replies[0], &plan.ticket, &c).contains("information requested above")
        );
        // The agent marks a question: then it waits for the customer, and the mail asks for the reply.
        for marker in ["#ask", "#status pending"] {
            let plan = agent_says(&t, &format!("{marker}\r\nCould you send the order number?"));
            assert_eq!(plan.ticket.status, Status::Pending, "{marker}");
            assert!(plan
                .ticket
                .timers
                .iter()
                .any(|t| t.kind == crate::desk::ticket::TimerKind::CustomerReminder));
            let text = rendered(&plan.replies[0], &plan.ticket, &c);
            assert!(
                text.contains("information requested above"),
                "{marker}: {text}"
            );
        }
        assert!(agent::HELP.contains("#ask"));
    }

    #[test]
    fn resolving_sends_one_mail_with_the_survey() {
        let c = config();
        let automatic = |r: &[Reply]| r.iter().filter(|r| r.event().is_automatic()).count();
        // An agent's answer that resolves: the answer carries the survey.
        let plan = agent_says(&existing(Status::Open), "#status resolved\r\nRefund done.");
        assert_eq!(plan.replies.len(), 1, "{:?}", plan.replies);
        assert!(matches!(
            plan.replies[0].content,
            Content::AgentReply { survey: true, .. }
        ));
        assert!(plan.ticket.survey_sent);
        let text = rendered(&plan.replies[0], &plan.ticket, &c);
        assert!(
            text.contains("Refund done.") && text.contains("from 1 to 5"),
            "{text}"
        );
        // `#status resolved` alone, and the CLI: the resolved notice, with the survey inside.
        let plan = agent_says(&existing(Status::Open), "#status resolved");
        assert_eq!(plan.replies.len(), 1, "{:?}", plan.replies);
        assert!(matches!(
            plan.replies[0].content,
            Content::Resolved { survey: true, .. }
        ));
        let text = rendered(&plan.replies[0], &plan.ticket, &c);
        assert!(text.contains("from 1 to 5"), "{text}");
        let (_, replies) =
            set_status(&existing(Status::Open), Status::Resolved, &c, Utc::now()).unwrap();
        assert_eq!((replies.len(), automatic(&replies)), (1, 1));
        // The survey goes out once: resolving again later sends the notice without it.
        let mut t = existing(Status::Open);
        t.survey_sent = true;
        let (_, replies) = set_status(&t, Status::Resolved, &c, Utc::now()).unwrap();
        assert!(matches!(
            replies[..],
            [Reply {
                content: Content::Resolved { survey: false, .. },
                ..
            }]
        ));
        assert!(!rendered(&replies[0], &t, &c).contains("from 1 to 5"));
    }

    #[test]
    fn a_reply_to_a_closed_ticket_links_both_ways_and_names_the_old_one() {
        let c = TestConfig::new(Path::new("/tmp/x"))
            .region(
                TestRegion::jp()
                    .agents(&["agent@example.com"])
                    .agent_notify("jp-agents@example.com"),
            )
            .parse();
        let old = existing(Status::Closed);
        let m = mail("From: a@example.com\r\nSubject: Re: [JP-1000] x\r\nMessage-ID: <late@a>\r\n\r\nThe replacement broke too.\r\n");
        let known = Known {
            tagged: vec![old.clone()],
            next_number: Some(1001),
            last_answers: vec![(old.id.clone(), "We shipped a replacement today.".into())],
            ..Known::default()
        };
        let Decision::Store(plan) = decide(&m, &c.region[0], &c, &known, ACK, Utc::now()) else {
            panic!()
        };
        assert!(plan.is_new);
        assert_eq!(plan.ticket.id, TicketId::new("JP", 1001));
        assert_eq!(plan.ticket.links, vec![old.id.clone()]);
        // The closed ticket links back, in the same change.
        assert_eq!(plan.linked.len(), 1);
        assert_eq!(plan.linked[0].id, old.id);
        assert_eq!(plan.linked[0].links, vec![plan.ticket.id.clone()]);
        assert_eq!(plan.linked[0].status, Status::Closed);
        // The agents are told which ticket it was and what they last answered.
        let notify = plan
            .replies
            .iter()
            .find(|r| r.event() == ReplyEvent::AgentNotify)
            .expect("the agents' notification");
        let Content::AgentNotify { earlier, .. } = &notify.content else {
            panic!()
        };
        assert_eq!(
            earlier,
            &Some(EarlierTicket {
                id: old.id.clone(),
                last_answer: "We shipped a replacement today.".into()
            })
        );
        let text = rendered(notify, &plan.ticket, &c);
        assert!(text.contains("完了済みのチケット JP-1000"), "{text}");
        assert!(text.contains("We shipped a replacement today."), "{text}");
    }

    #[test]
    fn a_refused_merge_is_explained_in_the_agents_language_with_its_line() {
        let t = existing(Status::Open);
        for (body, line, reason) in [
            (
                "#priority high\r\n#merge JP-4242",
                "2行目",
                "そのチケットはありません",
            ),
            ("#merge JP-1000", "1行目", "自分自身に統合"),
            (
                "#assign me\r\n#priority high\r\n#assign nobody@example.com",
                "3行目",
                "担当者ではありません",
            ),
            ("#status done", "1行目", "指定できません"),
            ("#status new", "1行目", "`new` に戻す"),
        ] {
            let plan = agent_says(&t, body);
            assert_eq!(plan.replies.len(), 1, "{body}");
            let Content::CommandError { errors } = &plan.replies[0].content else {
                panic!("{body}: {:?}", plan.replies)
            };
            assert!(errors.starts_with(line), "{body}: {errors}");
            assert!(errors.contains(reason), "{body}: {errors}");
            assert!(
                !errors.contains("no such ticket") && !errors.contains("line "),
                "{errors}"
            );
        }
        // An English region gets it in English, with the line too.
        let en = TestConfig::new(Path::new("/tmp/x"))
            .region(
                TestRegion::new("JP", "support-jp@example.com")
                    .line("locale = \"en\"")
                    .agents(&["agent@example.com"]),
            )
            .parse();
        let m = mail("From: agent@example.com\r\nSubject: Re: [JP-1000] x\r\n\r\n#priority high\r\n#merge JP-4242\r\n");
        let known = Known {
            tagged: vec![t],
            ..Known::default()
        };
        let Decision::Store(plan) = decide(&m, &en.region[0], &en, &known, ACK, Utc::now()) else {
            panic!()
        };
        let Content::CommandError { errors } = &plan.replies[0].content else {
            panic!()
        };
        assert_eq!(errors, "line 2: #merge JP-4242  (no such ticket)");
    }
}
