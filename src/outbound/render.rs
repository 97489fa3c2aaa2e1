//! Templates: handlebars, one registry per escaping mode (text and subjects unescaped, HTML escaped), strict.
//!
//! The shipped templates are embedded in the binary (see `build.rs`); files in `outbound.templates_dir`
//! (`<locale>/<event>.<subject|txt|html>.hbs`) replace them one by one. Every template is compiled when the
//! renderer is built, so a broken override is a start-up (and `check-config`) error, never a surprise when
//! the first customer writes. [`Renderer::self_test`] also holds every template to its event's context type
//! (see [`super::contract`]): an override that names a variable its event does not have is refused.

use std::collections::HashMap;
use std::path::Path;

use handlebars::Handlebars;
use serde_json::Value;

use crate::config::RegionConfig;
use crate::desk::reply::{Content, Reply};
use crate::desk::ticket::{Locale, Priority, Status, Ticket};

use super::contract::{self, TemplateEvent, Violation};

include!(concat!(env!("OUT_DIR"), "/templates.rs"));

/// The events every locale must have templates for: every [`TemplateEvent`].
pub const REQUIRED_EVENTS: [&str; 12] = {
    let mut names = [""; 12];
    let mut i = 0;
    while i < names.len() {
        names[i] = TemplateEvent::ALL[i].as_str();
        i += 1;
    }
    names
};

/// The helpers templates may call: handlebars' own (the renderer registers none of its own).
const HELPERS: &[&str] = contract::BUILTIN_HELPERS;

/// The marker above which agents write their reply (see `agent_notify`); it lives with the quoting rules.
pub use crate::mail::quote::REPLY_MARKER;

/// A template problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template {name}: {reason}")]
    Template { name: String, reason: String },
    #[error(
        "template {0} is missing (every locale needs .subject.hbs and .txt.hbs for each event)"
    )]
    Missing(String),
    #[error("cannot read template override {path}: {reason}")]
    Override { path: String, reason: String },
    /// Templates that name what their event's context does not have (see [`super::contract`]).
    #[error("{}", violations(.0))]
    Contract(Vec<Violation>),
}

fn violations(v: &[Violation]) -> String {
    v.iter()
        .map(Violation::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A rendered mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// The compiled templates.
pub struct Renderer {
    text: Handlebars<'static>,
    html: Handlebars<'static>,
    /// Each template's file as the admin knows it, by template name (`en/ack.txt`): the override's path,
    /// `en/ack.txt.hbs (shipped)` or `en/ack.txt.hbs (override /etc/postdesk/templates/en/ack.txt.hbs)`.
    files: HashMap<String, String>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Renderer")
    }
}

impl Renderer {
    /// Compile the shipped templates with the overrides of `override_dir` on top.
    pub fn load(override_dir: Option<&Path>) -> Result<Renderer, RenderError> {
        let mut text = Handlebars::new();
        text.set_strict_mode(true);
        text.register_escape_fn(handlebars::no_escape);
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        html.register_escape_fn(handlebars::html_escape);

        // (name, body, the file as the admin knows it)
        let mut sources: Vec<(String, String, String)> = EMBEDDED
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string(), format!("{n} (shipped)")))
            .collect();
        if let Some(dir) = override_dir {
            for (name, body, path) in read_overrides(dir)? {
                match sources.iter_mut().find(|(n, _, _)| *n == name) {
                    Some(entry) => (entry.1, entry.2) = (body, path),
                    None => sources.push((name, body, path)),
                }
            }
        }
        let mut files = HashMap::new();
        for (file, body, path) in sources {
            let Some(name) = file.strip_suffix(".hbs") else {
                continue;
            };
            let registry = if name.ends_with(".html") {
                &mut html
            } else {
                &mut text
            };
            registry
                .register_template_string(name, body)
                .map_err(|e| RenderError::Template {
                    name: path.clone(),
                    reason: e.to_string(),
                })?;
            files.insert(name.to_string(), path);
        }
        let renderer = Renderer { text, html, files };
        for &locale in Locale::ALL {
            for event in REQUIRED_EVENTS {
                for part in ["subject", "txt"] {
                    let name = format!("{locale}/{event}.{part}");
                    if !renderer.text.has_template(&name) {
                        return Err(RenderError::Missing(format!("{name}.hbs")));
                    }
                }
            }
        }
        Ok(renderer)
    }

    /// Render `event` in `locale` (falling back to English when the locale lacks it).
    pub fn render(
        &self,
        event: &str,
        locale: Locale,
        context: &Value,
    ) -> Result<Rendered, RenderError> {
        let pick = |registry: &Handlebars, part: &str| -> Option<String> {
            [locale, Locale::En]
                .iter()
                .map(|l| format!("{l}/{event}.{part}"))
                .find(|n| registry.has_template(n))
        };
        let subject_name = pick(&self.text, "subject")
            .ok_or_else(|| RenderError::Missing(format!("{locale}/{event}.subject.hbs")))?;
        let text_name = pick(&self.text, "txt")
            .ok_or_else(|| RenderError::Missing(format!("{locale}/{event}.txt.hbs")))?;
        let err = |name: &str| {
            let name = format!("{name}.hbs");
            move |e: handlebars::RenderError| RenderError::Template {
                name,
                reason: e.to_string(),
            }
        };
        let subject = self
            .text
            .render(&subject_name, context)
            .map_err(err(&subject_name))?;
        let text = self
            .text
            .render(&text_name, context)
            .map_err(err(&text_name))?;
        let html = match pick(&self.html, "html") {
            Some(n) => Some(self.html.render(&n, context).map_err(err(&n))?),
            None => None,
        };
        Ok(Rendered {
            // A subject is one line whatever a template or a customer put into it: no header injection.
            subject: subject
                .split(['\r', '\n'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
            text,
            html,
        })
    }

    /// What `check-config` (and a reload) runs: every template is held to its event's context type
    /// ([`Renderer::contract_violations`]), then every event is rendered in every locale with its own
    /// event's sample context.
    pub fn self_test(&self) -> Result<(), RenderError> {
        let violations = self.contract_violations();
        if !violations.is_empty() {
            return Err(RenderError::Contract(violations));
        }
        for &locale in Locale::ALL {
            for event in TemplateEvent::ALL {
                self.render(event.as_str(), locale, &event.sample(locale))
                    .map_err(|e| match e {
                        RenderError::Template { name, reason } => RenderError::Template {
                            name: self.file_of(&name),
                            reason,
                        },
                        other => other,
                    })?;
            }
        }
        Ok(())
    }

    /// Every template of an event (`<locale>/<event>.<subject|txt|html>`, shipped or overridden) that names
    /// a variable, helper or partial its event's context does not have, by file name. Templates of other
    /// names (partials, unknown locales) are checked where they are included.
    pub fn contract_violations(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        for registry in [&self.text, &self.html] {
            let mut names: Vec<&String> = registry.get_templates().keys().collect();
            names.sort();
            for name in names {
                let Some(event) = event_of(name) else {
                    continue;
                };
                let Some(template) = registry.get_template(name) else {
                    continue;
                };
                let partials = |n: &str| registry.get_template(n);
                let findings = contract::check(template, &event.shape(), HELPERS, &partials);
                if !findings.is_empty() {
                    out.push(Violation {
                        file: self.file_of(&format!("{name}.hbs")),
                        event,
                        findings,
                    });
                }
            }
        }
        out
    }

    /// The file of a template (`en/ack.txt.hbs`) as the admin knows it.
    fn file_of(&self, file: &str) -> String {
        let name = file.strip_suffix(".hbs").unwrap_or(file);
        self.files
            .get(name)
            .cloned()
            .unwrap_or_else(|| file.to_string())
    }
}

/// The event of a template named `<locale>/<event>.<part>`, for a locale postdesk renders.
fn event_of(name: &str) -> Option<TemplateEvent> {
    let (locale, file) = name.split_once('/')?;
    // Exactly as `render` looks templates up: `EN/ack.txt` would never be used.
    if !Locale::ALL.iter().any(|l| l.as_str() == locale) {
        return None;
    }
    let (event, part) = file.split_once('.')?;
    if !matches!(part, "subject" | "txt" | "html") {
        return None;
    }
    event.parse().ok()
}

/// The override files of `dir`: (`<locale>/<file>`, contents, path).
fn read_overrides(dir: &Path) -> Result<Vec<(String, String, String)>, RenderError> {
    let err = |p: &Path, e: std::io::Error| RenderError::Override {
        path: p.display().to_string(),
        reason: e.to_string(),
    };
    let mut out = Vec::new();
    for locale in std::fs::read_dir(dir).map_err(|e| err(dir, e))? {
        let locale = locale.map_err(|e| err(dir, e))?;
        if !locale.path().is_dir() {
            continue;
        }
        for file in std::fs::read_dir(locale.path()).map_err(|e| err(&locale.path(), e))? {
            let path = file.map_err(|e| err(&locale.path(), e))?.path();
            if path.extension().is_some_and(|e| e == "hbs") {
                let body = std::fs::read_to_string(&path).map_err(|e| err(&path, e))?;
                let name = format!(
                    "{}/{}",
                    locale.file_name().to_string_lossy(),
                    path.file_name()
                        .map(|f| f.to_string_lossy())
                        .unwrap_or_default()
                );
                // Named as shipped ones are, with where the override lives: `en/ack.txt.hbs (override /etc/…)`.
                let described = format!("{name} (override {})", path.display());
                out.push((name, body, described));
            }
        }
    }
    Ok(out)
}

/// A status in the customer's language.
pub fn status_label(status: Status, locale: Locale) -> &'static str {
    use Status::*;
    match (locale, status) {
        (Locale::En, New) => "received",
        (Locale::En, Open) => "in progress",
        (Locale::En, Pending) => "waiting for your information",
        (Locale::En, Resolved) => "resolved",
        (Locale::En, Closed) => "closed",
        (Locale::En, Spam) => "set aside as spam",
        (Locale::Ja, New) => "受付済み",
        (Locale::Ja, Open) => "対応中",
        (Locale::Ja, Pending) => "お客様からのご返信待ち",
        (Locale::Ja, Resolved) => "解決済み",
        (Locale::Ja, Closed) => "完了",
        (Locale::Ja, Spam) => "迷惑メール",
        (Locale::Ko, New) => "접수 완료",
        (Locale::Ko, Open) => "처리 중",
        (Locale::Ko, Pending) => "고객님의 답변 대기 중",
        (Locale::Ko, Resolved) => "해결됨",
        (Locale::Ko, Closed) => "종료",
        (Locale::Ko, Spam) => "스팸",
        (Locale::Zh, New) => "已受理",
        (Locale::Zh, Open) => "处理中",
        (Locale::Zh, Pending) => "等待您的回复",
        (Locale::Zh, Resolved) => "已解决",
        (Locale::Zh, Closed) => "已关闭",
        (Locale::Zh, Spam) => "垃圾邮件",
    }
}

/// A category in the template's language: the built-in categories (`mail::classify::DEFAULT_CATEGORIES`,
/// and `other`) by name; any other name (a `[categories]` rule of the config) as it is configured.
pub fn category_label(category: &str, locale: Locale) -> String {
    let label = match (locale, category) {
        (Locale::En, "payment") => "payment",
        (Locale::En, "order") => "order and delivery",
        (Locale::En, "account") => "account",
        (Locale::En, "fault") => "technical problem",
        (Locale::En, "privacy") => "privacy and security",
        (Locale::En, "content") => "content report",
        (Locale::En, "other") => "other",
        (Locale::Ja, "payment") => "お支払い",
        (Locale::Ja, "order") => "ご注文・配送",
        (Locale::Ja, "account") => "アカウント",
        (Locale::Ja, "fault") => "不具合",
        (Locale::Ja, "privacy") => "個人情報・セキュリティ",
        (Locale::Ja, "content") => "コンテンツの報告",
        (Locale::Ja, "other") => "その他",
        (Locale::Ko, "payment") => "결제",
        (Locale::Ko, "order") => "주문·배송",
        (Locale::Ko, "account") => "계정",
        (Locale::Ko, "fault") => "오류",
        (Locale::Ko, "privacy") => "개인정보·보안",
        (Locale::Ko, "content") => "콘텐츠 신고",
        (Locale::Ko, "other") => "기타",
        (Locale::Zh, "payment") => "支付",
        (Locale::Zh, "order") => "订单与配送",
        (Locale::Zh, "account") => "账户",
        (Locale::Zh, "fault") => "故障",
        (Locale::Zh, "privacy") => "隐私与安全",
        (Locale::Zh, "content") => "内容举报",
        (Locale::Zh, "other") => "其他",
        (_, custom) => custom,
    };
    label.to_string()
}

/// A priority in the customer's language.
pub fn priority_label(priority: Priority, locale: Locale) -> &'static str {
    use Priority::*;
    match (locale, priority) {
        (Locale::En, Low) => "low",
        (Locale::En, Normal) => "normal",
        (Locale::En, High) => "high",
        (Locale::En, Urgent) => "urgent",
        (Locale::Ja, Low) => "低",
        (Locale::Ja, Normal) => "通常",
        (Locale::Ja, High) => "高",
        (Locale::Ja, Urgent) => "緊急",
        (Locale::Ko, Low) => "낮음",
        (Locale::Ko, Normal) => "보통",
        (Locale::Ko, High) => "높음",
        (Locale::Ko, Urgent) => "긴급",
        (Locale::Zh, Low) => "低",
        (Locale::Zh, Normal) => "普通",
        (Locale::Zh, High) => "高",
        (Locale::Zh, Urgent) => "紧急",
    }
}

/// The template context of a reply (documented in README's template section).
// `_config` is unused since the region carries its merged timers; kept so callers need not change yet.
pub fn context(reply: &Reply, ticket: &Ticket, region: &RegionConfig) -> Value {
    use contract::*;
    let timers = &region.timers;
    let hours = timers
        .first_response
        .for_priority(ticket.priority)
        .as_secs()
        .div_ceil(3600);
    let locale = reply.locale;
    let previous = reply.content.previous_status().unwrap_or(ticket.status);
    let common = CommonVars {
        ticket_id: ticket.id.to_string(),
        subject: ticket.subject.clone(),
        requester: ticket.requester.clone(),
        requester_name: ticket.requester_name.clone(),
        desk_name: region.desk_name(),
        support_address: region.address.clone(),
        region: region.code.clone(),
        response_hours: hours,
        business_hours: timers.business_hours.is_some(),
        priority: ticket.priority.as_str().into(),
        priority_label: priority_label(ticket.priority, locale).into(),
        category: ticket.category.clone(),
        category_label: category_label(&ticket.category, locale),
        status: ticket.status.as_str().into(),
        status_label: status_label(ticket.status, locale).into(),
        previous_status: previous.as_str().into(),
        previous_status_label: status_label(previous, locale).into(),
        status_is_pending: ticket.status == Status::Pending,
        status_is_resolved: ticket.status == Status::Resolved,
        status_is_closed: ticket.status == Status::Closed,
    };
    // The event's own values: the same types `check-config` holds every template to.
    let vars = match &reply.content {
        Content::Ack { needs } => EventVars::Ack(AckVars {
            needs_order_number: needs.order_number,
            needs_payment_details: needs.payment_details,
            needs_device_details: needs.device_details,
            needs_account_id: needs.account_id,
        }),
        Content::Oversize { size_mb, limit_mb } => EventVars::Oversize(OversizeVars {
            size_mb: *size_mb,
            limit_mb: *limit_mb,
        }),
        Content::StatusChanged { .. } => EventVars::StatusChanged {},
        Content::Closed => EventVars::Closed {},
        Content::Survey => EventVars::Survey {},
        Content::AgentReply {
            body,
            agent_name,
            asks,
            survey,
            ..
        } => EventVars::AgentReply(AgentReplyVars {
            body: body.clone(),
            agent_name: agent_name.clone(),
            asks: *asks,
            survey: *survey,
        }),
        Content::CustomerReminder {
            number,
            total,
            last,
            waiting_days,
        } => EventVars::CustomerReminder(CustomerReminderVars {
            reminder_number: *number,
            reminders_total: *total,
            last_reminder: *last,
            waiting_days: *waiting_days,
        }),
        Content::Resolved {
            auto_resolved,
            survey,
            ..
        } => EventVars::Resolved(ResolvedVars {
            auto_resolved: *auto_resolved,
            survey: *survey,
        }),
        Content::AgentNotify {
            is_new,
            customer_text,
            attachments,
            not_added,
            earlier,
        } => EventVars::AgentNotify(AgentNotifyVars {
            earlier_ticket: earlier
                .as_ref()
                .map(|e| e.id.to_string())
                .unwrap_or_default(),
            earlier_answer: earlier
                .as_ref()
                .map(|e| e.last_answer.clone())
                .unwrap_or_default(),
            is_new: *is_new,
            customer_text: customer_text.clone(),
            attachments: attachments
                .iter()
                .map(|a| AttachmentVars {
                    filename: a.filename.clone(),
                    size_kb: a.size_kb,
                })
                .collect(),
            not_added: not_added.clone(),
            reply_marker: REPLY_MARKER.into(),
        }),
        Content::SlaReminder {
            due_at,
            minutes_left,
        } => EventVars::SlaReminder(SlaReminderVars {
            due_at: due_at.clone(),
            minutes_left: *minutes_left,
        }),
        Content::Escalation {
            due_at,
            overdue_minutes,
        } => EventVars::Escalation(EscalationVars {
            due_at: due_at.clone(),
            overdue_minutes: *overdue_minutes,
        }),
        Content::CommandError { errors } => EventVars::CommandError(CommandErrorVars {
            errors: errors.clone(),
            commands_help: crate::desk::agent::HELP.into(),
        }),
    };
    TemplateContext { common, vars }.to_value()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shipped_templates_compile_and_render_in_every_locale() {
        let r = Renderer::load(None).unwrap();
        r.self_test().unwrap();
        let out = r
            .render("ack", Locale::Ja, &TemplateEvent::Ack.sample(Locale::Ja))
            .unwrap();
        assert!(out.subject.starts_with("[JP-1000] "), "{}", out.subject);
        assert!(out.text.contains("JP-1000"));
        // Text is not escaped, HTML is.
        assert!(out.subject.contains("<subject> & more"));
        let html = out.html.unwrap();
        assert!(
            html.contains("&lt;subject&gt;") || !html.contains("<subject>"),
            "{html}"
        );
    }

    #[test]
    fn the_acknowledgement_asks_for_what_the_category_needs() {
        let r = Renderer::load(None).unwrap();
        let mut ctx = TemplateEvent::Ack.sample(Locale::Ja);
        let text = r.render("ack", Locale::Ja, &ctx).unwrap().text;
        assert!(
            text.contains("- ご注文番号\n- お支払いの日時とお支払い方法\n"),
            "{text}"
        );
        assert!(!text.contains("端末"), "{text}");
        for flag in [
            "needs_order_number",
            "needs_payment_details",
            "needs_device_details",
            "needs_account_id",
        ] {
            ctx[flag] = json!(false);
        }
        let text = r.render("ack", Locale::Ja, &ctx).unwrap().text;
        assert!(!text.contains("以下の情報"), "{text}");
        ctx["needs_device_details"] = json!(true);
        let html = r.render("ack", Locale::Ko, &ctx).unwrap().html.unwrap();
        assert!(html.contains("<li>사용하시는 기기 모델명"), "{html}");
    }

    #[test]
    fn override_replaces_a_file_and_a_broken_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("en")).unwrap();
        std::fs::write(
            dir.path().join("en/ack.subject.hbs"),
            "[{{ticket_id}}] Thanks",
        )
        .unwrap();
        let r = Renderer::load(Some(dir.path())).unwrap();
        assert_eq!(
            r.render("ack", Locale::En, &TemplateEvent::Ack.sample(Locale::En))
                .unwrap()
                .subject,
            "[JP-1000] Thanks"
        );
        std::fs::write(dir.path().join("en/ack.subject.hbs"), "{{#if}}").unwrap();
        let err = Renderer::load(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("en/ack.subject.hbs"), "{err}");
    }

    #[test]
    fn strict_mode_catches_unknown_variables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("en")).unwrap();
        std::fs::write(dir.path().join("en/ack.txt.hbs"), "{{no_such_thing}}").unwrap();
        let r = Renderer::load(Some(dir.path())).unwrap();
        assert!(r.self_test().is_err());
    }

    fn override_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
        dir
    }

    #[test]
    fn self_test_refuses_an_ack_override_using_an_agent_reply_variable() {
        let dir = override_dir(&[("en/ack.txt.hbs", "[{{ticket_id}}]\n{{body}}\n")]);
        let r = Renderer::load(Some(dir.path())).unwrap();
        let Err(RenderError::Contract(v)) = r.self_test() else {
            panic!("not refused");
        };
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].event, TemplateEvent::Ack);
        let file = dir.path().join("en/ack.txt.hbs").display().to_string();
        assert_eq!(v[0].file, format!("en/ack.txt.hbs (override {file})"));
        let msg = RenderError::Contract(v).to_string();
        assert!(
            msg.contains(&file) && msg.contains("`body`") && msg.contains("line 2"),
            "{msg}"
        );
        assert!(
            msg.contains("`ack`") && msg.contains("needs_order_number"),
            "{msg}"
        );
    }

    #[test]
    fn a_variable_only_used_in_an_if_is_refused_though_strict_rendering_misses_it() {
        let dir = override_dir(&[(
            "ja/ack.html.hbs",
            "<p>{{ticket_id}}</p>{{#if agent_name}}<p>{{agent_name}}</p>{{/if}}{{#unless is_new}}{{#if status_is_closed}}{{due_at}}{{/if}}{{/unless}}",
        )]);
        let r = Renderer::load(Some(dir.path())).unwrap();
        // What check-config did before: a render with the event's sample passes in strict mode.
        let rendered = r.render("ack", Locale::Ja, &TemplateEvent::Ack.sample(Locale::Ja));
        assert!(rendered.is_ok(), "{rendered:?}");
        let v = r.contract_violations();
        assert_eq!(v.len(), 1, "{v:?}");
        let msg = v[0].to_string();
        for var in ["`agent_name`", "`is_new`", "`due_at`"] {
            assert!(msg.contains(var), "{var}: {msg}");
        }
        assert!(r.self_test().is_err());
    }

    #[test]
    fn overrides_using_their_own_events_variables_pass() {
        let dir = override_dir(&[
            (
                "en/agent_reply.txt.hbs",
                "{{#if agent_name}}{{agent_name}}: {{/if}}{{body}}\n[{{ticket_id}}] {{status_label}}",
            ),
            (
                "ko/agent_notify.txt.hbs",
                "{{#if is_new}}new{{/if}} {{customer_text}}\n{{#each attachments}}{{@index}} {{filename}} {{size_kb}} {{../ticket_id}}\n{{/each}}{{reply_marker}}",
            ),
            ("en/footer.hbs", "{{desk_name}}"),
            ("en/closed.txt.hbs", "{{> en/footer}} {{ticket_id}}"),
        ]);
        let r = Renderer::load(Some(dir.path())).unwrap();
        r.self_test().unwrap();
        assert!(r.contract_violations().is_empty());
    }

    #[test]
    fn every_shipped_template_keeps_to_its_events_contract() {
        let r = Renderer::load(None).unwrap();
        assert_eq!(r.contract_violations(), vec![]);
        // The walk does see the shipped templates' variables: an event without `attachments` would be refused.
        let agent_notify = r.text.get_template("en/agent_notify.txt").unwrap();
        let found = contract::check(
            agent_notify,
            &TemplateEvent::Closed.shape(),
            HELPERS,
            &|_| None,
        );
        assert!(
            found
                .iter()
                .any(|f| f.problem == contract::Problem::UnknownVariable("attachments".into())),
            "{found:?}"
        );
    }

    #[test]
    fn the_agents_are_told_which_addresses_were_not_added_and_how_to_add_them() {
        let r = Renderer::load(None).unwrap();
        for locale in [Locale::En, Locale::Ja, Locale::Ko, Locale::Zh] {
            let mut ctx = TemplateEvent::AgentNotify.sample(locale);
            let out = r.render("agent_notify", locale, &ctx).unwrap();
            let html = out.html.unwrap();
            for body in [&out.text, &html] {
                assert!(body.contains("colleague@example.net"), "{locale}: {body}");
                assert!(body.contains("#cc add"), "{locale}: {body}");
            }
            ctx["not_added"] = json!([]);
            let out = r.render("agent_notify", locale, &ctx).unwrap();
            assert!(!out.text.contains("colleague@example.net"), "{locale}");
        }
    }

    #[test]
    fn subject_is_one_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("en")).unwrap();
        std::fs::write(
            dir.path().join("en/ack.subject.hbs"),
            "[{{ticket_id}}] {{subject}}\n",
        )
        .unwrap();
        let r = Renderer::load(Some(dir.path())).unwrap();
        let mut ctx = TemplateEvent::Ack.sample(Locale::En);
        ctx["subject"] = json!("a\r\nBcc: evil@example.com");
        let s = r.render("ack", Locale::En, &ctx).unwrap().subject;
        assert!(!s.contains('\n') && !s.contains('\r'), "{s:?}");
    }

    #[test]
    fn categories_are_translated() {
        let r = Renderer::load(None).unwrap();
        for (locale, label) in [
            (Locale::Ja, "カテゴリ：ご注文・配送"),
            (Locale::Ko, "주문·배송"),
            (Locale::Zh, "订单与配送"),
            (Locale::En, "order and delivery"),
        ] {
            let mut ctx = TemplateEvent::AgentNotify.sample(locale);
            ctx["category"] = json!("order");
            ctx["category_label"] = json!(category_label("order", locale));
            let out = r.render("agent_notify", locale, &ctx).unwrap();
            assert!(out.text.contains(label), "{locale}: {}", out.text);
            assert!(!out.text.contains("：order"), "{}", out.text);
            assert!(out.html.unwrap().contains(&category_label("order", locale)));
        }
        for event in [TemplateEvent::SlaReminder, TemplateEvent::Escalation] {
            let text = r
                .render(event.as_str(), Locale::Ja, &event.sample(Locale::Ja))
                .unwrap()
                .text;
            assert!(text.contains("カテゴリ：お支払い"), "{text}");
        }
        // Every built-in category has a label in every locale; a configured one keeps its name.
        for name in crate::mail::classify::DEFAULT_CATEGORIES
            .iter()
            .map(|(n, _)| *n)
            .chain(["other"])
        {
            for &locale in &[Locale::Ja, Locale::Ko, Locale::Zh] {
                assert_ne!(category_label(name, locale), name, "{name} in {locale}");
            }
        }
        assert_eq!(category_label("wholesale", Locale::Ja), "wholesale");
    }

    #[test]
    fn one_hour_is_singular() {
        let r = Renderer::load(None).unwrap();
        let text = |event: TemplateEvent, locale: Locale, set: &[(&str, serde_json::Value)]| {
            let mut ctx = event.sample(locale);
            for (k, v) in set {
                ctx[*k] = v.clone();
            }
            let out = r.render(event.as_str(), locale, &ctx).unwrap();
            format!("{}\n{}", out.text, out.html.unwrap_or_default())
        };
        let one = text(
            TemplateEvent::Ack,
            Locale::En,
            &[("response_hours", json!(1))],
        );
        assert!(one.contains("within 1 hour."), "{one}");
        assert!(!one.contains("1 hours"), "{one}");
        let many = text(
            TemplateEvent::Ack,
            Locale::En,
            &[("response_hours", json!(24))],
        );
        assert!(many.contains("within 24 hours."), "{many}");
        let business = text(
            TemplateEvent::Ack,
            Locale::En,
            &[
                ("response_hours", json!(1)),
                ("business_hours", json!(true)),
            ],
        );
        assert!(business.contains("1 business hour."), "{business}");
        let day = text(
            TemplateEvent::CustomerReminder,
            Locale::En,
            &[("waiting_days", json!(1))],
        );
        assert!(
            day.contains("1 day ago") && !day.contains("1 days"),
            "{day}"
        );
        let minute = text(
            TemplateEvent::SlaReminder,
            Locale::En,
            &[("minutes_left", json!(1))],
        );
        assert!(!minute.contains("1 minutes"), "{minute}");
        let minute = text(
            TemplateEvent::Escalation,
            Locale::En,
            &[("overdue_minutes", json!(1))],
        );
        assert!(!minute.contains("1 minutes"), "{minute}");
        // Japanese, Korean and Chinese have no plural: one form for every number.
        let ja = text(
            TemplateEvent::Ack,
            Locale::Ja,
            &[("response_hours", json!(1))],
        );
        assert!(ja.contains("1時間以内"), "{ja}");
    }
}
