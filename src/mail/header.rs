//! Header values decoded from their raw bytes: unfolding, RFC 2047 encoded words, RFC 2231 parameters.
//!
//! mail-parser decodes encoded words one by one, so a subject that Outlook or a phone split into several
//! `=?UTF-8?B?…?=` words in the middle of a character (or ISO-2022-JP words in the middle of a two-byte
//! sequence) comes out with U+FFFD; it decodes RFC 2231 continuations segment by segment, which breaks the
//! same way; it folds every white space, U+3000 included, into an ASCII space; and raw 8-bit bytes in
//! headers become U+FFFD. Here the raw bytes (mail-parser keeps each header's offsets) are decoded again:
//! adjacent encoded words of the same charset and encoding are joined as bytes before their charset is
//! decoded (as Thunderbird and Gmail do), white space between adjacent encoded words is dropped (RFC 2047
//! section 6.2), only the line breaks that folding added are removed, RFC 2231 segments are joined as bytes
//! and decoded once, and raw 8-bit text is detected ([`charset::detect`]). Everything is one pass over the
//! input: linear in its size.

use super::charset::{self, Hint};
use super::parse::base64_lenient;

/// The most of one header value decoded for a single-line use (Subject, a display name, a file name): each
/// of those is cut far below this after decoding (998 characters), so a sender's megabyte subject costs
/// no more than this does.
pub const MAX_DECODED_HEADER_BYTES: usize = 64 * 1024;

/// Remove the line breaks that folding added: CRLF (or a bare LF, as a Maildir holds it) followed by a space
/// or a tab. The space or tab stays: it is part of the value. A final line break is dropped.
pub fn unfold(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !raw.contains(&b'\n') {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        let brk = match b {
            b'\r' if raw.get(i + 1) == Some(&b'\n') => 2,
            b'\n' => 1,
            _ => 0,
        };
        if brk > 0 {
            match raw.get(i + brk) {
                Some(b' ' | b'\t') | None => {
                    i += brk;
                    continue;
                }
                _ => {}
            }
        }
        out.push(b);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

/// One piece of a header value: literal text, or an encoded word's charset, encoding and decoded bytes.
enum Piece<'a> {
    Text(&'a [u8]),
    Word {
        charset: &'a [u8],
        b: bool,
        bytes: Vec<u8>,
    },
}

/// The encoded word `=?charset?B|Q?text?=` starting at `s[i]`, if there is one, and the index after it.
/// Its text ends at the first `?` (neither B nor Q text may hold one), so a failed attempt is re-read at most
/// a few times: linear overall.
fn encoded_word_at(s: &[u8], i: usize) -> Option<(&[u8], bool, &[u8], usize)> {
    if s.get(i..i + 2)? != b"=?" {
        return None;
    }
    let cs_start = i + 2;
    let cs_len = s[cs_start..]
        .iter()
        .take(76)
        .position(|&b| b == b'?' || b.is_ascii_whitespace() || b.is_ascii_control())?;
    if cs_len == 0 || s[cs_start + cs_len] != b'?' {
        return None;
    }
    let charset = &s[cs_start..cs_start + cs_len];
    let enc = *s.get(cs_start + cs_len + 1)?;
    let b = match enc {
        b'B' | b'b' => true,
        b'Q' | b'q' => false,
        _ => return None,
    };
    if s.get(cs_start + cs_len + 2) != Some(&b'?') {
        return None;
    }
    let text_start = cs_start + cs_len + 3;
    let text_len = s[text_start..]
        .iter()
        .position(|&b| b == b'?' || b == b'\r' || b == b'\n')?;
    let end = text_start + text_len;
    if s[end] != b'?' || s.get(end + 1) != Some(&b'=') {
        return None;
    }
    Some((charset, b, &s[text_start..end], end + 2))
}

fn q_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'_' => out.push(b' '),
            b'=' => match (hex(text.get(i + 1)), hex(text.get(i + 2))) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'='),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn hex(b: Option<&u8>) -> Option<u8> {
    match b? {
        b @ b'0'..=b'9' => Some(b - b'0'),
        b @ b'a'..=b'f' => Some(b - b'a' + 10),
        b @ b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Split a (unfolded) value into literal text and encoded words, white space between two encoded words
/// dropped and adjacent words of the same charset and encoding joined as bytes.
fn pieces(s: &[u8]) -> Vec<Piece<'_>> {
    let mut out: Vec<Piece> = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    while i < s.len() {
        let Some((charset, b, text, end)) = (s[i] == b'=').then(|| encoded_word_at(s, i)).flatten()
        else {
            i += 1;
            continue;
        };
        let literal = &s[text_start..i];
        let after_word = matches!(out.last(), Some(Piece::Word { .. }));
        if !(literal.is_empty() || after_word && literal.iter().all(|&c| c == b' ' || c == b'\t')) {
            out.push(Piece::Text(literal));
        }
        let bytes = if b {
            base64_lenient(text).unwrap_or_default()
        } else {
            q_decode(text)
        };
        match out.last_mut() {
            Some(Piece::Word {
                charset: c,
                b: pb,
                bytes: prev,
            }) if *pb == b && c.eq_ignore_ascii_case(charset) => prev.extend_from_slice(&bytes),
            _ => out.push(Piece::Word { charset, b, bytes }),
        }
        i = end;
        text_start = end;
    }
    if text_start < s.len() {
        out.push(Piece::Text(&s[text_start..]));
    }
    out
}

/// Decode an unfolded value: encoded words (joined, see [`pieces`]) and literal text (raw 8-bit text
/// detected). What was guessed is added to `guesses`. Nothing else is changed: control characters stay (a
/// file name keeps them for `safe_filename` to judge; [`decode_header`] turns them into spaces).
pub fn decode_words(s: &[u8], hint: Hint, guesses: &mut Vec<String>) -> String {
    if s.is_ascii() && !s.contains(&0x1b) && !s.windows(2).any(|w| w == b"=?") {
        return String::from_utf8_lossy(s).into_owned();
    }
    let mut out = String::with_capacity(s.len());
    for piece in pieces(s) {
        match piece {
            Piece::Text(t) if t.is_ascii() && !t.contains(&0x1b) => {
                out.push_str(&String::from_utf8_lossy(t))
            }
            Piece::Text(t) => {
                let d = charset::decode(None, t, hint);
                if let Some(g) = d.guess {
                    if !d.text.is_ascii() || t.contains(&0x1b) {
                        guesses.push(format!("raw 8-bit text decoded as {g}"));
                    }
                }
                out.push_str(&d.text);
            }
            Piece::Word { charset, bytes, .. } => {
                let label = String::from_utf8_lossy(charset);
                // RFC 2231 section 5: `=?utf-8*ja?B?…?=` carries a language after the charset.
                let label = label.split('*').next().unwrap_or("");
                let d = charset::decode(Some(label), &bytes, hint);
                if let Some(g) = d.guess {
                    guesses.push(format!("encoded word decoded as {g}"));
                }
                out.push_str(&d.text);
            }
        }
    }
    out
}

/// Control characters as spaces: a header value never carries a line break into what postdesk stores.
pub fn without_controls(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A single-line header value (Subject, a display name) from its raw bytes: unfolded, decoded, trimmed of
/// the white space around it. Inner white space is the sender's and stays, U+3000 included.
pub fn decode_header(raw: &[u8], hint: Hint, guesses: &mut Vec<String>) -> String {
    let raw = &raw[..raw.len().min(MAX_DECODED_HEADER_BYTES)];
    without_controls(&decode_words(&unfold(raw), hint, guesses))
        .trim_matches(|c: char| c.is_ascii_whitespace())
        .to_string()
}

/// The value of parameter `wanted` (lower case, e.g. `filename`) of a structured header such as
/// Content-Disposition or Content-Type, from the header's raw value: RFC 2231 extended values
/// (`filename*=UTF-8''…`) and continuations (`filename*0*=…; filename*1*=…`, joined as bytes and decoded
/// once with the charset of segment 0), or the plain value with any RFC 2047 words in it decoded, raw 8-bit
/// bytes detected. The extended form wins over the plain one (senders write both for old readers).
pub fn parameter(
    raw: &[u8],
    wanted: &str,
    hint: Hint,
    guesses: &mut Vec<String>,
) -> Option<String> {
    let raw = &raw[..raw.len().min(MAX_DECODED_HEADER_BYTES)];
    let s = unfold(raw);
    let mut plain: Option<Vec<u8>> = None;
    let mut extended: Option<Vec<u8>> = None;
    let mut segments: Vec<(u32, bool, Vec<u8>)> = Vec::new();
    for (name, value) in params(&s) {
        let Some(rest) = strip_prefix_ignore_case(name, wanted.as_bytes()) else {
            continue;
        };
        if rest.is_empty() {
            plain.get_or_insert(value);
        } else if rest == b"*" {
            extended.get_or_insert(value);
        } else if let Some(digits) = rest.strip_prefix(b"*") {
            let (digits, ext) = match digits.strip_suffix(b"*") {
                Some(d) => (d, true),
                None => (digits, false),
            };
            if digits.is_empty() || digits.len() > 4 || !digits.iter().all(u8::is_ascii_digit) {
                continue;
            }
            let n: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
            segments.push((n, ext, value));
        }
    }
    let decoded = if let Some(v) = extended {
        let (label, data) = split_extended(&v);
        decode_bytes(label, &percent_decode(data), hint, guesses)
    } else if !segments.is_empty() {
        segments.sort_by_key(|(n, _, _)| *n);
        segments.dedup_by_key(|(n, _, _)| *n);
        let first_ext = segments[0].1;
        let mut label = None;
        let mut bytes = Vec::new();
        for (i, (_, ext, v)) in segments.iter().enumerate() {
            if *ext {
                let data = if i == 0 {
                    let (l, d) = split_extended(v);
                    label = l;
                    d
                } else {
                    v.as_slice()
                };
                bytes.extend_from_slice(&percent_decode(data));
            } else {
                bytes.extend_from_slice(v);
            }
        }
        if first_ext {
            decode_bytes(label, &bytes, hint, guesses)
        } else {
            // Plain continuations: Outlook splits `=?ISO-2022-JP?B?…?=` words across them.
            decode_words(&bytes, hint, guesses)
        }
    } else {
        decode_words(&plain?, hint, guesses)
    };
    let decoded = decoded
        .trim_matches(|c: char| c == ' ' || c == '\t')
        .to_string();
    (!decoded.is_empty()).then_some(decoded)
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

fn decode_bytes(
    label: Option<&[u8]>,
    bytes: &[u8],
    hint: Hint,
    guesses: &mut Vec<String>,
) -> String {
    let label = label.map(String::from_utf8_lossy);
    let d = charset::decode(label.as_deref(), bytes, hint);
    if let Some(g) = d.guess {
        if !d.text.is_ascii() {
            guesses.push(format!("parameter decoded as {g}"));
        }
    }
    d.text
}

/// `charset'language'data` → the charset (when given) and the data. Without the two quotes all is data.
fn split_extended(v: &[u8]) -> (Option<&[u8]>, &[u8]) {
    let mut quotes = v
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\'')
        .map(|(i, _)| i);
    match (quotes.next(), quotes.next()) {
        (Some(a), Some(b)) => {
            let label = &v[..a];
            ((!label.is_empty()).then_some(label), &v[b + 1..])
        }
        _ => (None, v),
    }
}

fn percent_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' {
            if let (Some(h), Some(l)) = (hex(v.get(i + 1)), hex(v.get(i + 2))) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

/// The `name=value` parameters after the first `;` of an unfolded structured value, values unquoted.
fn params(s: &[u8]) -> Vec<(&[u8], Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = skip_value(s, 0);
    while i < s.len() {
        // At a ';'.
        i += 1;
        while i < s.len() && s[i].is_ascii_whitespace() {
            i += 1;
        }
        let name_start = i;
        while i < s.len() && s[i] != b'=' && s[i] != b';' {
            i += 1;
        }
        let name = trim(&s[name_start..i]);
        if i >= s.len() || s[i] == b';' {
            continue;
        }
        i += 1; // '='
        while i < s.len() && (s[i] == b' ' || s[i] == b'\t') {
            i += 1;
        }
        let mut value = Vec::new();
        if s.get(i) == Some(&b'"') {
            i += 1;
            while i < s.len() && s[i] != b'"' {
                // Only `\"` and `\\` are escapes: Netscape and Outlook write Windows paths
                // (`filename="C:\TEMP\a.png"`) unescaped, and the name is the path's last part.
                if s[i] == b'\\' && matches!(s.get(i + 1), Some(b'"' | b'\\')) {
                    i += 1;
                }
                value.push(s[i]);
                i += 1;
            }
            i += 1; // closing quote
            i = skip_value(s, i.min(s.len()));
        } else {
            let start = i;
            i = skip_value(s, i);
            value.extend_from_slice(trim(&s[start..i]));
        }
        if !name.is_empty() {
            out.push((name, value));
        }
    }
    out
}

/// The index of the next `;` at or after `i` outside quotes, or the end.
fn skip_value(s: &[u8], mut i: usize) -> usize {
    let mut quoted = false;
    while i < s.len() {
        match s[i] {
            b'\\' if quoted && matches!(s.get(i + 1), Some(b'"' | b'\\')) => i += 1,
            b'"' => quoted = !quoted,
            b';' if !quoted => return i,
            _ => {}
        }
        i += 1;
    }
    s.len()
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use encoding_rs::{GBK, ISO_2022_JP, SHIFT_JIS};

    fn header(raw: &str) -> String {
        decode_header(raw.as_bytes(), Hint::default(), &mut Vec::new())
    }

    fn b64(bytes: &[u8]) -> String {
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in bytes.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for k in 0..4 {
                if k <= c.len() {
                    out.push(T[(n >> (18 - 6 * k) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// Issue 15 (1): Outlook and phones split a subject into encoded words in the middle of a UTF-8
    /// character; each half became U+FFFD.
    #[test]
    fn adjacent_encoded_words_split_inside_a_utf8_character_are_joined() {
        let text = "お問い合わせ：注文番号";
        let bytes = text.as_bytes();
        let (a, b) = bytes.split_at(4); // inside 問
        let raw = format!(" =?UTF-8?B?{}?=\r\n =?utf-8?B?{}?=\r\n", b64(a), b64(b));
        assert_eq!(header(&raw), text);
        // Q words too, and a tab fold.
        let q = |b: &[u8]| b.iter().map(|x| format!("={x:02X}")).collect::<String>();
        let raw = format!("=?UTF-8?Q?{}?=\r\n\t=?UTF-8?Q?{}?=", q(a), q(b));
        assert_eq!(header(&raw), text);
    }

    /// Issue 15 (1): ISO-2022-JP words split inside a two-byte sequence.
    #[test]
    fn iso2022jp_words_split_inside_a_two_byte_sequence_are_joined() {
        let text = "見積書の送付について";
        let (jis, _, _) = ISO_2022_JP.encode(text);
        let (a, b) = jis.split_at(6); // ESC $ B + one and a half characters
        let raw = format!("=?ISO-2022-JP?B?{}?= =?ISO-2022-JP?B?{}?=", b64(a), b64(b));
        assert_eq!(header(&raw), text);
    }

    #[test]
    fn white_space_between_words_and_text_is_kept_and_only_folding_is_removed() {
        assert_eq!(header("Re: =?UTF-8?B?5LiA?= x"), "Re: 一 x");
        assert_eq!(header("=?UTF-8?B?5LiA?=  \r\n  =?UTF-8?B?5LqM?="), "一二");
        assert_eq!(header("a\r\n b"), "a b");
        assert_eq!(header("a\n\tb"), "a b");
        assert_eq!(header("=?ISO-8859-1?Q?a?= b =?ISO-8859-1?Q?c?="), "a b c");
        // Different charsets are not joined, but the space between them still goes.
        assert_eq!(header("=?UTF-8?Q?a?= =?ISO-8859-1?Q?=E9?="), "aé");
    }

    /// Issue 15 (4): an ideographic space in a Japanese subject became an ASCII space.
    #[test]
    fn an_ideographic_space_stays_in_the_subject() {
        let raw = format!("=?UTF-8?B?{}?=", b64("ご注文　確認".as_bytes()));
        assert_eq!(header(&raw), "ご注文　確認");
        assert_eq!(header(" 件名\u{3000}テスト "), "件名\u{3000}テスト");
    }

    #[test]
    fn raw_8bit_header_text_is_detected() {
        let (sjis, _, _) = SHIFT_JIS.encode("お見積りのお願い");
        let mut g = Vec::new();
        assert_eq!(
            decode_header(&sjis, Hint::default(), &mut g),
            "お見積りのお願い"
        );
        assert!(g[0].contains("Shift_JIS"), "{g:?}");
        let (jis, _, _) = ISO_2022_JP.encode("見積");
        assert_eq!(
            decode_header(&jis, Hint::default(), &mut Vec::new()),
            "見積"
        );
    }

    #[test]
    fn broken_words_stay_as_text() {
        assert_eq!(header("=?UTF-8?B?"), "=?UTF-8?B?");
        assert_eq!(header("=?UTF-8?X?abc?="), "=?UTF-8?X?abc?=");
        assert_eq!(header("=??B?abc?="), "=??B?abc?=");
        assert_eq!(header("a =? b ?= c"), "a =? b ?= c");
        assert_eq!(header("=?UTF-8?Q?a=0D=0Ab?="), "a  b");
    }

    /// Issue 15 (6): RFC 2231 segments may split a character or an ISO-2022-JP escape sequence.
    #[test]
    fn rfc2231_continuations_are_joined_as_bytes_before_decoding() {
        let pct = |b: &[u8]| b.iter().map(|x| format!("%{x:02X}")).collect::<String>();
        let (jis, _, _) = ISO_2022_JP.encode("見積書_2024年度.pdf");
        let cut = 4; // inside ESC $ B + the first character
        let raw = format!(
            "attachment;\r\n filename*0*=ISO-2022-JP'ja'{};\r\n filename*1*={}",
            pct(&jis[..cut]),
            pct(&jis[cut..])
        );
        let got = parameter(raw.as_bytes(), "filename", Hint::default(), &mut Vec::new());
        assert_eq!(got.as_deref(), Some("見積書_2024年度.pdf"));
        // UTF-8 split inside a character, segments out of order, one not extended.
        let name = "請求書.pdf".as_bytes();
        let raw = format!(
            "attachment; filename*2=\".pdf\"; filename*0*=UTF-8''{}; filename*1*={}",
            pct(&name[..4]),
            pct(&name[4..name.len() - 4])
        );
        let got = parameter(raw.as_bytes(), "filename", Hint::default(), &mut Vec::new());
        assert_eq!(got.as_deref(), Some("請求書.pdf"));
    }

    #[test]
    fn parameters_plain_extended_and_encoded() {
        let p = |raw: &str, n: &str| parameter(raw.as_bytes(), n, Hint::default(), &mut Vec::new());
        assert_eq!(
            p("attachment; filename=\"a;b.txt\"", "filename").as_deref(),
            Some("a;b.txt")
        );
        assert_eq!(
            p("attachment; filename=plain.txt ; size=3", "filename").as_deref(),
            Some("plain.txt")
        );
        assert_eq!(
            p(
                "attachment; filename=\"old.txt\"; filename*=utf-8''%E6%96%B0.txt",
                "filename"
            )
            .as_deref(),
            Some("新.txt")
        );
        assert_eq!(
            p(
                "application/pdf; name=\"=?UTF-8?B?6KaL56mN?= =?UTF-8?B?5pu4LnBkZg==?=\"",
                "name"
            )
            .as_deref(),
            Some("見積書.pdf")
        );
        assert_eq!(p("attachment", "filename"), None);
        assert_eq!(p("attachment; filenamex=a", "filename"), None);
        assert_eq!(
            p("attachment; filename=\"a\\\"b\"", "filename").as_deref(),
            Some("a\"b")
        );
        assert_eq!(
            p(r#"inline; filename="C:\TEMP\nsmail.png""#, "filename").as_deref(),
            Some(r"C:\TEMP\nsmail.png")
        );
    }

    /// Issue 15 (5): Becky!, Outlook Express and Chinese clients write raw 8-bit file names.
    #[test]
    fn raw_8bit_filenames_are_detected() {
        let (sjis, _, _) = SHIFT_JIS.encode("見積書.xlsx");
        let mut raw = b"attachment; filename=\"".to_vec();
        raw.extend_from_slice(&sjis);
        raw.push(b'"');
        let mut g = Vec::new();
        assert_eq!(
            parameter(&raw, "filename", Hint::default(), &mut g).as_deref(),
            Some("見積書.xlsx")
        );
        assert!(g.iter().any(|x| x.contains("Shift_JIS")), "{g:?}");
        let (gbk, _, _) = GBK.encode("合同附件.doc");
        let mut raw = b"attachment; filename=\"".to_vec();
        raw.extend_from_slice(&gbk);
        raw.push(b'"');
        let cn = Hint { tld: Some(b"cn") };
        assert_eq!(
            parameter(&raw, "filename", cn, &mut Vec::new()).as_deref(),
            Some("合同附件.doc")
        );
    }

    #[test]
    fn decoding_is_linear() {
        let storm = "=?".repeat(200_000);
        let started = std::time::Instant::now();
        assert!(header(&storm).starts_with("=?=?"));
        let words = "=?UTF-8?B?5LiA?= ".repeat(100_000);
        let _ = decode_words(words.as_bytes(), Hint::default(), &mut Vec::new());
        let params = "attachment".to_string() + &"; filename*9*=%E4".repeat(20_000);
        let _ = parameter(
            params.as_bytes(),
            "filename",
            Hint::default(),
            &mut Vec::new(),
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
