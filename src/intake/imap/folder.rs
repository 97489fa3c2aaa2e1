//! IMAP folder names as a mail client handles them, so that `after = "move:Processed"`, the quarantine
//! folder and `mailboxes` mean the same folder on every server layout (issue 20).
//!
//! Servers differ in where a user's own folders live. Dovecot and Exchange put them at the top
//! (`Processed`); Cyrus (`altnamespace: no`) and Courier-style Dovecot installs put them under `INBOX.`
//! (`INBOX.Processed`), and refuse a top-level `CREATE Processed` (`NO Permission denied`). The server
//! says which with NAMESPACE (RFC 2342): `* NAMESPACE (("INBOX." ".")) (("user." ".")) (("" "."))` is
//! personal, other users' and shared, each a list of (prefix, hierarchy delimiter). A client then writes
//! a relative name under the personal prefix, and leaves a name alone that the admin already wrote in
//! full (`INBOX.Processed`, `user.bob.Support`, `[Gmail]/All Mail`).
//!
//! On the wire, IMAP4rev1 folder names are modified UTF-7 (RFC 3501 §5.1.3): printable ASCII stands for
//! itself except `&`, which is `&-`; anything else is UTF-16 in base64 with `,` for `/`, between `&` and
//! `-` (`処理済み` is `&UeZ0Bm4IMH8-`). Names here are UTF-8 as the admin wrote them; [`encode`] makes
//! the wire form and [`decode`] reads one.
//!
//! Everything here is pure: the session code reads NAMESPACE and LIST and hands the answers in.

use std::fmt;

/// A folder name that is not valid modified UTF-7.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a valid modified UTF-7 folder name: {why}")]
pub struct BadFolderName {
    pub name: String,
    pub why: &'static str,
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

fn b64_value(c: u8) -> Option<u32> {
    B64.iter().position(|&b| b == c).map(|p| p as u32)
}

/// The modified UTF-7 form of a UTF-8 folder name (RFC 3501 §5.1.3). Linear in the name's length.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        out.push('&');
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            let digits = match chunk.len() {
                1 => 2,
                2 => 3,
                _ => 4,
            };
            for i in 0..digits {
                out.push(B64[((n >> (18 - 6 * i)) & 0x3f) as usize] as char);
            }
        }
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// The UTF-8 name of a modified UTF-7 folder name, as a server lists it.
pub fn decode(wire: &str) -> Result<String, BadFolderName> {
    let bad = |why| BadFolderName {
        name: wire.to_string(),
        why,
    };
    let bytes = wire.as_bytes();
    let mut out = String::with_capacity(wire.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if !(0x20..=0x7e).contains(&c) {
            return Err(bad("a byte outside printable ASCII"));
        }
        if c != b'&' {
            out.push(c as char);
            i += 1;
            continue;
        }
        let end = wire[i + 1..]
            .find('-')
            .map(|e| i + 1 + e)
            .ok_or_else(|| bad("an '&' without its closing '-'"))?;
        let run = &bytes[i + 1..end];
        i = end + 1;
        if run.is_empty() {
            out.push('&');
            continue;
        }
        let (mut acc, mut bits) = (0u32, 0u32);
        let mut units = Vec::with_capacity(run.len() * 6 / 16);
        for &d in run {
            let v = b64_value(d).ok_or_else(|| bad("a character outside modified base64"))?;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 16 {
                bits -= 16;
                units.push(((acc >> bits) & 0xffff) as u16);
                acc &= (1 << bits) - 1;
            }
        }
        if bits >= 6 || acc != 0 {
            return Err(bad("a base64 run that does not end on a UTF-16 unit"));
        }
        let text = String::from_utf16(&units).map_err(|_| bad("an unpaired UTF-16 surrogate"))?;
        if text.chars().any(|c| (' '..='~').contains(&c)) {
            return Err(bad("printable ASCII encoded in base64"));
        }
        out.push_str(&text);
    }
    Ok(out)
}

/// One namespace of a NAMESPACE answer: its prefix (UTF-8, decoded) and hierarchy delimiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub prefix: String,
    pub delimiter: Option<char>,
}

/// A server's namespaces (RFC 2342): the user's own folders, other users', shared ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespaces {
    pub personal: Vec<Namespace>,
    pub other: Vec<Namespace>,
    pub shared: Vec<Namespace>,
}

impl Namespaces {
    /// What a server without NAMESPACE has: every folder at the top, with `delimiter` (from `LIST "" ""`).
    pub fn flat(delimiter: Option<char>) -> Namespaces {
        Namespaces {
            personal: vec![Namespace {
                prefix: String::new(),
                delimiter,
            }],
            ..Namespaces::default()
        }
    }

    /// The personal namespace folders are created in: the first one the server lists.
    pub fn personal_prefix(&self) -> &str {
        self.personal
            .first()
            .map(|n| n.prefix.as_str())
            .unwrap_or("")
    }
}

impl fmt::Display for Namespaces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |ns: &[Namespace]| -> String {
            if ns.is_empty() {
                return "none".into();
            }
            ns.iter()
                .map(|n| match n.delimiter {
                    Some(d) => format!("{:?} ({d})", n.prefix),
                    None => format!("{:?}", n.prefix),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(
            f,
            "personal {}, other users {}, shared {}",
            list(&self.personal),
            list(&self.other),
            list(&self.shared)
        )
    }
}

/// Most bytes of a NAMESPACE answer read: real ones are a few hundred.
pub const MAX_NAMESPACE_BYTES: usize = 16 * 1024;

#[derive(Debug, PartialEq)]
enum Token {
    Open,
    Close,
    Nil,
    Str(String),
}

/// Read the data of an untagged `* NAMESPACE …` line (everything after `NAMESPACE`). Prefixes are
/// returned decoded from modified UTF-7; extensions (RFC 2342's namespace response extensions) are
/// skipped.
pub fn parse_namespaces(data: &[u8]) -> Result<Namespaces, String> {
    let tokens = tokenize(data)?;
    let mut pos = 0;
    let mut groups = Vec::new();
    for _ in 0..3 {
        groups.push(parse_group(&tokens, &mut pos)?);
    }
    let mut groups = groups.into_iter();
    let mut next = || groups.next().unwrap_or_default();
    Ok(Namespaces {
        personal: next(),
        other: next(),
        shared: next(),
    })
}

fn tokenize(data: &[u8]) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b' ' | b'\r' | b'\n' | b'\t' => i += 1,
            b'(' => {
                out.push(Token::Open);
                i += 1;
            }
            b')' => {
                out.push(Token::Close);
                i += 1;
            }
            b'"' => {
                let mut s = Vec::new();
                i += 1;
                loop {
                    match data.get(i) {
                        None => return Err("a quoted string without its closing quote".into()),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            let c = *data.get(i + 1).ok_or("a backslash at the end")?;
                            s.push(c);
                            i += 2;
                        }
                        Some(&c) => {
                            s.push(c);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Str(String::from_utf8_lossy(&s).into_owned()));
            }
            b'{' => {
                // A literal: {n}\r\n and n bytes.
                let close = data[i..]
                    .iter()
                    .position(|&b| b == b'}')
                    .ok_or("a literal without '}'")?;
                let n: usize = std::str::from_utf8(&data[i + 1..i + close])
                    .ok()
                    .and_then(|s| s.trim_end_matches('+').parse().ok())
                    .ok_or("a literal with a bad length")?;
                let start = i + close + 1;
                let start = if data[start..].starts_with(b"\r\n") {
                    start + 2
                } else {
                    start
                };
                let body = data
                    .get(start..start + n)
                    .ok_or("a literal longer than the answer")?;
                out.push(Token::Str(String::from_utf8_lossy(body).into_owned()));
                i = start + n;
            }
            _ => {
                let end = data[i..]
                    .iter()
                    .position(|b| b" ()\r\n".contains(b))
                    .map_or(data.len(), |e| i + e);
                let atom = &data[i..end];
                if atom.eq_ignore_ascii_case(b"NIL") {
                    out.push(Token::Nil);
                } else {
                    return Err(format!("unexpected {:?}", String::from_utf8_lossy(atom)));
                }
                i = end;
            }
        }
    }
    Ok(out)
}

fn parse_group(tokens: &[Token], pos: &mut usize) -> Result<Vec<Namespace>, String> {
    match tokens.get(*pos) {
        None => Ok(Vec::new()),
        Some(Token::Nil) => {
            *pos += 1;
            Ok(Vec::new())
        }
        Some(Token::Open) => {
            *pos += 1;
            let mut out = Vec::new();
            loop {
                match tokens.get(*pos) {
                    Some(Token::Close) => {
                        *pos += 1;
                        return Ok(out);
                    }
                    Some(Token::Open) => {
                        *pos += 1;
                        out.push(parse_one(tokens, pos)?);
                    }
                    _ => return Err("a namespace list that is not a list of namespaces".into()),
                }
            }
        }
        Some(t) => Err(format!("expected NIL or a list, found {t:?}")),
    }
}

/// `"prefix" "delimiter" [extensions…])`, the opening parenthesis already read.
fn parse_one(tokens: &[Token], pos: &mut usize) -> Result<Namespace, String> {
    let prefix = match tokens.get(*pos) {
        Some(Token::Str(s)) => s.clone(),
        _ => return Err("a namespace without its prefix".into()),
    };
    *pos += 1;
    let delimiter = match tokens.get(*pos) {
        Some(Token::Str(s)) => s.chars().next(),
        Some(Token::Nil) => None,
        _ => return Err("a namespace without its delimiter".into()),
    };
    *pos += 1;
    // Extensions: strings and parenthesised lists, up to the closing parenthesis.
    let mut depth = 0usize;
    loop {
        match tokens.get(*pos) {
            None => return Err("a namespace without its closing parenthesis".into()),
            Some(Token::Close) if depth == 0 => {
                *pos += 1;
                break;
            }
            Some(Token::Close) => depth -= 1,
            Some(Token::Open) => depth += 1,
            Some(_) => {}
        }
        *pos += 1;
    }
    let prefix = decode(&prefix).unwrap_or(prefix);
    Ok(Namespace { prefix, delimiter })
}

/// The full (UTF-8) name of `name` as configured: `INBOX` in any case is `INBOX`; a name that starts
/// with one of the server's namespace prefixes was written in full and stays as it is (an `INBOX` prefix
/// in another case is written `INBOX`, as servers list it); any other name is relative and goes under
/// the personal namespace.
pub fn resolve(name: &str, ns: &Namespaces) -> String {
    if name.eq_ignore_ascii_case("INBOX") {
        return "INBOX".into();
    }
    let all = ns.personal.iter().chain(&ns.other).chain(&ns.shared);
    for n in all.clone() {
        if !n.prefix.is_empty() && starts_with_prefix(name, &n.prefix) {
            return canonical_inbox(name, &n.prefix);
        }
    }
    // A delimiter-less prefix (`INBOX` where `INBOX.` is meant) also counts, with its delimiter.
    for n in all {
        if let Some(d) = n.delimiter {
            let with = format!("{}{d}", n.prefix);
            if !n.prefix.is_empty() && !n.prefix.ends_with(d) && starts_with_prefix(name, &with) {
                return canonical_inbox(name, &with);
            }
        }
    }
    let Some(personal) = ns.personal.first() else {
        return name.to_string();
    };
    if personal.prefix.is_empty() {
        return name.to_string();
    }
    let mut prefix = personal.prefix.clone();
    if let Some(d) = personal.delimiter {
        if !prefix.ends_with(d) {
            prefix.push(d);
        }
    }
    format!("{prefix}{name}")
}

/// Whether `name` starts with `prefix`, `INBOX` in it compared in any case (RFC 3501: INBOX is
/// case-insensitive).
fn starts_with_prefix(name: &str, prefix: &str) -> bool {
    let inbox = |s: &str| s.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("INBOX"));
    if inbox(prefix) {
        // Byte slices: a name may hold any UTF-8, and `INBOX` is ASCII.
        let (n, p) = (name.as_bytes(), prefix.as_bytes());
        return n.len() >= p.len() && inbox(name) && n[5..p.len()] == p[5..];
    }
    name.starts_with(prefix)
}

fn canonical_inbox(name: &str, prefix: &str) -> String {
    let inbox = |s: &str| s.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("INBOX"));
    match name.get(5..) {
        Some(rest) if inbox(prefix) && inbox(name) => format!("INBOX{rest}"),
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(personal: &[(&str, char)]) -> Namespaces {
        Namespaces {
            personal: personal
                .iter()
                .map(|(p, d)| Namespace {
                    prefix: p.to_string(),
                    delimiter: Some(*d),
                })
                .collect(),
            ..Namespaces::default()
        }
    }

    #[test]
    fn modified_utf7_round_trips_the_rfc_examples_and_cjk_folder_names() {
        // RFC 3501 §5.1.3's example, and names Japanese, Korean and Chinese admins write.
        let cases = [
            ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
            ("処理済み", "&UeZ0Bm4IMH8-"),
            ("처리됨", "&zJi5rLQo-"),
            ("已处理", "&XfJZBHQG-"),
            ("Q&A", "Q&-A"),
            ("Processed", "Processed"),
            ("INBOX.処理済み", "INBOX.&UeZ0Bm4IMH8-"),
            ("😀", "&2D3eAA-"),
            ("", ""),
        ];
        for (utf8, wire) in cases {
            assert_eq!(encode(utf8), wire, "encode {utf8}");
            assert_eq!(decode(wire).as_deref(), Ok(utf8), "decode {wire}");
        }
    }

    #[test]
    fn bad_modified_utf7_is_refused_not_guessed() {
        for wire in [
            "&UeZ0Bm4IMH8",  // no closing '-'
            "&UeZ0!m4-",     // '!' is not base64
            "&2D0-",         // an unpaired surrogate
            "&AGEAYgBj-",    // "abc" in base64: must be written plainly
            "caf\u{e9}",     // raw 8-bit
            "&UeZ0Bm4IMH9-", // leftover bits
        ] {
            assert!(decode(wire).is_err(), "{wire} accepted");
        }
    }

    #[test]
    fn namespace_answers_of_real_servers_parse() {
        // Cyrus 3.6 with altnamespace: no.
        let cyrus = parse_namespaces(br#"(("INBOX." ".")) (("user." ".")) (("" "."))"#).unwrap();
        assert_eq!(cyrus.personal_prefix(), "INBOX.");
        assert_eq!(cyrus.personal[0].delimiter, Some('.'));
        assert_eq!(cyrus.other[0].prefix, "user.");
        // Dovecot's default, Gmail, Exchange.
        let dovecot = parse_namespaces(br#"(("" ".")) NIL NIL"#).unwrap();
        assert_eq!(dovecot.personal_prefix(), "");
        assert!(dovecot.other.is_empty() && dovecot.shared.is_empty());
        let gmail = parse_namespaces(br#"(("" "/")) NIL NIL"#).unwrap();
        assert_eq!(gmail.personal[0].delimiter, Some('/'));
        let exchange = parse_namespaces(br#"(("" "/")) NIL (("Public Folders/" "/"))"#).unwrap();
        assert_eq!(exchange.shared[0].prefix, "Public Folders/");
        // Several personal namespaces, an extension, a literal, NIL delimiter, escapes.
        let odd = parse_namespaces(
            b"((\"\" \"/\" \"X-PARAM\" (\"A\" \"B\")) (\"#mh/\" NIL)) ((\"~\" \"/\")) ((\"#sh\\\\ared/\" \"/\") ({5}\r\n#news \".\"))",
        )
        .unwrap();
        assert_eq!(odd.personal.len(), 2);
        assert_eq!(odd.personal[1].delimiter, None);
        assert_eq!(odd.shared[0].prefix, "#sh\\ared/");
        assert_eq!(odd.shared[1].prefix, "#news");
        // A prefix in modified UTF-7 is decoded.
        let utf7 = parse_namespaces(br#"(("&U,BTFw-/" "/")) NIL NIL"#).unwrap();
        assert_eq!(utf7.personal_prefix(), "台北/");
        for bad in [
            &b"((\"INBOX.\""[..],
            b"(INBOX)",
            b"((\"a\" \"b\" ",
            b"(({99}\r\nab \".\"))",
        ] {
            assert!(
                parse_namespaces(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn relative_names_go_under_the_personal_namespace_and_full_ones_stay() {
        let cyrus = Namespaces {
            personal: vec![Namespace {
                prefix: "INBOX.".into(),
                delimiter: Some('.'),
            }],
            other: vec![Namespace {
                prefix: "user.".into(),
                delimiter: Some('.'),
            }],
            shared: vec![Namespace {
                prefix: "".into(),
                delimiter: Some('.'),
            }],
        };
        assert_eq!(resolve("Processed", &cyrus), "INBOX.Processed");
        assert_eq!(
            resolve("postdesk-quarantine", &cyrus),
            "INBOX.postdesk-quarantine"
        );
        assert_eq!(resolve("INBOX.Processed", &cyrus), "INBOX.Processed");
        assert_eq!(resolve("inbox.Processed", &cyrus), "INBOX.Processed");
        assert_eq!(resolve("処理済み", &cyrus), "INBOX.処理済み");
        assert_eq!(resolve("INBOX.処理済み", &cyrus), "INBOX.処理済み");
        assert_eq!(resolve("user.bob.Support", &cyrus), "user.bob.Support");
        assert_eq!(resolve("inbox", &cyrus), "INBOX");
        assert_eq!(resolve("Archive.2024", &cyrus), "INBOX.Archive.2024");
        // A server that reports the prefix without its delimiter.
        assert_eq!(
            resolve("Processed", &ns(&[("INBOX", '.')])),
            "INBOX.Processed"
        );
        assert_eq!(
            resolve("INBOX.Processed", &ns(&[("INBOX", '.')])),
            "INBOX.Processed"
        );

        let flat = ns(&[("", '.')]);
        assert_eq!(resolve("Processed", &flat), "Processed");
        assert_eq!(resolve("INBOX.Processed", &flat), "INBOX.Processed");
        assert_eq!(resolve("INBOX", &flat), "INBOX");
        let gmail = ns(&[("", '/')]);
        assert_eq!(resolve("[Gmail]/All Mail", &gmail), "[Gmail]/All Mail");
        assert_eq!(resolve("Processed", &Namespaces::default()), "Processed");
        // INBOXES is not under INBOX.
        assert_eq!(resolve("INBOXES", &cyrus), "INBOX.INBOXES");
        assert_eq!(encode(&resolve("処理済み", &cyrus)), "INBOX.&UeZ0Bm4IMH8-");
    }
}
