//! Raw bytes → [`Inbound`]: one decoded view of a mail, made once, that the rest of postdesk reads.
//!
//! Parsing never fails on a mail: what mail-parser cannot make sense of is recorded in [`Inbound::damage`]
//! and the rest is kept. It only refuses input that is not a mail at all (no header postdesk can use), which
//! `postdesk ingest` turns into exit 65. mail-parser sits behind this module so that moving to its 1.0 later
//! touches one file.

use std::borrow::Cow;

use chrono::{DateTime, TimeZone, Utc};
use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::{
    Encoding, HeaderName, Message, MessageParser, MessagePart, MimeHeaders, PartType,
};
use sha2::{Digest, Sha256};

use super::charset::{self, Hint};
use super::html::html_to_text;
use super::{address, header};
use crate::types::Locale;

/// A name and an address (lower-cased: addresses are compared, never displayed as typed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mailbox {
    pub address: String,
    pub name: String,
}

/// The headers that say a mail was written by a machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AutoHeaders {
    pub auto_submitted: Option<String>,
    pub precedence: Option<String>,
    pub list_id: Option<String>,
    pub list_unsubscribe: bool,
    pub x_auto_response_suppress: Option<String>,
    pub x_autoreply: bool,
    pub x_loop: Vec<String>,
    /// `Some("")` for `Return-Path: <>` (a bounce), `None` when there is no Return-Path.
    pub return_path: Option<String>,
    /// The `report-type` of a `multipart/report` mail (`delivery-status`, `disposition-notification`).
    pub report_type: Option<String>,
    /// For a delivery report: the Message-ID of the mail it reports on, if the report quotes it.
    pub reported_message_id: Option<String>,
    /// For a delivery report: its `Status:` and `Diagnostic-Code:` lines, e.g. `5.1.1 (smtp; 550 User unknown)`.
    pub report_diagnostic: Option<String>,
    pub importance: Option<String>,
    pub x_priority: Option<String>,
    /// `Authentication-Results` header values, as written (topmost first).
    pub authentication_results: Vec<String>,
    /// The spam filters' verdicts the receiving system wrote (see `mail::classify::spam`).
    pub spam: SpamHeaders,
}

/// The topmost value of each header a spam filter writes, white space folded, each cut at
/// [`MAX_SPAM_HEADER_BYTES`] (a filter writes a line or two; a sender's forged novel is not read whole).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpamHeaders {
    /// SpamAssassin: `X-Spam-Flag: YES`.
    pub spam_flag: Option<String>,
    /// SpamAssassin: `X-Spam-Status: Yes, score=1000.0 required=5.0 tests=GTUBE …`.
    pub spam_status: Option<String>,
    /// Rspamd: `X-Spamd-Result: default: True [15.00 / 15.00]; GTUBE(0.00)[] …`.
    pub spamd_result: Option<String>,
    /// Rspamd: `X-Rspamd-Action: add header` (or `reject`, `rewrite subject`, `no action`, …).
    pub rspamd_action: Option<String>,
    /// Rspamd: `X-Rspamd-Score: 12.30`.
    pub rspamd_score: Option<String>,
    /// Rspamd's milter headers: `X-Spam: Yes`.
    pub x_spam: Option<String>,
}

/// The most of one spam filter header read.
pub const MAX_SPAM_HEADER_BYTES: usize = 4096;

/// An attachment, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundAttachment {
    /// The file name as the sender gave it (RFC 2231/2047 decoded). Not safe for a filesystem: see
    /// [`safe_filename`].
    pub filename: String,
    pub content_type: String,
    pub data: Vec<u8>,
    pub sha256: String,
}

/// Everything postdesk needs from one received mail.
#[derive(Clone, Debug)]
pub struct Inbound {
    /// The requester: the first valid mailbox of From; when From has none, of Reply-To, then of Sender (the
    /// fallback is noted in `damage`). Never an address without a local part.
    pub from: Option<Mailbox>,
    /// How many `From:` header fields the mail has (more than one: the sender is uncertain).
    pub from_fields: usize,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub reply_to: Vec<Mailbox>,
    pub subject: String,
    /// Without angle brackets. Synthetic (`<hash>@postdesk.invalid`) when the mail has none.
    pub message_id: String,
    pub message_id_synthetic: bool,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    pub date: Option<DateTime<Utc>>,
    pub auto: AutoHeaders,
    /// The readable text: text/plain parts, or HTML turned into text; forwarded mails appended.
    pub text: String,
    pub attachments: Vec<InboundAttachment>,
    /// What went wrong while decoding (kept on the ticket; the mail is never refused for it).
    pub damage: Vec<String>,
    /// Identity of the mail's content, for de-duplication of re-deliveries (see [`content_hash`]).
    pub content_hash: String,
    /// sha256 of the raw bytes as received.
    pub raw_sha256: String,
}

/// The longest subject kept, in characters: RFC 5322's line length, so no later use (ticket title, templates,
/// headers) grows with what a sender sends. A longer subject is cut, ends in `…`, and the cut is recorded.
pub const MAX_SUBJECT_CHARS: usize = 998;

/// The most References kept (the newest ones): each is looked up in the store, and a real thread names a
/// handful. Older ones are dropped and the cut is recorded.
pub const MAX_REFERENCES: usize = 64;

/// The most In-Reply-To ids kept (a reply names one).
pub const MAX_IN_REPLY_TO: usize = 8;

/// The most HTML of one part turned into text (8 MiB): the converter is linear, and this bounds what one
/// part costs whatever the intake's `max_message_bytes`. The rest is dropped and the cut recorded.
pub const MAX_HTML_BYTES: usize = 8 * 1024 * 1024;

/// The attachments kept of one mail. Real mail has a handful; a sender who sends thousands of tiny parts
/// would make every later step (blobs, indexes, the agents' notification) pay per part. Beyond this many the
/// parts are not kept as attachments, the damage says so, and the raw mail is kept whole (damaged mail
/// keeps its raw bytes), so nothing is lost.
pub const MAX_ATTACHMENTS: usize = 256;

/// Input that is not a mail at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotMail {
    #[error("empty input")]
    Empty,
    #[error("no mail headers found (expected lines like \"From: …\" before a blank line)")]
    NoHeaders,
    #[error("the mail parser failed on this input: {0}")]
    ParserPanic(String),
}

/// Header names whose presence makes a byte string count as a mail.
const MAIL_HEADERS: [&str; 10] = [
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "received",
    "return-path",
    "sender",
    "mime-version",
];

/// Parse a raw mail. `hint` is the region's language, used only to guess charsets the mail does not declare.
///
/// Runs mail-parser under `catch_unwind`: a parser bug on hostile input becomes [`NotMail::ParserPanic`]
/// (and the caller quarantines the bytes) instead of taking the daemon down.
pub fn parse(raw: &[u8], hint: Locale) -> Result<Inbound, NotMail> {
    if raw.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(NotMail::Empty);
    }
    match std::panic::catch_unwind(|| parse_inner(raw, hint)) {
        Ok(result) => result,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_string());
            Err(NotMail::ParserPanic(what))
        }
    }
}

/// mail-parser set to parse only the header fields postdesk reads through it (MIME structure, Date,
/// message ids); everything else is kept raw. Subject and the address fields are decoded from their raw
/// bytes here ([`header`], [`address`]), and mail-parser's full parse of them (and of every Received line)
/// would be work thrown away. Built once.
fn mail_parser() -> &'static MessageParser {
    static PARSER: std::sync::OnceLock<MessageParser> = std::sync::OnceLock::new();
    PARSER.get_or_init(|| {
        MessageParser::new()
            .with_mime_headers()
            .header_date(HeaderName::Date)
            .with_message_ids()
            .header_id(HeaderName::ReturnPath)
            .default_header_raw()
    })
}

fn parse_inner(raw: &[u8], locale: Locale) -> Result<Inbound, NotMail> {
    let message = mail_parser().parse(raw).ok_or(NotMail::NoHeaders)?;
    let has_mail_header = message.headers().iter().any(|h| {
        MAIL_HEADERS
            .iter()
            .any(|n| h.name().eq_ignore_ascii_case(n))
    });
    if !has_mail_header {
        return Err(NotMail::NoHeaders);
    }
    let mut damage = Vec::new();
    let hint = mail_hint(&message, locale);

    let subject = decoded_header_text(&message, HeaderName::Subject, hint, &mut damage);
    // RFC 5322 allows one From field; the last one is read (as mail-parser does). The desk never threads
    // such a mail.
    let from_fields = message
        .headers()
        .iter()
        .filter(|h| h.name == HeaderName::From)
        .count();
    if from_fields > 1 {
        damage.push(format!(
            "{from_fields} From header fields (RFC 5322 allows one): the sender is uncertain"
        ));
    }
    let mut from = address_header(&message, "From", hint, &mut damage)
        .into_iter()
        .next();
    let reply_to = address_header(&message, "Reply-To", hint, &mut damage);
    if from.is_none() {
        // Never a requester without a whole address: the other helpdesks answer Reply-To, then Sender.
        let sender = address_header(&message, "Sender", hint, &mut damage)
            .into_iter()
            .next();
        let had_from = from_fields > 0;
        match (reply_to.first().cloned(), sender) {
            (Some(r), _) => {
                damage.push(format!(
                    "{}; the requester is the Reply-To address",
                    if had_from {
                        "no valid sender address in From"
                    } else {
                        "no From header"
                    }
                ));
                from = Some(r);
            }
            (None, Some(s)) => {
                damage.push(format!(
                    "{}; the requester is the Sender address",
                    if had_from {
                        "no valid sender address in From"
                    } else {
                        "no From header"
                    }
                ));
                from = Some(s);
            }
            (None, None) if had_from => damage.push(
                "no valid sender address in From, and no Reply-To or Sender to use instead".into(),
            ),
            (None, None) => {}
        }
    }
    let message_ids = |v: &mail_parser::HeaderValue| -> Vec<String> {
        v.as_text_list()
            .map(|l| {
                l.iter()
                    .map(|s| clean_id(s))
                    .filter(|s| !s.is_empty() && s.len() <= 998)
                    .collect()
            })
            .or_else(|| {
                v.as_text()
                    .map(|s| vec![clean_id(s)])
                    .filter(|v| !v[0].is_empty() && v[0].len() <= 998)
            })
            .unwrap_or_default()
    };
    let mut in_reply_to = message_ids(message.in_reply_to());
    if in_reply_to.len() > MAX_IN_REPLY_TO {
        damage.push(format!(
            "In-Reply-To: {} ids, kept the first {MAX_IN_REPLY_TO}",
            in_reply_to.len()
        ));
        in_reply_to.truncate(MAX_IN_REPLY_TO);
    }
    let mut references = message_ids(message.references());
    if references.len() > MAX_REFERENCES {
        damage.push(format!(
            "References: {} ids, kept the newest {MAX_REFERENCES}",
            references.len()
        ));
        references.drain(..references.len() - MAX_REFERENCES);
    }
    let date = message
        .date()
        .and_then(|d| Utc.timestamp_opt(d.to_timestamp(), 0).single())
        .filter(|d| d.timestamp() > 0);

    let content_hash = content_hash(raw, &message);
    let (message_id, message_id_synthetic) = match message.message_id().map(clean_id) {
        Some(id) if !id.is_empty() && id.len() <= 998 => (id, false),
        _ => (format!("{}@postdesk.invalid", &content_hash[..32]), true),
    };

    let mut body = Body::default();
    collect_body(&message, hint, &mut damage, 0, &mut body);
    let Body {
        mut text,
        mut attachments,
        dropped,
    } = body;
    if message.parts.iter().any(|p| p.is_encoding_problem) {
        damage.push(
            "MIME structure damaged (a boundary or encoding was broken); kept what could be read"
                .into(),
        );
    }
    if dropped > 0 {
        damage.push(format!(
            "{dropped} more attachments not kept (at most {MAX_ATTACHMENTS} per mail); the raw mail is kept"
        ));
    }
    if text.trim().is_empty() && message.text_body.is_empty() && message.html_body.is_empty() {
        let root = &message.parts[0];
        if message.attachments.first() == Some(&0) && is_attachment_root(root) {
            // The whole mail is one attachment (a scanner's PDF, `mail -a`): it is kept as the attachment,
            // and its encoded bytes are not text.
            damage.push(format!(
                "the mail is a single {} attachment and has no text",
                content_type_of(root)
            ));
        } else if let Some(raw_body) =
            raw.get(body_in_headers(raw, root).unwrap_or(root.offset_body as usize)..)
        {
            // A body with no MIME structure mail-parser recognised: keep its bytes as text rather than nothing.
            if !raw_body.is_empty() && !root.is_multipart() {
                let (s, cs) = charset::guess_decode(raw_body, locale);
                damage.push(format!(
                    "body without a readable text part; decoded as {cs}"
                ));
                text = s;
                // The body is the text now, not also a nameless attachment.
                if message.attachments.first() == Some(&0) && !attachments.is_empty() {
                    attachments.remove(0);
                }
            }
        }
    }

    let header_text = |name: &str| message.header_raw(name).map(|v| v.trim().to_string());
    let root_ct = message.content_type();
    let report_type = root_ct
        .filter(|ct| {
            ct.ctype().eq_ignore_ascii_case("multipart")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("report"))
        })
        .map(|ct| {
            ct.attribute("report-type")
                .unwrap_or("")
                .to_ascii_lowercase()
        });
    let reported_message_id = report_type.as_ref().and_then(|_| {
        attachments
            .iter()
            .filter(|a| {
                a.content_type.contains("rfc822") || a.content_type.contains("global-headers")
            })
            .find_map(|a| find_message_id_line(&a.data))
    });
    let report_diagnostic = report_type.as_ref().and_then(|_| {
        attachments
            .iter()
            .filter(|a| a.content_type.contains("delivery-status"))
            .find_map(|a| diagnostic_of(&a.data))
    });
    let auto = AutoHeaders {
        auto_submitted: header_text("Auto-Submitted").map(|s| s.to_ascii_lowercase()),
        precedence: header_text("Precedence").map(|s| s.to_ascii_lowercase()),
        list_id: header_text("List-Id"),
        list_unsubscribe: message.header("List-Unsubscribe").is_some(),
        x_auto_response_suppress: header_text("X-Auto-Response-Suppress"),
        x_autoreply: message.header("X-Autoreply").is_some()
            || message.header("X-Autorespond").is_some(),
        x_loop: message
            .header_values("X-Loop")
            .filter_map(|v| v.as_text().map(|s| s.trim().to_ascii_lowercase()))
            .collect(),
        return_path: message.header("Return-Path").map(|v| {
            v.as_text()
                .or_else(|| v.as_text_list().and_then(|l| l.first().map(|c| c.as_ref())))
                .map(clean_id)
                .unwrap_or_default()
                .to_ascii_lowercase()
        }),
        report_type,
        reported_message_id,
        report_diagnostic,
        importance: header_text("Importance").map(|s| s.to_ascii_lowercase()),
        // Every one, in order: an unreadable one stays as "" so it still ends the run of the receiving
        // server's headers (see `mail::authres::trusted`).
        authentication_results: message
            .header_values("Authentication-Results")
            .map(|v| {
                v.as_text()
                    .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                    .unwrap_or_default()
            })
            .collect(),
        x_priority: header_text("X-Priority"),
        spam: {
            let spam_header = |name: &str| {
                message.header_raw(name).map(|v| {
                    let mut end = v.len().min(MAX_SPAM_HEADER_BYTES);
                    while !v.is_char_boundary(end) {
                        end -= 1;
                    }
                    v[..end].split_whitespace().collect::<Vec<_>>().join(" ")
                })
            };
            SpamHeaders {
                spam_flag: spam_header("X-Spam-Flag"),
                spam_status: spam_header("X-Spam-Status"),
                spamd_result: spam_header("X-Spamd-Result"),
                rspamd_action: spam_header("X-Rspamd-Action"),
                rspamd_score: spam_header("X-Rspamd-Score"),
                x_spam: spam_header("X-Spam"),
            }
        },
    };

    Ok(Inbound {
        from,
        from_fields,
        to: address_header(&message, "To", hint, &mut damage),
        cc: address_header(&message, "Cc", hint, &mut damage),
        reply_to,
        subject,
        message_id,
        message_id_synthetic,
        in_reply_to,
        references,
        date,
        auto,
        text,
        attachments,
        damage,
        content_hash,
        raw_sha256: hex::encode(Sha256::digest(raw)),
    })
}

/// Strip angle brackets and white space from a Message-ID.
pub fn clean_id(s: &str) -> String {
    s.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_string()
}

/// A mailbox postdesk can store: the address without a source route, checked by [`is_valid_address`].
/// What is dropped or changed is recorded in `damage`; the mail itself is kept.
fn mailbox_of(written: address::Written, damage: &mut Vec<String>) -> Option<Mailbox> {
    let raw = written.address.trim();
    if raw.is_empty() {
        if !written.name.is_empty() {
            damage.push(format!("{} has no address; ignored", shown(&written.name)));
        }
        return None;
    }
    let (address, routed) = without_route(raw);
    if routed {
        damage.push(format!(
            "address {}: source route dropped, kept {}",
            shown(raw),
            shown(address)
        ));
    }
    if !is_valid_address(address) {
        damage.push(format!("{} is not a valid address; ignored", shown(raw)));
        return None;
    }
    if written.local_part_decoded {
        damage.push(format!(
            "address {}: an encoded word in the local part was decoded",
            shown(address)
        ));
    }
    Some(Mailbox {
        address: address.to_ascii_lowercase(),
        name: written.name,
    })
}

/// A sender-controlled string as it may appear in a damage note: escaped, and cut at 100 characters.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(100).flat_map(char::escape_debug).collect();
    if s.chars().nth(100).is_some() {
        out.push('…');
    }
    format!("\"{out}\"")
}

/// `@relay.example,@other.example:user@example.jp` (an RFC 5322 obsolete source route) → `user@example.jp`,
/// and whether there was a route. The route names relays, never the mailbox.
fn without_route(address: &str) -> (&str, bool) {
    match address.strip_prefix('@').and_then(|r| r.split_once(':')) {
        Some((_, mailbox)) => (mailbox.trim(), true),
        None => (address, false),
    }
}

/// Whether `address` is one postdesk stores and answers: `local@domain`, linear and RFC 5321-ish.
///
/// The local part: 1–64 characters, none of them white space, a control or format character, or one of
/// `"(),:;<>@[\]` and `/` (an address names a mailbox, never a path). Dots are not checked, as Japanese
/// carriers hand out `taro..yamada.@docomo.ne.jp`. The domain: dot-separated labels of 1–63 letters,
/// digits and hyphens (not at either end of a label), non-ASCII letters allowed (an IDN), 255 bytes at
/// most. Address literals (`a@[127.0.0.1]`) are not accepted.
pub fn is_valid_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.chars().count() <= 64
        && local.chars().all(|c| {
            !c.is_whitespace()
                && !c.is_control()
                && !is_format_char(c)
                && !"\"(),:;<>@[\\]/".contains(c)
        });
    let domain_ok = !domain.is_empty()
        && domain.len() <= 255
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || c == '-'
                        || (!c.is_ascii()
                            && !c.is_whitespace()
                            && !c.is_control()
                            && !is_format_char(c)
                            && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{3002}' | '\u{ff0e}'))
                })
        });
    local_ok && domain_ok
}

/// Whether a mail's root part is itself an attachment: a named part, or a type that is not text.
fn is_attachment_root(root: &MessagePart) -> bool {
    let named = root.attachment_name().is_some()
        || root
            .content_disposition()
            .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"));
    let text_like = root.content_type().is_none_or(|ct| {
        ["text", "multipart", "message"]
            .iter()
            .any(|t| ct.ctype().eq_ignore_ascii_case(t))
    });
    named || !text_like
}

/// The raw value of the last header `name` of a message's top part (mail-parser keeps the offsets).
fn raw_header<'a>(message: &'a Message, name: &str) -> Option<&'a [u8]> {
    let h = message
        .parts
        .first()?
        .headers
        .iter()
        .rev()
        .find(|h| h.name().eq_ignore_ascii_case(name))?;
    message
        .raw_message
        .get(h.offset_start() as usize..h.offset_end() as usize)
}

/// The valid mailboxes of an address header, read from its raw bytes (see [`address`]).
fn address_header(
    message: &Message,
    name: &str,
    hint: Hint,
    damage: &mut Vec<String>,
) -> Vec<Mailbox> {
    let Some(raw) = raw_header(message, name) else {
        return Vec::new();
    };
    let mut guesses = Vec::new();
    let written = address::parse_list(raw, hint, &mut guesses);
    note_guesses(damage, name, guesses);
    written
        .into_iter()
        .filter_map(|w| mailbox_of(w, damage))
        .collect()
}

/// Charset guesses made while decoding a header, as damage notes: each once, at most a few per header
/// (20,000 Cc names of one unknown charset say it once).
fn note_guesses(damage: &mut Vec<String>, what: &str, mut guesses: Vec<String>) {
    guesses.dedup();
    let mut seen: Vec<&String> = Vec::new();
    for g in &guesses {
        if seen.len() == 4 {
            break;
        }
        if !seen.contains(&g) {
            seen.push(g);
            damage.push(format!("{what}: {g}"));
        }
    }
}

/// The detector's tie-breaker for this mail: the language its own declared charsets imply (the body's
/// `charset=`, the Subject's encoded words), else the region's.
fn mail_hint(message: &Message, locale: Locale) -> Hint {
    let declared = message
        .parts
        .iter()
        .filter_map(|p| p.content_type()?.attribute("charset"))
        .find_map(charset::tld_of_label)
        .or_else(|| {
            let subject = raw_header(message, "Subject")?;
            let at = subject.windows(2).position(|w| w == b"=?")?;
            let rest = &subject[at + 2..];
            let label = &rest[..rest.iter().take(40).position(|&b| b == b'?')?];
            charset::tld_of_label(&String::from_utf8_lossy(label))
        });
    Hint {
        tld: declared.or_else(|| charset::tld_of_locale(locale)),
    }
}

fn content_type_of(part: &MessagePart) -> String {
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None => match part.body {
            PartType::Message(_) => "message/rfc822".into(),
            PartType::Text(_) => "text/plain".into(),
            PartType::Html(_) => "text/html".into(),
            _ => "application/octet-stream".into(),
        },
    }
}

/// The bytes of a part after undoing its transfer encoding (but not its charset), up to `end` (an offset
/// in the raw message) when the part was found to run past where it really ends (see [`foreign_cut`]).
fn part_transfer_decoded<'a>(
    message: &'a Message,
    part: &MessagePart,
    end: Option<usize>,
) -> Cow<'a, [u8]> {
    let start = body_in_headers(&message.raw_message, part).unwrap_or(part.offset_body as usize);
    let end = end
        .unwrap_or(part.offset_end as usize)
        .min(part.offset_end as usize)
        .min(message.raw_message.len());
    let Some(raw) = message.raw_message.get(start..end) else {
        return Cow::Owned(part.contents().to_vec());
    };
    // When the raw range does not decode (a part cut short, a boundary never closed), mail-parser's own
    // lenient decoding of the part is a better answer than undecoded bytes.
    let lenient = || Cow::Owned(part.contents().to_vec());
    match declared_encoding(part) {
        Encoding::Base64 => base64_decode(raw)
            .or_else(|| base64_lenient(raw))
            .map(Cow::Owned)
            .unwrap_or_else(lenient),
        Encoding::QuotedPrintable => quoted_printable_decode(raw)
            .map(Cow::Owned)
            .unwrap_or_else(lenient),
        Encoding::None => Cow::Borrowed(raw),
    }
}

/// The part's transfer encoding. mail-parser drops the encoding of a part it could not finish (no closing
/// boundary): then the header says it.
fn declared_encoding(part: &MessagePart) -> Encoding {
    if part.encoding != Encoding::None {
        return part.encoding;
    }
    match part.content_transfer_encoding().map(str::trim) {
        Some(e) if e.eq_ignore_ascii_case("base64") => Encoding::Base64,
        Some(e) if e.eq_ignore_ascii_case("quoted-printable") => Encoding::QuotedPrintable,
        _ => Encoding::None,
    }
}

/// Where the body of a part really starts when its header block ends in lines that are no header fields (a
/// sender who left out the blank line: `Subject: x` then `counter to RFC 2822, there's no separating
/// newline here`): mail-parser reads such lines as headers and the text is lost. The answer is the first
/// line after the last real header line that is not a header line itself. Linear in the header block.
fn body_in_headers(raw: &[u8], part: &MessagePart) -> Option<usize> {
    let start = part.offset_header as usize;
    let end = (part.offset_body as usize).min(raw.len());
    // Only a part left without a body can have lost it to its header block (and this keeps the common case
    // to one look at the body's first bytes).
    let body = raw.get(end..(part.offset_end as usize).min(raw.len()))?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let block = raw.get(start..end)?;
    let mut pos = 0;
    let mut found: Option<usize> = None;
    while pos < block.len() {
        let line_end = block[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(block.len(), |p| pos + p);
        let line = block[pos..line_end]
            .strip_suffix(b"\r")
            .unwrap_or(&block[pos..line_end]);
        if line.is_empty() {
            break;
        }
        let continuation = line[0] == b' ' || line[0] == b'\t';
        let name_len = line
            .iter()
            .position(|&b| b == b':' || !(33..=126).contains(&b))
            .unwrap_or(line.len());
        let rest = &line[name_len..];
        let header = name_len > 0
            && rest
                .iter()
                .find(|&&b| b != b' ' && b != b'\t')
                .is_some_and(|&b| b == b':');
        if header {
            found = None;
        } else if !continuation && found.is_none() {
            found = Some(pos);
        }
        pos = line_end + 1;
    }
    found.map(|p| start + p)
}

/// Whether mail-parser left a part's transfer encoding undone (it does for a part it could not finish).
fn transfer_undone(part: &MessagePart) -> bool {
    part.encoding == Encoding::None && declared_encoding(part) != Encoding::None
}

/// Base64 as broken mailers write it: white space anywhere, no padding, cut short, trailing junk. Decodes
/// every complete group and what a final partial group holds; `None` when nothing decodable is there.
pub fn base64_lenient(raw: &[u8]) -> Option<Vec<u8>> {
    fn value(b: u8) -> Option<u32> {
        match b {
            b'A'..=b'Z' => Some((b - b'A') as u32),
            b'a'..=b'z' => Some((b - b'a') as u32 + 26),
            b'0'..=b'9' => Some((b - b'0') as u32 + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(raw.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in raw {
        if b == b'=' {
            break;
        }
        let Some(v) = value(b) else {
            if b.is_ascii_whitespace() {
                continue;
            }
            break;
        };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Whether mail-parser's decoding of a text part needs a second look from its bytes: no label (or an
/// ASCII one) on 8-bit text, a label mail-parser does not know, a label that did not fit the bytes (U+FFFD),
/// 8-bit text under a Latin label (it may be UTF-8), or raw ISO-2022-JP escapes.
fn needs_second_look(label: Option<&str>, decoded: &str) -> bool {
    let plain = decoded.is_ascii() && !decoded.contains('\x1b');
    let Some(l) = label.map(str::trim).filter(|l| !l.is_empty()) else {
        return !plain;
    };
    let ours = charset::lookup(l);
    if ours == charset::Charset::Known(encoding_rs::UTF_8) {
        // mail-parser reads UTF-8 (a label its table does not list) as UTF-8, lossily.
        return decoded.contains('\u{FFFD}') || decoded.contains('\x1b');
    }
    if mail_parser::decoders::charsets::map::charset_decoder(l.as_bytes()).is_none() {
        // mail-parser read it as UTF-8: right for ASCII, unless the label is one under which ASCII
        // bytes are not ASCII text (`unicode-1-1-utf-7`, UTF-16 names it does not know).
        return match ours {
            charset::Charset::Utf7 => true,
            charset::Charset::Known(e) => !plain || e.name().starts_with("UTF-16"),
            charset::Charset::Unknown => !plain,
        };
    }
    if plain {
        return false;
    }
    // A label mail-parser knows (and decoded with) is questioned only where its reading shows the label
    // did not fit: U+FFFD. (One scan: this is every CJK part.)
    if decoded.contains('\u{FFFD}') {
        return true;
    }
    match ours {
        charset::Charset::Known(e) => e.is_single_byte(),
        charset::Charset::Utf7 => false,
        charset::Charset::Unknown => true,
    }
}

/// The text of a text/* part, with the charset second opinions of [`charset`] applied, and HTML made readable.
/// `end` cuts a part that ran past its real end (see [`foreign_cut`]).
fn part_text(
    message: &Message,
    part: &MessagePart,
    hint: Hint,
    damage: &mut Vec<String>,
    end: Option<usize>,
) -> String {
    let (decoded, is_html) = match &part.body {
        PartType::Text(t) => (t.as_ref(), false),
        PartType::Html(h) => (h.as_ref(), true),
        _ => return String::new(),
    };
    let label = part.content_type().and_then(|ct| ct.attribute("charset"));
    let text: Cow<str> = if end.is_some()
        || transfer_undone(part)
        || needs_second_look(label, decoded)
        || body_in_headers(&message.raw_message, part).is_some()
    {
        let bytes = part_transfer_decoded(message, part, end);
        let d = charset::decode(label, &bytes, hint);
        if let Some(g) = d.guess {
            damage.push(format!("charset guessed: {g}"));
        }
        Cow::Owned(d.text)
    } else {
        Cow::Borrowed(decoded)
    };
    let text = if is_html {
        let mut html: &str = &text;
        if html.len() > MAX_HTML_BYTES {
            let mut end = MAX_HTML_BYTES;
            while !html.is_char_boundary(end) {
                end -= 1;
            }
            damage.push(format!(
                "HTML part of {} KB: converted the first {} KB",
                html.len() / 1024,
                MAX_HTML_BYTES / 1024
            ));
            html = &html[..end];
        }
        html_to_text(html)
    } else {
        text.into_owned()
    };
    normalise_newlines(&text)
}

/// A header's text, decoded from its raw bytes (see [`header::decode_header`]) and cut at
/// [`MAX_SUBJECT_CHARS`].
fn decoded_header_text(
    message: &Message,
    name: HeaderName,
    hint: Hint,
    damage: &mut Vec<String>,
) -> String {
    let Some(h) = message.parts[0].headers.iter().find(|h| h.name == name) else {
        return String::new();
    };
    let raw = message
        .raw_message
        .get(h.offset_start() as usize..h.offset_end() as usize)
        .unwrap_or(b"");
    let mut guesses = Vec::new();
    let text = header::decode_header(raw, hint, &mut guesses);
    note_guesses(damage, name.as_str(), guesses);
    // Bounded here, once, so that every later use of the text is bounded too.
    let length = text.chars().count();
    if length <= MAX_SUBJECT_CHARS {
        return text;
    }
    damage.push(format!(
        "{}: {length} characters long, kept the first {}",
        name.as_str(),
        MAX_SUBJECT_CHARS - 1
    ));
    let mut cut: String = text.chars().take(MAX_SUBJECT_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// An attachment's file name from the part's raw headers (see [`header::parameter`]): Content-Disposition's
/// `filename`, else Content-Type's `name`, else what mail-parser found.
fn attachment_name(
    message: &Message,
    part: &MessagePart,
    hint: Hint,
    damage: &mut Vec<String>,
) -> String {
    let raw_of = |name: &str| {
        let h = part
            .headers
            .iter()
            .find(|h| h.name().eq_ignore_ascii_case(name))?;
        message
            .raw_message
            .get(h.offset_start() as usize..h.offset_end() as usize)
    };
    let mut guesses = Vec::new();
    let name = raw_of("Content-Disposition")
        .and_then(|r| header::parameter(r, "filename", hint, &mut guesses))
        .or_else(|| {
            raw_of("Content-Type").and_then(|r| header::parameter(r, "name", hint, &mut guesses))
        })
        .or_else(|| part.attachment_name().map(str::to_string))
        .unwrap_or_default();
    note_guesses(damage, "attachment name", guesses);
    name
}

/// What [`collect_body`] gathers: the text, the attachments kept, how many were not.
#[derive(Default)]
struct Body {
    text: String,
    attachments: Vec<InboundAttachment>,
    dropped: usize,
}

impl Body {
    fn push_text(&mut self, piece: &str) {
        if !piece.trim().is_empty() {
            if !self.text.is_empty() {
                self.text.push_str("\n\n");
            }
            self.text.push_str(piece.trim_end());
        }
    }
}

/// How deep parts found after an unclosed multipart are recovered (each level re-reads what is left).
const MAX_RECOVERY_DEPTH: u8 = 2;

/// How many parts after a delimiter found inside a part are read again, per level.
const MAX_RECOVERIES: usize = 8;

/// The text parts and attachments of `message` into `body`. A part that an unclosed multipart let run on
/// past the delimiter of an outer multipart (bounces from some MTAs, mail cut by a relay) is cut there, its
/// transfer encoding applied to what is its own, and the parts after the delimiter are read again as parts
/// of that outer multipart (a delivery report's delivery-status and message/rfc822 parts are kept).
fn collect_body(
    message: &Message,
    hint: Hint,
    damage: &mut Vec<String>,
    depth: u8,
    body: &mut Body,
) {
    let boundaries = boundaries_of(message);
    // (where the rest starts, where the part ended, which boundary)
    let mut rests: Vec<(usize, usize, usize)> = Vec::new();
    let mut cut = |part: &MessagePart| -> Option<usize> {
        let (own_end, rest_start, k) = foreign_cut(message, part, &boundaries)?;
        // At most a few re-reads per level (a real mail has one unclosed multipart; a hostile one with
        // thousands of cut parts still has each part cut, and costs no more).
        if rests.len() < MAX_RECOVERIES && !rests.iter().any(|&(r, _, _)| r == rest_start) {
            rests.push((rest_start, part.offset_end as usize, k));
        }
        Some(own_end)
    };
    let mut text = Body::default();
    for &id in &message.text_body {
        let Some(part) = message.parts.get(id as usize) else {
            continue;
        };
        let end = cut(part);
        text.push_text(&part_text(message, part, hint, damage, end));
    }
    if text.text.trim().is_empty() {
        // An empty text/plain alternative beside an HTML one (some webmails and mobile clients): the HTML
        // is the text.
        for &id in &message.html_body {
            let Some(part) = message.parts.get(id as usize) else {
                continue;
            };
            if !matches!(part.body, PartType::Html(_)) || message.text_body.contains(&id) {
                continue;
            }
            let end = cut(part);
            text.push_text(&part_text(message, part, hint, damage, end));
        }
    }
    body.push_text(&text.text);
    for part in message.attachments() {
        if body.attachments.len() == MAX_ATTACHMENTS {
            body.dropped += 1;
            continue;
        }
        let end = cut(part);
        if end.is_some() && is_inline_text(part) {
            // The last alternative of an unclosed multipart/alternative: mail-parser never finished the
            // alternative, so it listed the part as an attachment. It is the mail's text.
            if body.text.trim().is_empty() {
                let piece = part_text(message, part, hint, damage, end);
                body.push_text(&piece);
            }
            continue;
        }
        let data: Vec<u8> = match &part.body {
            PartType::Text(_) | PartType::Html(_) => {
                part_transfer_decoded(message, part, end).into_owned()
            }
            _ if end.is_some() => part_transfer_decoded(message, part, end).into_owned(),
            _ => part.contents().to_vec(),
        };
        let content_type = content_type_of(part);
        let filename = attachment_name(message, part, hint, damage);
        if let PartType::Message(inner) = &part.body {
            append_forwarded(&mut body.text, inner, hint);
        }
        let sha256 = hex::encode(Sha256::digest(&data));
        body.attachments.push(InboundAttachment {
            filename,
            content_type,
            data,
            sha256,
        });
    }
    for (rest_start, rest_end, k) in rests {
        if depth >= MAX_RECOVERY_DEPTH {
            break;
        }
        let rest_end = rest_end.min(message.raw_message.len());
        let Some(rest) = message.raw_message.get(rest_start..rest_end) else {
            continue;
        };
        let mut synthetic = b"Content-Type: multipart/mixed; boundary=\"".to_vec();
        synthetic.extend_from_slice(&boundaries[k]);
        synthetic.extend_from_slice(b"\"\r\n\r\n--");
        synthetic.extend_from_slice(&boundaries[k]);
        // The delimiter line as mail-parser reads it (without the transport padding RFC 2046 allows after
        // it), then what follows it.
        let after_line = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |p| p + 1);
        let closing = rest[..after_line].windows(2).nth(2 + boundaries[k].len()) == Some(b"--");
        synthetic.extend_from_slice(if closing { b"--\r\n" } else { b"\r\n" });
        synthetic.extend_from_slice(&rest[after_line..]);
        if let Some(recovered) = mail_parser().parse(&synthetic) {
            let (before, text_before) = (body.attachments.len(), body.text.len());
            collect_body(&recovered, hint, damage, depth + 1, body);
            if body.attachments.len() == before && body.text.len() == text_before {
                continue;
            }
            damage.push(
                "a multipart delimiter inside a part (a multipart never closed, or a delimiter line missing); the parts after it were read again"
                    .into(),
            );
        }
    }
}

/// A text/plain or text/html part with no file name and not marked as an attachment.
fn is_inline_text(part: &MessagePart) -> bool {
    matches!(part.body, PartType::Text(_) | PartType::Html(_))
        && part.attachment_name().is_none()
        && !part
            .content_disposition()
            .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"))
}

/// The boundaries every Content-Type header of the mail declares (at most 32 distinct; usable in a header:
/// no quote, no line break), duplicated headers included: a sender who forgot a multipart's first
/// delimiter leaves two Content-Type headers on one part, and mail-parser reads the later one.
fn boundaries_of(message: &Message) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let declared = message.parts.iter().flat_map(|p| {
        p.headers
            .iter()
            .filter(|h| h.name == HeaderName::ContentType)
            .filter_map(|h| h.value().as_content_type()?.attribute("boundary"))
    });
    for b in declared {
        let b = b.as_bytes();
        if b.is_empty() || b.iter().any(|&c| c == b'"' || c == b'\r' || c == b'\n') {
            continue;
        }
        if !out.iter().any(|o| o == b) {
            out.push(b.to_vec());
            if out.len() == 32 {
                break;
            }
        }
    }
    out
}

/// For a text part, or a part mail-parser could not finish: the first line of its body that delimits one of
/// the mail's multiparts (`--boundary` or `--boundary--`), which it cannot hold if the multiparts were
/// well formed. Returns
/// where the part's own body ends (before that line's line break), where the line starts, and which
/// boundary it is. Linear in the part's size (times the few boundaries).
fn foreign_cut(
    message: &Message,
    part: &MessagePart,
    boundaries: &[Vec<u8>],
) -> Option<(usize, usize, usize)> {
    let text = matches!(part.body, PartType::Text(_) | PartType::Html(_));
    if !(part.is_encoding_problem || text) || boundaries.is_empty() || part.is_multipart() {
        return None;
    }
    let start = part.offset_body as usize;
    let end = (part.offset_end as usize).min(message.raw_message.len());
    let body = message.raw_message.get(start..end)?;
    let mut line_start = 0;
    while line_start < body.len() {
        let line_end = body[line_start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |p| line_start + p);
        let line = &body[line_start..line_end];
        if let Some(rest) = line.strip_prefix(b"--") {
            for (k, b) in boundaries.iter().enumerate() {
                let Some(after) = rest.strip_prefix(b.as_slice()) else {
                    continue;
                };
                let after = after.strip_prefix(b"--").unwrap_or(after);
                if after.iter().all(|c| c.is_ascii_whitespace()) {
                    let mut own_end = line_start;
                    if own_end > 0 && body[own_end - 1] == b'\n' {
                        own_end -= 1;
                        if own_end > 0 && body[own_end - 1] == b'\r' {
                            own_end -= 1;
                        }
                    }
                    return Some((start + own_end, start + line_start, k));
                }
            }
        }
        line_start = line_end + 1;
    }
    None
}

fn normalise_newlines(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

fn append_forwarded(text: &mut String, inner: &Message, hint: Hint) {
    let mut ignored = Vec::new();
    let body: String = inner
        .text_body
        .iter()
        .filter_map(|&id| inner.parts.get(id as usize))
        .map(|p| part_text(inner, p, hint, &mut ignored, None))
        .collect::<Vec<_>>()
        .join("\n\n");
    let from = address_header(inner, "From", hint, &mut ignored)
        .into_iter()
        .next()
        .map(|m| m.address)
        .unwrap_or_default();
    let subject = decoded_header_text(inner, HeaderName::Subject, hint, &mut ignored);
    if !text.is_empty() {
        text.push_str("\n\n");
    }
    text.push_str("---------- Forwarded message ----------\n");
    text.push_str(&format!("From: {from}\nSubject: {subject}\n\n"));
    text.push_str(body.trim_end());
}

fn find_message_id_line(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("message-id")
            .then(|| clean_id(value))
            .filter(|v| !v.is_empty())
    })
}

/// `Status` and `Diagnostic-Code` of a `message/delivery-status` part, one line.
fn diagnostic_of(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    match (field("Status"), field("Diagnostic-Code")) {
        (Some(s), Some(d)) => Some(format!("{s} ({d})")),
        (s, d) => s.or(d),
    }
}

/// The identity of a mail's content: sender, subject, date, Message-ID and body, with line endings and
/// trailing white space normalised. Headers that relays add (Received, Delivered-To, Return-Path) are left
/// out, so the same mail arriving through two paths (IMAP and the MTA pipe, or a re-delivery) is recognised.
pub fn content_hash(raw: &[u8], message: &Message) -> String {
    let mut h = Sha256::new();
    for name in ["From", "Subject", "Date", "Message-ID", "To", "Cc"] {
        h.update(name.as_bytes());
        h.update(b":");
        if let Some(header) = message.parts[0]
            .headers
            .iter()
            .find(|hd| hd.name().eq_ignore_ascii_case(name))
        {
            let v = raw
                .get(header.offset_start() as usize..header.offset_end() as usize)
                .unwrap_or(b"");
            h.update(collapse_ws(v));
        }
        h.update(b"\n");
    }
    h.update(b"\n");
    let body = raw
        .get(message.parts[0].offset_body as usize..)
        .unwrap_or(b"");
    for line in body.split(|&b| b == b'\n') {
        let mut end = line.len();
        while end > 0 && matches!(line[end - 1], b'\r' | b' ' | b'\t') {
            end -= 1;
        }
        h.update(&line[..end]);
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

fn collapse_ws(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut space = false;
    for &b in v {
        if b.is_ascii_whitespace() {
            space = !out.is_empty();
        } else {
            if space {
                out.push(b' ');
                space = false;
            }
            out.push(b);
        }
    }
    out
}

/// A file name that is safe to create: no directories, no control or invisible format characters, no
/// characters Windows or shells treat specially, no leading dots, no trailing dots or spaces, bounded
/// length, not a Windows device name (see [`is_windows_reserved`]); never empty.
///
/// Format characters (Unicode category Cf: the right-to-left override that shows `invoice\u{202e}txt.exe`
/// as `invoiceexe.txt`, zero-width spaces, byte-order marks) are removed; controls become `_`.
pub fn safe_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .filter(|&c| !is_format_char(c))
        .map(|c| match c {
            c if c.is_control() => '_',
            '\u{2028}' | '\u{2029}' => '_',
            '<' | '>' | ':' | '"' | '|' | '?' | '*' => '_',
            c => c,
        })
        .collect();
    let mut out = String::new();
    for c in trim_filename(&cleaned).chars() {
        if out.len() + c.len_utf8() > 200 {
            break;
        }
        out.push(c);
    }
    // The cut may end on a dot or a space again.
    let mut out = trim_filename(&out).to_string();
    if is_windows_reserved(&out) {
        out.insert(0, '_');
    }
    if out.is_empty() {
        "attachment".to_string()
    } else {
        out
    }
}

/// Without leading dots (hidden files) and white space, and without trailing dots and white space
/// (Windows drops them, so `CON. ` is `CON`).
fn trim_filename(s: &str) -> &str {
    s.trim_start_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_end_matches(|c: char| c == '.' || c.is_whitespace())
}

/// A Windows device name, whatever follows the first dot and in any case: `CON`, `PRN`, `AUX`, `NUL`,
/// `CONIN$`, `CONOUT$`, `COM0`–`COM9`, `LPT0`–`LPT9` and the superscript `COM¹`–`COM³`, `LPT¹`–`LPT³`
/// (spaces before the extension do not help: `CON .txt` is the console too).
pub fn is_windows_reserved(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or("").trim_end();
    let upper = stem.to_ascii_uppercase();
    if matches!(
        upper.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
    ) {
        return true;
    }
    let Some(rest) = upper
        .strip_prefix("COM")
        .or_else(|| upper.strip_prefix("LPT"))
    else {
        return false;
    };
    let mut chars = rest.chars();
    matches!(
        (chars.next(), chars.next()),
        (Some('0'..='9' | '¹' | '²' | '³'), None)
    )
}

/// Unicode general category Cf (format characters, Unicode 15.1): invisible, and able to reorder or hide
/// what a reader sees. Also the unassigned rest of the U+2060 block.
pub fn is_format_char(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(s: &str) -> Inbound {
        parse(s.as_bytes(), Locale::En).expect("a mail")
    }

    /// Issue 13 (hostile mail, the bench's `many_parts`): 10,000 tiny attachments made every later step pay
    /// per part; at most [`MAX_ATTACHMENTS`] are kept, and the damage keeps the raw mail.
    #[test]
    fn a_mail_of_thousands_of_parts_keeps_at_most_the_attachment_limit() {
        let mut raw = String::from("From: a@example.com\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n");
        for i in 0..10_000 {
            raw.push_str(&format!("--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"f{i}.bin\"\r\n\r\nx{i}\r\n"));
        }
        raw.push_str("--b--\r\n");
        let m = mail(&raw);
        assert_eq!(m.attachments.len(), MAX_ATTACHMENTS);
        assert_eq!(m.attachments[0].filename, "f0.bin");
        assert!(
            m.damage
                .iter()
                .any(|d| d.contains("9744 more attachments not kept")),
            "{:?}",
            m.damage
        );
        assert!(m.text.contains("hello"));
    }

    #[test]
    fn refuses_what_is_not_mail() {
        assert_eq!(parse(b"", Locale::En).unwrap_err(), NotMail::Empty);
        assert_eq!(parse(b"  \r\n", Locale::En).unwrap_err(), NotMail::Empty);
        assert!(parse(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", Locale::En).is_err());
        assert!(parse(b"just some words\nand more words\n", Locale::En).is_err());
    }

    #[test]
    fn reads_basic_headers() {
        let m = mail("From: \"Taro\" <Taro@Example.JP>\r\nTo: support-jp@example.com\r\nSubject: Hello\r\nMessage-ID: <abc@x>\r\nIn-Reply-To: <p1@x>\r\nReferences: <p0@x> <p1@x>\r\nDate: Tue, 1 Jul 2025 10:00:00 +0900\r\n\r\nbody\r\n");
        let from = m.from.unwrap();
        assert_eq!(from.address, "taro@example.jp");
        assert_eq!(from.name, "Taro");
        assert_eq!(m.message_id, "abc@x");
        assert!(!m.message_id_synthetic);
        assert_eq!(m.in_reply_to, vec!["p1@x"]);
        assert_eq!(m.references, vec!["p0@x", "p1@x"]);
        assert_eq!(m.date.unwrap().to_rfc3339(), "2025-07-01T01:00:00+00:00");
        assert_eq!(m.text, "body");
    }

    #[test]
    fn missing_message_id_gets_a_stable_synthetic_one() {
        let raw = "From: a@example.com\r\nSubject: x\r\n\r\nhello\r\n";
        let a = mail(raw);
        let b = mail(raw);
        assert!(a.message_id_synthetic);
        assert!(a.message_id.ends_with("@postdesk.invalid"));
        assert_eq!(a.message_id, b.message_id);
        let c = mail("From: a@example.com\r\nSubject: x\r\n\r\nhello again\r\n");
        assert_ne!(a.message_id, c.message_id);
    }

    #[test]
    fn content_hash_ignores_relay_headers_and_line_endings() {
        let a = mail("Received: from a by b\r\nFrom: a@example.com\r\nMessage-ID: <1@x>\r\nSubject: s\r\n\r\nbody\r\n");
        let b = mail("Received: from c by d\nDelivered-To: z@example.com\nFrom: a@example.com\nMessage-ID: <1@x>\nSubject: s\n\nbody\n");
        assert_eq!(a.content_hash, b.content_hash);
        let c =
            mail("From: a@example.com\r\nMessage-ID: <1@x>\r\nSubject: s\r\n\r\nother body\r\n");
        assert_ne!(a.content_hash, c.content_hash);
    }

    #[test]
    fn subject_cannot_carry_line_breaks() {
        let m = mail(
            "From: a@example.com\r\nSubject: =?UTF-8?Q?a=0D=0ABcc:_evil@example.com?=\r\n\r\nx\r\n",
        );
        assert!(
            !m.subject.contains('\n') && !m.subject.contains('\r'),
            "{:?}",
            m.subject
        );
    }

    #[test]
    fn lenient_base64() {
        assert_eq!(base64_lenient(b"aGVs\r\nbG8=\r\n\r\n").unwrap(), b"hello");
        assert_eq!(base64_lenient(b"aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_lenient(b"aGVsbG8gd29y").unwrap(), b"hello wor");
        assert_eq!(base64_lenient(b"aGVsbG8\r\n--boundary").unwrap(), b"hello");
        assert!(base64_lenient(b"\r\n").is_none());
    }

    #[test]
    fn safe_filenames() {
        assert_eq!(safe_filename("../../etc/passwd"), "passwd");
        assert_eq!(safe_filename("C:\\Users\\x\\report.pdf"), "report.pdf");
        assert_eq!(safe_filename("a\u{0}b\nc.txt"), "a_b_c.txt");
        assert_eq!(safe_filename(".."), "attachment");
        assert_eq!(safe_filename(".bashrc"), "bashrc");
        assert_eq!(safe_filename(""), "attachment");
        assert_eq!(safe_filename("CON.txt"), "_CON.txt");
        assert_eq!(safe_filename("ログ.txt"), "ログ.txt");
        assert!(safe_filename(&"あ".repeat(300)).len() <= 200);
    }

    #[test]
    fn right_to_left_override_is_stripped_from_filenames() {
        assert_eq!(safe_filename("invoice\u{202e}txt.exe"), "invoicetxt.exe");
        assert_eq!(safe_filename("re\u{200b}port\u{feff}.pdf"), "report.pdf");
        assert_eq!(safe_filename("a\u{2066}b\u{2069}\u{200d}.txt"), "ab.txt");
        assert_eq!(safe_filename("\u{202e}\u{200b}"), "attachment");
        // Soft hyphen, Arabic and Mongolian format characters, tags: all category Cf.
        assert_eq!(
            safe_filename("x\u{ad}\u{61c}\u{180e}\u{e0041}\u{fff9}.txt"),
            "x.txt"
        );
        // Line and paragraph separators and C1 controls are not text in a file name either.
        assert_eq!(safe_filename("a\u{2028}b\u{85}c.txt"), "a_b_c.txt");
        // Format characters cannot hide a leading dot or a trailing space.
        assert_eq!(safe_filename("\u{200b}.bashrc"), "bashrc");
        assert_eq!(safe_filename("report.pdf \u{200b}"), "report.pdf");
    }

    #[test]
    fn every_windows_reserved_name_is_renamed() {
        let mut names = vec![
            "CON",
            "PRN",
            "AUX",
            "NUL",
            "COM\u{b9}",
            "COM\u{b2}",
            "LPT\u{b3}",
        ];
        let numbered: Vec<String> = (0..=9)
            .flat_map(|n| [format!("COM{n}"), format!("LPT{n}")])
            .collect();
        names.extend(numbered.iter().map(String::as_str));
        for name in names {
            for variant in [
                name.to_string(),
                name.to_lowercase(),
                format!("{name}.txt"),
                format!("{}.tar.gz", name.to_lowercase()),
                format!("{name}."),
                format!("{name} .txt"),
                format!("{name}  "),
                format!("{name}\u{200b}.txt"),
            ] {
                let safe = safe_filename(&variant);
                assert!(safe.starts_with('_'), "{variant:?} -> {safe:?}");
            }
        }
        for fine in [
            "CONSOLE.txt",
            "COM10",
            "LPT",
            "auxiliary.doc",
            "nul-report.pdf",
        ] {
            assert_eq!(safe_filename(fine), fine);
        }
        // Cutting a long name cannot leave a trailing dot or space.
        let long = format!("{}. .x", "a".repeat(199));
        assert!(!safe_filename(&long).ends_with(['.', ' ']));
    }

    #[test]
    fn stored_subject_is_capped() {
        let raw = format!(
            "From: a@example.com\r\nSubject: {}\r\n\r\nx\r\n",
            "a".repeat(100_000)
        );
        let m = mail(&raw);
        assert_eq!(m.subject.chars().count(), MAX_SUBJECT_CHARS);
        assert!(m.subject.ends_with('…'));
        assert!(
            m.damage.iter().any(|d| d.contains("Subject")),
            "{:?}",
            m.damage
        );
        // Cut at a character boundary, folded or not, and short subjects untouched.
        let folded = format!(
            "From: a@example.com\r\nSubject: {}\r\n\r\nx\r\n",
            "件名が長い\r\n ".repeat(5_000)
        );
        let m = mail(&folded);
        assert_eq!(m.subject.chars().count(), MAX_SUBJECT_CHARS);
        assert!(m.subject.starts_with("件名が長い 件名が長い"));
        assert_eq!(
            mail("From: a@example.com\r\nSubject: short\r\n\r\nx\r\n").subject,
            "short"
        );
        let exact = "b".repeat(MAX_SUBJECT_CHARS);
        let m = mail(&format!(
            "From: a@example.com\r\nSubject: {exact}\r\n\r\nx\r\n"
        ));
        assert_eq!(m.subject, exact);
        assert!(m.damage.is_empty());
    }

    #[test]
    fn route_addresses_never_become_the_requester() {
        let m = mail("From: Hanako <@evil.example:hanako@example.jp>\r\nTo: <@a.example,@b.example:support-jp@example.com>\r\nSubject: s\r\n\r\nx\r\n");
        let from = m.from.expect("the final address");
        assert_eq!(from.address, "hanako@example.jp");
        assert_eq!(m.to[0].address, "support-jp@example.com");
        assert!(
            m.damage.iter().any(|d| d.contains("route")),
            "{:?}",
            m.damage
        );
    }

    #[test]
    fn an_address_with_a_path_is_not_accepted() {
        for bad in [
            "a@b/../../x",
            "../../x@example.com",
            "a@",
            "@example.com",
            "a@b..c",
            "a@-b.com",
            "a b@example.com",
            "a@example.com/x",
            "a@exa_mple.com",
            "a@[127.0.0.1]",
            "a@b@c",
        ] {
            let m = mail(&format!(
                "From: <{bad}>\r\nCc: ok@example.com, <{bad}>\r\nSubject: s\r\n\r\nx\r\n"
            ));
            assert!(m.from.is_none(), "{bad:?} -> {:?}", m.from);
            assert_eq!(m.cc.len(), 1, "{bad:?} -> {:?}", m.cc);
            assert!(
                m.damage.iter().any(|d| d.contains("not a valid address")),
                "{bad:?}: {:?}",
                m.damage
            );
        }
        for good in [
            "taro@example.jp",
            "taro..yamada.@docomo.ne.jp",
            "first.last+tag@sub.example.co.uk",
            "o'brien@example.ie",
            "用户@例子.广告",
            "x_y-z=1@xn--r8jz45g.jp",
        ] {
            let m = mail(&format!("From: <{good}>\r\nSubject: s\r\n\r\nx\r\n"));
            assert_eq!(
                m.from.map(|f| f.address),
                Some(good.to_lowercase()),
                "{good}"
            );
        }
    }

    #[test]
    fn long_and_folded_headers_are_decoded_in_linear_time() {
        // A 2 MB subject folded every 70 characters, 20,000 Cc addresses, 100,000 References.
        let subject = "word "
            .repeat(14)
            .repeat(30_000)
            .replace("word word", "word\r\n word");
        let cc: Vec<String> = (0..20_000).map(|n| format!("u{n}@example.com")).collect();
        let refs: String = (0..100_000).map(|n| format!("<r{n}@x>\r\n ")).collect();
        let raw = format!(
            "From: a@example.com\r\nSubject: {subject}\r\nCc: {}\r\nReferences: {refs}<last@x>\r\n\r\nx\r\n",
            cc.join(",\r\n ")
        );
        let started = std::time::Instant::now();
        let m = mail(&raw);
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        assert_eq!(m.subject.chars().count(), MAX_SUBJECT_CHARS);
        assert_eq!(m.cc.len(), 20_000);
        assert_eq!(m.references.len(), MAX_REFERENCES);
        assert_eq!(m.references.last().map(String::as_str), Some("last@x"));
        assert!(
            m.damage.iter().any(|d| d.starts_with("References")),
            "{:?}",
            m.damage
        );
    }

    #[test]
    fn deep_blockquote_html_is_converted_in_linear_time() {
        let html = format!(
            "{}deep{}",
            "<blockquote>".repeat(200_000),
            "</blockquote>".repeat(200_000)
        );
        let raw = format!(
            "From: a@example.com\r\nSubject: s\r\nContent-Type: text/html\r\n\r\n{html}\r\n"
        );
        let started = std::time::Instant::now();
        assert_eq!(mail(&raw).text, "deep");
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn an_html_signature_block_is_stripped_and_the_name_is_kept_or_dropped_consistently() {
        use crate::mail::quote::strip_quoted;
        let html_mail = |html: &str| {
            mail(&format!(
                "From: a@example.com\r\nSubject: s\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
            ))
            .text
        };
        let lines = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect()
        };
        // The same answer as plain text and as HTML from Outlook, Gmail, Thunderbird and Apple Mail:
        // the closing and the name stay in every one, the card goes in every one.
        let plain = "We shipped a replacement today.\n\nBest regards,\nJane Doe\nAcme Inc.\nTel: +1 555 010 0100\nhttps://acme.example";
        let want = "We shipped a replacement today.\n\nBest regards,\nJane Doe";
        assert_eq!(strip_quoted(plain), want);
        let card = "<p>Acme Inc.</p><p>Tel: +1 555 010 0100</p><p><a href=\"https://acme.example\">acme.example</a></p>";
        for html in [
            format!("<div>We shipped a replacement today.</div><div><br></div><div id=\"Signature\"><p>Best regards,</p><p>Jane Doe</p>{card}</div>"),
            format!("<div dir=\"ltr\">We shipped a replacement today.<div><br></div><div>Best regards,</div></div><br><span class=\"gmail_signature_prefix\">-- </span><br><div dir=\"ltr\" class=\"gmail_signature\" data-smartmail=\"gmail_signature\"><div>Jane Doe</div>{card}</div>"),
            format!("<p>We shipped a replacement today.</p><p>Best regards,</p><div class=\"moz-signature\">-- <br>Jane Doe<br>{card}</div>"),
            format!("<div>We shipped a replacement today.</div><div><br></div><div>Best regards,</div><div id=\"AppleMailSignature\">Jane Doe{card}</div>"),
        ] {
            let got = strip_quoted(&html_mail(&html));
            assert_eq!(lines(&got), lines(want), "{html}");
        }
        // A signature element with only a card in it leaves nothing of itself, and the answer above it.
        let html = "<p>Done.</p><div id=\"Signature\"><p>━━━━━━━━</p><p>鈴木 真理</p><p>TEL: 03-1234-5678</p></div>";
        assert_eq!(html_mail(html), "Done.");
    }

    #[test]
    fn undeclared_iso2022jp_body_is_detected() {
        let (jis, _, _) = encoding_rs::ISO_2022_JP.encode("お世話になっております。");
        let mut raw =
            b"From: a@example.jp\r\nSubject: test\r\nContent-Type: text/plain\r\n\r\n".to_vec();
        raw.extend_from_slice(&jis);
        raw.extend_from_slice(b"\r\n");
        let m = parse(&raw, Locale::En).unwrap();
        assert_eq!(m.text, "お世話になっております。");
        assert!(m.damage.iter().any(|d| d.contains("ISO-2022-JP")));
    }

    /// Issue 15 (7): `From: =?utf-8?Q?agent?=@example.com` made the requester `@example.com`.
    #[test]
    fn an_encoded_word_in_the_local_part_never_leaves_an_address_without_a_local_part() {
        let m = mail("From: =?utf-8?Q?agent?=@example.com\r\nSubject: s\r\n\r\nx\r\n");
        assert_eq!(
            m.from.as_ref().map(|f| f.address.as_str()),
            Some("agent@example.com")
        );
        assert!(
            m.damage.iter().any(|d| d.contains("local part")),
            "{:?}",
            m.damage
        );
        let m = mail("From: \"agent\"@example.com\r\nSubject: s\r\n\r\nx\r\n");
        assert_eq!(m.from.map(|f| f.address), Some("agent@example.com".into()));
        // Decoded into something that is no address: rejected, and Reply-To answers instead.
        let m = mail("From: =?utf-8?Q?x=40bank.example?=@evil.example\r\nReply-To: <real@example.net>\r\nSubject: s\r\n\r\nx\r\n");
        assert_eq!(m.from.map(|f| f.address), Some("real@example.net".into()));
        assert!(
            m.damage.iter().any(|d| d.contains("Reply-To")),
            "{:?}",
            m.damage
        );
    }

    #[test]
    fn a_from_without_a_valid_address_falls_back_to_reply_to_then_sender() {
        let m = mail("From: \"Support Team\"@example.com\r\nSender: <relay@example.org>\r\nSubject: s\r\n\r\nx\r\n");
        assert_eq!(m.from.map(|f| f.address), Some("relay@example.org".into()));
        assert!(
            m.damage.iter().any(|d| d.contains("Sender address")),
            "{:?}",
            m.damage
        );
        let m = mail("From: Support Team\r\nSubject: s\r\n\r\nx\r\n");
        assert!(m.from.is_none());
        assert!(
            m.damage.iter().any(|d| d.contains("no Reply-To or Sender")),
            "{:?}",
            m.damage
        );
        let m = mail("From: \"x\" <@example.com>\r\nSubject: s\r\n\r\nx\r\n");
        assert!(m.from.is_none(), "{:?}", m.from);
        // White space before the `@` is allowed (RFC 5322 CFWS): still one whole address.
        let m = mail("From: =?utf-8?Q?agent?= @example.com\r\nSubject: s\r\n\r\nx\r\n");
        assert_eq!(m.from.map(|f| f.address), Some("agent@example.com".into()));
    }

    /// Issue 15 (8): a mail whose root part is a base64 PDF put its base64 into the text.
    #[test]
    fn a_root_attachment_is_kept_and_its_base64_is_not_the_text() {
        let m = mail("From: scanner@example.com\r\nSubject: Scan\r\nMIME-Version: 1.0\r\nContent-Type: application/pdf; name=\"scan.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfs\r\n");
        assert_eq!(m.text, "");
        assert_eq!(m.attachments.len(), 1);
        assert_eq!(m.attachments[0].filename, "scan.pdf");
        assert!(m.attachments[0].data.starts_with(b"%PDF-1.4"));
        assert!(
            m.damage
                .iter()
                .any(|d| d.contains("single application/pdf attachment")),
            "{:?}",
            m.damage
        );
    }

    /// Issue 15 (9): an empty text/plain alternative beside the HTML one gave an empty text.
    #[test]
    fn an_empty_plain_alternative_uses_the_html_part() {
        let m = mail("From: a@example.com\r\nSubject: s\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hello from the <b>HTML</b> part</p>\r\n--b--\r\n");
        assert_eq!(m.text, "Hello from the HTML part");
    }

    /// Issue 15 (10): a bounce whose inner multipart/alternative is never closed left its quoted-printable
    /// undecoded and swallowed the delivery-status and message/rfc822 parts.
    #[test]
    fn an_unclosed_nested_multipart_keeps_the_delivery_status_and_the_original() {
        let raw = "From: MAILER-DAEMON@mx.example.com\r\nTo: support-jp@example.com\r\nSubject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"outer\"\r\n\r\n--outer\r\nContent-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n--inner\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nDelivery to caf=C3=A9@example.net failed perma=\r\nnently.\r\n\r\n--outer\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com\r\n\r\nFinal-Recipient: rfc822; cafe@example.net\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n--outer\r\nContent-Type: message/rfc822\r\n\r\nFrom: support-jp@example.com\r\nMessage-ID: <ack.JP-1000@example.com>\r\nSubject: orig\r\n\r\nhello\r\n\r\n--outer--\r\n";
        let m = mail(raw);
        assert!(
            m.text
                .starts_with("Delivery to café@example.net failed permanently."),
            "{:?}",
            m.text
        );
        assert!(
            !m.text.contains("--outer") && !m.text.contains("=C3"),
            "{:?}",
            m.text
        );
        let types: Vec<&str> = m
            .attachments
            .iter()
            .map(|a| a.content_type.as_str())
            .collect();
        assert_eq!(types, ["message/delivery-status", "message/rfc822"]);
        assert_eq!(
            m.auto.reported_message_id.as_deref(),
            Some("ack.JP-1000@example.com")
        );
        assert_eq!(
            m.auto.report_diagnostic.as_deref(),
            Some("5.1.1 (smtp; 550 5.1.1 User unknown)")
        );
        assert!(
            m.damage.iter().any(|d| d.contains("never closed")),
            "{:?}",
            m.damage
        );
    }

    #[test]
    fn thousands_of_parts_holding_delimiters_are_cut_in_linear_time() {
        let mut raw = String::from("From: a@example.com\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=\"o\"\r\n\r\n");
        for i in 0..5_000 {
            raw.push_str(&format!("--o\r\nContent-Type: multipart/alternative; boundary=\"i{i}\"\r\n\r\n--i{i}\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n"));
        }
        raw.push_str("--o--\r\n");
        let started = std::time::Instant::now();
        let m = mail(&raw);
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        assert!(
            m.text.contains("part 0"),
            "{:?}",
            &m.text[..m.text.len().min(200)]
        );
    }

    /// Issue 15 (1, 4): the subject from its raw bytes, joined words, U+3000 kept.
    #[test]
    fn a_split_utf8_subject_with_an_ideographic_space_decodes_whole() {
        // "ご注文　確認" split inside 注 (E6 B3 A8) between two B words, folded like Outlook.
        let m = mail("From: a@example.jp\r\nSubject: =?UTF-8?B?44GU5rM=?=\r\n =?UTF-8?B?qOaWh+OAgOeiuuiqjQ==?=\r\n\r\nx\r\n");
        assert_eq!(m.subject, "ご注文　確認");
        assert!(m.damage.is_empty(), "{:?}", m.damage);
    }
}
