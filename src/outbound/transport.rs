//! Carrying a rendered [`OutboxItem`] to the world with lettre: SMTP, a sendmail program, or `.eml` files.
//!
//! Errors are sorted into temporary (retry later) and permanent (give up, show the server's reply), which is
//! all the outbox worker needs to know.

use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{
    AsyncFileTransport, AsyncSendmailTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor,
};

use super::OutboxItem;
use crate::config::{OutboundConfig, TlsMode, TransportKind};

/// How long one send may take, connect included (lettre's own timeout covers only the connect).
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
}

/// A transport could not be set up from the config.
#[derive(Debug, thiserror::Error)]
#[error("outbound transport: {0}")]
pub struct TransportError(String);

/// The configured way out.
pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Sendmail(AsyncSendmailTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
}

impl Transport {
    pub fn from_config(config: &OutboundConfig) -> Result<Transport, TransportError> {
        match config.transport {
            TransportKind::File => {
                let dir = config
                    .file_dir
                    .as_ref()
                    .ok_or_else(|| TransportError("outbound.file_dir is not set".into()))?;
                std::fs::create_dir_all(dir).map_err(|e| {
                    TransportError(format!(
                        "cannot create outbound.file_dir {}: {e}",
                        dir.display()
                    ))
                })?;
                Ok(Transport::File(AsyncFileTransport::new(dir)))
            }
            TransportKind::Sendmail => Ok(Transport::Sendmail(match &config.sendmail_command {
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
                Ok(Transport::Smtp(builder.build()))
            }
        }
    }

    /// Send one mail, under [`SEND_TIMEOUT`].
    pub async fn send(&self, item: &OutboxItem, files: &[Vec<u8>]) -> Result<(), SendError> {
        let message = build_message_with(item, files)?;
        let fut = async {
            match self {
                Transport::Smtp(t) => t.send(message).await.map(|_| ()).map_err(|e| {
                    if e.is_permanent() {
                        SendError::Permanent(e.to_string())
                    } else {
                        SendError::Temporary(e.to_string())
                    }
                }),
                Transport::Sendmail(t) => t
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|e| SendError::Temporary(e.to_string())),
                Transport::File(t) => t
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|e| SendError::Temporary(e.to_string())),
            }
        };
        match tokio::time::timeout(SEND_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Temporary(format!(
                "no answer within {}s",
                SEND_TIMEOUT.as_secs()
            ))),
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
        .subject(item.subject.replace(['\r', '\n'], " "))
        .message_id(Some(angle(&item.message_id)))
        .date(item.created_at.into())
        .raw_header(header("X-Auto-Response-Suppress", "All"))
        .raw_header(header("X-Loop", &item.from))
        .raw_header(header("X-Postdesk-Ticket", &item.ticket.to_string()));
    if item.auto_submitted != "no" {
        b = b.raw_header(header("Auto-Submitted", &item.auto_submitted));
    }
    for to in &item.to {
        let mb: Mailbox = to
            .parse()
            .map_err(|e| SendError::Permanent(format!("bad recipient {to:?}: {e}")))?;
        b = b.to(mb);
    }
    if let Some(irt) = &item.in_reply_to {
        b = b.in_reply_to(angle(irt));
    }
    if !item.references.is_empty() {
        b = b.references(
            item.references
                .iter()
                .map(|r| angle(r))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(item.text.clone());
    let body = match &item.html {
        Some(html) => MultiPart::alternative().singlepart(text).singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_HTML)
                .body(html.clone()),
        ),
        None => MultiPart::alternative().singlepart(text),
    };
    let result = if item.attachments.is_empty() {
        match &item.html {
            Some(_) => b.multipart(body),
            None => b.singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(item.text.clone()),
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
