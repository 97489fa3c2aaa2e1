//! Commands agents put at the top of a reply from their mail client: `#status pending`, `#note`, …
//!
//! Pure parsing: the text of an agent's mail in, the commands and the text to relay out. Commands stand one
//! per line before any other text; the first line that is not a command ends them. A line that looks like a
//! command (`#word`) but is not a valid one is an error the agent is told about, and nothing is sent to the
//! customer. Mail from anyone who is not an agent is never parsed here: for them `#status closed` is text.
//! Whether mail from an agent address is the agent's is [`authenticated`]'s question (`[agents]
//! trust_authserv_id`).

use super::ticket::{Locale, Priority, Status, TicketId};

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

/// A command line that could not be understood, or a command the ticket refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number in the mail's text.
    pub line: usize,
    pub text: String,
    /// Why, typed: the agent is told in the region's language ([`Problem::describe`]); its `Display` is
    /// the English text.
    pub reason: Problem,
}

impl BadLine {
    /// The line for the agent's error mail, in `locale`: `line 3: #merge JP-1  (no such ticket)`.
    pub fn describe(&self, locale: Locale) -> String {
        let (line, text, reason) = (self.line, &self.text, self.reason.describe(locale));
        match locale {
            Locale::En => format!("line {line}: {text}  ({reason})"),
            Locale::Ja => format!("{line}行目：{text}（{reason}）"),
            Locale::Ko => format!("{line}번째 줄: {text} ({reason})"),
            Locale::Zh => format!("第{line}行：{text}（{reason}）"),
        }
    }
}

/// What a command needs as its argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Argument {
    Status,
    Priority,
    Assignee,
    Category,
    TicketId,
}

impl Argument {
    fn describe(self, locale: Locale) -> &'static str {
        use Argument::*;
        match (locale, self) {
            (Locale::En, Status) => "a status",
            (Locale::En, Priority) => "a priority",
            (Locale::En, Assignee) => "`me` or an agent's address",
            (Locale::En, Category) => "a category name",
            (Locale::En, TicketId) => "a ticket id like JP-1001",
            (Locale::Ja, Status) => "ステータス",
            (Locale::Ja, Priority) => "優先度",
            (Locale::Ja, Assignee) => "`me` または担当者のアドレス",
            (Locale::Ja, Category) => "カテゴリ名",
            (Locale::Ja, TicketId) => "JP-1001 のようなチケット番号",
            (Locale::Ko, Status) => "상태",
            (Locale::Ko, Priority) => "우선순위",
            (Locale::Ko, Assignee) => "`me` 또는 상담원 주소",
            (Locale::Ko, Category) => "카테고리 이름",
            (Locale::Ko, TicketId) => "JP-1001 같은 티켓 번호",
            (Locale::Zh, Status) => "状态",
            (Locale::Zh, Priority) => "优先级",
            (Locale::Zh, Assignee) => "`me` 或客服的地址",
            (Locale::Zh, Category) => "类别名称",
            (Locale::Zh, TicketId) => "类似 JP-1001 的工单号",
        }
    }
}

/// Why a command line is wrong, or why the ticket refused it: typed, so the agent reads it in the region's
/// language ([`Problem::describe`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// `#status` without its word.
    Needs(String, Argument),
    /// `#status open now`: more than one word.
    OneWord(String, Argument),
    /// `#status done`: not one of the allowed values.
    NotOneOf {
        value: String,
        allowed: String,
    },
    NotATicketId(String),
    NoteTakesNoWords,
    AskTakesNoWords,
    SpamTakesNoWords,
    NotAnAddress(String),
    CcOperation(String),
    CcUsage,
    Unknown(String),
    /// `#status new`.
    BackToNew,
    NotAnAgent {
        region: String,
    },
    OwnAddress,
    AgentNotCopied {
        region: String,
    },
    RequesterNotRemovable,
    NotAParticipant,
    MergeIntoItself,
    MergeTargetClosed,
    MergeOtherRegion {
        region: String,
    },
    NoSuchTicket,
}

impl Problem {
    /// The reason in `locale` (command words and values stay as typed).
    pub fn describe(&self, locale: Locale) -> String {
        use Problem::*;
        let l = locale;
        match self {
            Needs(cmd, what) => match l {
                Locale::En => format!("#{cmd} needs {}", what.describe(l)),
                Locale::Ja => format!("#{cmd} には{}が必要です", what.describe(l)),
                Locale::Ko => format!("#{cmd} 뒤에 {}을(를) 적어 주세요", what.describe(l)),
                Locale::Zh => format!("#{cmd} 需要{}", what.describe(l)),
            },
            OneWord(cmd, what) => match l {
                Locale::En => format!("#{cmd} takes one word: {}", what.describe(l)),
                Locale::Ja => format!("#{cmd} に続けるのは1語だけです：{}", what.describe(l)),
                Locale::Ko => format!("#{cmd} 뒤에는 한 단어만 적습니다: {}", what.describe(l)),
                Locale::Zh => format!("#{cmd} 后只能跟一个词：{}", what.describe(l)),
            },
            NotOneOf { value, allowed } => match l {
                Locale::En => format!("{value:?} is not one of: {allowed}"),
                Locale::Ja => format!("「{value}」は指定できません。使えるのは {allowed} です"),
                Locale::Ko => format!("\"{value}\"은(는) 사용할 수 없습니다. 가능한 값: {allowed}"),
                Locale::Zh => format!("“{value}”无效，可用的值：{allowed}"),
            },
            NotATicketId(v) => match l {
                Locale::En => format!("{v:?} is not a ticket id (like JP-1001)"),
                Locale::Ja => format!("「{v}」はチケット番号（JP-1001 の形式）ではありません"),
                Locale::Ko => format!("\"{v}\"은(는) 티켓 번호(JP-1001 형식)가 아닙니다"),
                Locale::Zh => format!("“{v}”不是工单号（格式如 JP-1001）"),
            },
            NoteTakesNoWords => match l {
                Locale::En => "#note takes no words (the whole mail becomes the note)".into(),
                Locale::Ja => "#note の後には何も書きません（メール全体がメモになります）".into(),
                Locale::Ko => "#note 뒤에는 아무것도 적지 않습니다 (메일 전체가 메모가 됩니다)".into(),
                Locale::Zh => "#note 后面不跟任何内容（整封邮件成为备注）".into(),
            },
            AskTakesNoWords => match l {
                Locale::En => "#ask takes no words (write the question below it)".into(),
                Locale::Ja => "#ask の後には何も書きません（質問はその下の行に書きます）".into(),
                Locale::Ko => "#ask 뒤에는 아무것도 적지 않습니다 (질문은 그 아래 줄에 적습니다)".into(),
                Locale::Zh => "#ask 后面不跟任何内容（问题写在下面几行）".into(),
            },
            SpamTakesNoWords => match l {
                Locale::En => "#spam takes no words".into(),
                Locale::Ja => "#spam の後には何も書きません".into(),
                Locale::Ko => "#spam 뒤에는 아무것도 적지 않습니다".into(),
                Locale::Zh => "#spam 后面不跟任何内容".into(),
            },
            NotAnAddress(a) => match l {
                Locale::En => format!("{a}: not a mail address"),
                Locale::Ja => format!("{a}：メールアドレスではありません"),
                Locale::Ko => format!("{a}: 메일 주소가 아닙니다"),
                Locale::Zh => format!("{a}：不是邮件地址"),
            },
            CcOperation(op) => match l {
                Locale::En => format!("#cc takes `add` or `remove`, not `{op}`"),
                Locale::Ja => format!("#cc に続けるのは `add` か `remove` です（`{op}` ではありません）"),
                Locale::Ko => format!("#cc 뒤에는 `add` 또는 `remove`를 적습니다 (`{op}` 아님)"),
                Locale::Zh => format!("#cc 后应为 `add` 或 `remove`，而不是 `{op}`"),
            },
            CcUsage => match l {
                Locale::En => "#cc needs `add` or `remove` and one address".into(),
                Locale::Ja => "#cc には `add` か `remove` と、アドレスを1つ書きます".into(),
                Locale::Ko => "#cc 뒤에는 `add` 또는 `remove`와 주소 하나를 적습니다".into(),
                Locale::Zh => "#cc 需要 `add` 或 `remove` 和一个地址".into(),
            },
            Unknown(name) => match l {
                Locale::En => format!("unknown command #{name}"),
                Locale::Ja => format!("#{name} というコマンドはありません"),
                Locale::Ko => format!("#{name}은(는) 알 수 없는 명령입니다"),
                Locale::Zh => format!("未知命令 #{name}"),
            },
            BackToNew => match l {
                Locale::En => "a ticket cannot go back to `new`; use `open` to reopen it".into(),
                Locale::Ja => "チケットを `new` に戻すことはできません。再開するには `open` を使います".into(),
                Locale::Ko => "티켓을 `new`로 되돌릴 수 없습니다. 다시 열려면 `open`을 사용하세요".into(),
                Locale::Zh => "工单不能回到 `new`；要重新打开请用 `open`".into(),
            },
            NotAnAgent { region } => match l {
                Locale::En => format!("not an agent of region {region}"),
                Locale::Ja => format!("リージョン {region} の担当者ではありません"),
                Locale::Ko => format!("{region} 지역의 상담원이 아닙니다"),
                Locale::Zh => format!("不是地区 {region} 的客服"),
            },
            OwnAddress => match l {
                Locale::En => "that is a postdesk address".into(),
                Locale::Ja => "postdesk 自身のアドレスです".into(),
                Locale::Ko => "postdesk 자체 주소입니다".into(),
                Locale::Zh => "这是 postdesk 自己的地址".into(),
            },
            AgentNotCopied { region } => match l {
                Locale::En => format!("an agent of region {region} (agents are notified, not copied)"),
                Locale::Ja => format!("リージョン {region} の担当者です（担当者には通知が届くため、CC には加えません）"),
                Locale::Ko => format!("{region} 지역의 상담원입니다 (상담원은 알림을 받으므로 참조에 추가하지 않습니다)"),
                Locale::Zh => format!("是地区 {region} 的客服（客服会收到通知，不加入抄送）"),
            },
            RequesterNotRemovable => match l {
                Locale::En => "the requester of the ticket cannot be removed".into(),
                Locale::Ja => "チケットの依頼者は外せません".into(),
                Locale::Ko => "티켓 요청자는 제거할 수 없습니다".into(),
                Locale::Zh => "不能移除工单的提交人".into(),
            },
            NotAParticipant => match l {
                Locale::En => "not a participant of the ticket".into(),
                Locale::Ja => "このチケットの参加者ではありません".into(),
                Locale::Ko => "이 티켓의 참여자가 아닙니다".into(),
                Locale::Zh => "不是该工单的参与者".into(),
            },
            MergeIntoItself => match l {
                Locale::En => "a ticket cannot be merged into itself".into(),
                Locale::Ja => "チケットを自分自身に統合することはできません".into(),
                Locale::Ko => "티켓을 자기 자신에 병합할 수 없습니다".into(),
                Locale::Zh => "工单不能合并到自身".into(),
            },
            MergeTargetClosed => match l {
                Locale::En => "that ticket is closed or merged already".into(),
                Locale::Ja => "統合先のチケットは完了済みか、すでに統合されています".into(),
                Locale::Ko => "대상 티켓이 이미 종료되었거나 병합되었습니다".into(),
                Locale::Zh => "目标工单已关闭或已被合并".into(),
            },
            MergeOtherRegion { region } => match l {
                Locale::En => format!("that ticket belongs to region {region}"),
                Locale::Ja => format!("統合先のチケットはリージョン {region} のものです"),
                Locale::Ko => format!("대상 티켓은 {region} 지역의 티켓입니다"),
                Locale::Zh => format!("目标工单属于地区 {region}"),
            },
            NoSuchTicket => match l {
                Locale::En => "no such ticket".into(),
                Locale::Ja => "そのチケットはありません".into(),
                Locale::Ko => "해당 티켓이 없습니다".into(),
                Locale::Zh => "没有该工单".into(),
            },
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe(Locale::En))
    }
}

/// What an agent's mail says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub commands: Vec<Command>,
    /// The 1-based line of each command, beside [`Parsed::commands`]: a command the ticket refuses is
    /// reported with its line, like a line that is not a command.
    pub lines: Vec<usize>,
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
pub const HELP: &str = "#status open|pending|resolved|closed|spam\n#ask\n#spam\n#priority low|normal|high|urgent\n#assign me|<agent address>\n#note\n#category <name>\n#merge <ticket id>\n#cc add|remove <address>";

/// A value of an enum's `FromStr` that is not one of its words: the words, for the agent.
fn not_one_of(value: &str, allowed: &[&dyn std::fmt::Display]) -> Problem {
    Problem::NotOneOf {
        value: value.to_string(),
        allowed: allowed
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn parse_line(line: &str) -> Option<Result<Command, Problem>> {
    let rest = line.trim().strip_prefix('#')?;
    let mut words = rest.split_whitespace();
    let name = words.next()?.to_ascii_lowercase();
    // `#` followed by a digit or nothing is text (a ticket number, a hashtag list), not a command.
    if !name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let args: Vec<&str> = words.collect();
    let one = |what: Argument| -> Result<&str, Problem> {
        match args.as_slice() {
            [a] => Ok(a),
            [] => Err(Problem::Needs(name.clone(), what)),
            _ => Err(Problem::OneWord(name.clone(), what)),
        }
    };
    let statuses: Vec<&dyn std::fmt::Display> = Status::ALL
        .iter()
        .map(|s| s as &dyn std::fmt::Display)
        .collect();
    let priorities: Vec<&dyn std::fmt::Display> = Priority::ALL
        .iter()
        .map(|p| p as &dyn std::fmt::Display)
        .collect();
    Some(match name.as_str() {
        "status" => one(Argument::Status).and_then(|a| {
            a.parse()
                .map(Command::Status)
                .map_err(|_| not_one_of(a, &statuses))
        }),
        // An answer that asks the customer something: the ticket waits for them (`#status pending`).
        "ask" if args.is_empty() => Ok(Command::Status(Status::Pending)),
        "ask" => Err(Problem::AskTakesNoWords),
        "priority" => one(Argument::Priority).and_then(|a| {
            a.parse()
                .map(Command::Priority)
                .map_err(|_| not_one_of(a, &priorities))
        }),
        "assign" => one(Argument::Assignee).map(|a| {
            if a.eq_ignore_ascii_case("me") {
                Command::Assign(None)
            } else {
                Command::Assign(Some(a.to_ascii_lowercase()))
            }
        }),
        // `#spam`: the ticket is set aside as spam (`#status open` releases it).
        "spam" if args.is_empty() => Ok(Command::Status(Status::Spam)),
        "spam" => Err(Problem::SpamTakesNoWords),
        "note" if args.is_empty() => Ok(Command::Note),
        "note" => Err(Problem::NoteTakesNoWords),
        "category" => one(Argument::Category).map(|a| Command::Category(a.to_ascii_lowercase())),
        "merge" => one(Argument::TicketId).and_then(|a| {
            a.parse()
                .map(Command::Merge)
                .map_err(|_| Problem::NotATicketId(a.to_string()))
        }),
        "cc" => match args.as_slice() {
            [op, address] => match (op.to_ascii_lowercase().as_str(), plain_address(address)) {
                (_, None) => Err(Problem::NotAnAddress(address.to_string())),
                ("add", Some(a)) => Ok(Command::CcAdd(a)),
                ("remove", Some(a)) => Ok(Command::CcRemove(a)),
                _ => Err(Problem::CcOperation(op.to_string())),
            },
            _ => Err(Problem::CcUsage),
        },
        other => Err(Problem::Unknown(other.to_string())),
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
            Some(Ok(c)) => {
                parsed.commands.push(c);
                parsed.lines.push(i + 1);
            }
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
                .to_string()
                .contains("new, open, pending, resolved, closed"),
            "{:?}",
            p.errors[0]
        );
        assert!(p.errors[1]
            .reason
            .to_string()
            .contains("unknown command #frobnicate"));
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
