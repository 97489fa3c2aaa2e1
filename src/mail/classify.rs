//! What kind of mail this is, decided from the [`Inbound`] alone: written by a machine or a person, which
//! language, how urgent.
//!
//! One classifier is used everywhere postdesk decides whether to answer, so the loop protection cannot
//! differ between intake paths.

use super::authres;
use super::parse::Inbound;
use crate::config::{Config, SpamSource};
use crate::types::{Locale, Priority};

/// Why postdesk must not answer a mail automatically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Automatic {
    /// `Auto-Submitted` other than `no`, `X-Autoreply`, `X-Auto-Response-Suppress` (out-of-office and friends).
    AutoReplied,
    /// A delivery status notification or a mail from MAILER-DAEMON/postmaster or with an empty return path.
    Bounce,
    /// Mailing-list or bulk mail (`List-Id`, `List-Unsubscribe`, `Precedence: bulk|list|junk`).
    List,
    /// From one of postdesk's own addresses, or carrying our own `X-Loop`.
    Loop,
    /// The receiving mail system's spam filter (or DMARC) says it is spam: see [`spam`].
    Spam,
}

impl Automatic {
    pub fn as_str(self) -> &'static str {
        match self {
            Automatic::AutoReplied => "auto-replied",
            Automatic::Bounce => "bounce",
            Automatic::List => "list",
            Automatic::Loop => "loop",
            Automatic::Spam => "spam",
        }
    }
}

/// The verdict on a machine-written mail, if it is one.
pub fn automatic(mail: &Inbound, config: &Config) -> Option<Automatic> {
    let a = &mail.auto;
    let from = mail.from.as_ref().map(|m| m.address.as_str()).unwrap_or("");
    if !from.is_empty() && config.is_own_address(from) {
        return Some(Automatic::Loop);
    }
    if a.x_loop
        .iter()
        .any(|l| config.is_own_address(l) || l == "postdesk")
    {
        return Some(Automatic::Loop);
    }
    let local = from.split('@').next().unwrap_or("");
    if a.report_type.as_deref() == Some("delivery-status")
        || a.return_path.as_deref() == Some("")
        || local.eq_ignore_ascii_case("mailer-daemon")
        || local.eq_ignore_ascii_case("postmaster")
    {
        return Some(Automatic::Bounce);
    }
    if a.auto_submitted
        .as_deref()
        .is_some_and(|v| !v.starts_with("no"))
        || a.x_autoreply
        || a.x_auto_response_suppress.as_deref().is_some_and(|v| {
            v.to_ascii_lowercase()
                .split(',')
                .any(|t| matches!(t.trim(), "all" | "oof" | "autoreply"))
        })
        || a.precedence.as_deref() == Some("auto_reply")
        || a.report_type.is_some()
    {
        return Some(Automatic::AutoReplied);
    }
    if a.list_id.is_some()
        || a.list_unsubscribe
        || matches!(a.precedence.as_deref(), Some("bulk" | "list" | "junk"))
    {
        return Some(Automatic::List);
    }
    None
}

/// Which verdict made a mail spam.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpamVerdict {
    SpamAssassin,
    Rspamd,
    /// `dmarc=fail` for the From domain in the trusted `Authentication-Results`.
    Dmarc,
}

/// Whether the receiving mail system marked the mail as spam, by the filters `[spam] trust` names: its
/// verdict is the best signal there is, and a spam mail must not be answered (the acknowledgement would be
/// backscatter to a forged sender). With `score_threshold`, a filter's score decides instead of its yes/no.
pub fn spam(mail: &Inbound, config: &Config) -> Option<SpamVerdict> {
    let settings = &config.spam;
    if !settings.enabled {
        return None;
    }
    let h = &mail.auto.spam;
    let trusts = |s: SpamSource| settings.trust.contains(&s);
    let yes = |v: &Option<String>| {
        v.as_deref().is_some_and(|v| {
            v.trim_start()
                .get(..3)
                .is_some_and(|w| w.eq_ignore_ascii_case("yes"))
        })
    };
    // A score, when the threshold asks for one and the filter wrote one, decides; else its own yes/no.
    let decide = |score: Option<f64>, said_yes: bool| match (settings.score_threshold, score) {
        (Some(t), Some(s)) => s >= t,
        _ => said_yes,
    };
    if trusts(SpamSource::Spamassassin) && (h.spam_flag.is_some() || h.spam_status.is_some()) {
        let score = h
            .spam_status
            .as_deref()
            .and_then(|v| number_after(v, "score="));
        let said_yes = yes(&h.spam_flag) || yes(&h.spam_status);
        if decide(score, said_yes) {
            return Some(SpamVerdict::SpamAssassin);
        }
    }
    let rspamd = [
        &h.spamd_result,
        &h.rspamd_action,
        &h.rspamd_score,
        &h.x_spam,
    ];
    if trusts(SpamSource::Rspamd) && rspamd.iter().any(|v| v.is_some()) {
        // `X-Spamd-Result: default: True [12.30 / 15.00]; …`: the flag, then [score / required].
        let result = h.spamd_result.as_deref().unwrap_or("");
        let score = h
            .rspamd_score
            .as_deref()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .or_else(|| number_after(result, "["));
        let flagged = result
            .split_once(':')
            .map(|(_, rest)| rest.trim_start())
            .and_then(|rest| rest.get(..4))
            .is_some_and(|w| w.eq_ignore_ascii_case("true"));
        let action = h
            .rspamd_action
            .as_deref()
            .unwrap_or("")
            .to_ascii_lowercase();
        let acted = matches!(
            action.trim(),
            "reject" | "add header" | "rewrite subject" | "soft reject"
        );
        if decide(score, flagged || acted || yes(&h.x_spam)) {
            return Some(SpamVerdict::Rspamd);
        }
    }
    if trusts(SpamSource::Dmarc) {
        if let (Some(server), Some(from)) = (&config.agents.trust_authserv_id, &mail.from) {
            let domain = from.address.rsplit_once('@').map_or("", |(_, d)| d);
            if !domain.is_empty()
                && authres::dmarc_fails(&mail.auto.authentication_results, server, domain)
            {
                return Some(SpamVerdict::Dmarc);
            }
        }
    }
    None
}

/// The number right after `key` in `text` (`score=` in `Yes, score=6.2 required=5.0`), if one is there.
fn number_after(text: &str, key: &str) -> Option<f64> {
    let lower = text.to_ascii_lowercase();
    let start = lower.find(key)? + key.len();
    let rest = text[start..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The language a text is written in, by script: Hangul → ko, kana → ja, Han without kana → zh, Latin
/// letters → en. `None` when the text has no letters to tell by.
pub fn detect_locale(text: &str) -> Option<Locale> {
    let (mut hangul, mut kana, mut han, mut latin) = (0usize, 0usize, 0usize, 0usize);
    for c in text.chars().take(4000) {
        match c as u32 {
            0xAC00..=0xD7A3 | 0x1100..=0x11FF | 0x3130..=0x318F => hangul += 1,
            0x3041..=0x309F | 0x30A0..=0x30FF | 0xFF66..=0xFF9D => kana += 1,
            0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0xF900..=0xFAFF | 0x20000..=0x2FFFF => han += 1,
            _ if c.is_ascii_alphabetic() => latin += 1,
            _ => {}
        }
    }
    if hangul > 0 && hangul >= kana {
        Some(Locale::Ko)
    } else if kana > 0 {
        Some(Locale::Ja)
    } else if han > 0 {
        Some(Locale::Zh)
    } else if latin >= 3 {
        Some(Locale::En)
    } else {
        None
    }
}

/// The customer's language: what they wrote in (subject and text), else the region's.
pub fn customer_locale(mail: &Inbound, region_locale: Locale) -> Locale {
    // The text decides first: subjects are often just a product name or an order number.
    detect_locale(&mail.text)
        .filter(|l| {
            *l != Locale::En || detect_locale(&mail.subject).is_none_or(|s| s == Locale::En)
        })
        .or_else(|| detect_locale(&mail.subject))
        .unwrap_or(region_locale)
}

/// Words in a subject that mean "urgent" in the desk's four languages.
const URGENT_WORDS: [&str; 10] = [
    "緊急",
    "至急",
    "긴급",
    "紧急",
    "加急",
    "urgent",
    "asap",
    "emergency",
    "大至急",
    "急ぎ",
];
/// Words that mean "important/high".
const HIGH_WORDS: [&str; 5] = ["重要", "중요", "important", "high priority", "要紧"];

/// The priority a mail asks for: urgent or high from the subject's words or the Importance/X-Priority
/// headers, else normal.
pub fn priority(mail: &Inbound) -> Priority {
    let subject = mail.subject.to_lowercase();
    if URGENT_WORDS.iter().any(|w| subject.contains(w)) {
        return Priority::Urgent;
    }
    let x_priority_high = mail
        .auto
        .x_priority
        .as_deref()
        .and_then(|v| v.trim().chars().next())
        .is_some_and(|c| c == '1' || c == '2');
    if HIGH_WORDS.iter().any(|w| subject.contains(w))
        || mail.auto.importance.as_deref() == Some("high")
        || x_priority_high
    {
        return Priority::High;
    }
    Priority::Normal
}

/// The default category rules: (category, words in any of the desk's languages), checked in this order
/// (the more sensitive first). What support sites in Japan, Korea and China file inquiries under.
pub const DEFAULT_CATEGORIES: &[(&str, &[&str])] = &[
    (
        "privacy",
        &[
            "privacy",
            "personal data",
            "gdpr",
            "delete my data",
            "hacked",
            "個人情報",
            "プライバシー",
            "不正アクセス",
            "개인정보",
            "해킹",
            "隐私",
            "个人信息",
            "盗号",
        ],
    ),
    (
        "payment",
        &[
            "payment",
            "refund",
            "charge",
            "invoice",
            "billing",
            "paid",
            "支払",
            "返金",
            "請求",
            "決済",
            "引き落と",
            "결제",
            "환불",
            "청구",
            "付款",
            "退款",
            "支付",
            "扣款",
            "扣费",
        ],
    ),
    (
        "account",
        &[
            "login",
            "log in",
            "password",
            "account",
            "sign in",
            "ログイン",
            "パスワード",
            "アカウント",
            "로그인",
            "비밀번호",
            "계정",
            "登录",
            "登陆",
            "密码",
            "账号",
            "帐号",
        ],
    ),
    (
        "fault",
        &[
            "crash",
            "error",
            "bug",
            "broken",
            "not working",
            "doesn't work",
            "freez",
            "エラー",
            "落ち",
            "不具合",
            "動かない",
            "故障",
            "오류",
            "에러",
            "고장",
            "작동",
            "崩溃",
            "错误",
            "闪退",
        ],
    ),
    (
        "order",
        &[
            "order", "delivery", "shipping", "parcel", "arrive", "注文", "配送", "届", "発送",
            "주문", "배송", "도착", "订单", "快递", "物流", "发货",
        ],
    ),
    (
        "content",
        &[
            "copyright",
            "infring",
            "inappropriate",
            "著作権",
            "違法",
            "저작권",
            "불법",
            "版权",
            "侵权",
        ],
    ),
];

/// The category of a mail by the first rule whose words appear in its subject or text; `other` if none.
/// `rules` are the configured ones (`[categories]`), else [`DEFAULT_CATEGORIES`].
pub fn category(mail: &Inbound, rules: &[(String, Vec<String>)]) -> String {
    let haystack = format!(
        "{}\n{}",
        mail.subject,
        mail.text.chars().take(4000).collect::<String>()
    )
    .to_lowercase();
    if rules.is_empty() {
        for (name, words) in DEFAULT_CATEGORIES {
            if words.iter().any(|w| haystack.contains(w)) {
                return (*name).to_string();
            }
        }
    } else {
        for (name, words) in rules {
            if words.iter().any(|w| haystack.contains(&w.to_lowercase())) {
                return name.clone();
            }
        }
    }
    "other".to_string()
}

/// Whether the text already gives something that looks like an order or transaction number (a run of at
/// least four digits, possibly after letters and a dash: `A-1234`, `20250301-0042`).
pub fn has_reference_number(text: &str) -> bool {
    let mut run = 0;
    for c in text.chars() {
        if c.is_ascii_digit() || ('０'..='９').contains(&c) {
            run += 1;
            if run >= 4 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{TestConfig, TestRegion};
    use crate::mail::parse::parse;
    use std::path::Path;

    fn config() -> Config {
        TestConfig::new(Path::new("/tmp/x"))
            .region(
                TestRegion::new("JP", "support-jp@example.com")
                    .agent_notify("jp-agents@example.com"),
            )
            .parse()
    }

    fn verdict(headers: &str) -> Option<Automatic> {
        let raw = format!("{headers}\r\nSubject: s\r\n\r\nbody\r\n");
        automatic(&parse(raw.as_bytes(), Locale::En).unwrap(), &config())
    }

    #[test]
    fn people_are_not_machines() {
        assert_eq!(verdict("From: a@example.com\r\nAuto-Submitted: no"), None);
        assert_eq!(verdict("From: a@example.com"), None);
    }

    #[test]
    fn machines_are_recognised() {
        assert_eq!(
            verdict("From: a@example.com\r\nAuto-Submitted: auto-replied"),
            Some(Automatic::AutoReplied)
        );
        assert_eq!(
            verdict("From: a@example.com\r\nX-Autoreply: yes"),
            Some(Automatic::AutoReplied)
        );
        assert_eq!(
            verdict("From: a@example.com\r\nX-Auto-Response-Suppress: OOF, AutoReply"),
            Some(Automatic::AutoReplied)
        );
        assert_eq!(
            verdict("From: a@example.com\r\nPrecedence: bulk"),
            Some(Automatic::List)
        );
        assert_eq!(
            verdict("From: a@example.com\r\nList-Id: <x.example.com>"),
            Some(Automatic::List)
        );
        assert_eq!(
            verdict("From: MAILER-DAEMON@example.com"),
            Some(Automatic::Bounce)
        );
        assert_eq!(
            verdict("Return-Path: <>\r\nFrom: a@example.com"),
            Some(Automatic::Bounce)
        );
        assert_eq!(
            verdict("From: support-jp@example.com"),
            Some(Automatic::Loop)
        );
        assert_eq!(
            verdict("From: JP-Agents@example.com"),
            Some(Automatic::Loop)
        );
        assert_eq!(
            verdict("From: a@example.com\r\nX-Loop: support-jp@example.com"),
            Some(Automatic::Loop)
        );
    }

    #[test]
    fn a_subaddress_of_the_desk_is_its_own_address() {
        let c = config();
        for own in [
            "support-jp+x@example.com",
            "Support-JP+anything.at.all@Example.COM",
            "support-jp+@example.com",
            "jp-agents+x@example.com",
        ] {
            assert!(c.is_own_address(own), "{own}");
        }
        for other in [
            "support-jp-x@example.com",
            "support-jpx@example.com",
            "support-jp+x@example.org",
            "x+support-jp@example.com",
        ] {
            assert!(!c.is_own_address(other), "{other}");
        }
        assert_eq!(
            verdict("From: support-jp+x@example.com"),
            Some(Automatic::Loop)
        );
        assert_eq!(
            verdict("From: a@example.com\r\nX-Loop: support-jp+loop@example.com"),
            Some(Automatic::Loop)
        );
    }

    #[test]
    fn locale_by_script() {
        assert_eq!(detect_locale("注文した商品が届きません"), Some(Locale::Ja));
        assert_eq!(
            detect_locale("주문한 상품이 도착하지 않았습니다"),
            Some(Locale::Ko)
        );
        assert_eq!(detect_locale("我的订单还没有到"), Some(Locale::Zh));
        assert_eq!(detect_locale("My order has not arrived"), Some(Locale::En));
        assert_eq!(detect_locale("1234 !!"), None);
        // Kanji-heavy Japanese still counts as Japanese when any kana is present.
        assert_eq!(detect_locale("注文番号の確認依頼"), Some(Locale::Ja));
        assert_eq!(detect_locale("Re: 注文 ABC-123 の件"), Some(Locale::Ja));
    }

    #[test]
    fn categories_in_four_languages() {
        let cat = |subject: &str, body: &str| {
            category(
                &parse(
                    format!("From: a@b.c\r\nSubject: {subject}\r\n\r\n{body}\r\n").as_bytes(),
                    Locale::En,
                )
                .unwrap(),
                &[],
            )
        };
        assert_eq!(cat("返金について", "二重に引き落とされました"), "payment");
        assert_eq!(cat("로그인 문의", "비밀번호를 잊었습니다"), "account");
        assert_eq!(cat("订单还没到", "快递显示已发货"), "order");
        assert_eq!(cat("App crashes", "it crashes on start"), "fault");
        assert_eq!(
            cat("個人情報の削除", "アカウントを削除してください"),
            "privacy",
            "privacy is checked before account"
        );
        assert_eq!(cat("hello", "a question"), "other");
        let custom = vec![("wholesale".to_string(), vec!["Bulk".to_string()])];
        assert_eq!(
            category(
                &parse(
                    b"From: a@b.c\r\nSubject: bulk order\r\n\r\nx\r\n",
                    Locale::En
                )
                .unwrap(),
                &custom
            ),
            "wholesale"
        );
    }

    #[test]
    fn reference_numbers() {
        assert!(has_reference_number("注文番号は A-1234 です"));
        assert!(has_reference_number("order ２０２５０３"));
        assert!(!has_reference_number("I ordered 2 items on the 3rd"));
    }

    #[test]
    fn priority_from_subject_and_headers() {
        let p = |h: &str| {
            priority(
                &parse(
                    format!("From: a@b.c\r\n{h}\r\n\r\nx\r\n").as_bytes(),
                    Locale::En,
                )
                .unwrap(),
            )
        };
        assert_eq!(p("Subject: 【至急】ログインできません"), Priority::Urgent);
        assert_eq!(p("Subject: 긴급 문의"), Priority::Urgent);
        assert_eq!(p("Subject: 紧急：无法付款"), Priority::Urgent);
        assert_eq!(p("Subject: URGENT: site down"), Priority::Urgent);
        assert_eq!(p("Subject: hello\r\nImportance: High"), Priority::High);
        assert_eq!(
            p("Subject: hello\r\nX-Priority: 1 (Highest)"),
            Priority::High
        );
        assert_eq!(p("Subject: hello"), Priority::Normal);
    }

    fn spam_of(headers: &str, c: &Config) -> Option<SpamVerdict> {
        let raw = format!("{headers}From: a@example.com\r\nSubject: s\r\n\r\nbody\r\n");
        spam(&parse(raw.as_bytes(), Locale::En).unwrap(), c)
    }

    #[test]
    fn spam_filters_verdicts_are_read() {
        let c = config();
        let sa = Some(SpamVerdict::SpamAssassin);
        let rs = Some(SpamVerdict::Rspamd);
        assert_eq!(spam_of("X-Spam-Flag: YES\r\n", &c), sa);
        assert_eq!(
            spam_of("X-Spam-Status: Yes, score=6.2 required=5.0 tests=X\r\n", &c),
            sa
        );
        assert_eq!(
            spam_of(
                "X-Spam-Flag: NO\r\nX-Spam-Status: No, score=1.2 required=5.0\r\n",
                &c
            ),
            None
        );
        assert_eq!(
            spam_of(
                "X-Spamd-Result: default: True [15.00 / 15.00]; GTUBE(0.00)[]\r\n",
                &c
            ),
            rs
        );
        assert_eq!(
            spam_of("X-Spamd-Result: default: False [1.00 / 15.00]\r\n", &c),
            None
        );
        assert_eq!(spam_of("X-Rspamd-Action: add header\r\n", &c), rs);
        assert_eq!(spam_of("X-Rspamd-Action: no action\r\n", &c), None);
        assert_eq!(spam_of("X-Spam: Yes\r\n", &c), rs);
        assert_eq!(spam_of("X-Mailer: yes\r\n", &c), None);
    }

    #[test]
    fn a_score_threshold_decides_instead_of_the_filters_yes() {
        let mut c = config();
        c.spam.score_threshold = Some(8.0);
        assert_eq!(
            spam_of("X-Spam-Status: Yes, score=6.2 required=5.0\r\n", &c),
            None
        );
        assert_eq!(
            spam_of("X-Spam-Status: No, score=9.0 required=10.0\r\n", &c),
            Some(SpamVerdict::SpamAssassin)
        );
        assert_eq!(
            spam_of("X-Spamd-Result: default: False [8.50 / 15.00]\r\n", &c),
            Some(SpamVerdict::Rspamd)
        );
        // Without a score, the filter's own word still counts.
        assert_eq!(
            spam_of("X-Spam-Flag: YES\r\n", &c),
            Some(SpamVerdict::SpamAssassin)
        );
    }

    #[test]
    fn only_trusted_filters_count() {
        let mut c = config();
        c.spam.trust = vec![SpamSource::Rspamd];
        assert_eq!(spam_of("X-Spam-Flag: YES\r\n", &c), None);
        c.spam.enabled = false;
        assert_eq!(spam_of("X-Spam: yes\r\n", &c), None);
    }

    #[test]
    fn a_dmarc_fail_of_the_trusted_server_is_spam() {
        let mut c = config();
        let fail = "Authentication-Results: mx.example.com; dmarc=fail (p=reject) header.from=example.com\r\n";
        // Without a trusted server nothing of Authentication-Results is read.
        assert_eq!(spam_of(fail, &c), None);
        c.agents.trust_authserv_id = Some("mx.example.com".into());
        assert_eq!(spam_of(fail, &c), Some(SpamVerdict::Dmarc));
        // Another server's header, or a fail about another domain, is not.
        let other = "Authentication-Results: evil.example; dmarc=fail header.from=example.com\r\n";
        assert_eq!(spam_of(other, &c), None);
        let elsewhere =
            "Authentication-Results: mx.example.com; dmarc=fail header.from=example.org\r\n";
        assert_eq!(spam_of(elsewhere, &c), None);
        let pass = "Authentication-Results: mx.example.com; dmarc=pass header.from=example.com\r\n";
        assert_eq!(spam_of(pass, &c), None);
    }
}
