//! Commands agents put at the top of a reply from their mail client: `#status pending`, `#note`, …
//!
//! Pure parsing: the text of an agent's mail in, the commands and the text to relay out. Commands stand one
//! per line before any other text; the first line that is not a command ends them. A line that looks like a
//! command (`#word`) but is not a valid one is an error the agent is told about, and nothing is sent to the
//! customer. Mail from anyone who is not an agent is never parsed here: for them `#status closed` is text.
//! Whether mail from an agent address is the agent's is [`authenticated`]'s question (`[agents]
//! trust_authserv_id`).

use super::ticket::{Priority, Status, TicketId};

/// One command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Status(Status),
    Priority(Priority),
    /// `#assign me` (the sender) or `#assign agent@example.com`.
    Assign(Option<String>),
    /// The whole mail is an internal note, never sent to the customer.
    Note,
    Category(String),
    Merge(TicketId),
    /// `#cc add address`: the address becomes a participant (it gets the answers too).
    CcAdd(String),
    /// `#cc remove address`: the address is no longer a participant.
    CcRemove(String),
}

/// A command line that could not be understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number in the mail's text.
    pub line: usize,
    pub text: String,
    pub reason: String,
}

/// What an agent's mail says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub commands: Vec<Command>,
    pub errors: Vec<BadLine>,
    /// The text after the commands, as the customer may see it.
    pub body: String,
}

impl Parsed {
    pub fn is_note(&self) -> bool {
        self.commands.contains(&Command::Note)
    }
}

/// The commands, for the help text of error replies.
pub const HELP: &str = "#status open|pending|resolved|closed|spam\n#spam\n#priority low|normal|high|urgent\n#assign me|<agent address>\n#note\n#category <name>\n#merge <ticket id>\n#cc add|remove <address>";

fn parse_line(line: &str) -> Option<Result<Command, String>> {
    let rest = line.trim().strip_prefix('#')?;
    let mut words = rest.split_whitespace();
    let name = words.next()?.to_ascii_lowercase();
    // `#` followed by a digit or nothing is text (a ticket number, a hashtag list), not a command.
    if !name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let args: Vec<&str> = words.collect();
    let one = |what: &str| -> Result<&str, String> {
        match args.as_slice() {
            [a] => Ok(a),
            [] => Err(format!("#{name} needs {what}")),
            _ => Err(format!("#{name} takes one word: {what}")),
        }
    };
    Some(match name.as_str() {
        "status" => one("a status").and_then(|a| a.parse().map(Command::Status)),
        "priority" => one("a priority").and_then(|a| a.parse().map(Command::Priority)),
        "assign" => one("`me` or an agent's address").map(|a| {
            if a.eq_ignore_ascii_case("me") {
                Command::Assign(None)
            } else {
                Command::Assign(Some(a.to_ascii_lowercase()))
            }
        }),
        // `#spam`: the ticket is set aside as spam (`#status open` releases it).
        "spam" if args.is_empty() => Ok(Command::Status(Status::Spam)),
        "spam" => Err("#spam takes no words".into()),
        "note" if args.is_empty() => Ok(Command::Note),
        "note" => Err("#note takes no words (the whole mail becomes the note)".into()),
        "category" => one("a category name").map(|a| Command::Category(a.to_ascii_lowercase())),
        "merge" => one("a ticket id like JP-1001")
            .and_then(|a| a.parse().map(Command::Merge).map_err(|e| e.to_string())),
        "cc" => match args.as_slice() {
            [op, address] => match (op.to_ascii_lowercase().as_str(), plain_address(address)) {
                (_, None) => Err(format!("#cc {op} {address}: not a mail address")),
                ("add", Some(a)) => Ok(Command::CcAdd(a)),
                ("remove", Some(a)) => Ok(Command::CcRemove(a)),
                _ => Err(format!("#cc takes `add` or `remove`, not `{op}`")),
            },
            _ => Err("#cc needs `add` or `remove` and one address".into()),
        },
        other => Err(format!("unknown command #{other}")),
    })
}

/// Parse an agent's (already de-quoted) text.
pub fn parse(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim().is_empty() {
            i += 1;
            continue;
        }
        match parse_line(line) {
            Some(Ok(c)) => parsed.commands.push(c),
            Some(Err(reason)) => parsed.errors.push(BadLine {
                line: i + 1,
                text: line.trim().to_string(),
                reason,
            }),
            None => break,
        }
        i += 1;
    }
    parsed.body = lines[i.min(lines.len())..].join("\n").trim().to_string();
    parsed
}

/// `local@domain`, lower-cased, with `<…>` around it allowed; `None` for anything else (a display name, a
/// route, white space or control characters, a second `@`): an agent types one plain address.
fn plain_address(s: &str) -> Option<String> {
    let s = s
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(s);
    let (local, domain) = s.split_once('@')?;
    let ok = |part: &str, extra: &[char]| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_alphanumeric() || "-._".contains(c) || extra.contains(&c))
    };
    (ok(
        local,
        &[
            '+', '=', '\'', '!', '#', '$', '%', '&', '*', '/', '?', '^', '`', '{', '|', '}', '~',
        ],
    ) && ok(domain, &[])
        && domain.contains('.')
        && !domain.starts_with(['.', '-'])
        && !domain.ends_with(['.', '-'])
        && !domain.contains(".."))
    .then(|| s.to_lowercase())
}

/// Whether the trusted receiving server `authserv_id` vouches for `domain`, the domain of the mail's From
/// address: see [`crate::mail::authres`] for which headers count (the topmost ones with that id) and what
/// they must say (an aligned `dkim=pass`, `dmarc=pass` or `spf=pass`).
pub fn authenticated(results: &[String], authserv_id: &str, domain: &str) -> bool {
    crate::mail::authres::authenticated(results, authserv_id, domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_then_text() {
        let p = parse("#status pending\n#priority HIGH\n\nCould you send the order number?\n#not a command here");
        assert_eq!(
            p.commands,
            vec![
                Command::Status(Status::Pending),
                Command::Priority(Priority::High)
            ]
        );
        assert!(p.errors.is_empty());
        assert_eq!(
            p.body,
            "Could you send the order number?\n#not a command here"
        );
    }

    #[test]
    fn every_command() {
        let p = parse("#assign me\n#assign Other@Example.com\n#note\n#category Payment\n#merge JP-1001\n#status closed");
        assert_eq!(
            p.commands,
            vec![
                Command::Assign(None),
                Command::Assign(Some("other@example.com".into())),
                Command::Note,
                Command::Category("payment".into()),
                Command::Merge(TicketId::new("JP", 1001)),
                Command::Status(Status::Closed)
            ]
        );
        assert!(p.is_note());
        assert_eq!(p.body, "");
    }

    #[test]
    fn bad_commands_are_reported_with_their_line() {
        let p = parse("#status done\n#frobnicate\n#merge 1001\n#priority\nHello");
        let lines: Vec<usize> = p.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![1, 2, 3, 4]);
        assert!(
            p.errors[0]
                .reason
                .contains("new, open, pending, resolved, closed"),
            "{:?}",
            p.errors[0]
        );
        assert!(p.errors[1].reason.contains("unknown command #frobnicate"));
        assert_eq!(p.body, "Hello");
    }

    #[test]
    fn authentication_results_from_the_trusted_server_only() {
        let ok = vec!["mx.example.com; dkim=pass header.d=example.com header.s=sel; spf=fail smtp.mailfrom=x@other.org".to_string()];
        assert!(authenticated(&ok, "mx.example.com", "example.com"));
        assert!(
            !authenticated(&ok, "mx.example.com", "other.org"),
            "spf failed for other.org"
        );
        assert!(
            !authenticated(&ok, "evil.example.net", "example.com"),
            "another server's header is not trusted"
        );
        let spf = vec!["MX.example.com; spf=pass smtp.mailfrom=agent@example.com".to_string()];
        assert!(authenticated(&spf, "mx.example.com", "example.com"));
        let forged = vec!["mx.example.com; dkim=fail header.d=example.com; spf=softfail smtp.mailfrom=example.com".to_string()];
        assert!(!authenticated(&forged, "mx.example.com", "example.com"));
        assert!(!authenticated(&[], "mx.example.com", "example.com"));
    }

    #[test]
    fn cc_adds_and_removes_one_plain_address() {
        let p = parse("#cc add Colleague@Example.com\n#CC remove <old@example.jp>\nHello");
        assert_eq!(
            p.commands,
            vec![
                Command::CcAdd("colleague@example.com".into()),
                Command::CcRemove("old@example.jp".into())
            ]
        );
        assert_eq!(p.body, "Hello");
        for bad in [
            "#cc colleague@example.com",
            "#cc add",
            "#cc add a@b@example.com",
            "#cc add @evil.example:a@example.com",
            "#cc add a@localhost",
            "#cc add a@b/../../x",
            "#cc copy a@example.com",
            "#cc add a@example.com b@example.com",
        ] {
            let p = parse(bad);
            assert!(p.commands.is_empty(), "{bad}");
            assert_eq!(p.errors.len(), 1, "{bad}");
        }
        assert!(HELP.contains("#cc add|remove <address>"));
    }

    #[test]
    fn text_that_only_looks_like_a_command() {
        let p = parse("#1 thing first: thank you\n#status open");
        assert!(p.commands.is_empty() && p.errors.is_empty());
        assert!(p.body.starts_with("#1 thing"));
        assert_eq!(parse("").body, "");
    }
}
