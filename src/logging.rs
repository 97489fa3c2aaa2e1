//! Log lines on stderr, readable by a person at a terminal and by journald under systemd.
//!
//! - On a terminal: the usual `tracing` lines, with timestamps and colours.
//! - Without a terminal (systemd, an MTA's pipe): no timestamp and no colours (the journal stamps every line
//!   itself), and each line starts with a syslog priority prefix, `<3>` error, `<4>` warning, `<6>` info,
//!   `<7>` debug and trace. journald reads these "sd-daemon" prefixes from a service's stdout/stderr, so
//!   `journalctl -p warning -u postdesk` shows warnings and errors only.
//! - `--log-format json`: one JSON object per line (timestamp, level, fields, message), for log shippers;
//!   with the same prefix in front when stderr is the journal (`$JOURNAL_STREAM`, see [`stderr_is_journal`]),
//!   which journald strips: the entry is the JSON object, at the right priority.
//!
//! journald makes an entry of every line, and reads the prefix of each line only. So one message is one
//! line wherever there is no terminal: a message's own line breaks (a TOML error quoting the bad line with a
//! caret under it) are written as `\n`. What the commands print to stderr outside `tracing` ([`Stderr`])
//! follows when stderr is the journal: a fatal "postdesk: cannot start: …" is one entry at priority 3 too.
//!
//! `RUST_LOG` filters (default `info`). What is logged is the callers' business, with one rule: message
//! bodies and passwords never appear, and mail addresses only at debug level.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines are written (`postdesk --log-format`). It lives here, with the code that writes them, so
/// that logging depends on nothing above it; the command line parses it as a clap value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    // Plain comments, not doc comments: clap would turn these into `--help` text.
    // Human lines; with the syslog priority prefix and no timestamp when stderr is not a terminal.
    Text,
    // One JSON object per line.
    Json,
}

/// Install the global subscriber writing to stderr.
pub fn init(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let json = || tracing_subscriber::fmt::format().json().with_target(false);
    match format {
        LogFormat::Json if stderr_is_journal() => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(JournalPriority(json()))
            .init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
        LogFormat::Text if std::io::stderr().is_terminal() => builder.init(),
        LogFormat::Text => builder
            .event_format(JournalPriority(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_target(false)
                    .with_ansi(false),
            ))
            .init(),
    }
}

/// Whether stderr is the stream systemd connected to the journal: `$JOURNAL_STREAM` is `DEVICE:INODE` of
/// it (systemd.exec(5)), and still names our fd 2 only if nobody redirected it since.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    // SAFETY: fstat on fd 2 writes into a zeroed stat buffer we own; a closed fd just fails.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    journal_stream_is(&value.to_string_lossy(), st.st_dev, st.st_ino)
}

/// Whether a `$JOURNAL_STREAM` value names the file with `dev` and `ino`. Pure.
pub fn journal_stream_is(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>().ok() == Some(dev) && i.parse::<u64>().ok() == Some(ino)
}

/// One log line for the journal: the message's own line breaks written as `\n` (journald makes an entry of
/// every line), ending in one newline.
pub fn one_line(text: &str) -> String {
    let body = text.trim_end_matches(['\n', '\r']);
    let mut out = String::with_capacity(body.len() + 1);
    for c in body.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('\n');
    out
}

/// `text` with the local part of every mail address masked (`<…@example.com>`), for log lines made from
/// outside text such as an SMTP server's answer ("550 5.1.1 <hanako@example.jp>: unknown user"). The domain
/// stays: it is what an admin needs to see which server refused. The full text stays where it belongs, in
/// the outbox row (`postdesk outbox list`).
pub fn redact_addresses(text: &str) -> String {
    let is_local = |c: char| c.is_alphanumeric() || "._%+-!#$&'*/=?^`{|}~".contains(c);
    let is_domain = |c: char| c.is_alphanumeric() || c == '.' || c == '-';
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if is_local(chars[i]) {
            let start = i;
            while i < chars.len() && is_local(chars[i]) {
                i += 1;
            }
            let domain_len = chars[(i + 1).min(chars.len())..]
                .iter()
                .take_while(|&&c| is_domain(c))
                .count();
            if chars.get(i) == Some(&'@') && domain_len > 0 {
                out.push('…');
            } else {
                out.extend(&chars[start..i]);
            }
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// The syslog priority journald understands for a `tracing` level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7, // DEBUG, TRACE
    }
}

/// An event format that puts `<N>` (the syslog priority) in front of what the inner format writes, and
/// keeps it on one line ([`one_line`]).
pub struct JournalPriority<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        write!(
            writer,
            "<{}>{}",
            priority(event.metadata().level()),
            one_line(&line)
        )
    }
}

/// How [`Stderr`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StderrMode {
    /// Not the journal (a terminal, an MTA's pipe, a script's file): as the command wrote it.
    Plain,
    /// Text, to the journal: `<N>` and one line per message.
    Lines,
    /// `--log-format json`, to the journal: one JSON object per message, after `<N>`.
    Json,
}

/// The commands' stderr (`postdesk: …` problems), beside the `tracing` log and not filtered by `RUST_LOG`.
/// When stderr is the journal (a command run by systemd: `postdesk run`, a timer's `customer erase`), each
/// message is one entry at its priority: a `write!`/`writeln!` is one message, raw bytes (a daemon's answer,
/// passed on) are split where a line starts with `postdesk`; `postdesk: warning: …` is priority 4,
/// anything else 3 (stderr is for problems). Anywhere else (a terminal, an MTA that puts it in a bounce,
/// a script that reads it) it writes what it is given.
pub struct Stderr<W: std::io::Write> {
    inner: W,
    mode: StderrMode,
}

impl Stderr<std::io::Stderr> {
    /// The process's stderr, for `format`: to the journal or not ([`stderr_is_journal`]).
    pub fn new(format: LogFormat) -> Stderr<std::io::Stderr> {
        Stderr::with_mode(std::io::stderr(), format, stderr_is_journal())
    }
}

impl<W: std::io::Write> Stderr<W> {
    /// `inner` written as for a stderr that is (or is not) the journal.
    pub fn with_mode(inner: W, format: LogFormat, journal: bool) -> Stderr<W> {
        let mode = match format {
            _ if !journal => StderrMode::Plain,
            LogFormat::Json => StderrMode::Json,
            LogFormat::Text => StderrMode::Lines,
        };
        Stderr { inner, mode }
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    fn message(&mut self, text: &str) -> std::io::Result<()> {
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            return Ok(());
        }
        let level = if text.starts_with("postdesk: warning:") {
            Level::WARN
        } else {
            Level::ERROR
        };
        let line = match self.mode {
            StderrMode::Plain => format!("{text}\n"),
            StderrMode::Lines => format!("<{}>{}", priority(&level), one_line(text)),
            StderrMode::Json => {
                let object = serde_json::json!({
                    "timestamp": chrono::Utc::now()
                        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    "level": level.as_str(),
                    "fields": { "message": text },
                });
                format!("<{}>{object}\n", priority(&level))
            }
        };
        self.inner.write_all(line.as_bytes())
    }
}

impl<W: std::io::Write> std::io::Write for Stderr<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.mode == StderrMode::Plain {
            return self.inner.write(buf);
        }
        let text = String::from_utf8_lossy(buf);
        let mut current = String::new();
        for line in text.split_inclusive('\n') {
            if line.starts_with("postdesk") && !current.is_empty() {
                self.message(&std::mem::take(&mut current))?;
            }
            current.push_str(line);
        }
        self.message(&current)?;
        Ok(buf.len())
    }

    fn write_fmt(&mut self, args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
        match self.mode {
            StderrMode::Plain => self.inner.write_fmt(args),
            _ => self.message(&args.to_string()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A `MakeWriter` collecting everything in memory.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn journal_subscriber(
        sink: Buffer,
        json: bool,
    ) -> Box<dyn tracing::Subscriber + Send + Sync + 'static> {
        let builder = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_writer(move || sink.clone());
        if json {
            Box::new(
                builder
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(JournalPriority(
                        tracing_subscriber::fmt::format().json().with_target(false),
                    ))
                    .finish(),
            )
        } else {
            Box::new(
                builder
                    .event_format(JournalPriority(
                        tracing_subscriber::fmt::format()
                            .without_time()
                            .with_target(false)
                            .with_ansi(false),
                    ))
                    .finish(),
            )
        }
    }

    /// Issue 16: a multi-line message (a TOML error) became several journal entries, only the first at its
    /// priority; with `--log-format json` every entry was priority 6.
    #[test]
    fn journal_lines_are_one_entry_per_message_at_its_priority_in_both_formats() {
        let toml_error = "config x.toml: TOML parse error at line 3, column 8\n  |\n3 | path =\n  |        ^\ninvalid string";
        for json in [false, true] {
            let buffer = Buffer::default();
            let subscriber = journal_subscriber(buffer.clone(), json);
            tracing::subscriber::with_default(subscriber, || {
                tracing::error!("reload rejected: {toml_error}");
                tracing::warn!(region = "JP", "two\nlines");
                tracing::info!("fine");
            });
            let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 3, "json={json}: {text}");
            assert!(lines[0].starts_with("<3>"), "{text}");
            assert!(lines[1].starts_with("<4>"), "{text}");
            assert!(lines[2].starts_with("<6>"), "{text}");
            assert!(lines[0].contains("invalid string"), "{text}");
            if json {
                // What journald keeps after the prefix is the JSON object, line breaks escaped by JSON.
                let v: serde_json::Value = serde_json::from_str(&lines[0][3..]).unwrap();
                assert_eq!(v["level"], "ERROR");
                assert!(v["fields"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("\n  |\n3 |"));
            } else {
                assert!(lines[0].contains("column 8\\n  |\\n3 | path ="), "{text}");
            }
        }
    }

    #[test]
    fn the_journal_stream_is_recognised_by_device_and_inode() {
        assert!(journal_stream_is("8:12345", 8, 12345));
        assert!(!journal_stream_is("8:12345", 8, 12346));
        assert!(!journal_stream_is("nonsense", 8, 12345));
        assert!(!journal_stream_is("", 0, 0));
    }

    /// Issue 16: `postdesk run`'s fatal errors went to stderr without a prefix (priority 6), so
    /// `journalctl -p warning` showed nothing when the service failed to start.
    #[test]
    fn command_errors_on_stderr_are_one_entry_each_at_priority_3_or_4() {
        use std::io::Write;
        let mut text = Stderr::with_mode(Vec::new(), LogFormat::Text, true);
        let _ = writeln!(
            text,
            "postdesk: cannot start: config x: TOML parse error\n  |\n  ^"
        );
        let _ = writeln!(text, "postdesk: warning: readable by others");
        // A daemon's answer, passed on as bytes: split at each message.
        let _ = text.write_all(b"postdesk: no ticket JP-1\npostdesk: second\n  detail\n");
        let out = String::from_utf8(text.into_inner()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "<3>postdesk: cannot start: config x: TOML parse error\\n  |\\n  ^",
                "<4>postdesk: warning: readable by others",
                "<3>postdesk: no ticket JP-1",
                "<3>postdesk: second\\n  detail",
            ]
        );

        let mut json = Stderr::with_mode(Vec::new(), LogFormat::Json, true);
        let _ = writeln!(json, "postdesk: cannot start: a\nb");
        let out = String::from_utf8(json.into_inner()).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(out.strip_prefix("<3>").unwrap()).unwrap();
        assert_eq!(v["level"], "ERROR");
        assert_eq!(v["fields"]["message"], "postdesk: cannot start: a\nb");
        // Not the journal (a terminal, an MTA's pipe): what was written, as it was, in either format.
        for format in [LogFormat::Text, LogFormat::Json] {
            let mut piped = Stderr::with_mode(Vec::new(), format, false);
            let _ = writeln!(piped, "postdesk: a\n  b");
            let _ = piped.write_all(b"postdesk: c\n");
            assert_eq!(piped.into_inner(), b"postdesk: a\n  b\npostdesk: c\n");
        }
    }

    #[test]
    fn addresses_lose_their_local_part() {
        assert_eq!(
            redact_addresses("550 5.1.1 <hanako.yamada+jp@example.jp>: Recipient address rejected"),
            "550 5.1.1 <…@example.jp>: Recipient address rejected"
        );
        assert_eq!(
            redact_addresses("to 김민수@메일.kr and bob@x.org"),
            "to …@메일.kr and …@x.org"
        );
        assert_eq!(
            redact_addresses("connection refused (os error 111)"),
            "connection refused (os error 111)"
        );
        assert_eq!(redact_addresses("a @ b, trailing@"), "a @ b, trailing@");
    }

    #[test]
    fn journal_lines_carry_the_priority_and_no_timestamp() {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_writer(move || sink.clone())
            .event_format(JournalPriority(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_target(false)
                    .with_ansi(false),
            ))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(region = "JP", "intake failing");
            tracing::warn!("slow");
            tracing::info!("postdesk running");
            tracing::debug!("detail");
            tracing::trace!("more detail");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(
            lines[0].starts_with("<3>") && lines[0].contains("intake failing"),
            "{text}"
        );
        assert!(lines[0].contains("region=\"JP\""), "{text}");
        assert!(lines[1].starts_with("<4>"), "{text}");
        assert!(lines[2].starts_with("<6>"), "{text}");
        assert!(
            lines[3].starts_with("<7>") && lines[4].starts_with("<7>"),
            "{text}"
        );
        // No timestamp: the line goes straight from the prefix to the level.
        assert!(lines[2].starts_with("<6> INFO postdesk running"), "{text}");
    }
}
