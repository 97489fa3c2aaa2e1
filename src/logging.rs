//! Log lines on stderr, readable by a person at a terminal and by journald under systemd.
//!
//! - On a terminal: the usual `tracing` lines, with timestamps and colours.
//! - Without a terminal (systemd, an MTA's pipe): no timestamp and no colours (the journal stamps every line
//!   itself), and each line starts with a syslog priority prefix, `<3>` error, `<4>` warning, `<6>` info,
//!   `<7>` debug and trace. journald reads these "sd-daemon" prefixes from a service's stdout/stderr, so
//!   `journalctl -p warning -u postdesk` shows warnings and errors only.
//! - `--log-format json`: one JSON object per line (timestamp, level, fields, message), for log shippers.
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
    match format {
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

/// An event format that puts `<N>` (the syslog priority) in front of what the inner format writes.
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
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
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
