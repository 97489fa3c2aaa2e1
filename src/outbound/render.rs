//! Templates: handlebars, one registry per escaping mode (text and subjects unescaped, HTML escaped), strict.
//!
//! The shipped templates are embedded in the binary (see `build.rs`); files in `outbound.templates_dir`
//! (`<locale>/<event>.<subject|txt|html>.hbs`) replace them one by one. Every template is compiled when the
//! renderer is built, so a broken override is a start-up (and `check-config`) error, never a surprise when
//! the first customer writes.

use std::path::Path;

use handlebars::Handlebars;
use serde_json::{json, Value};

use crate::config::{Config, RegionConfig};
use crate::desk::reply::{Content, Reply};
use crate::desk::ticket::{Locale, Priority, Status, Ticket};

include!(concat!(env!("OUT_DIR"), "/templates.rs"));

/// The events every locale must have templates for.
pub const REQUIRED_EVENTS: [&str; 12] = [
    "ack",
    "command_error",
    "status_changed",
    "agent_reply",
    "customer_reminder",
    "resolved",
    "closed",
    "survey",
    "agent_notify",
    "sla_reminder",
    "escalation",
    "oversize",
];

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

        let mut sources: Vec<(String, String)> = EMBEDDED
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect();
        if let Some(dir) = override_dir {
            for (name, body) in read_overrides(dir)? {
                match sources.iter_mut().find(|(n, _)| *n == name) {
                    Some(entry) => entry.1 = body,
                    None => sources.push((name, body)),
                }
            }
        }
        for (file, body) in &sources {
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
                    name: file.clone(),
                    reason: e.to_string(),
                })?;
        }
        let renderer = Renderer { text, html };
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

    /// Render every required template once with a sample context: what `check-config` runs.
    pub fn self_test(&self) -> Result<(), RenderError> {
        for &locale in Locale::ALL {
            for event in REQUIRED_EVENTS {
                self.render(event, locale, &sample_context(locale))?;
            }
        }
        Ok(())
    }
}

fn read_overrides(dir: &Path) -> Result<Vec<(String, String)>, RenderError> {
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
                out.push((name, body));
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
        (Locale::Ja, New) => "受付済み",
        (Locale::Ja, Open) => "対応中",
        (Locale::Ja, Pending) => "お客様からのご返信待ち",
        (Locale::Ja, Resolved) => "解決済み",
        (Locale::Ja, Closed) => "完了",
        (Locale::Ko, New) => "접수 완료",
        (Locale::Ko, Open) => "처리 중",
        (Locale::Ko, Pending) => "고객님의 답변 대기 중",
        (Locale::Ko, Resolved) => "해결됨",
        (Locale::Ko, Closed) => "종료",
        (Locale::Zh, New) => "已受理",
        (Locale::Zh, Open) => "处理中",
        (Locale::Zh, Pending) => "等待您的回复",
        (Locale::Zh, Resolved) => "已解决",
        (Locale::Zh, Closed) => "已关闭",
    }
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
pub fn context(reply: &Reply, ticket: &Ticket, region: &RegionConfig, _config: &Config) -> Value {
    let timers = &region.timers;
    let hours = timers
        .first_response
        .for_priority(ticket.priority)
        .as_secs()
        .div_ceil(3600);
    let previous = reply.content.previous_status().unwrap_or(ticket.status);
    let mut context = json!({
        "ticket_id": ticket.id.to_string(),
        "subject": ticket.subject,
        "requester": ticket.requester,
        "requester_name": ticket.requester_name,
        "desk_name": region.desk_name(),
        "support_address": region.address,
        "region": region.code,
        "response_hours": hours,
        "business_hours": timers.business_hours.is_some(),
        "priority": ticket.priority.as_str(),
        "priority_label": priority_label(ticket.priority, reply.locale),
        "category": ticket.category,
        "status": ticket.status.as_str(),
        "status_label": status_label(ticket.status, reply.locale),
        "previous_status": previous.as_str(),
        "previous_status_label": status_label(previous, reply.locale),
        "status_is_pending": ticket.status == Status::Pending,
        "status_is_resolved": ticket.status == Status::Resolved,
        "status_is_closed": ticket.status == Status::Closed,
    });
    // The event's own values, under the names its templates use (README's template section).
    let extra = match &reply.content {
        Content::Ack { needs } => json!({
            "needs_order_number": needs.order_number,
            "needs_payment_details": needs.payment_details,
            "needs_device_details": needs.device_details,
            "needs_account_id": needs.account_id,
        }),
        Content::Oversize { size_mb, limit_mb } => {
            json!({"size_mb": size_mb, "limit_mb": limit_mb})
        }
        Content::StatusChanged { .. } | Content::Closed | Content::Survey => json!({}),
        Content::AgentReply {
            body, agent_name, ..
        } => json!({"body": body, "agent_name": agent_name}),
        Content::CustomerReminder {
            number,
            total,
            last,
            waiting_days,
        } => json!({
            "reminder_number": number,
            "reminders_total": total,
            "last_reminder": last,
            "waiting_days": waiting_days,
        }),
        Content::Resolved { auto_resolved } => json!({"auto_resolved": auto_resolved}),
        Content::AgentNotify {
            is_new,
            customer_text,
            attachments,
        } => json!({
            "is_new": is_new,
            "customer_text": customer_text,
            "attachments": attachments,
            "reply_marker": REPLY_MARKER,
        }),
        Content::SlaReminder {
            due_at,
            minutes_left,
        } => json!({"due_at": due_at, "minutes_left": minutes_left}),
        Content::Escalation {
            due_at,
            overdue_minutes,
        } => json!({"due_at": due_at, "overdue_minutes": overdue_minutes}),
        Content::CommandError { errors } => json!({
            "errors": errors,
            "commands_help": crate::desk::agent::HELP,
        }),
    };
    if let (Some(map), Value::Object(extra)) = (context.as_object_mut(), extra) {
        map.extend(extra);
    }
    context
}

fn sample_context(locale: Locale) -> Value {
    json!({
        "ticket_id": "JP-1000",
        "subject": "Sample <subject> & more",
        "requester": "customer@example.com",
        "requester_name": "Sample Customer",
        "desk_name": "Sample Support",
        "support_address": "support@example.com",
        "region": "JP",
        "response_hours": 24,
        "business_hours": false,
        "priority": "normal",
        "priority_label": priority_label(Priority::Normal, locale),
        "category": "payment",
        "status": "pending",
        "status_label": status_label(Status::Pending, locale),
        "previous_status": "open",
        "previous_status_label": status_label(Status::Open, locale),
        "status_is_pending": true,
        "status_is_resolved": false,
        "status_is_closed": false,
        // Event-specific values, all present so that every event's templates render here.
        "body": "Thank you for waiting.\nPlease send us the order number.",
        "agent_name": "Sample Agent",
        "reminder_number": 1,
        "reminders_total": 2,
        "last_reminder": false,
        "waiting_days": 2,
        "auto_resolved": false,
        "is_new": true,
        "customer_text": "My order <A-1> has not arrived.",
        "attachments": [{"filename": "photo.jpg", "size_kb": 120}, {"filename": "log.txt", "size_kb": 3}],
        "reply_marker": REPLY_MARKER,
        "due_at": "2026-11-21 18:00 JST",
        "minutes_left": 90,
        "overdue_minutes": 15,
        "size_mb": 31.5,
        "limit_mb": 25.0,
        "errors": "line 1: #status done  (\"done\" is not one of: new, open, pending, resolved, closed)",
        "commands_help": crate::desk::agent::HELP,
        "needs_order_number": true,
        "needs_payment_details": true,
        "needs_device_details": false,
        "needs_account_id": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_templates_compile_and_render_in_every_locale() {
        let r = Renderer::load(None).unwrap();
        r.self_test().unwrap();
        let out = r
            .render("ack", Locale::Ja, &sample_context(Locale::Ja))
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
        let mut ctx = sample_context(Locale::Ja);
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
            r.render("ack", Locale::En, &sample_context(Locale::En))
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
        let mut ctx = sample_context(Locale::En);
        ctx["subject"] = json!("a\r\nBcc: evil@example.com");
        let s = r.render("ack", Locale::En, &ctx).unwrap().subject;
        assert!(!s.contains('\n') && !s.contains('\r'), "{s:?}");
    }
}
