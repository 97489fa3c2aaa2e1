//! Address lists (From, To, Cc, Reply-To, Sender) read from their raw bytes.
//!
//! mail-parser decodes encoded words before it splits a mailbox into its name and address, so
//! `From: =?utf-8?Q?agent?=@example.com` became the name `agent` and the address `@example.com`, and a
//! quoted local part (`"agent"@example.com`) was taken for a display name the same way. A requester of
//! `@domain` cannot be answered. This reader tokenises the raw value first (quoted strings, comments,
//! angle brackets, groups) and decodes the display name afterwards (RFC 2047 words joined as in
//! [`header`](super::header), raw 8-bit detected), so an address is always what the sender's syntax says.
//! Validation (`is_valid_address`) and the notes for `damage` are the caller's. One pass: linear.

use super::charset::Hint;
use super::header::{decode_words, unfold, without_controls};

/// One mailbox as written: the decoded display name, the address as it stands (unvalidated, maybe
/// empty), and whether an RFC 2047 word in its local part was decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub name: String,
    pub address: String,
    pub local_part_decoded: bool,
}

enum Tok<'a> {
    Atom(&'a [u8]),
    Quoted(Vec<u8>),
    Comment(&'a [u8]),
    Angle(&'a [u8]),
    Comma,
    Colon,
    Semi,
    Space,
}

fn tokens(s: &[u8]) -> Vec<Tok<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'"' => {
                let mut v = Vec::new();
                i += 1;
                while i < s.len() && s[i] != b'"' {
                    if s[i] == b'\\' && i + 1 < s.len() {
                        i += 1;
                    }
                    v.push(s[i]);
                    i += 1;
                }
                i += 1;
                out.push(Tok::Quoted(v));
            }
            b'(' => {
                let start = i + 1;
                let mut depth = 0usize;
                while i < s.len() {
                    match s[i] {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                out.push(Tok::Comment(&s[start.min(s.len())..i.min(s.len())]));
                i += 1;
            }
            b'<' => {
                let start = i + 1;
                let mut quoted = false;
                i += 1;
                while i < s.len() && (quoted || s[i] != b'>') {
                    match s[i] {
                        b'\\' if quoted => i += 1,
                        b'"' => quoted = !quoted,
                        _ => {}
                    }
                    i += 1;
                }
                out.push(Tok::Angle(&s[start..i.min(s.len())]));
                i += 1;
            }
            b',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            b':' => {
                out.push(Tok::Colon);
                i += 1;
            }
            b';' => {
                out.push(Tok::Semi);
                i += 1;
            }
            b if b.is_ascii_whitespace() => {
                while i < s.len() && s[i].is_ascii_whitespace() {
                    i += 1;
                }
                out.push(Tok::Space);
            }
            _ => {
                let start = i;
                while i < s.len()
                    && !s[i].is_ascii_whitespace()
                    && !matches!(s[i], b'"' | b'(' | b')' | b',' | b':' | b';' | b'<')
                {
                    i += 1;
                }
                if i == start {
                    // A stray ')': nothing starts here.
                    i += 1;
                    continue;
                }
                out.push(Tok::Atom(&s[start..i]));
            }
        }
    }
    out
}

/// Every mailbox of an address-list header's raw value, in order. Group names are skipped (their members
/// are kept); a phrase with no address before a mailbox with one (`Smith, John <j@example.com>`, a
/// display name with an unquoted comma) becomes part of that mailbox's name.
pub fn parse_list(raw: &[u8], hint: Hint, guesses: &mut Vec<String>) -> Vec<Written> {
    let s = unfold(raw);
    if let Some(w) = simple_mailbox(&s) {
        return vec![w];
    }
    let toks = tokens(&s);
    let mut out = Vec::new();
    let mut carried: Vec<u8> = Vec::new();
    let mut start = 0;
    for i in 0..=toks.len() {
        let end_of_mailbox = match toks.get(i) {
            None | Some(Tok::Comma | Tok::Semi) => true,
            Some(Tok::Colon) => {
                // A group's name ends at its colon (a colon outside <> is nothing else).
                start = i + 1;
                carried.clear();
                false
            }
            _ => false,
        };
        if !end_of_mailbox {
            continue;
        }
        let seg = &toks[start..i];
        start = i + 1;
        if seg.iter().all(|t| matches!(t, Tok::Space)) {
            continue;
        }
        let has_angle = seg.iter().any(|t| matches!(t, Tok::Angle(_)));
        let has_at = seg
            .iter()
            .any(|t| matches!(t, Tok::Atom(a) if a.contains(&b'@')));
        if !has_angle && !has_at && matches!(toks.get(i), Some(Tok::Comma)) {
            // Maybe the first half of an unquoted display name; kept for the next mailbox.
            if !carried.is_empty() {
                carried.extend_from_slice(b", ");
            }
            carried.extend_from_slice(&phrase_bytes(seg));
            continue;
        }
        let mut w = mailbox(seg, hint, guesses);
        if !carried.is_empty() {
            if has_angle {
                let mut name = std::mem::take(&mut carried);
                let own = phrase_bytes(
                    seg.split(|t| matches!(t, Tok::Angle(_)))
                        .next()
                        .unwrap_or(&[]),
                );
                if !own.is_empty() {
                    name.extend_from_slice(b", ");
                    name.extend_from_slice(&own);
                }
                w.name = clean_name(&decode_words(&name, hint, guesses));
            } else {
                // The carried phrase was a mailbox without an address after all.
                out.push(Written {
                    name: clean_name(&decode_words(&std::mem::take(&mut carried), hint, guesses)),
                    ..Written::default()
                });
            }
        }
        out.push(w);
    }
    if !carried.is_empty() {
        out.push(Written {
            name: clean_name(&decode_words(&carried, hint, guesses)),
            ..Written::default()
        });
    }
    out
}

/// The shape most mail has, read without tokenising: one `Name <local@domain>` or `local@domain` in
/// printable ASCII with nothing to decode, unquote or split (no quotes, comments, commas, groups, encoded
/// words, white space inside the address). Gives what the full reader gives for it; anything else is `None`.
fn simple_mailbox(s: &[u8]) -> Option<Written> {
    let plain = s.iter().all(|&b| (b' '..=b'~').contains(&b) || b == b'\t')
        && !s.iter().any(|b| b"\"(),;:\\".contains(b))
        && !s.windows(2).any(|w| w == b"=?");
    if !plain {
        return None;
    }
    let text = std::str::from_utf8(s).ok()?;
    let (name, address) = match (text.find('<'), text.find('>')) {
        (Some(open), Some(close)) if open < close => {
            let (phrase, rest) = text.split_at(open);
            let inner = &rest[1..close - open];
            let after = &rest[close - open + 1..];
            if rest[1..].contains('<') || after.contains('>') || !after.trim().is_empty() {
                return None;
            }
            (
                phrase.split_whitespace().collect::<Vec<_>>().join(" "),
                inner.trim(),
            )
        }
        (None, None) => (String::new(), text.trim()),
        _ => return None,
    };
    if address.is_empty() || address.contains(char::is_whitespace) || !address.contains('@') {
        return None;
    }
    Some(Written {
        name,
        address: address.to_string(),
        local_part_decoded: false,
    })
}

/// A phrase's bytes for decoding: atoms as written, quoted strings unquoted, white space as one space,
/// comments dropped.
fn phrase_bytes(toks: &[Tok]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in toks {
        match t {
            Tok::Atom(a) => out.extend_from_slice(a),
            Tok::Quoted(q) => out.extend_from_slice(q),
            Tok::Space if !out.is_empty() => out.push(b' '),
            _ => {}
        }
    }
    while out.last() == Some(&b' ') {
        out.pop();
    }
    out
}

fn clean_name(s: &str) -> String {
    if s.chars().any(char::is_control) {
        without_controls(s).trim().to_string()
    } else {
        s.trim().to_string()
    }
}

fn mailbox(seg: &[Tok], hint: Hint, guesses: &mut Vec<String>) -> Written {
    let comment_name = |guesses: &mut Vec<String>| {
        seg.iter()
            .find_map(|t| match t {
                Tok::Comment(c) if !c.is_empty() => Some(*c),
                _ => None,
            })
            .map(|c| clean_name(&decode_words(c, hint, guesses)))
            .unwrap_or_default()
    };
    let angle = seg.iter().enumerate().find_map(|(i, t)| match t {
        Tok::Angle(inner) => Some((i, *inner)),
        _ => None,
    });
    if let Some((pos, inner)) = angle {
        let mut name = clean_name(&decode_words(&phrase_bytes(&seg[..pos]), hint, guesses));
        if name.is_empty() {
            name = comment_name(guesses);
        }
        let (address, decoded) = addr_spec(&tokens(&unfold(inner)), hint);
        return Written {
            name,
            address,
            local_part_decoded: decoded,
        };
    }
    if !seg
        .iter()
        .any(|t| matches!(t, Tok::Atom(a) if a.contains(&b'@')))
    {
        // A phrase and no address (`From: "Support Team"`).
        return Written {
            name: clean_name(&decode_words(&phrase_bytes(seg), hint, guesses)),
            ..Written::default()
        };
    }
    let (address, decoded) = addr_spec(seg, hint);
    Written {
        name: comment_name(guesses),
        address,
        local_part_decoded: decoded,
    }
}

/// An addr-spec from its tokens: atoms as written, a quoted local part unquoted, comments and white space
/// dropped. An RFC 2047 word in the local part (`=?utf-8?Q?agent?=@example.com`) is decoded, and said.
fn addr_spec(toks: &[Tok], hint: Hint) -> (String, bool) {
    let mut bytes = Vec::new();
    for t in toks {
        match t {
            Tok::Atom(a) => bytes.extend_from_slice(a),
            Tok::Quoted(q) => bytes.extend_from_slice(q),
            Tok::Colon => bytes.push(b':'),
            Tok::Comma => bytes.push(b','),
            Tok::Angle(a) => bytes.extend_from_slice(a),
            // Kept, so that `<a b@example.com>` stays the invalid address it is.
            Tok::Space => bytes.push(b' '),
            _ => {}
        }
    }
    let mut address = String::from_utf8_lossy(&bytes).trim().to_string();
    let mut decoded = false;
    if let Some((local, domain)) = address.rsplit_once('@') {
        if local.contains("=?") && local.contains("?=") {
            let mut ignored = Vec::new();
            let plain = decode_words(local.as_bytes(), hint, &mut ignored);
            if plain != local {
                address = format!("{}@{domain}", plain.trim());
                decoded = true;
            }
        }
    }
    (address, decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(raw: &str) -> Vec<(String, String)> {
        parse_list(raw.as_bytes(), Hint::default(), &mut Vec::new())
            .into_iter()
            .map(|w| (w.name, w.address))
            .collect()
    }

    fn pair(n: &str, a: &str) -> (String, String) {
        (n.to_string(), a.to_string())
    }

    #[test]
    fn common_forms() {
        assert_eq!(
            list(" \"Taro\" <Taro@Example.JP>"),
            vec![pair("Taro", "Taro@Example.JP")]
        );
        assert_eq!(list("a@example.com"), vec![pair("", "a@example.com")]);
        assert_eq!(
            list("a@example.com (Alice A)"),
            vec![pair("Alice A", "a@example.com")]
        );
        assert_eq!(
            list("Alice <a@x.example>, b@y.example,\r\n \"C, D\" <c@z.example>"),
            vec![
                pair("Alice", "a@x.example"),
                pair("", "b@y.example"),
                pair("C, D", "c@z.example")
            ]
        );
        assert_eq!(
            list("undisclosed-recipients:;"),
            Vec::<(String, String)>::new()
        );
        assert_eq!(
            list("Team: a@x.example, B <b@x.example>;, c@x.example"),
            vec![
                pair("", "a@x.example"),
                pair("B", "b@x.example"),
                pair("", "c@x.example")
            ]
        );
        assert_eq!(
            list("Smith, John <j@x.example>"),
            vec![pair("Smith, John", "j@x.example")]
        );
        assert_eq!(
            list("=?UTF-8?B?5bCP5bed?= =?UTF-8?B?IOecn+eQhg==?= <m@x.example>"),
            vec![pair("小川 真理", "m@x.example")]
        );
        assert_eq!(
            list("\"=?ISO-2022-JP?B?GyRCOzNFRBsoQg==?=\" <y@x.example>"),
            vec![pair("山田", "y@x.example")]
        );
        assert_eq!(
            list("<@a.example,@b.example:s@x.example>"),
            vec![pair("", "@a.example,@b.example:s@x.example")]
        );
    }

    #[test]
    fn the_simple_shape_reads_as_the_full_reader_reads_it() {
        for raw in [
            "Customer 1 <c1@example.net>",
            "  Taro   Yamada\t<taro@example.jp>  ",
            "c1@example.net",
            " a@b <c@d.example>",
            "<only@example.net>",
        ] {
            let s = raw.as_bytes();
            let fast = simple_mailbox(s).expect(raw);
            // The full reader, without the shortcut.
            let toks = tokens(s);
            let slow = mailbox(&toks, Hint::default(), &mut Vec::new());
            assert_eq!(fast, slow, "{raw}");
        }
        for not_simple in [
            "a b@example.com",
            "<a b@example.com>",
            "x",
            "a@b, c@d",
            "\"q\" <a@b>",
            "<a@b> x",
        ] {
            assert!(
                simple_mailbox(not_simple.as_bytes()).is_none(),
                "{not_simple}"
            );
        }
    }

    /// Issue 15 (7): an encoded word in the local part made the address `@example.com`.
    #[test]
    fn an_encoded_word_in_the_local_part_is_decoded_into_the_address() {
        let w = parse_list(
            b"=?utf-8?Q?agent?=@example.com",
            Hint::default(),
            &mut Vec::new(),
        );
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].address, "agent@example.com");
        assert!(w[0].local_part_decoded);
        assert_eq!(
            list("\"agent\"@example.com"),
            vec![pair("", "agent@example.com")]
        );
        assert_eq!(
            list("\"Support Team\"@example.com"),
            vec![pair("", "Support Team@example.com")]
        );
        assert_eq!(list("\"Support Team\""), vec![pair("Support Team", "")]);
    }
}
