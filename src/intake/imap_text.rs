//! An IMAP server's answer as text for a log line. async-imap puts a NO or BAD answer into its error as
//! Rust debug output (`no response: code: Some(TryCreate), info: Some("Mailbox doesn't exist: nope")`),
//! which an admin should not have to read: [`ServerText`] shows it as the server said it,
//! `NO [TRYCREATE] Mailbox doesn't exist: nope`. Other errors keep their own text.

use std::fmt;

/// `Display` of an async-imap error, with a NO or BAD answer as the server's words (see the overview).
pub struct ServerText<'a>(pub &'a async_imap::error::Error);

impl fmt::Display for ServerText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            async_imap::error::Error::No(debug) => f.write_str(&status_text("NO", debug)),
            async_imap::error::Error::Bad(debug) => f.write_str(&status_text("BAD", debug)),
            other => write!(f, "{other}"),
        }
    }
}

/// `NO [CODE] text` from async-imap's `code: …, info: …` debug text; anything else is kept, after `status`.
pub fn status_text(status: &str, debug: &str) -> String {
    let Some(rest) = debug.strip_prefix("code: ") else {
        return format!("{status} {debug}");
    };
    let Some((code, info)) = rest.split_once(", info: ") else {
        return format!("{status} {debug}");
    };
    let mut out = status.to_string();
    if let Some(code) = code.strip_prefix("Some(").and_then(|c| c.strip_suffix(')')) {
        // `TryCreate`, `UidValidity(3)`, `Other("X-FOO", None)`: the name, as IMAP writes it.
        let name: String = code
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        let name = match name.as_str() {
            "ReadOnly" => "READ-ONLY".to_string(),
            "ReadWrite" => "READ-WRITE".to_string(),
            other => other.to_ascii_uppercase(),
        };
        if !name.is_empty() {
            out.push_str(&format!(" [{name}]"));
        }
    }
    if let Some(text) = info
        .strip_prefix("Some(\"")
        .and_then(|i| i.strip_suffix("\")"))
    {
        out.push(' ');
        out.push_str(&unescape(text));
    }
    out
}

/// Undo Rust's `{:?}` escaping of a string (`\"`, `\\`, `\n`, `\t`, `\r`, `\'`, `\u{…}`).
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push(' '),
            Some('t') => out.push(' '),
            Some('r') => {}
            Some('0') => {}
            Some('u') => {
                let hex: String = chars
                    .by_ref()
                    .skip_while(|&c| c == '{')
                    .take_while(|&c| c != '}')
                    .collect();
                if let Some(ch) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    out.push(ch);
                }
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_imap::error::Error;

    /// Issue 16: a NO from the server was logged as `no response: code: None, info: Some("…")`.
    #[test]
    fn imap_answers_read_as_the_server_wrote_them() {
        let no = Error::No(r#"code: None, info: Some("Mailbox doesn't exist: nope")"#.into());
        assert_eq!(
            ServerText(&no).to_string(),
            "NO Mailbox doesn't exist: nope"
        );
        let coded = Error::No(
            r#"code: Some(TryCreate), info: Some("Mailbox \"x\" doesn't exist \u{2014} \\o/")"#
                .into(),
        );
        assert_eq!(
            ServerText(&coded).to_string(),
            "NO [TRYCREATE] Mailbox \"x\" doesn't exist \u{2014} \\o/"
        );
        let bad = Error::Bad(r#"code: None, info: Some("Error in IMAP command")"#.into());
        assert_eq!(ServerText(&bad).to_string(), "BAD Error in IMAP command");
        let ro = Error::No(r#"code: Some(ReadOnly), info: Some("Mailbox is read-only")"#.into());
        assert_eq!(
            ServerText(&ro).to_string(),
            "NO [READ-ONLY] Mailbox is read-only"
        );
        let auth = Error::No(
            r#"code: None, info: Some("[AUTHENTICATIONFAILED] Authentication failed.")"#.into(),
        );
        assert_eq!(
            ServerText(&auth).to_string(),
            "NO [AUTHENTICATIONFAILED] Authentication failed."
        );
        // Text it does not recognise is kept; other errors say what they say.
        assert_eq!(
            ServerText(&Error::No("outcome: x".into())).to_string(),
            "NO outcome: x"
        );
        assert_eq!(
            ServerText(&Error::ConnectionLost).to_string(),
            "connection lost"
        );
    }
}
