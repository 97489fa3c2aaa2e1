//! Carrying a rendered [`OutboxItem`] to the world with lettre: SMTP, a sendmail program, or `.eml` files.
//!
//! Errors are sorted into temporary (retry later) and permanent (give up, show the server's reply), which is
//! all the outbox worker needs to know; a mail that cannot even be built within its time budget
//! ([`SendError::OverBudget`]) is given up too, so that it cannot stall the outbox after every restart.
//!
//! Building a mail (MIME encoding, line endings, folding) is CPU work proportional to its size: it runs on a
//! thread of its own, never on the async runtime's, under `[outbound] send_timeout`; the network send has
//! the same budget. Every step is linear in the mail's size: text reaches lettre with CRLF line endings
//! already (lettre inserts a CR per bare LF, shifting the rest of the text each time), and header values
//! lettre would leave on one overlong line are encoded and folded here ([`subject_header`]).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSendmailTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::OutboxItem;
use crate::config::{OutboundConfig, TlsMode, TransportKind};

/// The default time budget of one send (`[outbound] send_timeout`), connect included (lettre's own
/// timeout covers only the connect); building the mail has a budget as long.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a send failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// Try again later (connection refused, timeout, 4xx).
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// Will never work (5xx, a malformed address).
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// The recipient's mail server refused this address (`550 5.1.1 … User unknown`): the customer's
    /// address is wrong or gone. Permanent, and not a problem of postdesk's settings.
    #[error("the recipient's mail server refused the address: {0}")]
    RecipientRefused(String),
    /// The mail could not be built within its time budget (this long): trying again would only stall the
    /// outbox again, so it is given up (the row is kept, `failed`, for `outbox retry`).
    #[error("the mail could not be built within {}s (`[outbound] send_timeout`)", .0.as_secs_f64())]
    OverBudget(Duration),
}

/// A transport could not be set up from the config.
#[derive(Debug, thiserror::Error)]
#[error("outbound transport: {0}")]
pub struct TransportError(String);

/// The configured way out, with the time budget of one mail.
pub struct Transport {
    way: Way,
    budget: Duration,
}

enum Way {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Sendmail(AsyncSendmailTransport<Tokio1Executor>),
    /// `.eml` files in this directory, written by [`write_eml`] (mode 0600).
    File(PathBuf),
}

impl Transport {
    pub fn from_config(config: &OutboundConfig) -> Result<Transport, TransportError> {
        Ok(Transport {
            way: Way::from_config(config)?,
            budget: config.send_timeout.0,
        })
    }

    /// The time budget of one mail (`[outbound] send_timeout`).
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Where an admin looks when a send failed temporarily: it depends on the way out (issue 16: the file
    /// transport's failure sent them to "the mail server's log", which it has none of).
    pub fn failure_advice(&self) -> String {
        match &self.way {
            Way::Smtp(_) => "check [outbound] in the config and the mail server's log".into(),
            Way::Sendmail(_) => {
                "check outbound.sendmail_command and the local MTA's log (under systemd, Postfix's setgid \
                 postdrop cannot run: use transport = \"smtp\" to 127.0.0.1 instead)"
                    .into()
            }
            Way::File(dir) => format!(
                "check outbound.file_dir {}: postdesk must be able to create files there (owner postdesk; \
                 under systemd inside ReadWritePaths=, e.g. /var/spool/postdesk, which the package ships)",
                dir.display()
            ),
        }
    }

    /// Send one mail: built on a thread of its own, then handed to the transport, each under the budget.
    pub async fn send(&self, item: &OutboxItem, files: &[Vec<u8>]) -> Result<(), SendError> {
        let (item, files) = (item.clone(), files.to_vec());
        let dir = match &self.way {
            Way::File(dir) => Some(dir.clone()),
            _ => None,
        };
        let built = off_thread(self.budget, move || {
            let message = build_message_with(&item, &files)?;
            let raw = message.formatted();
            match dir {
                // Writing the file is part of the same blocking work.
                Some(dir) => write_eml(&dir, &raw).map(|()| None),
                None => Ok(Some((message.envelope().clone(), raw))),
            }
        })
        .await??;
        let Some((envelope, raw)) = built else {
            return Ok(());
        };
        let fut = async {
            match &self.way {
                Way::Smtp(t) => t.send_raw(&envelope, &raw).await.map(|_| ()).map_err(|e| {
                    if e.is_permanent() && recipient_refused(&e.to_string()) {
                        SendError::RecipientRefused(e.to_string())
                    } else if e.is_permanent() {
                        SendError::Permanent(e.to_string())
                    } else {
                        SendError::Temporary(e.to_string())
                    }
                }),
                Way::Sendmail(t) => t
                    .send_raw(&envelope, &raw)
                    .await
                    .map(|_| ())
                    .map_err(|e| SendError::Temporary(e.to_string())),
                Way::File(_) => Ok(()),
            }
        };
        match tokio::time::timeout(self.budget, fut).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Temporary(format!(
                "no answer within {}s (`[outbound] send_timeout`)",
                self.budget.as_secs()
            ))),
        }
    }
}

/// Whether a permanent SMTP reply says the recipient's address is refused, rather than the sender, the
/// relay or the content: the RFC 3463 addressing codes for the destination (`5.1.1` bad mailbox, `5.1.2`
/// bad system, `5.1.3` bad syntax, `5.1.6` moved, `5.1.10` null MX) or the wording servers use for them
/// (Postfix's "Recipient address rejected", "User unknown", Exchange's "mailbox unavailable", …). A
/// reply about the sender ("Sender address rejected") is not one: that is postdesk's own address.
pub fn recipient_refused(reply: &str) -> bool {
    let reply = reply.to_ascii_lowercase();
    if reply.contains("sender address") || reply.contains("relay") {
        return false;
    }
    let code = reply
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .any(|w| matches!(w, "5.1.1" | "5.1.2" | "5.1.3" | "5.1.6" | "5.1.10"));
    code || [
        "recipient address rejected",
        "user unknown",
        "unknown user",
        "no such user",
        "mailbox unavailable",
        "mailbox not found",
        "no mailbox",
        "does not exist",
        "invalid recipient",
        "recipient rejected",
    ]
    .iter()
    .any(|w| reply.contains(w))
}

/// Run CPU-bound `f` on a thread of its own and wait for it at most `budget`. A plain thread, not tokio's
/// blocking pool: one that overruns is left to finish on its own, and neither the runtime's shutdown nor
/// the process's exit waits for it.
async fn off_thread<R: Send + 'static>(
    budget: Duration,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, SendError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("postdesk-mail".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| {
            SendError::Temporary(format!("cannot start a thread to build the mail: {e}"))
        })?;
    match tokio::time::timeout(budget, rx).await {
        Ok(Ok(r)) => Ok(r),
        // The thread ended without an answer: building the mail panicked. It would again.
        Ok(Err(_)) => Err(SendError::Permanent(
            "building the mail failed (a bug: please report it)".into(),
        )),
        Err(_) => Err(SendError::OverBudget(budget)),
    }
}

/// Write one `.eml` file as lettre's file transport names them (`<uuid>.eml`), but private: mode 0600
/// whatever the umask (it holds a customer's mail), and on disk (fsync) before the row is marked sent.
fn write_eml(dir: &Path, raw: &[u8]) -> Result<(), SendError> {
    let temporary = |what: &str, path: &Path, e: std::io::Error| {
        SendError::Temporary(format!("cannot {what} {}: {e}", path.display()))
    };
    let path = dir.join(format!("{}.eml", uuid_v4().map_err(SendError::Temporary)?));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| temporary("create", &path, e))?;
    file.write_all(raw)
        .and_then(|()| file.sync_all())
        .map_err(|e| temporary("write", &path, e))
}

/// A random (version 4) UUID, hyphenated, as lettre names its files.
fn uuid_v4() -> Result<String, String> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|e| format!("no random numbers for a file name: {e}"))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

impl Way {
    fn from_config(config: &OutboundConfig) -> Result<Way, TransportError> {
        match config.transport {
            TransportKind::File => {
                let dir = config
                    .file_dir
                    .as_ref()
                    .ok_or_else(|| TransportError("outbound.file_dir is not set".into()))?;
                std::fs::create_dir_all(dir).map_err(|e| {
                    TransportError(format!(
                        "cannot create outbound.file_dir {}: {e}{}",
                        dir.display(),
                        crate::notify::sandbox_hint(&e, dir)
                    ))
                })?;
                Ok(Way::File(dir.clone()))
            }
            TransportKind::Sendmail => Ok(Way::Sendmail(match &config.sendmail_command {
                Some(cmd) => AsyncSendmailTransport::new_with_command(cmd.as_os_str()),
                None => AsyncSendmailTransport::new(),
            })),
            TransportKind::Smtp => {
                let smtp = config
                    .smtp
                    .as_ref()
                    .ok_or_else(|| TransportError("[outbound.smtp] is not set".into()))?;
                // Certificates are checked against the web PKI roots, plus `ca_file` for a private CA.
                let tls_parameters = || -> Result<TlsParameters, TransportError> {
                    let mut b = TlsParameters::builder(smtp.host.clone());
                    if let Some(path) = &smtp.ca_file {
                        let pem = std::fs::read(path).map_err(|e| {
                            TransportError(format!("outbound.smtp.ca_file {}: {e}", path.display()))
                        })?;
                        let cert = Certificate::from_pem(&pem).map_err(|e| {
                            TransportError(format!("outbound.smtp.ca_file {}: {e}", path.display()))
                        })?;
                        b = b.add_root_certificate(cert);
                    }
                    b.build_rustls()
                        .map_err(|e| TransportError(format!("outbound.smtp TLS: {e}")))
                };
                let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host);
                let builder = match smtp.tls {
                    TlsMode::Implicit => builder.tls(Tls::Wrapper(tls_parameters()?)),
                    TlsMode::Starttls => builder.tls(Tls::Required(tls_parameters()?)),
                    TlsMode::None => builder,
                };
                let mut builder = builder
                    .port(smtp.port)
                    .timeout(Some(Duration::from_secs(30)));
                if let (Some(user), Some(pw)) = (&smtp.username, &smtp.password) {
                    builder = builder
                        .credentials(Credentials::new(user.clone(), pw.expose().to_string()));
                }
                Ok(Way::Smtp(builder.build()))
            }
        }
    }
}

fn header(name: &'static str, value: &str) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value.to_string())
}

fn angle(id: &str) -> String {
    format!("<{id}>")
}

/// The MIME message of an outbox row without attachments (see [`build_message_with`]).
pub fn build_message(item: &OutboxItem) -> Result<lettre::Message, SendError> {
    build_message_with(item, &[])
}

/// The MIME message of an outbox row. Every customer-supplied value reaches lettre through its typed
/// builders, which encode or reject line breaks: no header can be added from outside.
///
/// `files` holds the bytes of `item.attachments`, in order.
pub fn build_message_with(
    item: &OutboxItem,
    files: &[Vec<u8>],
) -> Result<lettre::Message, SendError> {
    let from: Mailbox = format!("{} <{}>", sanitize_display_name(&item.from_name), item.from)
        .parse()
        .or_else(|_| item.from.parse())
        .map_err(|e| SendError::Permanent(format!("bad From {:?}: {e}", item.from)))?;
    let mut b = lettre::Message::builder()
        .from(from.clone())
        .reply_to(from)
        .raw_header(subject_header(&item.subject))
        .message_id(Some(angle(&item.message_id)))
        .date(item.created_at.into())
        .raw_header(header("X-Auto-Response-Suppress", "All"))
        .raw_header(header("X-Loop", &item.from))
        .raw_header(header("X-Postdesk-Ticket", &item.ticket.to_string()));
    if item.auto_submitted != "no" {
        b = b.raw_header(header("Auto-Submitted", &item.auto_submitted));
    }
    for to in &item.to {
        // RFC 5321's limit: a longer one cannot be delivered, nor fit a header line.
        if to.len() > 254 {
            return Err(SendError::Permanent(format!(
                "recipient address of {} octets (at most 254 can be delivered)",
                to.len()
            )));
        }
        let mb: Mailbox = to
            .parse()
            .map_err(|e| SendError::Permanent(format!("bad recipient {to:?}: {e}")))?;
        b = b.to(mb);
    }
    if let Some(irt) = item.in_reply_to.as_deref().filter(|i| usable_id(i)) {
        b = b.in_reply_to(angle(irt));
    }
    let references: Vec<String> = item
        .references
        .iter()
        .filter(|r| usable_id(r))
        .map(|r| angle(r))
        .collect();
    if !references.is_empty() {
        // lettre folds between the ids.
        b = b.references(references.join(" "));
    }
    let plain = crlf(&item.text);
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(plain.clone());
    let body = match &item.html {
        Some(html) => MultiPart::alternative().singlepart(text).singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_HTML)
                .body(crlf(html)),
        ),
        None => MultiPart::alternative().singlepart(text),
    };
    let result = if item.attachments.is_empty() {
        match &item.html {
            Some(_) => b.multipart(body),
            None => b.singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(plain),
            ),
        }
    } else {
        let mut mixed = MultiPart::mixed().multipart(body);
        for (a, bytes) in item.attachments.iter().zip(files) {
            let content_type = ContentType::parse(&a.content_type).unwrap_or(
                ContentType::parse("application/octet-stream")
                    .map_err(|e| SendError::Permanent(e.to_string()))?,
            );
            mixed = mixed
                .singlepart(Attachment::new(a.filename.clone()).body(bytes.clone(), content_type));
        }
        b.multipart(mixed)
    };
    result.map_err(|e| SendError::Permanent(format!("cannot build the mail: {e}")))
}

fn sanitize_display_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '<' | '>' | '"' | '\\'))
        .collect();
    format!("\"{}\"", cleaned.trim())
}

/// `text` with every bare LF made CRLF, in one pass. lettre converts too, but by inserting one CR at a
/// time into the string (moving the rest of it each time: quadratic, minutes for a few megabytes); text
/// that is CRLF already it leaves as it is after a linear scan. Lone CRs are kept, as lettre keeps them.
pub fn crlf(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 32 + 2);
    let mut rest = text;
    while let Some(i) = rest.find('\n') {
        out.push_str(&rest[..i]);
        if !rest[..i].ends_with('\r') {
            out.push('\r');
        }
        out.push('\n');
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
    out
}

/// A Message-ID that can go into In-Reply-To/References: printable ASCII without spaces or angle brackets,
/// short enough for one header line (a msg-id cannot be folded). Others are left out, not mangled.
fn usable_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_WORD
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
}

/// The longest word lettre is left to write as it is: with the header's name and a fold, it still fits
/// RFC 5322's 998 octets a line.
const MAX_WORD: usize = 900;

/// Bytes of subject text per encoded-word: 60 characters of base64, 72 with `=?utf-8?b?…?=`.
const ENCODED_CHUNK: usize = 45;

/// The Subject header, one line of text. lettre folds between words and encodes non-ASCII words, but
/// writes an ASCII word as it is however long (a 100,000-character subject was one 100,010-octet line).
/// A subject with such a word is encoded here instead: RFC 2047 encoded-words of at most
/// [`ENCODED_CHUNK`] bytes, one per folded line, which a reader joins back into the same text.
fn subject_header(subject: &str) -> HeaderValue {
    let name = || HeaderName::new_from_ascii_str("Subject");
    let subject = subject.replace(['\r', '\n'], " ");
    if subject.split(' ').all(|w| w.len() <= MAX_WORD) {
        return HeaderValue::new(name(), subject);
    }
    let mut encoded = String::with_capacity(subject.len() * 2);
    let mut rest = subject.as_str();
    while !rest.is_empty() {
        let mut end = rest.len().min(ENCODED_CHUNK);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        if !encoded.is_empty() {
            encoded.push_str("\r\n ");
        }
        encoded.push_str("=?utf-8?b?");
        base64(&rest.as_bytes()[..end], &mut encoded);
        encoded.push_str("?=");
        rest = &rest[end..];
    }
    HeaderValue::dangerous_new_pre_encoded(name(), subject, encoded)
}

/// Standard base64 with padding (RFC 4648), appended to `out`.
fn base64(bytes: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::recipient_refused;
    use super::Transport;
    use crate::config::testing::{TestConfig, TestRegion};

    /// Issue 16: a failing file transport told the admin to read "the mail server's log".
    #[test]
    fn a_file_transport_failure_names_the_directory_not_a_mail_server() {
        let dir = tempfile::tempdir().unwrap();
        let config = TestConfig::new(dir.path()).region(TestRegion::jp()).parse();
        let advice = Transport::from_config(&config.outbound)
            .unwrap()
            .failure_advice();
        let out = dir.path().join("out").display().to_string();
        assert!(
            advice.contains(&format!("outbound.file_dir {out}")),
            "{advice}"
        );
        assert!(advice.contains("ReadWritePaths="), "{advice}");
        assert!(!advice.contains("mail server"), "{advice}");
    }

    #[test]
    fn a_refused_recipient_is_told_apart_from_other_permanent_failures() {
        for refused in [
            "permanent error (550): 5.1.1 <x@example.jp>: Recipient address rejected: User unknown in virtual mailbox table",
            "permanent error (550): No such user here",
            "permanent error (550): 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
            "permanent error (550): Requested action not taken: mailbox unavailable",
        ] {
            assert!(recipient_refused(refused), "{refused}");
        }
        for other in [
            "permanent error (554): 5.7.1 <x@example.jp>: Relay access denied",
            "permanent error (553): 5.1.8 <desk@example.jp>: Sender address rejected: Domain not found",
            "permanent error (535): 5.7.8 Error: authentication failed",
            "permanent error (552): 5.3.4 Message size exceeds fixed limit",
        ] {
            assert!(!recipient_refused(other), "{other}");
        }
    }
}
