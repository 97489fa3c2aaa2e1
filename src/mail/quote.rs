//! The new part of a reply: [`strip_quoted`] cuts the quoted history, the reply marker and the signature
//! from what a person just wrote.
//!
//! Agents and customers answer from ordinary mail clients, and every client appends what it answers to:
//! Gmail, Apple Mail and Thunderbird an attribution line ("On … wrote:", "2025年3月1日(土) 15:00 … <…>:")
//! and `>`-quoted lines, Outlook a header block ("From: / Sent: / To: / Subject:", "差出人: / 送信日時: / …")
//! and the old mail unquoted, QQ Mail a `原始邮件` rule, each in the language of the client. The desk must
//! store and relay only what was written now: otherwise every ticket message repeats the whole thread, the
//! customer gets their own words back, and the agent notification (with its marker and command help) is
//! relayed to the customer inside the agent's reply.
//!
//! The rules err on keeping text: a line is cut only on evidence that the history starts there (an
//! attribution needs a date, an address or quoted lines after it), an inline answer between quotes keeps
//! its new text, and a cut that would leave nothing returns the whole text instead, unless the mail opens
//! with the history itself. Pure: no I/O.
//!
//! Signatures: the `-- ` delimiter cuts everything below it (RFC 3676); without one, the business cards
//! that Japanese, Korean, Chinese and Western mail end with (`━━━` frames, `TEL:`/`電話`/`전화`/`手机`,
//! `株式会社`/`(주)`/`有限公司`, `〒` addresses) are recognised from the end and cut from their first
//! contact, company or rule line, keeping the closing and the name above. HTML signature elements get the
//! same rule through [`signature_head`] (see `mail::html`).
//!
//! Linear in the text: what every rule asks about the lines below or above one (only history from here?
//! the next non-blank line?) is computed once, in one pass each way, before the lines are walked.

/// The marker above which agents write their reply to a notification (see the `agent_notify` template):
/// everything from it down is history.
pub const REPLY_MARKER: &str = "##- reply above this line -##";

/// The part of a reply that is new: the text above the quoted history, without the reply marker and the
/// signature. Never returns an empty string for a non-empty input that has new text.
///
/// Lines are cut at the first (after leading blank lines) reply marker, attribution ("On … wrote:", German,
/// French, Japanese, Korean, Chinese forms, also wrapped over two lines), Outlook separator or header
/// block, `-- ` signature delimiter, or `>`-quoted block that runs to the end. `>`-quoted lines between
/// new text (an inline answer) are removed and the new text kept. A trailing mobile signature ("Sent from
/// my iPhone", "iPhoneから送信", …) is dropped; so is trailing whitespace on each line and blank lines at
/// both ends. A business card at the end (contact, company and rule lines, see `contact_block_start`)
/// is dropped from its first such line; the closing and the name written above it stay, as they always
/// have ("Best,\nJane"): the sign-off is what the person wrote, the card is not.
pub fn strip_quoted(text: &str) -> String {
    let text = Text::new(text);
    let lines = &text.lines;
    let Some(start) = text.next_non_blank(0) else {
        return String::new();
    };
    // `None` stands for removed lines (quotes and attributions of an inline answer).
    let mut kept: Vec<Option<&str>> = Vec::with_capacity(lines.len());
    let mut i = start;
    while i < lines.len() {
        match step(&text, i) {
            Step::Keep => {
                kept.push(Some(lines[i]));
                i += 1;
            }
            Step::Remove(n) => {
                kept.push(None);
                i += n;
            }
            Step::Cut => break,
        }
    }
    let new = tidy(kept, true);
    if !new.is_empty() || opens_with_history(&text, start) {
        return new;
    }
    // Every line looked like history or signature: keep too much rather than lose a customer's words.
    tidy(lines.iter().map(|l| Some(*l)), false)
}

/// The lines of a text with what the rules ask of every line computed once, so that each question
/// ("only history from here?", "next non-blank line?") costs O(1): a sender who repeats a line a
/// hundred thousand times costs time linear in the mail, not quadratic.
struct Text<'a> {
    lines: Vec<&'a str>,
    /// `history_from[i]`: only quoted lines, blank lines and a signature from line `i` to the end (the
    /// history, not an inline answer). One entry more than lines, `true` at the end.
    history_from: Vec<bool>,
    /// `next_non_blank[i]`: the first non-blank line at or after `i`. One entry more than lines.
    next_non_blank: Vec<Option<usize>>,
    /// `prev_non_blank[i]`: the last non-blank line before `i`.
    prev_non_blank: Vec<Option<usize>>,
}

impl<'a> Text<'a> {
    fn new(text: &'a str) -> Self {
        let lines: Vec<&str> = text.split('\n').collect();
        let n = lines.len();
        let blank: Vec<bool> = lines.iter().map(|l| is_blank(l)).collect();
        let mut history_from = vec![true; n + 1];
        let mut next_non_blank = vec![None; n + 1];
        // One backward pass. A signature delimiter makes everything below it history; otherwise a line is
        // history when it is blank, quoted or a mobile signature and everything below is history too.
        for i in (0..n).rev() {
            #[cfg(test)]
            HISTORY_CHECKS.with(|c| c.set(c.get() + 1));
            let l = lines[i];
            history_from[i] = is_signature_delimiter(l)
                || (history_from[i + 1] && (blank[i] || is_quoted(l) || is_mobile_signature(l)));
            next_non_blank[i] = if blank[i] {
                next_non_blank[i + 1]
            } else {
                Some(i)
            };
        }
        let mut prev_non_blank = vec![None; n + 1];
        for i in 1..=n {
            prev_non_blank[i] = if blank[i - 1] {
                prev_non_blank[i - 1]
            } else {
                Some(i - 1)
            };
        }
        Text {
            lines,
            history_from,
            next_non_blank,
            prev_non_blank,
        }
    }

    /// Only history from line `from` to the end (see [`Text::history_from`]).
    fn only_history_from(&self, from: usize) -> bool {
        self.history_from.get(from).copied().unwrap_or(true)
    }

    fn next_non_blank(&self, from: usize) -> Option<usize> {
        self.next_non_blank.get(from).copied().flatten()
    }

    fn prev_non_blank(&self, before: usize) -> Option<usize> {
        self.prev_non_blank
            .get(before.min(self.lines.len()))
            .copied()
            .flatten()
    }
}

/// What to do with line `i`.
enum Step {
    Keep,
    /// Drop this many lines and go on: quotes and attributions inside an inline answer.
    Remove(usize),
    /// The history (or the signature) starts here.
    Cut,
}

fn step(text: &Text, i: usize) -> Step {
    let line = text.lines[i];
    if line.contains(REPLY_MARKER)
        || is_signature_delimiter(line)
        || is_separator(line)
        || is_header_block(text, i)
        || is_outlook_web_rule(text, i)
    {
        return Step::Cut;
    }
    if let Some(n) = attribution_at(text, i) {
        // An attribution opening an inline answer (quotes, then new text) goes; the answer stays.
        return match text.next_non_blank(i + n) {
            Some(j) if is_quoted(text.lines[j]) && !text.only_history_from(j) => Step::Remove(n),
            _ => Step::Cut,
        };
    }
    if is_quoted(line) {
        return if text.only_history_from(i) {
            Step::Cut
        } else {
            Step::Remove(1)
        };
    }
    Step::Keep
}

/// The mail's first non-blank line already belongs to the history: there is no new text, and "" is right.
fn opens_with_history(text: &Text, start: usize) -> bool {
    let line = text.lines[start];
    line.contains(REPLY_MARKER)
        || attribution_at(text, start).is_some()
        || (is_quoted(line) && text.only_history_from(start))
}

/// Joins the kept lines: trailing whitespace trimmed, blank lines at both ends dropped, the blank lines
/// left around a removed quote collapsed into one, and (if `drop_mobile`) trailing mobile signatures dropped.
fn tidy<'a>(lines: impl IntoIterator<Item = Option<&'a str>>, drop_mobile: bool) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut after_removal = false;
    for line in lines {
        let Some(line) = line else {
            after_removal = true;
            continue;
        };
        let line = line.trim_end();
        if line.is_empty() {
            if out.is_empty() || (after_removal && out.last().is_some_and(|l| l.is_empty())) {
                continue;
            }
        } else {
            after_removal = false;
        }
        out.push(line);
    }
    loop {
        while out.last().is_some_and(|l| l.is_empty()) {
            out.pop();
        }
        if drop_mobile && out.last().is_some_and(|l| is_mobile_signature(l)) {
            out.pop();
        } else {
            break;
        }
    }
    if drop_mobile {
        if let Some(cut) = contact_block_start(&out) {
            out.truncate(cut);
            while out.last().is_some_and(|l| l.is_empty()) {
                out.pop();
            }
        }
    }
    out.join("\n")
}

/// The most non-blank lines a trailing signature block has: more is a text, not a business card.
const MAX_SIGNATURE_LINES: usize = 16;

/// What one line of a mail's end can be, read from the end: the business-card shapes of Japanese, Korean,
/// Chinese and Western mail.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SigLine {
    /// A phone, fax, e-mail, web or postal line (`TEL: 03-…`, `전화: …`, `手机：…`, `〒100-0001 …`,
    /// `E-mail: …`, `https://…`, a bare number): the evidence that a block is a signature.
    Contact,
    /// A company line (`株式会社…`, `(주)…`, `…有限公司`, `… Inc.`).
    Company,
    /// A rule of `━━━`, `───`, `＝＝＝`, `===`, `---`, `***`, `■□■□`, … (three or more).
    Frame,
    /// A short line that is not a sentence: a closing ("Best regards,"), a name, a title.
    Short,
    /// Anything else: the text the person wrote.
    Prose,
}

/// Where the trailing contact block of `lines` starts, if it has one: the last lines of the text are
/// all contact, company, frame or short lines (at most [`MAX_SIGNATURE_LINES`]), with at least one contact
/// line or a frame closing a framed block. The block is cut from its first contact, company or frame
/// line: the short lines above it (the closing and the name, "よろしくお願いいたします" / "Best regards,"
/// and "鈴木 真理") are what the person signed with and stay; the card below goes. One backward pass.
fn contact_block_start(lines: &[&str]) -> Option<usize> {
    let mut first_card_line = None;
    let mut evidence = false;
    let mut frames = 0;
    let mut last_kind = None;
    let mut seen = 0;
    for (k, line) in lines.iter().enumerate().rev() {
        if is_blank(line) {
            continue;
        }
        let kind = sig_line(line);
        if kind == SigLine::Prose {
            // "新しいお届け先：" / "Please ship it to:" introduces the lines below: they are content.
            if line.trim_end().ends_with([':', '：']) {
                return None;
            }
            break;
        }
        seen += 1;
        if seen > MAX_SIGNATURE_LINES {
            return None;
        }
        last_kind.get_or_insert(kind);
        match kind {
            SigLine::Contact => evidence = true,
            SigLine::Frame => frames += 1,
            _ => {}
        }
        if kind != SigLine::Short {
            first_card_line = Some(k);
        }
    }
    let framed = frames >= 2 && last_kind == Some(SigLine::Frame);
    if evidence || framed {
        first_card_line
    } else {
        None
    }
}

/// The sign-off of a signature element (HTML mail's `gmail_signature`, `Signature`, `moz-signature`
/// blocks): its first short lines (the closing and the name) before the first contact, company or frame
/// line, the `-- ` delimiter and mobile signatures ("Sent from my iPhone") dropped. The same rule as a
/// plain-text signature's, so an HTML-only reply and a plain one keep the same lines.
pub fn signature_head(text: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || (kept.is_empty() && is_signature_delimiter(line)) {
            continue;
        }
        // A closing written as a sentence ("よろしくお願いいたします。") is short too.
        let short = match sig_line(line) {
            SigLine::Short => true,
            SigLine::Prose => line.chars().count() <= 40,
            _ => false,
        };
        if is_mobile_signature(line) || !short || kept.len() == 3 {
            break;
        }
        kept.push(line);
    }
    kept.join("\n")
}

fn sig_line(line: &str) -> SigLine {
    let t = line.trim();
    if is_frame(t) {
        return SigLine::Frame;
    }
    // Cards often put a bullet or a bar before each line: "■TEL：…", "│ 鈴木", "・E-mail: …".
    let t = t
        .trim_start_matches(|c: char| "■□◆◇●○・*|│┃▼▽►▶-–—".contains(c))
        .trim_start();
    if is_contact(t) {
        return SigLine::Contact;
    }
    let sentence_end = t.ends_with(['.', '。', '!', '?', '！', '？', ':', '：']);
    if is_company(t) && t.chars().count() <= 60 && !t.ends_with(['。', '!', '?', '！', '？']) {
        return SigLine::Company;
    }
    if t.chars().count() <= 40 && !sentence_end {
        return SigLine::Short;
    }
    SigLine::Prose
}

const FRAME_CHARS: &str = "━─＝=-*■□◆◇●○~～_・★☆―═┅┄┈╍+#◇◆▲△▼▽◎※";

/// A rule: three or more characters, all of them rule characters (spaces between allowed).
fn is_frame(t: &str) -> bool {
    let mut n = 0;
    for c in t.chars() {
        if c == ' ' || c == '\u{3000}' {
            continue;
        }
        if !FRAME_CHARS.contains(c) {
            return false;
        }
        n += 1;
    }
    n >= 3
}

/// What a contact label's value must hold to count: a phone number, an address, a domain, anything.
#[derive(Clone, Copy)]
enum Value {
    Phone,
    Mail,
    Web,
    Any,
}

/// Labels of contact lines, matched at the start of a line (ASCII case ignored), then an optional note in
/// brackets ("(代表)"), then `:`, `：` or `.` (single letters: a colon only) or a space; the value must look
/// like what the label names, so "Phone: iPhone 15" in a customer's device list is text.
const CONTACT_LABELS: &[(&str, Value)] = &[
    ("tel", Value::Phone),
    ("phone", Value::Phone),
    ("mobile", Value::Phone),
    ("mob", Value::Phone),
    ("cell", Value::Phone),
    ("fax", Value::Phone),
    ("direct", Value::Phone),
    ("office", Value::Phone),
    ("t", Value::Phone),
    ("m", Value::Phone),
    ("p", Value::Phone),
    ("f", Value::Phone),
    ("電話", Value::Phone),
    ("携帯", Value::Phone),
    ("直通", Value::Phone),
    ("代表", Value::Phone),
    ("ファックス", Value::Phone),
    ("전화", Value::Phone),
    ("휴대폰", Value::Phone),
    ("핸드폰", Value::Phone),
    ("휴대전화", Value::Phone),
    ("팩스", Value::Phone),
    ("手机", Value::Phone),
    ("手機", Value::Phone),
    ("电话", Value::Phone),
    ("传真", Value::Phone),
    ("傳真", Value::Phone),
    ("e-mail", Value::Mail),
    ("email", Value::Mail),
    ("mail", Value::Mail),
    ("e", Value::Mail),
    ("メール", Value::Mail),
    ("메일", Value::Mail),
    ("이메일", Value::Mail),
    ("邮箱", Value::Mail),
    ("郵箱", Value::Mail),
    ("邮件", Value::Mail),
    ("web", Value::Web),
    ("url", Value::Web),
    ("网址", Value::Web),
    ("網址", Value::Web),
    ("address", Value::Any),
    ("住所", Value::Any),
    ("所在地", Value::Any),
    ("주소", Value::Any),
    ("地址", Value::Any),
];

/// A phone, fax, mail, web or postal line.
fn is_contact(t: &str) -> bool {
    if t.starts_with(['〒', '☎', '📞', '✉', '📧', '☏', '℡']) {
        return true;
    }
    let lower = t.to_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("www.") {
        return true;
    }
    let labelled = CONTACT_LABELS.iter().any(|&(label, value)| {
        let Some(rest) = lower.strip_prefix(label) else {
            return false;
        };
        let rest = rest.trim_start();
        let rest = match rest.strip_prefix(['(', '（']) {
            Some(r) => r
                .split_once([')', '）'])
                .map_or(r, |(_, after)| after)
                .trim_start(),
            None => rest,
        };
        let single = label.len() == 1;
        let value_text = if let Some(v) = rest.strip_prefix([':', '：']) {
            v
        } else if let Some(v) = rest.strip_prefix('.').filter(|_| !single) {
            v
        } else if !single && rest.len() < lower.len() - label.len() {
            // "TEL 03-1234-5678": a space between the label and the value.
            rest
        } else {
            return false;
        };
        match value {
            Value::Phone => is_phone(value_text.trim()),
            Value::Mail => value_text.contains('@'),
            Value::Web => value_text.contains('.'),
            Value::Any => !value_text.trim().is_empty(),
        }
    });
    if labelled || is_phone(t) {
        return true;
    }
    // A bare address on its own line.
    let w = t.trim_matches(|c: char| "<>()（）[]".contains(c));
    !w.contains(char::is_whitespace)
        && w.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.ends_with('.'))
}

/// A phone number: 9 to 15 digits (a date has 8) with only separators, `+`, brackets and an extension.
fn is_phone(t: &str) -> bool {
    let digits = t.chars().filter(char::is_ascii_digit).count();
    (9..=15).contains(&digits)
        && t.chars().count() <= 32
        && t.chars().all(|c| {
            c.is_ascii_digit() || " +-().\u{2010}\u{2212}\u{ff0d}ext/#\u{3000}".contains(c)
        })
}

const COMPANY_MARKERS: &[&str] = &[
    "株式会社",
    "有限会社",
    "合同会社",
    "(株)",
    "（株）",
    "㈱",
    "(有)",
    "㈲",
    "(주)",
    "（주）",
    "㈜",
    "주식회사",
    "유한회사",
    "有限公司",
    "股份公司",
    "集团",
    "集團",
    "公司",
    " inc.",
    " inc",
    " llc",
    " ltd",
    " ltd.",
    "co., ltd",
    " corp.",
    " corporation",
    " gmbh",
    " k.k.",
    " s.a.",
    " plc",
];

fn is_company(t: &str) -> bool {
    let lower = format!(" {}", t.to_lowercase());
    COMPANY_MARKERS.iter().any(|m| {
        if m.starts_with(' ') {
            // A Western suffix is a word: " Inc" not "Incoming".
            lower.match_indices(m).any(|(at, _)| {
                !lower[at + m.len()..]
                    .chars()
                    .next()
                    .is_some_and(char::is_alphanumeric)
            })
        } else {
            lower.contains(m)
        }
    })
}

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

/// A `>`-quoted line. Only at column 0: format=flowed (RFC 3676) space-stuffs a line that merely starts
/// with `>`, so " >" is text.
fn is_quoted(line: &str) -> bool {
    line.starts_with('>')
}

/// `-- ` (RFC 3676), or `--` from clients that strip the trailing space.
fn is_signature_delimiter(line: &str) -> bool {
    line.trim_end() == "--"
}

const MOBILE_SIGNATURES: &[&str] = &[
    "sent from my iphone",
    "sent from my ipad",
    "sent from outlook for ios",
    "sent from outlook for android",
    "get outlook for ios",
    "get outlook for android",
    "iphoneから送信",
    "ipadから送信",
    "galaxy에서 보냄",
    "내 iphone에서 보냄",
    "从我的iphone发送",
    "发自我的iphone",
];

/// "Sent from my iPhone" and friends; Outlook's plain text may append its link: "Get Outlook for iOS<https://…>".
fn is_mobile_signature(line: &str) -> bool {
    let mut t = line.trim();
    if let Some((head, link)) = t.split_once('<') {
        if link.ends_with('>') {
            t = head.trim_end();
        }
    }
    let t = t.trim_end_matches('.').to_lowercase();
    MOBILE_SIGNATURES.contains(&t.as_str())
}

/// `-----Original Message-----` and its translations, with at least three dashes each side
/// (QQ Mail: `------------------ 原始邮件 ------------------`).
fn is_separator(line: &str) -> bool {
    const NAMES: &[&str] = &[
        "original message",
        "元のメッセージ",
        "원본 메시지",
        "原始邮件",
        "原始郵件",
        "ursprüngliche nachricht",
        "message d'origine",
    ];
    let t = line.trim();
    let inner = t.trim_start_matches('-');
    let name = inner.trim_end_matches('-');
    if t.len() - inner.len() < 3 || inner.len() - name.len() < 3 {
        return false;
    }
    NAMES.contains(&name.trim().to_lowercase().as_str())
}

const FROM_LABELS: &[&str] = &[
    "From",
    "差出人",
    "보낸 사람",
    "发件人",
    "寄件者",
    "Von",
    "De",
];
const DATE_LABELS: &[&str] = &[
    "Sent",
    "Date",
    "送信日時",
    "보낸 날짜",
    "发送时间",
    "寄件日期",
    "Gesendet",
    "Envoyé",
];
const TO_OR_SUBJECT_LABELS: &[&str] = &[
    "To",
    "宛先",
    "받는 사람",
    "收件人",
    "收件者",
    "An",
    "À",
    "Subject",
    "件名",
    "제목",
    "主题",
    "主旨",
    "Betreff",
    "Objet",
];

/// `Label:` at the start of a line: ASCII case ignored, a space before the colon allowed (French
/// `Envoyé :`), a full-width colon allowed, and Outlook's plain-text bold (`*From:*`) ignored.
fn has_label(line: &str, labels: &[&str]) -> bool {
    let l = line.trim_start().trim_start_matches('*');
    labels.iter().any(|label| {
        l.get(..label.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(label))
            && l[label.len()..]
                .trim_start_matches(|c: char| c == '*' || c.is_whitespace())
                .starts_with([':', '：'])
    })
}

/// Outlook's header block: a From line followed within four lines by a date line and a To or Subject line.
/// Not after a "Forwarded message" line: a forwarded mail is content the sender means to pass on.
fn is_header_block(text: &Text, i: usize) -> bool {
    let lines = &text.lines;
    if !has_label(lines[i], FROM_LABELS) {
        return false;
    }
    let forwarded = text.prev_non_blank(i).is_some_and(|p| {
        let p = lines[p].trim().to_lowercase();
        p.contains("forwarded message") || p == "begin forwarded message:"
    });
    let window = &lines[i + 1..lines.len().min(i + 5)];
    !forwarded
        && window.iter().any(|l| has_label(l, DATE_LABELS))
        && window.iter().any(|l| has_label(l, TO_OR_SUBJECT_LABELS))
}

/// Outlook on the web: a rule of underscores just above the header block.
fn is_outlook_web_rule(text: &Text, i: usize) -> bool {
    let t = text.lines[i].trim();
    t.len() >= 20
        && t.chars().all(|c| c == '_')
        && text
            .next_non_blank(i + 1)
            .is_some_and(|j| is_header_block(text, j))
}

/// How many lines (1 or 2) the attribution at line `i` takes, if there is one.
fn attribution_at(text: &Text, i: usize) -> Option<usize> {
    let lines = &text.lines;
    if is_quoted(lines[i]) {
        return None;
    }
    let first = lines[i].trim();
    if is_attribution(first) && has_evidence(first, text, i + 1) {
        return Some(1);
    }
    // Wrapped by the client: "On Sat, Mar 1, 2025 at 3:00 PM Acme <" / "support@example.com> wrote:".
    let second = lines.get(i + 1)?;
    if !opens_attribution(first)
        || first.ends_with(['.', '!', '?', '。', '！', '？'])
        || is_blank(second)
        || is_quoted(second)
        || (opens_attribution(second.trim()) && is_attribution(second.trim()))
    {
        return None;
    }
    let joined = format!("{first} {}", second.trim());
    (is_attribution(&joined) && has_evidence(&joined, text, i + 2)).then_some(2)
}

/// Real attributions carry a date or an address, or have the quote right below; "Here is what my
/// colleague wrote:" followed by pasted text has neither and stays.
fn has_evidence(attribution: &str, text: &Text, after: usize) -> bool {
    attribution.contains(|c: char| c.is_ascii_digit() || c == '@')
        || text
            .next_non_blank(after)
            .is_some_and(|j| is_quoted(text.lines[j]))
}

/// How an attribution that a client may wrap begins.
fn opens_attribution(t: &str) -> bool {
    ["On ", "Am ", "Le ", "在 "]
        .iter()
        .any(|p| t.starts_with(p))
        || strip_digits(t, 4, 4).is_some_and(|rest| rest.starts_with(['年', '년']))
}

/// The attribution line of a reply, trimmed, in the forms the desk's clients write.
fn is_attribution(t: &str) -> bool {
    if is_japanese_gmail(t) {
        return true;
    }
    let Some(body) = t.strip_suffix([':', '：']) else {
        return false;
    };
    let body = body.trim_end();
    ends_with_wrote(body)
        || (t.starts_with("Am ") && body.contains(" schrieb"))
        || (t.starts_with("Le ") && body.ends_with("a écrit"))
        || ["のメッセージ", "書きました", "작성", "写道", "寫道"]
            .iter()
            .any(|s| body.ends_with(s))
}

/// "… wrote" as a word, ASCII case ignored.
fn ends_with_wrote(body: &str) -> bool {
    let Some(at) = body.len().checked_sub(5) else {
        return false;
    };
    body.get(at..)
        .is_some_and(|w| w.eq_ignore_ascii_case("wrote"))
        && !body[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric())
}

/// Japanese Gmail: `2025年3月1日(土) 15:00 山田太郎 <taro@example.jp>:`, that is
/// `^\d{4}年\d{1,2}月\d{1,2}日.*<[^>]+@[^>]+>:?\s*$`.
fn is_japanese_gmail(t: &str) -> bool {
    let Some(rest) = japanese_date(t) else {
        return false;
    };
    let rest = rest.trim_end();
    let rest = rest.strip_suffix([':', '：']).unwrap_or(rest);
    rest.strip_suffix('>')
        .and_then(|r| r.rsplit_once('<'))
        .is_some_and(|(_, addr)| {
            addr.split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        })
}

/// What follows `2025年3月1日` at the start of `t`.
fn japanese_date(t: &str) -> Option<&str> {
    let rest = strip_digits(t, 4, 4)?.strip_prefix('年')?;
    let rest = strip_digits(rest, 1, 2)?.strip_prefix('月')?;
    strip_digits(rest, 1, 2)?.strip_prefix('日')
}

/// `s` without its leading `min..=max` ASCII digits, if it has that many.
fn strip_digits(s: &str, min: usize, max: usize) -> Option<&str> {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    (min..=max).contains(&n).then(|| &s[n..])
}

#[cfg(test)]
thread_local! {
    /// How many lines the history checks looked at: the work a quoted-line storm costs.
    static HISTORY_CHECKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `first line`, `n` lines `> q`, then new text: the quoted-line storm.
    fn quoted_storm(n: usize) -> String {
        format!("first line\n{}new text at the end", "> q\n".repeat(n))
    }

    fn history_checks_for(text: &str) -> (String, u64) {
        HISTORY_CHECKS.with(|c| c.set(0));
        let out = strip_quoted(text);
        (out, HISTORY_CHECKS.with(|c| c.get()))
    }

    #[test]
    fn quote_stripping_is_linear_in_quoted_lines() {
        // Doubling the storm at most doubles the work (quadratic code quadruples it).
        let (_, small) = history_checks_for(&quoted_storm(2_000));
        let (_, large) = history_checks_for(&quoted_storm(4_000));
        assert!(large <= 2 * small + 16, "{small} -> {large} line checks");
        // The size (minutes when quadratic): a few line checks per line, and the new text kept.
        let text = quoted_storm(50_000);
        let started = std::time::Instant::now();
        let (out, checks) = history_checks_for(&text);
        assert_eq!(out, "first line\nnew text at the end");
        assert!(
            checks <= 3 * 50_002,
            "{checks} line checks for 50,002 lines"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        // The reproduction, as a whole mail through the parser.
        let raw = format!("From: a@example.com\r\nSubject: storm\r\n\r\n{text}\r\n");
        let mail = crate::mail::parse(raw.as_bytes(), crate::types::Locale::En).expect("a mail");
        let (out, checks) = history_checks_for(&mail.text);
        assert_eq!(out, "first line\nnew text at the end");
        assert!(
            checks <= 3 * 50_002,
            "{checks} line checks for 50,002 lines"
        );
        // Storms of the other shapes a line scan meets: attributions, blank lines, header labels.
        for text in [
            format!("hi\n{}end", "On Monday x wrote:\n\n\n".repeat(20_000)),
            format!("hi\n{}end", "From: a\n\n\n".repeat(20_000)),
            format!("hi\n{}", "\n> q\n\n".repeat(20_000)),
            format!("hi\n{}end", "________________________\n\n".repeat(20_000)),
            // The end of a mail read for a business card: contact lines and blank lines.
            format!("hi\n{}", "TEL: 03-1234-5678\n\n".repeat(20_000)),
            format!("hi\n\nJane\nTEL: 03-1234-5678{}", "\n".repeat(80_000)),
        ] {
            let started = std::time::Instant::now();
            let (_, checks) = history_checks_for(&text);
            assert!(checks <= 3 * 80_002, "{checks} line checks");
            assert!(started.elapsed() < std::time::Duration::from_secs(20));
        }
    }

    #[test]
    fn a_framed_japanese_signature_is_stripped() {
        let body = "お世話になっております。\n代替品を本日発送いたしました。\n\nよろしくお願いいたします。";
        for (top, bottom) in [
            ("━━━━━━━━━━━━━━━━━━━━", "━━━━━━━━━━━━━━━━━━━━"),
            ("────────────────", "────────────────"),
            ("＝＝＝＝＝＝＝＝＝＝＝＝", "＝＝＝＝＝＝＝＝＝＝＝＝"),
            (
                "==============================",
                "==============================",
            ),
            (
                "------------------------------",
                "------------------------------",
            ),
            (
                "******************************",
                "******************************",
            ),
            ("■□■□■□■□■□■□■□■□■□■□", "■□■□■□■□■□■□■□■□■□■□"),
        ] {
            let text = format!(
                "{body}\n\n{top}\n株式会社アクメ　カスタマーサポート部\n鈴木 真理（Mari Suzuki）\n〒100-0001 東京都千代田区千代田1-1\nTEL：03-1234-5678　FAX：03-1234-5679\nE-mail：suzuki@acme.example.jp\n{bottom}\n"
            );
            assert_eq!(strip_quoted(&text), body, "{top}");
        }
        // A frame with no contact line inside still frames a card.
        let text = format!("{body}\n\n━━━━━━━━━━\nアクメ サポートセンター\n鈴木 真理\n━━━━━━━━━━");
        assert_eq!(strip_quoted(&text), body);
        // Above the quoted history too.
        let text = format!("{body}\n\n━━━━━━━━━━\n鈴木 真理\nTEL: 03-1234-5678\n━━━━━━━━━━\n\n2025年3月1日(土) 15:00 山田 <taro@example.jp>:\n> 届きません\n");
        assert_eq!(strip_quoted(&text), body);
    }

    #[test]
    fn a_name_and_phone_signature_is_stripped() {
        // The shape: the closing and the name stay (they are what the agent signed with), the
        // contact lines go.
        let text = "代替品を本日発送いたしました。\n\nよろしくお願いいたします。\n\n鈴木 真理\nTEL: 03-1234-5678\nsuzuki@acme.example.jp\n";
        assert_eq!(
            strip_quoted(text),
            "代替品を本日発送いたしました。\n\nよろしくお願いいたします。\n\n鈴木 真理"
        );
        let ko = "교체품을 오늘 발송했습니다.\n\n감사합니다.\n\n김민수 대리\n(주)애크미 고객지원팀\n전화: 02-123-4567 | 휴대폰: 010-1234-5678\n이메일: minsu@acme.example.kr\n서울특별시 중구 세종대로 110\n";
        assert_eq!(
            strip_quoted(ko),
            "교체품을 오늘 발송했습니다.\n\n감사합니다.\n\n김민수 대리"
        );
        let zh = "替换品今天已经寄出。\n\n谢谢！\n\n王伟\n客户服务部\n艾克米（上海）有限公司\n手机：138-0013-8000\n邮箱：wang.wei@acme.example.cn\n地址：上海市浦东新区世纪大道100号\n";
        assert_eq!(
            strip_quoted(zh),
            "替换品今天已经寄出。\n\n谢谢！\n\n王伟\n客户服务部"
        );
        let en = "We shipped a replacement today.\n\nBest regards,\nJane Doe\nCustomer Support Lead\nAcme Inc.\nMobile: +1 (555) 010-0100\nhttps://acme.example\n\nSent from my iPhone\n";
        assert_eq!(
            strip_quoted(en),
            "We shipped a replacement today.\n\nBest regards,\nJane Doe\nCustomer Support Lead"
        );
    }

    #[test]
    fn text_that_only_looks_like_a_card_stays() {
        for text in [
            // A customer's device list, an order number, a date, a divider between steps.
            "The app crashes.\n\nDevice:\nPhone: iPhone 15\nOS: iOS 18",
            "届いていません。\n\n注文番号\n12345678",
            "Delivered on\n2025-03-01",
            "Step 1 -- open the app\n---\nStep 2",
            "P.S. the code is 12345",
            // A customer's new delivery address, introduced as such.
            "住所が変わりました。新しいお届け先：\n〒150-0001 東京都渋谷区神宮前1-2-3\n山田 太郎\n090-1234-5678",
            "Please ship the replacement to:\nJane Doe\n1 Main St\nPhone: +1 555 010 0100",
            // Only a card: better too much than nothing.
            "TEL: 03-1234-5678",
        ] {
            assert_eq!(strip_quoted(text), text);
        }
        // Contact lines inside the text, with prose after them, stay.
        let text = "Please call me at\nTEL: 03-1234-5678\nin the afternoon, after three o'clock if possible.";
        assert_eq!(strip_quoted(text), text);
    }

    #[test]
    fn signature_heads_keep_the_sign_off() {
        assert_eq!(
            signature_head("-- \nJane Doe\nAcme Inc.\nTel: +1 555 010 0100"),
            "Jane Doe"
        );
        assert_eq!(
            signature_head("\n\nBest regards,\nJane Doe\nhttps://acme.example"),
            "Best regards,\nJane Doe"
        );
        assert_eq!(signature_head("━━━━━━━━\n鈴木 真理\nTEL: 03-1234-5678"), "");
        assert_eq!(signature_head("Sent from my iPhone"), "");
        assert_eq!(signature_head("This e-mail and any attachment is confidential and intended solely for the addressee."), "");
    }

    #[test]
    fn gmail_english() {
        let text = "Thanks, that fixed it.\n\nBest,\nJane\n\nOn Sat, Mar 1, 2025 at 3:00 PM Acme Support <support@example.com> wrote:\n\n> Hello Jane,\n>\n> Please clear the cache and try again.\n>\n> Acme Support\n";
        assert_eq!(strip_quoted(text), "Thanks, that fixed it.\n\nBest,\nJane");
    }

    #[test]
    fn gmail_english_attribution_wrapped_before_the_address() {
        let text = "Thanks, that fixed it.\n\nOn Sat, Mar 1, 2025 at 3:00 PM Acme Support <\nsupport@example.com> wrote:\n\n> Hello Jane,\n";
        assert_eq!(strip_quoted(text), "Thanks, that fixed it.");
    }

    #[test]
    fn gmail_japanese() {
        let text = "ご対応ありがとうございます。\n無事にログインできました。\n\n山田\n\n2025年3月1日(土) 15:00 Acme サポート <support@example.com>:\n\n> 山田様\n>\n> お問い合わせありがとうございます。\n> パスワードを再設定してください。\n";
        assert_eq!(
            strip_quoted(text),
            "ご対応ありがとうございます。\n無事にログインできました。\n\n山田"
        );
    }

    #[test]
    fn gmail_japanese_older_forms() {
        let quote = "\n\n> お問い合わせありがとうございます。\n";
        for attribution in [
            "2025年3月1日 15:00 Acme サポート <support@example.com>のメッセージ:",
            "2025年3月1日 15:00 Acme サポート <support@example.com>のメッセージ：",
            "2025年3月1日(土) 15:00 Acme サポート <support@example.com> wrote:",
            "Acme サポートさんは書きました:",
            "Acme サポートさんは書きました：",
        ] {
            let text = format!("承知しました。\n\n{attribution}{quote}");
            assert_eq!(strip_quoted(&text), "承知しました。", "{attribution}");
        }
    }

    #[test]
    fn gmail_korean() {
        let text = "확인했습니다. 감사합니다.\n\n2025년 3월 1일 (토) 오후 3:00, 홍길동 <support@example.com>님이 작성:\n\n> 안녕하세요, 고객님.\n> 주문이 발송되었습니다.\n";
        assert_eq!(strip_quoted(text), "확인했습니다. 감사합니다.");
        let short = "네, 알겠습니다.\n\n홍길동님이 작성:\n> 안녕하세요.\n";
        assert_eq!(strip_quoted(short), "네, 알겠습니다.");
    }

    #[test]
    fn gmail_chinese() {
        let text = "收到，谢谢！\n\n张三 <support@example.com> 于2025年3月1日周六 15:00写道：\n\n> 您好，您的订单已发货。\n";
        assert_eq!(strip_quoted(text), "收到，谢谢！");
        let traditional =
            "收到，謝謝！\n\n在 2025年3月1日 15:00，客服 <support@example.com> 寫道:\n> 您好。\n";
        assert_eq!(strip_quoted(traditional), "收到，謝謝！");
    }

    #[test]
    fn qq_foxmail_chinese() {
        let text = "收到，谢谢！\n我明天再试一次。\n\n\n------------------ 原始邮件 ------------------\n发件人: \"Acme 客服\"<support@example.com>;\n发送时间: 2025年3月1日(星期六) 下午3:00\n收件人: \"张三\"<zhang@example.cn>;\n主题: 回复：订单问题\n\n您好，您的订单已发货。\n";
        assert_eq!(strip_quoted(text), "收到，谢谢！\n我明天再试一次。");
        // QQ's HTML part writes &nbsp; around the name; converted to text that is U+00A0.
        let nbsp = "好的\n\n------------------\u{a0}原始邮件\u{a0}------------------\n发件人: x\n";
        assert_eq!(strip_quoted(nbsp), "好的");
        let outlook_zh = "好的\n\n-----原始邮件-----\n发件人: Acme\n";
        assert_eq!(strip_quoted(outlook_zh), "好的");
    }

    #[test]
    fn outlook_english_header_block() {
        let text = "Hi,\n\nThe invoice is attached.\n\nRegards,\nJane Doe\nAccounts Payable\n\nFrom: Acme Support <support@example.com>\nSent: Saturday, March 1, 2025 3:00 PM\nTo: Jane Doe <jane@example.org>\nCc: Accounts <ap@example.org>\nSubject: RE: [EU-1042] Missing invoice\n\nHello Jane,\n\nCould you send us the invoice?\n";
        assert_eq!(
            strip_quoted(text),
            "Hi,\n\nThe invoice is attached.\n\nRegards,\nJane Doe\nAccounts Payable"
        );
    }

    #[test]
    fn outlook_original_message_separators() {
        for separator in [
            "-----Original Message-----",
            "----- Original Message -----",
            "---original message---",
            "-----元のメッセージ-----",
            "-----원본 메시지-----",
            "-----Ursprüngliche Nachricht-----",
        ] {
            let text =
                format!("Done.\n\n{separator}\nFrom: Acme Support\nSent: Saturday\n\nOld text\n");
            assert_eq!(strip_quoted(&text), "Done.", "{separator}");
        }
        // Two dashes are not a separator.
        let text = "Done.\n--Original Message--\nmore";
        assert_eq!(strip_quoted(text), text);
    }

    #[test]
    fn outlook_web_japanese_header_block_with_rule() {
        let text = "お世話になっております。\n承知しました。明日までに対応します。\n\n________________________________\n差出人: Acme サポート <support@example.com>\n送信日時: 2025年3月1日 15:00\n宛先: 山田太郎 <taro@example.jp>\n件名: RE: [JP-1042] 請求書について\n\n山田様\n";
        assert_eq!(
            strip_quoted(text),
            "お世話になっております。\n承知しました。明日までに対応します。"
        );
    }

    #[test]
    fn outlook_header_blocks_in_other_languages() {
        for block in [
            "보낸 사람: Acme <support@example.com>\n보낸 날짜: 2025년 3월 1일 토요일 오후 3:00\n받는 사람: 홍길동\n제목: RE: 문의",
            "寄件者: Acme <support@example.com>\n寄件日期: 2025年3月1日 下午 03:00\n收件者: 王小明\n主旨: RE: 問題",
            "Von: Acme <support@example.com>\nGesendet: Samstag, 1. März 2025 15:00\nAn: Max Mustermann\nBetreff: AW: Frage",
            "De : Acme <support@example.com>\nEnvoyé : samedi 1 mars 2025 15:00\nÀ : Jean Dupont\nObjet : RE: Question",
            "*From:* Acme <support@example.com>\n*Sent:* Saturday, March 1, 2025 3:00 PM\n*To:* Jane",
        ] {
            let text = format!("OK\n\n{block}\n\nOld text\n");
            assert_eq!(strip_quoted(&text), "OK", "{block}");
        }
    }

    #[test]
    fn from_line_without_the_rest_of_a_header_block_stays() {
        let text = "From: the billing page\nTo: nowhere, it seems\n\nThe button does nothing.";
        assert_eq!(strip_quoted(text), text);
    }

    #[test]
    fn forwarded_mail_is_kept() {
        let text = "Please see the mail below.\n\n---------- Forwarded message ---------\nFrom: Shop <shop@example.com>\nDate: Sat, Mar 1, 2025 at 3:00 PM\nSubject: Your order\nTo: <jane@example.org>\n\nYour order has shipped.";
        assert_eq!(strip_quoted(text), text);
    }

    #[test]
    fn apple_mail() {
        let text = "Sounds good, thanks.\n\nTaro\n\nOn 1 Mar 2025, at 15:00, Taro <t@example.jp> wrote:\n\n> Could you try again tomorrow?\n";
        assert_eq!(strip_quoted(text), "Sounds good, thanks.\n\nTaro");
    }

    #[test]
    fn ios_mail_quoted_attribution_and_mobile_signature() {
        let text = "Yes, please go ahead.\n\nSent from my iPhone\n\n> On 1 Mar 2025, at 15:00, Acme Support <support@example.com> wrote:\n> \n> Shall we cancel the order?\n";
        assert_eq!(strip_quoted(text), "Yes, please go ahead.");
    }

    #[test]
    fn thunderbird_wrapped_attribution() {
        let text =
            "It works now.\n\nOn 3/1/25 3:00 PM, Taro\nYamada wrote:\n> Please restart the app.\n";
        assert_eq!(strip_quoted(text), "It works now.");
        let text =
            "It works now.\n\nOn 3/1/25 3:00 PM,\nTaro Yamada wrote:\n> Please restart the app.\n";
        assert_eq!(strip_quoted(text), "It works now.");
    }

    #[test]
    fn german_and_french_attributions() {
        let text = "Danke, passt.\n\nAm 01.03.2025 um 15:00 schrieb Acme Support <support@example.com>:\n> Hallo\n";
        assert_eq!(strip_quoted(text), "Danke, passt.");
        let text = "Merci !\n\nLe sam. 1 mars 2025 à 15:00, Acme Support <support@example.com> a écrit :\n> Bonjour\n";
        assert_eq!(strip_quoted(text), "Merci !");
        let nbsp = "Merci !\n\nLe 01/03/2025 à 15:00, Acme a écrit\u{a0}:\n> Bonjour\n";
        assert_eq!(strip_quoted(nbsp), "Merci !");
    }

    #[test]
    fn interleaved_reply_keeps_new_text() {
        let text = "Hi Support,\n\n> Which browser do you use?\n\nFirefox 136 on Windows 11.\n\n> Did the error appear after the update?\nYes, right after it.\n\nThanks,\nJane";
        assert_eq!(
            strip_quoted(text),
            "Hi Support,\n\nFirefox 136 on Windows 11.\n\nYes, right after it.\n\nThanks,\nJane"
        );
    }

    #[test]
    fn interleaved_reply_under_an_attribution_keeps_new_text() {
        let text = "On Sat, Mar 1, 2025 at 3:00 PM Acme Support <support@example.com> wrote:\n> Which browser do you use?\n\nFirefox 136.\n\n> Did the error appear after the update?\n\nYes.\n\n-- \nJane Doe";
        assert_eq!(strip_quoted(text), "Firefox 136.\n\nYes.");
    }

    #[test]
    fn quotes_then_signature_are_history() {
        let text = "Fixed, thanks.\n\n> Please try again.\n> Acme\n\n-- \nJane Doe\n+49 30 1234567";
        assert_eq!(strip_quoted(text), "Fixed, thanks.");
    }

    #[test]
    fn reply_marker() {
        let text = "#status pending\nI restarted the server, please check again.\n\n##- reply above this line -##\n\nNew reply from the customer\n\nTicket:    EU-1042 - Login fails\n";
        assert_eq!(
            strip_quoted(text),
            "#status pending\nI restarted the server, please check again."
        );
        // Quoted by the agent's client, below its attribution.
        let text = "Done.\n\nOn Sat, Mar 1, 2025 at 3:00 PM postdesk <support@example.com> wrote:\n> ##- reply above this line -##\n>\n> New ticket\n";
        assert_eq!(strip_quoted(text), "Done.");
        // Marker inside an otherwise interleaved reply still cuts.
        let text = "Answer\n> q\nmore\n> ##- reply above this line -##\nnot mine\n";
        assert_eq!(strip_quoted(text), "Answer\nmore");
    }

    #[test]
    fn nothing_above_the_marker_is_empty() {
        let text = "\n##- reply above this line -##\n\nNew ticket\n";
        assert_eq!(strip_quoted(text), "");
    }

    #[test]
    fn signature_delimiter() {
        let text = "Thanks!\n\n-- \nJane Doe\nACME Corp\n+49 30 1234567\n";
        assert_eq!(strip_quoted(text), "Thanks!");
        let no_space = "Thanks!\n--\nJane Doe\n";
        assert_eq!(strip_quoted(no_space), "Thanks!");
        // Dashes inside a line are text.
        let text = "Step 1 -- open the app\n---\nStep 2";
        assert_eq!(strip_quoted(text), text);
    }

    #[test]
    fn mobile_signatures() {
        for signature in [
            "Sent from my iPhone",
            "Sent from my iPad",
            "Sent from Outlook for iOS",
            "Sent from Outlook for Android",
            "Get Outlook for iOS",
            "Get Outlook for iOS<https://aka.ms/o0ukef>",
            "Get Outlook for Android",
            "iPhoneから送信",
            "iPadから送信",
            "Galaxy에서 보냄",
            "내 iPhone에서 보냄",
            "从我的iPhone发送",
            "发自我的iPhone",
        ] {
            let text = format!("Yes, please go ahead.\n\n{signature}\n");
            assert_eq!(strip_quoted(&text), "Yes, please go ahead.", "{signature}");
        }
        // Only at the end.
        let text = "Sent from my iPhone\nbut the app crashes anyway.";
        assert_eq!(strip_quoted(text), text);
    }

    #[test]
    fn mail_without_quote_is_unchanged() {
        let text = "Hello,\n\nmy order #1042 has not arrived yet.\nCan you check?\n\n\n  Order: 1042\n  Date:  2025-03-01\n\nJane";
        assert_eq!(strip_quoted(text), text);
    }

    #[test]
    fn only_a_quote_is_empty() {
        assert_eq!(strip_quoted("> Hello\n> world\n"), "");
        let text = "\n\nOn Sat, Mar 1, 2025 at 3:00 PM Acme Support <support@example.com> wrote:\n> Hello\n";
        assert_eq!(strip_quoted(text), "");
        assert_eq!(
            strip_quoted("2025年3月1日(土) 15:00 Acme <support@example.com>:\n> 山田様\n"),
            ""
        );
    }

    #[test]
    fn nothing_but_history_of_other_kinds_keeps_the_input() {
        // A forward without a word of its own, a signature alone: better too much than nothing.
        let text = "-----Original Message-----\nFrom: Shop\nSent: Saturday\nTo: Jane\n\nYour order has shipped.  \n\n";
        assert_eq!(
            strip_quoted(text),
            "-----Original Message-----\nFrom: Shop\nSent: Saturday\nTo: Jane\n\nYour order has shipped."
        );
        assert_eq!(strip_quoted("\n-- \nJane Doe\n"), "--\nJane Doe");
    }

    #[test]
    fn prose_that_sounds_like_an_attribution_stays() {
        let text = "Here is what my colleague wrote:\nThe export button is grey.\n\nOn Monday the system wrote:\nerror E42";
        assert_eq!(strip_quoted(text), "Here is what my colleague wrote:\nThe export button is grey.\n\nOn Monday the system wrote:\nerror E42");
        // A sentence starting with "On " right above a real attribution is not part of it.
        let text = "On second thought, cancel it.\nOn Sat, Mar 1, 2025 at 3:00 PM Acme <support@example.com> wrote:\n> Hi\n";
        assert_eq!(strip_quoted(text), "On second thought, cancel it.");
    }

    #[test]
    fn format_flowed_space_stuffed_line_is_text() {
        let text = "Result:\n >100 errors per minute\nPlease help.";
        assert_eq!(strip_quoted(text), text);
    }

    #[test]
    fn trailing_whitespace_and_blank_lines_go_leading_indent_stays() {
        let text = "\n\n   Indented first line   \nsecond\t\n\n\n";
        assert_eq!(strip_quoted(text), "   Indented first line\nsecond");
        assert_eq!(strip_quoted(""), "");
        assert_eq!(strip_quoted(" \n\t\n"), "");
    }
}
