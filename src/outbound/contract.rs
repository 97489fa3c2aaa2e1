//! The template contract: which variables each event's templates may use, as types.
//!
//! Every template event ([`TemplateEvent`]: `ack`, `agent_reply`, …) has a context type, a
//! [`TemplateContext`]: [`CommonVars`] (what every event has: the ticket, the region, the labels) and the
//! event's own fields ([`EventVars`]), serialized flat into the JSON object the templates see. Each event has a
//! sample context built from those types ([`TemplateEvent::sample`]), so every field of the type is present in
//! it, and nothing else.
//!
//! A template is held to its event's type in two ways by `Renderer::self_test` (what `check-config` and a
//! reload run): it is rendered with its own event's sample, and [`check`] walks its parsed syntax tree for
//! every variable it names — also in `{{#if}}`/`{{#unless}}`/`{{#each}}`/`{{#with}}` parameters and in
//! branches a sample render never enters, which handlebars' strict mode does not see. So an override that
//! names another event's variable (an `ack` using `{{body}}`) is a config error with the file and the
//! variable, never a mail refused at run time.
//!
//! Names are resolved as handlebars does (without recursive lookup, as the renderer is set up): against the
//! current context, which `{{#each}}` (the item) and `{{#with}}` change and `{{#if}}` does not; `../` goes out
//! one context, `@root` to the top; block parameters (`as |item i|`) are seen from the blocks inside; `@index`,
//! `@first`, `@last` and `@key` only inside `{{#each}}`. Helper names are not variables.

use std::collections::BTreeMap;
use std::fmt;

use handlebars::template::{
    BlockParam, DecoratorTemplate, HelperTemplate, Parameter, TemplateElement,
};
use handlebars::{Path, PathSeg, Template};
use serde::Serialize;
use serde_json::Value;

use crate::desk::ticket::{Locale, Priority, Status};

use super::render::{category_label, priority_label, status_label, REPLY_MARKER};

/// A template event: the `<event>` of `<locale>/<event>.<subject|txt|html>.hbs`. It is the desk's own
/// [`crate::desk::reply::Event`] (one enum for the decision, the outbox row's `kind` and the templates);
/// this module adds what the template contract needs to it.
pub use crate::desk::reply::Event as TemplateEvent;

impl TemplateEvent {
    /// Sample values of the event's own fields.
    pub fn sample_vars(self) -> EventVars {
        match self {
            TemplateEvent::Ack => EventVars::Ack(AckVars {
                needs_order_number: true,
                needs_payment_details: true,
                needs_device_details: false,
                needs_account_id: false,
            }),
            TemplateEvent::Oversize => EventVars::Oversize(OversizeVars {
                size_mb: 31.5,
                limit_mb: 25.0,
            }),
            TemplateEvent::StatusChanged => EventVars::StatusChanged {},
            TemplateEvent::AgentReply => EventVars::AgentReply(AgentReplyVars {
                body: "Thank you for waiting.\nPlease send us the order number.".into(),
                agent_name: "Sample Agent".into(),
                asks: true,
                survey: true,
            }),
            TemplateEvent::CustomerReminder => EventVars::CustomerReminder(CustomerReminderVars {
                reminder_number: 1,
                reminders_total: 2,
                last_reminder: false,
                waiting_days: 2,
            }),
            TemplateEvent::Resolved => EventVars::Resolved(ResolvedVars {
                auto_resolved: true,
                survey: true,
            }),
            TemplateEvent::Closed => EventVars::Closed {},
            TemplateEvent::Survey => EventVars::Survey {},
            TemplateEvent::AgentNotify => EventVars::AgentNotify(AgentNotifyVars {
                is_new: true,
                customer_text: "My order <A-1> has not arrived.".into(),
                // At least one item: the contract of a list's items is read from the sample.
                attachments: vec![
                    AttachmentVars {
                        filename: "photo.jpg".into(),
                        size_kb: 120,
                    },
                    AttachmentVars {
                        filename: "log.txt".into(),
                        size_kb: 3,
                    },
                ],
                not_added: vec!["colleague@example.net".into()],
                earlier_ticket: "JP-998".into(),
                earlier_answer: "The replacement left our warehouse today.".into(),
                reply_marker: REPLY_MARKER.into(),
            }),
            TemplateEvent::SlaReminder => EventVars::SlaReminder(SlaReminderVars {
                due_at: "2026-11-21 18:00 JST".into(),
                minutes_left: 90,
            }),
            TemplateEvent::Escalation => EventVars::Escalation(EscalationVars {
                due_at: "2026-11-21 18:00 JST".into(),
                overdue_minutes: 15,
            }),
            TemplateEvent::CommandError => EventVars::CommandError(CommandErrorVars {
                errors: "line 1: #status done  (\"done\" is not one of: new, open, pending, resolved, closed)"
                    .into(),
                commands_help: crate::desk::agent::HELP.into(),
            }),
        }
    }

    /// The event's sample context in `locale`: what `check-config` renders its templates with.
    pub fn sample(self, locale: Locale) -> Value {
        TemplateContext {
            common: CommonVars::sample(locale),
            vars: self.sample_vars(),
        }
        .to_value()
    }

    /// The shape of the event's context: what [`check`] holds its templates to.
    pub fn shape(self) -> Shape {
        Shape::of(&self.sample(Locale::En))
    }

    /// The names of the event's own variables (beyond [`CommonVars::names`]), lists with their items'
    /// fields: `attachments (each: filename, size_kb)`.
    pub fn own_variables(self) -> Vec<String> {
        describe(&Shape::of(&to_value(&self.sample_vars())))
    }
}

/// What every event's templates have: the ticket, the region, labels in the template's language.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CommonVars {
    /// `JP-1042`.
    pub ticket_id: String,
    /// The ticket's subject (reply prefixes and tags removed).
    pub subject: String,
    pub requester: String,
    /// May be empty.
    pub requester_name: String,
    pub desk_name: String,
    pub support_address: String,
    /// The region's code: `JP`.
    pub region: String,
    /// The first-response target for the ticket's priority, in hours.
    pub response_hours: u64,
    /// Whether the region counts targets in business hours.
    pub business_hours: bool,
    /// `urgent`.
    pub priority: String,
    /// `緊急`: the priority in the template's language.
    pub priority_label: String,
    /// The category's name (`payment`, or a configured one).
    pub category: String,
    /// `お支払い`: a built-in category in the template's language; a configured one as it is named.
    pub category_label: String,
    /// `pending`.
    pub status: String,
    /// The status in the template's language.
    pub status_label: String,
    /// The status before a change (the current one when nothing changed).
    pub previous_status: String,
    pub previous_status_label: String,
    pub status_is_pending: bool,
    pub status_is_resolved: bool,
    pub status_is_closed: bool,
}

impl CommonVars {
    /// Sample values, labels in `locale`.
    pub fn sample(locale: Locale) -> CommonVars {
        CommonVars {
            ticket_id: "JP-1000".into(),
            subject: "Sample <subject> & more".into(),
            requester: "customer@example.com".into(),
            requester_name: "Sample Customer".into(),
            desk_name: "Sample Support".into(),
            support_address: "support@example.com".into(),
            region: "JP".into(),
            response_hours: 24,
            business_hours: false,
            priority: Priority::Normal.as_str().into(),
            priority_label: priority_label(Priority::Normal, locale).into(),
            category: "payment".into(),
            category_label: category_label("payment", locale),
            status: Status::Pending.as_str().into(),
            status_label: status_label(Status::Pending, locale).into(),
            previous_status: Status::Open.as_str().into(),
            previous_status_label: status_label(Status::Open, locale).into(),
            status_is_pending: true,
            status_is_resolved: false,
            status_is_closed: false,
        }
    }

    /// The names of the common variables, in order.
    pub fn names() -> Vec<String> {
        describe(&Shape::of(&to_value(&CommonVars::sample(Locale::En))))
    }
}

/// `ack`: what the acknowledgement asks the customer for, by category.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AckVars {
    pub needs_order_number: bool,
    pub needs_payment_details: bool,
    pub needs_device_details: bool,
    pub needs_account_id: bool,
}

/// `oversize`: the mail's size and the limit, in megabytes (one decimal).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OversizeVars {
    pub size_mb: f64,
    pub limit_mb: f64,
}

/// `agent_reply`: the agent's text and name (empty unless `[agents] show_name`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentReplyVars {
    pub body: String,
    pub agent_name: String,
    /// The agent marked the answer as a question (`#ask`, `#status pending`): ask the customer to reply.
    pub asks: bool,
    /// The answer resolves the ticket: include the satisfaction survey.
    pub survey: bool,
}

/// `customer_reminder`: which reminder this is, of how many, and how long the ticket has waited.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CustomerReminderVars {
    pub reminder_number: u32,
    pub reminders_total: u32,
    pub last_reminder: bool,
    pub waiting_days: i64,
}

/// `resolved`: whether postdesk resolved it (no answer to the last reminder), and whether the notice
/// carries the satisfaction survey.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResolvedVars {
    pub auto_resolved: bool,
    pub survey: bool,
}

/// `agent_notify`: the customer's mail for the agents.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentNotifyVars {
    /// A new ticket, or a reply to one.
    pub is_new: bool,
    /// The customer's text, quoted history removed.
    pub customer_text: String,
    pub attachments: Vec<AttachmentVars>,
    /// Cc/To addresses of the customer's reply that were not made participants (the reply was not
    /// authenticated); an agent adds one with `#cc add <address>`.
    pub not_added: Vec<String>,
    /// A new ticket opened by a reply to a closed one: that ticket's id (empty otherwise).
    pub earlier_ticket: String,
    /// The last answer an agent sent on `earlier_ticket` (empty when none).
    pub earlier_answer: String,
    /// The line above which agents answer.
    pub reply_marker: String,
}

/// One attachment of the customer's mail, in `agent_notify`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttachmentVars {
    pub filename: String,
    pub size_kb: u64,
}

/// `sla_reminder`: the first-response deadline in the region's time, and the minutes left.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SlaReminderVars {
    pub due_at: String,
    pub minutes_left: i64,
}

/// `escalation`: the missed deadline in the region's time, and the minutes since.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EscalationVars {
    pub due_at: String,
    pub overdue_minutes: i64,
}

/// `command_error`: the agent's wrong lines with the reasons, and the command summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CommandErrorVars {
    pub errors: String,
    pub commands_help: String,
}

/// An event's own fields; which variant it is says which event it is.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EventVars {
    Ack(AckVars),
    Oversize(OversizeVars),
    StatusChanged {},
    AgentReply(AgentReplyVars),
    CustomerReminder(CustomerReminderVars),
    Resolved(ResolvedVars),
    Closed {},
    Survey {},
    AgentNotify(AgentNotifyVars),
    SlaReminder(SlaReminderVars),
    Escalation(EscalationVars),
    CommandError(CommandErrorVars),
}

impl EventVars {
    /// The event these are the fields of.
    pub fn event(&self) -> TemplateEvent {
        match self {
            EventVars::Ack(_) => TemplateEvent::Ack,
            EventVars::Oversize(_) => TemplateEvent::Oversize,
            EventVars::StatusChanged {} => TemplateEvent::StatusChanged,
            EventVars::AgentReply(_) => TemplateEvent::AgentReply,
            EventVars::CustomerReminder(_) => TemplateEvent::CustomerReminder,
            EventVars::Resolved(_) => TemplateEvent::Resolved,
            EventVars::Closed {} => TemplateEvent::Closed,
            EventVars::Survey {} => TemplateEvent::Survey,
            EventVars::AgentNotify(_) => TemplateEvent::AgentNotify,
            EventVars::SlaReminder(_) => TemplateEvent::SlaReminder,
            EventVars::Escalation(_) => TemplateEvent::Escalation,
            EventVars::CommandError(_) => TemplateEvent::CommandError,
        }
    }
}

/// The whole context of one mail: serialized flat, the common fields and the event's side by side.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TemplateContext {
    #[serde(flatten)]
    pub common: CommonVars,
    #[serde(flatten)]
    pub vars: EventVars,
}

impl TemplateContext {
    pub fn event(&self) -> TemplateEvent {
        self.vars.event()
    }

    /// The JSON object the templates see.
    pub fn to_value(&self) -> Value {
        to_value(self)
    }
}

/// These types are plain structs with string keys: serializing them cannot fail.
fn to_value(v: &impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// The shape of a context: which names exist and what is under them.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// A string, number, boolean or null: nothing under it.
    Scalar,
    /// A list whose items have this shape (numeric path segments and `{{#each}}` reach them).
    List(Box<Shape>),
    Object(BTreeMap<String, Shape>),
    /// Not known (an empty list's items, a dynamic value): everything under it is accepted.
    Any,
}

impl Shape {
    /// The shape of a sample value; a list's items are the union of the sample's items.
    pub fn of(value: &Value) -> Shape {
        match value {
            Value::Object(map) => {
                Shape::Object(map.iter().map(|(k, v)| (k.clone(), Shape::of(v))).collect())
            }
            Value::Array(items) => Shape::List(Box::new(
                items
                    .iter()
                    .map(Shape::of)
                    .reduce(Shape::union)
                    .unwrap_or(Shape::Any),
            )),
            _ => Shape::Scalar,
        }
    }

    fn union(self, other: Shape) -> Shape {
        match (self, other) {
            (Shape::Object(mut a), Shape::Object(b)) => {
                for (k, v) in b {
                    let merged = match a.remove(&k) {
                        Some(old) => old.union(v),
                        None => v,
                    };
                    a.insert(k, merged);
                }
                Shape::Object(a)
            }
            (Shape::List(a), Shape::List(b)) => Shape::List(Box::new(a.union(*b))),
            (a, b) if a == b => a,
            _ => Shape::Any,
        }
    }

    /// What is at `names` under this shape; `None` when a name does not exist.
    fn at(&self, names: &[&str]) -> Option<Shape> {
        let Some((first, rest)) = names.split_first() else {
            return Some(self.clone());
        };
        match self {
            Shape::Object(map) => map.get(*first)?.at(rest),
            Shape::List(item) if first.parse::<usize>().is_ok() => item.at(rest),
            Shape::Any => Some(Shape::Any),
            _ => None,
        }
    }
}

/// An object shape's names, for people: `attachments (each: filename, size_kb)`.
fn describe(shape: &Shape) -> Vec<String> {
    let Shape::Object(map) = shape else {
        return Vec::new();
    };
    map.iter()
        .map(|(name, s)| match s {
            Shape::List(item) if matches!(**item, Shape::Object(_)) => {
                format!("{name} (each: {})", describe(item).join(", "))
            }
            _ => name.clone(),
        })
        .collect()
}

/// The helpers handlebars registers itself: names a template calls, not variables.
pub const BUILTIN_HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte",
    "and", "or", "not", "len",
];

/// Something a template names that its event's context does not have.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// A variable (as written: `body`, `attachments.0.name`, `../subject`) that is not in the context.
    UnknownVariable(String),
    /// A helper call (`{{foo bar}}`, `{{#foo}}`) to a name that is not a helper.
    UnknownHelper(String),
    /// A partial (`{{> name}}`) that is not a template.
    UnknownPartial(String),
    /// `@index`, `@key`, `@first`, `@last` where no `{{#each}}` defines it.
    OutsideEach(String),
    /// A name inside `{{#each}}`/`{{#with}}` that the block's context (the item) lacks but the template's
    /// context has: handlebars looks it up in the item only, so it must be written `@root.name`.
    OnlyOutside(String),
}

/// A problem and the line of the template it is on (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub problem: Problem,
    pub line: Option<usize>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = match self.line {
            Some(line) => format!(" on line {line}"),
            None => String::new(),
        };
        match &self.problem {
            Problem::UnknownVariable(v) => write!(f, "variable `{v}`{line}"),
            Problem::UnknownHelper(h) => write!(f, "helper `{h}`{line} (not a helper)"),
            Problem::UnknownPartial(p) => write!(f, "partial `{p}`{line} (no such template)"),
            Problem::OutsideEach(v) => write!(f, "`{v}`{line} outside an {{{{#each}}}} block"),
            Problem::OnlyOutside(v) => write!(
                f,
                "variable `{v}`{line} inside a block, where names are the item's (write `@root.{v}`)"
            ),
        }
    }
}

/// What a template names that its context does not have, each problem once (at its first line), in order.
///
/// `context` is the shape of the template's context ([`TemplateEvent::shape`]); `helpers` the names of the
/// registered helpers (at least [`BUILTIN_HELPERS`]); `partials` finds a template `{{> name}}` includes.
pub fn check<'a>(
    template: &'a Template,
    context: &Shape,
    helpers: &[&str],
    partials: &dyn Fn(&str) -> Option<&'a Template>,
) -> Vec<Finding> {
    let mut walker = Walker {
        helpers,
        partials,
        inline: BTreeMap::new(),
        frames: vec![Frame {
            this: context.clone(),
            params: Vec::new(),
            each: None,
        }],
        findings: Vec::new(),
        depth: 0,
    };
    walker.template(template, None);
    let mut seen = std::collections::BTreeSet::new();
    walker
        .findings
        .into_iter()
        .filter(|f| seen.insert(f.problem.clone()))
        .collect()
}

/// One handlebars block context: what a relative name resolves against.
struct Frame {
    this: Shape,
    /// Block parameters (`as |item i|`) defined here.
    params: Vec<(String, Shape)>,
    /// For an `{{#each}}` frame: whether it iterates an object (so `@key` exists) or a list.
    each: Option<EachOver>,
}

#[derive(Clone, Copy, PartialEq)]
enum EachOver {
    List,
    Object,
    Unknown,
}

/// How deep partials may include partials before the walk stops (a partial including itself).
const MAX_PARTIAL_DEPTH: usize = 8;

struct Walker<'a, 'h> {
    helpers: &'h [&'h str],
    partials: &'h dyn Fn(&str) -> Option<&'a Template>,
    /// `{{#*inline "name"}}` partials defined so far.
    inline: BTreeMap<String, &'a Template>,
    /// Innermost last; the first is the template's whole context.
    frames: Vec<Frame>,
    findings: Vec<Finding>,
    depth: usize,
}

impl<'a> Walker<'a, '_> {
    /// Walk `t`; inside a partial, `at_line` is the including line (the partial's own lines are another file).
    fn template(&mut self, t: &'a Template, at_line: Option<usize>) {
        for (i, element) in t.elements.iter().enumerate() {
            let line = at_line.or_else(|| t.mapping.get(i).map(|m| m.0));
            self.element(element, line, at_line);
        }
    }

    fn element(&mut self, e: &'a TemplateElement, line: Option<usize>, at_line: Option<usize>) {
        match e {
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                self.expression(h, line)
            }
            TemplateElement::HelperBlock(h) => self.block(h, line, at_line),
            TemplateElement::DecoratorExpression(d) | TemplateElement::DecoratorBlock(d) => {
                self.decorator(d, line, at_line)
            }
            TemplateElement::PartialExpression(d) | TemplateElement::PartialBlock(d) => {
                self.partial(d, line, at_line)
            }
            _ => {}
        }
    }

    fn report(&mut self, problem: Problem, line: Option<usize>) {
        self.findings.push(Finding { problem, line });
    }

    fn is_helper(&self, name: &str) -> bool {
        self.helpers.contains(&name)
    }

    /// `{{x}}`, `{{{x}}}`, `{{helper a b=c}}`, and a subexpression's inside.
    fn expression(&mut self, h: &'a HelperTemplate, line: Option<usize>) {
        let name_only = !h.block && h.params.is_empty() && h.hash.is_empty();
        if name_only {
            match &h.name {
                // `{{len}}` calls the helper `len`: handlebars looks the raw name up as a helper first.
                Parameter::Path(p) if self.is_helper(raw(p)) => {}
                Parameter::Path(p) => {
                    self.path(p, line);
                }
                Parameter::Subexpression(s) => self.subexpression(s.as_element(), line),
                Parameter::Name(n) if !self.is_helper(n) => {
                    self.report(Problem::UnknownHelper(n.clone()), line)
                }
                _ => {}
            }
        } else {
            self.helper_name(&h.name, line);
            self.arguments(&h.params, &h.hash, line);
        }
    }

    fn subexpression(&mut self, e: &'a TemplateElement, line: Option<usize>) {
        if let TemplateElement::Expression(h) = e {
            self.expression(h, line);
        }
    }

    fn helper_name(&mut self, name: &'a Parameter, line: Option<usize>) {
        match name {
            Parameter::Name(n) if !self.is_helper(n) => {
                self.report(Problem::UnknownHelper(n.clone()), line)
            }
            Parameter::Path(p) if !self.is_helper(raw(p)) => {
                self.report(Problem::UnknownHelper(raw(p).to_string()), line)
            }
            Parameter::Subexpression(s) => self.subexpression(s.as_element(), line),
            _ => {}
        }
    }

    fn arguments(
        &mut self,
        params: &'a [Parameter],
        hash: &'a std::collections::HashMap<String, Parameter>,
        line: Option<usize>,
    ) {
        for p in params {
            self.argument(p, line);
        }
        // In key order, so the findings come out the same each time.
        let mut keys: Vec<&String> = hash.keys().collect();
        keys.sort();
        for k in keys {
            if let Some(p) = hash.get(k) {
                self.argument(p, line);
            }
        }
    }

    /// A helper's argument; its shape when it is a variable that exists.
    fn argument(&mut self, p: &'a Parameter, line: Option<usize>) -> Option<Shape> {
        match p {
            Parameter::Path(path) => self.path(path, line),
            Parameter::Subexpression(s) => {
                self.subexpression(s.as_element(), line);
                Some(Shape::Any)
            }
            _ => Some(Shape::Scalar),
        }
    }

    /// `{{#helper …}}…{{else}}…{{/helper}}`: `each` and `with` open a context for their block, other
    /// helpers (`if`, `unless`) render theirs in the current one; `{{else}}` is always in the current one.
    fn block(&mut self, h: &'a HelperTemplate, line: Option<usize>, at_line: Option<usize>) {
        self.helper_name(&h.name, line);
        let name = match &h.name {
            Parameter::Name(n) => n.as_str(),
            _ => "",
        };
        // The first argument is checked (and its shape read) once, with the rest.
        let first = h.params.first().map(|p| self.argument(p, line));
        if let Some(rest) = h.params.get(1..) {
            self.arguments(rest, &h.hash, line);
        }
        // An argument that does not exist was reported: what is under it is not reported again.
        let first = first.flatten().unwrap_or(Shape::Any);
        let frame = match name {
            "each" => {
                let (item, over, key) = match first {
                    Shape::List(item) => (*item, EachOver::List, Shape::Scalar),
                    Shape::Object(_) => (Shape::Any, EachOver::Object, Shape::Scalar),
                    _ => (Shape::Any, EachOver::Unknown, Shape::Scalar),
                };
                Some(Frame {
                    params: block_params(h.block_param.as_ref(), item.clone(), key),
                    this: item,
                    each: Some(over),
                })
            }
            "with" => Some(Frame {
                params: block_params(h.block_param.as_ref(), first.clone(), Shape::Scalar),
                this: first,
                each: None,
            }),
            _ => None,
        };
        if let Some(t) = &h.template {
            let pushed = frame.map(|f| self.frames.push(f)).is_some();
            self.template(t, at_line);
            if pushed {
                self.frames.pop();
            }
        }
        if let Some(t) = &h.inverse {
            self.template(t, at_line);
        }
    }

    fn decorator(&mut self, d: &'a DecoratorTemplate, line: Option<usize>, at_line: Option<usize>) {
        self.arguments(&d.params, &d.hash, line);
        let inline_name = match (d.name.as_name(), d.params.first()) {
            (Some("inline"), Some(Parameter::Literal(Value::String(n)))) => Some(n.clone()),
            _ => None,
        };
        match (inline_name, &d.template) {
            // An inline partial is checked where it is used, in that context.
            (Some(n), Some(t)) => {
                self.inline.insert(n, t);
            }
            (None, Some(t)) => self.template(t, at_line),
            _ => {}
        }
    }

    /// `{{> name [context] [k=v]}}`: the partial is walked in the context it gets.
    fn partial(&mut self, d: &'a DecoratorTemplate, line: Option<usize>, at_line: Option<usize>) {
        let first = d.params.first().map(|p| self.argument(p, line));
        if let Some(rest) = d.params.get(1..) {
            self.arguments(rest, &d.hash, line);
        }
        let name = match &d.name {
            Parameter::Name(n) => Some(n.trim_matches(['[', ']', '\'']).to_string()),
            Parameter::Path(p) => Some(raw(p).to_string()),
            Parameter::Subexpression(s) => {
                self.subexpression(s.as_element(), line);
                None
            }
            _ => None,
        };
        let target = name
            .as_deref()
            .and_then(|n| self.inline.get(n).copied().or_else(|| (self.partials)(n)));
        match (target, name) {
            (Some(t), _) if self.depth < MAX_PARTIAL_DEPTH => {
                let frame = match (first.flatten(), d.hash.is_empty()) {
                    (Some(this), _) => Some(Frame {
                        this,
                        params: Vec::new(),
                        each: None,
                    }),
                    (None, false) => Some(Frame {
                        this: with_keys(self.current().this.clone(), d.hash.keys()),
                        params: Vec::new(),
                        each: None,
                    }),
                    (None, true) => None,
                };
                let pushed = frame.map(|f| self.frames.push(f)).is_some();
                self.depth += 1;
                self.template(t, at_line.or(line));
                self.depth -= 1;
                if pushed {
                    self.frames.pop();
                }
            }
            (Some(_), _) => {}
            // `{{#> missing}}fallback{{/missing}}` renders the fallback.
            (None, _) if d.template.is_some() => {}
            (None, Some(n)) if n != "@partial-block" => {
                self.report(Problem::UnknownPartial(n), line)
            }
            _ => {}
        }
        if let Some(t) = &d.template {
            self.template(t, at_line);
        }
    }

    fn current(&self) -> &Frame {
        // The root frame is never popped.
        &self.frames[self.frames.len() - 1]
    }

    /// Check a variable; its shape when it exists.
    fn path(&mut self, p: &'a Path, line: Option<usize>) -> Option<Shape> {
        let found = match p {
            Path::Relative((segs, _)) => self.relative(segs),
            Path::Local((level, name, _)) => {
                let frame = self.frames.iter().rev().nth(*level);
                let ok = match (frame.and_then(|f| f.each), name.as_str()) {
                    (Some(_), "index" | "first" | "last") => true,
                    (Some(over), "key") => over != EachOver::List,
                    _ => false,
                };
                if !ok {
                    self.report(Problem::OutsideEach(raw(p).to_string()), line);
                    return None;
                }
                Some(Shape::Scalar)
            }
        };
        if found.is_none() {
            let problem = match p {
                Path::Relative((segs, raw))
                    if self.frames.len() > 1
                        && segs.iter().all(|s| matches!(s, PathSeg::Named(_)))
                        && self.frames[0].this.at(&named(segs)).is_some() =>
                {
                    Problem::OnlyOutside(raw.clone())
                }
                _ => Problem::UnknownVariable(raw(p).to_string()),
            };
            self.report(problem, line);
        }
        found
    }

    /// Resolve a relative path as handlebars does: `@root`, `../` (beyond the top: the current context, as
    /// handlebars falls back), block parameters by their first name, else the current context.
    fn relative(&self, segs: &[PathSeg]) -> Option<Shape> {
        let (mut ups, mut from_root) = (0, false);
        let mut names: Vec<&str> = Vec::new();
        for seg in segs {
            match seg {
                PathSeg::Named(n) => names.push(n),
                // `Rule` is private to handlebars; its Debug name is the grammar's rule name.
                PathSeg::Ruled(rule) if names.is_empty() => match format!("{rule:?}").as_str() {
                    "path_root" => from_root = true,
                    "path_up" => ups += 1,
                    _ => {}
                },
                _ => {}
            }
        }
        if let Some(first) = names.first().filter(|_| !from_root) {
            let param = self
                .frames
                .iter()
                .rev()
                .find_map(|f| f.params.iter().find(|(n, _)| n == first));
            if let Some((_, shape)) = param {
                return shape.at(&names[1..]);
            }
        }
        let frame = if from_root {
            &self.frames[0]
        } else {
            self.frames
                .iter()
                .rev()
                .nth(ups)
                .unwrap_or_else(|| self.current())
        };
        frame.this.at(&names)
    }
}

fn named(segs: &[PathSeg]) -> Vec<&str> {
    segs.iter()
        .filter_map(|s| match s {
            PathSeg::Named(n) => Some(n.as_str()),
            _ => None,
        })
        .collect()
}

/// The raw text of a path, as written in the template.
fn raw(p: &Path) -> &str {
    match p {
        Path::Relative((_, raw)) | Path::Local((_, _, raw)) => raw,
    }
}

fn block_params(bp: Option<&BlockParam>, item: Shape, key: Shape) -> Vec<(String, Shape)> {
    let name = |p: &Parameter| p.as_name().map(str::to_string);
    match bp {
        Some(BlockParam::Single(p)) => name(p).map(|n| vec![(n, item)]).unwrap_or_default(),
        Some(BlockParam::Pair((p, k))) => [(name(p), item), (name(k), key)]
            .into_iter()
            .filter_map(|(n, s)| n.map(|n| (n, s)))
            .collect(),
        _ => Vec::new(),
    }
}

/// A context with a partial's `k=v` names added.
fn with_keys<'k>(shape: Shape, keys: impl Iterator<Item = &'k String>) -> Shape {
    match shape {
        Shape::Object(mut map) => {
            for k in keys {
                map.insert(k.clone(), Shape::Any);
            }
            Shape::Object(map)
        }
        other => other,
    }
}

/// A template that names what its event's context does not have, for `check-config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The file, as the admin knows it: the override's path, or the shipped template's name.
    pub file: String,
    pub event: TemplateEvent,
    pub findings: Vec<Finding>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let findings: Vec<String> = self.findings.iter().map(Finding::to_string).collect();
        write!(
            f,
            "template {} uses what event `{}` does not have: {}.",
            self.file,
            self.event,
            findings.join(", ")
        )?;
        if self.findings.iter().any(|x| {
            matches!(
                x.problem,
                Problem::UnknownVariable(_) | Problem::OnlyOutside(_)
            )
        }) {
            let own = self.event.own_variables();
            write!(
                f,
                " The `{}` templates may use {}, and what every event has: {}. Use only those (inside \
                 {{{{#each list}}}} a name is the item's; `../name` is outside), or put the text in the \
                 template of an event that has the variable.",
                self.event,
                if own.is_empty() {
                    "nothing of their own".to_string()
                } else {
                    own.join(", ")
                },
                CommonVars::names().join(", ")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(source: &str, context: serde_json::Value) -> Vec<Problem> {
        let t = Template::compile(source).unwrap();
        check(&t, &Shape::of(&context), BUILTIN_HELPERS, &|_| None)
            .into_iter()
            .map(|f| f.problem)
            .collect()
    }

    fn var(v: &str) -> Problem {
        Problem::UnknownVariable(v.to_string())
    }

    #[test]
    fn a_plain_variable_is_found_or_reported() {
        let ctx = serde_json::json!({"ticket_id": "JP-1"});
        assert_eq!(
            problems("{{ticket_id}} {{{ticket_id}}}", ctx.clone()),
            vec![]
        );
        assert_eq!(problems("Hi {{body}}", ctx.clone()), vec![var("body")]);
        assert_eq!(problems("{{{body}}} {{&body}}", ctx), vec![var("body")]);
    }

    #[test]
    fn a_nested_path_is_followed() {
        let ctx = serde_json::json!({"a": {"b": 1}, "list": [{"x": 1}], "s": "text"});
        assert_eq!(
            problems("{{a.b}} {{a/b}} {{list.0.x}}", ctx.clone()),
            vec![]
        );
        assert_eq!(
            problems("{{a.c}} {{s.length}} {{list.0.y}}", ctx),
            vec![var("a.c"), var("s.length"), var("list.0.y")]
        );
    }

    #[test]
    fn if_and_unless_on_a_missing_key_are_reported_as_are_their_branches() {
        let ctx = serde_json::json!({"subject": "s"});
        assert_eq!(
            problems(
                "{{#if body}}x{{/if}}{{#unless agent_name}}y{{/unless}}{{#if subject}}{{due_at}}{{else}}{{minutes_left}}{{/if}}",
                ctx.clone()
            ),
            vec![var("body"), var("agent_name"), var("due_at"), var("minutes_left")]
        );
        assert_eq!(
            problems("{{#if subject}}a{{else if body}}b{{/if}}", ctx),
            vec![var("body")]
        );
    }

    #[test]
    fn each_resolves_names_against_the_item() {
        let ctx =
            serde_json::json!({"ticket_id": "1", "attachments": [{"filename": "a", "size_kb": 1}]});
        assert_eq!(
            problems(
                "{{#each attachments}}{{filename}} {{this.size_kb}} {{@index}} {{@first}} {{this}}{{/each}}",
                ctx.clone()
            ),
            vec![]
        );
        // Without recursive lookup, an outer name is not seen from inside the item: strict mode fails on it.
        assert_eq!(
            problems(
                "{{#each attachments}}{{ticket_id}} {{name}}{{/each}}",
                ctx.clone()
            ),
            vec![Problem::OnlyOutside("ticket_id".into()), var("name")]
        );
        assert_eq!(
            problems(
                "{{#each files}}{{name}}{{else}}{{ticket_id}}{{/each}}",
                ctx.clone()
            ),
            vec![var("files")]
        );
        assert_eq!(
            problems("{{#each attachments}}{{@key}}{{/each}} {{@index}}", ctx),
            vec![
                Problem::OutsideEach("@key".into()),
                Problem::OutsideEach("@index".into())
            ]
        );
    }

    #[test]
    fn parent_paths_root_and_block_params() {
        let ctx = serde_json::json!({"ticket_id": "1", "attachments": [{"filename": "a"}], "a": {"b": 1}});
        assert_eq!(
            problems(
                "{{#each attachments}}{{../ticket_id}} {{@root.ticket_id}}{{#with ../a}}{{b}} {{../../ticket_id}}{{/with}}{{/each}}",
                ctx.clone()
            ),
            vec![]
        );
        assert_eq!(
            problems(
                "{{#each attachments}}{{../filename}} {{../body}}{{/each}}",
                ctx.clone()
            ),
            vec![var("../filename"), var("../body")]
        );
        assert_eq!(
            problems(
                "{{#each attachments as |file i|}}{{#with ../a}}{{file.filename}} {{i}} {{b}}{{/with}}{{file.size}}{{/each}}",
                ctx.clone()
            ),
            vec![var("file.size")]
        );
        assert_eq!(
            problems("{{#with a as |x|}}{{x.b}} {{x.c}}{{/with}}", ctx),
            vec![var("x.c")]
        );
    }

    #[test]
    fn helper_calls_are_not_variables_but_their_arguments_are() {
        let ctx = serde_json::json!({"a": 1, "list": [1]});
        assert_eq!(
            problems(
                "{{len list}} {{#if (eq a 1)}}x{{/if}} {{#if (and a (not a))}}y{{/if}} {{lookup list 0}} {{log a level=\"warn\"}}",
                ctx.clone()
            ),
            vec![]
        );
        assert_eq!(
            problems("{{#if (eq body 1)}}x{{/if}} {{len missing}}", ctx.clone()),
            vec![var("body"), var("missing")]
        );
        assert_eq!(
            problems("{{shout a}} {{#loud}}x{{/loud}}", ctx),
            vec![
                Problem::UnknownHelper("shout".into()),
                Problem::UnknownHelper("loud".into())
            ]
        );
    }

    #[test]
    fn partials_are_checked_in_the_context_they_get() {
        let ctx = serde_json::json!({"ticket_id": "1"});
        let inline = "{{#*inline \"sig\"}}{{ticket_id}} {{body}}{{/inline}}{{> sig}}";
        assert_eq!(problems(inline, ctx.clone()), vec![var("body")]);
        assert_eq!(
            problems("{{> footer}}", ctx.clone()),
            vec![Problem::UnknownPartial("footer".into())]
        );
        let footer = Template::compile("{{desk}} {{ticket_id}}").unwrap();
        let t = Template::compile("{{> footer desk=ticket_id}}").unwrap();
        let found = check(&t, &Shape::of(&ctx), BUILTIN_HELPERS, &|n| {
            (n == "footer").then_some(&footer)
        });
        assert_eq!(found, vec![]);
    }

    #[test]
    fn findings_say_the_line_once_per_problem() {
        let t = Template::compile("Hi\n{{body}}\n{{#if x}}\n{{body}}{{/if}}").unwrap();
        let found = check(&t, &TemplateEvent::Ack.shape(), BUILTIN_HELPERS, &|_| None);
        assert_eq!(
            found,
            vec![
                Finding {
                    problem: var("body"),
                    line: Some(2)
                },
                Finding {
                    problem: var("x"),
                    line: Some(3)
                }
            ]
        );
        assert_eq!(found[0].to_string(), "variable `body` on line 2");
    }

    #[test]
    fn every_event_has_its_own_context_flat_beside_the_common_one() {
        for event in TemplateEvent::ALL {
            assert_eq!(event.as_str().parse::<TemplateEvent>(), Ok(event));
            assert_eq!(event.sample_vars().event(), event);
            let sample = event.sample(Locale::Ja);
            let map = sample.as_object().unwrap();
            for name in CommonVars::names() {
                assert!(map.contains_key(&name), "{event}: {name}");
            }
        }
        assert!("nope".parse::<TemplateEvent>().is_err());
        let ack = TemplateEvent::Ack.sample(Locale::En);
        assert_eq!(ack["needs_order_number"], serde_json::json!(true));
        assert!(ack.get("body").is_none());
        assert_eq!(
            TemplateEvent::AgentNotify.own_variables(),
            vec![
                "attachments (each: filename, size_kb)",
                "customer_text",
                "earlier_answer",
                "earlier_ticket",
                "is_new",
                "not_added",
                "reply_marker"
            ]
        );
        assert!(TemplateEvent::Closed.own_variables().is_empty());
        assert_eq!(
            TemplateEvent::AgentReply.sample(Locale::En)["body"],
            serde_json::json!("Thank you for waiting.\nPlease send us the order number.")
        );
    }

    #[test]
    fn the_path_rules_handlebars_names_are_the_ones_read_here() {
        // `relative` reads `../` and `@root` by the Debug names of handlebars' private grammar rules: if an
        // upgrade renamed them, this fails instead of every `../x` silently resolving against the item.
        let ctx = serde_json::json!({"top": 1, "list": [{"x": 1}]});
        assert_eq!(
            problems(
                "{{#each list}}{{../top}}{{@root.top}}{{/each}}",
                ctx.clone()
            ),
            vec![]
        );
        assert_eq!(
            problems("{{#each list}}{{../x}}{{@root.x}}{{/each}}", ctx),
            vec![var("../x"), var("@root.x")]
        );
    }
}
