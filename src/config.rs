//! The TOML configuration: its shape (serde), its defaults, and the validation that runs before anything starts.
//!
//! Every field's `///` comment is its documentation (README's config reference is written from it). The file
//! is read into a private shape that mirrors the TOML (`ConfigFile`, `RegionFile`) and validated once into
//! [`Config`], whose fields are already what the rest of the crate needs: each region's zone parsed
//! ([`RegionConfig::timezone`]), its effective timers merged over `[timers]` with the business-hours calendar
//! in that zone ([`RegionConfig::timers`]), category rules read, passwords loaded ([`Secret`], never shown by
//! `Debug`). A [`Config`] can only be made by validation, so nothing downstream re-parses or falls back.
//!
//! Loading never half-succeeds: [`Config::load`] either returns a config in which every region, duration,
//! address and password file has been checked, or a [`ConfigError`] that names the key and says what is wrong
//! with it, so that `postdesk check-config` and `postdesk run` can exit 2 with a message an admin can act on.
//! A reload (SIGHUP) goes through the same [`Config::load`] before anything of the new file is applied.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::types::{Calendar, Locale, Priority};

/// The default location of the config file when neither `--config` nor `$POSTDESK_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/postdesk/config.toml";

/// A configuration problem: which key, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The same error with every value of a secret-like key of `source` (see [`redact_secrets`]) hidden:
    /// toml's messages quote the offending lines, and a syntax error next to `password = "…"` would
    /// otherwise print the password to a terminal, a CI log or the journal.
    fn redacted(self, source: &str) -> Self {
        match self {
            ConfigError::Syntax { path, message } => ConfigError::Syntax {
                path,
                message: redact_secrets(&message, source),
            },
            ConfigError::Invalid { key, reason } => ConfigError::Invalid {
                key,
                reason: redact_secrets(&reason, source),
            },
            e @ ConfigError::Read { .. } => e,
        }
    }
}

/// Words that make a key's value a secret (`password`, `message_id_secret`, `api_token`, `backup_key`…).
const SECRET_WORDS: &[&str] = &["password", "passwd", "secret", "token", "key", "credential"];

/// What replaces a secret in a message.
const REDACTED: &str = "<redacted>";

/// A key whose value is a secret. `password_file`, `password_env`, `backup_key_file` name where a secret
/// is, not the secret: their values stay in messages, which must say which file is wrong.
fn is_secret_key(key: &str) -> bool {
    let key = key
        .trim_matches(|c| c == '"' || c == '\'')
        .to_ascii_lowercase();
    let names_a_place = ["_file", "_env", "_path", "_dir"]
        .iter()
        .any(|s| key.ends_with(s));
    !names_a_place && SECRET_WORDS.iter().any(|w| key.contains(w))
}

/// The byte ranges of the values of secret-like keys on one line of TOML (or of toml's snippet of it):
/// `password = "x"`, `{ token = 'x', … }`, an unterminated `"x`, an array; and whether a multi-line string
/// (`"""`/`'''`) was opened and not closed on the line.
fn secret_values(line: &str) -> (Vec<(usize, usize)>, Option<&'static str>) {
    let bytes = line.as_bytes();
    let mut ranges = Vec::new();
    let mut open = None;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'=' {
            i += 1;
            continue;
        }
        // The key before `=`: bare or quoted, possibly dotted.
        let mut k = i;
        while k > 0 && (bytes[k - 1] == b' ' || bytes[k - 1] == b'\t') {
            k -= 1;
        }
        let end_key = k;
        while k > 0 && (bytes[k - 1].is_ascii_alphanumeric() || b"_-.\"'".contains(&bytes[k - 1])) {
            k -= 1;
        }
        let key = &line[k..end_key];
        let mut v = i + 1;
        while v < bytes.len() && (bytes[v] == b' ' || bytes[v] == b'\t') {
            v += 1;
        }
        if !is_secret_key(key) || v >= bytes.len() {
            i += 1;
            continue;
        }
        let rest = &line[v..];
        let end = if rest.starts_with("\"\"\"") || rest.starts_with("'''") {
            let delim = &rest[..3];
            match rest[3..].find(delim) {
                Some(e) => v + 3 + e + 3,
                None => {
                    open = Some(if delim == "'''" { "'''" } else { "\"\"\"" });
                    bytes.len()
                }
            }
        } else if let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
            // To the closing quote (a backslash escapes in basic strings), or the end of an unterminated one.
            let mut e = v + 1;
            let mut closed = false;
            while e < bytes.len() {
                if q == '"' && bytes[e] == b'\\' {
                    e += 2;
                    continue;
                }
                if bytes[e] == q as u8 {
                    closed = true;
                    break;
                }
                e += 1;
            }
            if closed {
                e + 1
            } else {
                bytes.len()
            }
        } else if rest.starts_with('[') {
            rest.find(']').map(|e| v + e + 1).unwrap_or(bytes.len())
        } else {
            rest.find([',', '}', '#'])
                .map(|e| v + e)
                .unwrap_or(bytes.len())
        };
        let end = end.min(bytes.len());
        if end > v {
            ranges.push((v, end));
        }
        i = end.max(i + 1);
    }
    (ranges, open)
}

/// `message` with the values of secret-like keys hidden: on every line of `message` that assigns one
/// (toml's snippet), and everywhere a value of such a key in `source` appears in it.
pub fn redact_secrets(message: &str, source: &str) -> String {
    // The secret values of the file, longest first (a shorter one may be part of a longer one).
    let mut values: Vec<String> = Vec::new();
    let mut open: Option<&str> = None;
    for line in source.lines() {
        if let Some(delim) = open {
            // Inside a multi-line secret: the whole line is secret, up to the closing delimiter.
            let (inner, closed) = match line.find(delim) {
                Some(e) => (&line[..e], true),
                None => (line, false),
            };
            values.push(inner.trim().to_string());
            if closed {
                open = None;
            }
            continue;
        }
        let (ranges, opened) = secret_values(line);
        for (a, b) in ranges {
            let raw = line[a..b].trim();
            values.push(raw.to_string());
            values.push(raw.trim_matches(|c| c == '"' || c == '\'').to_string());
        }
        open = opened;
    }
    // Values too short to find safely elsewhere (`1` would hit line numbers) are still hidden on their
    // own lines below.
    values.retain(|v| v.chars().count() >= 4);
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values.dedup();
    let mut out = String::with_capacity(message.len());
    for (n, line) in message.split_inclusive('\n').enumerate() {
        if n > 0 && !out.ends_with('\n') {
            out.push('\n');
        }
        let (ranges, _) = secret_values(line.trim_end_matches('\n'));
        let mut line = line.to_string();
        for (a, b) in ranges.into_iter().rev() {
            line.replace_range(a..b, REDACTED);
        }
        out.push_str(&line);
    }
    for v in &values {
        if out.contains(v.as_str()) {
            out = out.replace(v.as_str(), REDACTED);
        }
    }
    out
}

/// A duration written as a humantime string (`90s`, `48h`, `7d`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {text:?}: {e} (write it like \"90s\", \"30m\", \"48h\" or \"7d\")"
                ))
            })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// A secret read from a file or an environment variable. Its `Debug` never shows the value, so it cannot reach
/// a log line by accident.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A secret written in the file itself (`message_id_secret`).
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// The validated configuration: what [`Config::load`] returns, and what the desk and the shell take.
///
/// Built only by validation from the file's `ConfigFile` shape, so every value in it has been checked and
/// parsed (see the module overview).
#[derive(Debug, Clone)]
pub struct Config {
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[outbound]`, its SMTP password loaded.
    pub outbound: OutboundConfig,
    /// One per `[[region]]`, in file order, each with its effective timers.
    pub region: Vec<RegionConfig>,
    /// The global `[timers]` as written (business hours in UTC). A region's mail uses
    /// [`RegionConfig::timers`], which is this with the region's overrides and zone applied.
    pub timers: TimersConfig,
    /// `[http]`, its `listen` parsed.
    pub http: Option<HttpConfig>,
    /// `[agents]`.
    pub agents: AgentsConfig,
    /// The rules of `[categories]` (category, lower-cased words), in the order written; empty: the built-in
    /// rules.
    pub category_rules: Vec<(String, Vec<String>)>,
    /// `[privacy]`.
    pub privacy: PrivacyConfig,
    /// `[retention]`.
    pub retention: RetentionConfig,
    /// `[spam]`.
    pub spam: SpamConfig,
    /// `[alerts]`, if the admin is to be told about trouble by mail.
    pub alerts: Option<AlertsConfig>,
}

/// The whole configuration file, as written: the TOML contract. Validation turns it into a [`Config`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// Where the sled database and attachment blobs live.
    storage: StorageConfig,
    /// How outgoing mail leaves.
    #[serde(default)]
    outbound: OutboundConfig,
    /// One `[[region]]` per support address.
    #[serde(default)]
    region: Vec<RegionFile>,
    /// Reminders, SLA targets and auto-close; a region may override them in `[region.timers]`.
    #[serde(default)]
    timers: TimersConfig,
    /// Optional health and metrics endpoint.
    #[serde(default)]
    http: Option<HttpConfig>,
    /// How agents' mail is trusted and shown.
    #[serde(default)]
    agents: AgentsConfig,
    /// Category rules: category name → words (any language) that file a new ticket under it, checked in
    /// the order written. Absent: the built-in rules (privacy, payment, account, fault, order, content).
    #[serde(default)]
    categories: Option<toml::Table>,
    /// What postdesk keeps of customers' data.
    #[serde(default)]
    privacy: PrivacyConfig,
    /// When closed tickets' attachments, and closed tickets themselves, are deleted.
    #[serde(default)]
    retention: RetentionConfig,
    /// Which spam verdicts of the receiving mail system are honoured.
    #[serde(default)]
    spam: SpamConfig,
    /// Mail to the admin about trouble.
    #[serde(default)]
    alerts: Option<AlertsConfig>,
}

/// A spam filter's verdict postdesk may honour (`[spam] trust`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SpamSource {
    /// `X-Spam-Flag`, `X-Spam-Status`.
    Spamassassin,
    /// `X-Spamd-Result`, `X-Rspamd-Action`, `X-Rspamd-Score`, `X-Spam`.
    Rspamd,
    /// `dmarc=fail` for the From domain in the trusted `Authentication-Results` (`[agents]
    /// trust_authserv_id`; without it no DMARC result is read).
    Dmarc,
}

/// `[spam]`: mail the receiving system marked as spam is stored with status `spam`, never acknowledged,
/// never notified, and purged after `keep`. The receiving system's verdict is the best signal there is, so
/// this is on unless `enabled = false`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpamConfig {
    /// Honour the verdicts at all (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Which filters' headers to believe (default all three). Headers are text any sender can write: list
    /// only filters your receiving server runs *and* whose headers it removes from incoming mail before
    /// adding its own (SpamAssassin and Rspamd do for their own headers), like `[agents] trust_authserv_id`.
    #[serde(default = "default_spam_trust")]
    pub trust: Vec<SpamSource>,
    /// When set, a SpamAssassin or Rspamd score at or above this is spam and one below is not, whatever the
    /// filter's own yes/no (its `required` threshold). Unset: the filter's own verdict decides.
    #[serde(default)]
    pub score_threshold: Option<f64>,
    /// How long a spam ticket is kept (counted from when it became spam) before retention deletes it
    /// (default "30d").
    #[serde(default = "default_spam_keep")]
    pub keep: HumanDuration,
}

fn default_spam_trust() -> Vec<SpamSource> {
    vec![
        SpamSource::Spamassassin,
        SpamSource::Rspamd,
        SpamSource::Dmarc,
    ]
}

fn default_spam_keep() -> HumanDuration {
    HumanDuration(Duration::from_secs(30 * 86400))
}

impl Default for SpamConfig {
    fn default() -> Self {
        SpamConfig {
            enabled: true,
            trust: default_spam_trust(),
            score_threshold: None,
            keep: default_spam_keep(),
        }
    }
}

impl SpamConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.score_threshold.is_some_and(|t| !t.is_finite()) {
            return Err(ConfigError::invalid(
                "spam.score_threshold",
                "must be a number, like 5.0",
            ));
        }
        if self.keep.0.is_zero() {
            return Err(ConfigError::invalid(
                "spam.keep",
                "must be longer than 0s (e.g. \"30d\")",
            ));
        }
        Ok(())
    }
}

/// `[alerts]`: one mail to the admin when something keeps failing (an intake, outgoing mail, the disk
/// floor), and one when it recovers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Who is told (e.g. "ops@example.com").
    pub to: String,
    /// The From of alert mail (default: the first region's address).
    #[serde(default)]
    pub from: Option<String>,
    /// A condition must last this long before it is reported (default: `[http] unhealthy_after`, else
    /// "5m").
    #[serde(default)]
    pub unhealthy_after: Option<HumanDuration>,
    /// At most one alert mail per condition in this time (default "1h"); a recovery is always told.
    #[serde(default = "default_alert_interval")]
    pub min_interval: HumanDuration,
}

fn default_alert_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}

impl AlertsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let to = self.to.trim();
        let plain = |a: &str| {
            a.split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
                && !a.contains(|c: char| c.is_whitespace() || c.is_control() || ",<>".contains(c))
        };
        if !plain(to) {
            return Err(ConfigError::invalid(
                "alerts.to",
                "must be one mail address, like \"ops@example.com\"",
            ));
        }
        if self.from.as_deref().is_some_and(|f| !plain(f.trim())) {
            return Err(ConfigError::invalid(
                "alerts.from",
                "must be one mail address, like \"postdesk@example.com\"",
            ));
        }
        if self.unhealthy_after.is_some_and(|d| d.0.is_zero()) {
            return Err(ConfigError::invalid(
                "alerts.unhealthy_after",
                "must be longer than 0s",
            ));
        }
        Ok(())
    }
}

/// `[privacy]`: data minimisation in what is stored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Mask payment card numbers (Luhn-valid runs of 13–19 digits) in stored message text and subjects,
    /// keeping the last four digits (`**** **** **** 1111`). Default true.
    #[serde(default = "default_true")]
    pub mask_card_numbers: bool,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            mask_card_numbers: true,
        }
    }
}

/// `[retention]`: how long closed tickets are kept. Absent keys keep data forever.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Delete the attachments of a ticket this long after it was closed (e.g. "90d"); the messages stay.
    #[serde(default)]
    pub closed_attachments_after: Option<HumanDuration>,
    /// Delete a whole ticket (messages, attachments, indexes, its outbox rows) this long after it was
    /// closed (e.g. "3y"); `postdesk stats` keeps counting it as purged.
    #[serde(default)]
    pub closed_tickets_after: Option<HumanDuration>,
    /// Delete a ticket this long after it became `spam`: `[spam] keep`, copied here by validation.
    #[serde(skip)]
    pub spam_after: Option<HumanDuration>,
}

/// Agents acting by mail.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    /// The receiving server's authserv-id (e.g. "mx.example.com"). When set, mail from an agent address
    /// counts as the agent's only if that server's topmost `Authentication-Results` say `dkim=pass`,
    /// `dmarc=pass` or `spf=pass` aligned with the From domain (see `mail::authres`); otherwise it is an
    /// outsider's mail. A customer's reply adds its Cc/To as participants only when so authenticated
    /// (unset: never). Guards against forged From lines; the server must strip incoming headers with its id.
    #[serde(default)]
    pub trust_authserv_id: Option<String>,
    /// Sign relayed answers with the agent's display name (default: only the desk's name).
    #[serde(default)]
    pub show_name: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory holding the sled database and attachment blobs (created if missing).
    pub path: PathBuf,
    /// A file holding a secret (at least 16 bytes, kept away from the backups): `postdesk backup` signs the
    /// manifest with an HMAC under it, and `postdesk restore` refuses a backup whose manifest does not carry
    /// a valid HMAC under it (sha256 sums alone catch damage, not tampering). Leave out: unsigned backups.
    #[serde(default)]
    pub backup_key_file: Option<PathBuf>,
    /// How long `postdesk ingest` waits for the running daemon's answer on the control socket (and for the
    /// store, while another process holds it) before it gives up with exit 75, so that the MTA keeps the
    /// mail and retries: a daemon that is stopped (SIGSTOP) or hung holds no delivery longer than this.
    /// Between 1s and 1h; default 60s.
    #[serde(default = "default_ingest_timeout")]
    pub ingest_timeout: HumanDuration,
}

fn default_ingest_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Smtp,
    Sendmail,
    File,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// `smtp`, `sendmail` or `file`.
    #[serde(default = "default_transport")]
    pub transport: TransportKind,
    /// With `transport = "file"`: the directory that receives one `.eml` per outgoing mail.
    #[serde(default)]
    pub file_dir: Option<PathBuf>,
    /// With `transport = "sendmail"`: the sendmail-compatible program (default `/usr/sbin/sendmail`).
    #[serde(default)]
    pub sendmail_command: Option<PathBuf>,
    /// A directory whose `<locale>/<event>.*.hbs` files replace the shipped templates, file by file.
    #[serde(default)]
    pub templates_dir: Option<PathBuf>,
    /// With `transport = "smtp"`: the relay.
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
    /// Secret for the HMAC in outgoing Message-IDs; leave out to have one generated and kept in the store.
    #[serde(default)]
    pub message_id_secret: Option<Secret>,
    /// First retry delay after a temporary failure; it doubles per attempt, up to an hour.
    #[serde(default = "default_retry_base")]
    pub retry_base: HumanDuration,
    /// How long a temporarily failing mail keeps being retried before it is marked failed.
    #[serde(default = "default_max_age")]
    pub max_age: HumanDuration,
    /// Mails in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Limits on automatic mail (acknowledgements, updates, reminders) to any one address.
    #[serde(default)]
    pub rate_limit: RateLimit,
    /// The breaker on staff mail (agent notifications, SLA reminders, escalations, command errors): at most
    /// this many to any one staff address in an hour. Generous: it only trips in a loop, and says so.
    #[serde(default = "default_staff_per_hour")]
    pub staff_per_hour: usize,
    /// At most this many bytes of a customer's text are embedded in automatic mail (the agents'
    /// notification), cut at a line; a line in the region's language says the rest is in the ticket.
    /// Bounds what one huge mail costs every mail built from it (at least 1024; default 64 KiB).
    #[serde(default = "default_embed_max_bytes")]
    pub embed_max_bytes: usize,
    /// The time budget of one outgoing mail: building it and handing it to the transport each get this
    /// long. A mail that cannot be built within it is marked failed (it would stall every restart);
    /// a send that times out is retried like any temporary failure.
    #[serde(default = "default_send_timeout")]
    pub send_timeout: HumanDuration,
}

/// Layered limits on automatic mail per recipient: what stops a loop with a misbehaving auto-responder.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// At most this many automatic mails to one address in 10 minutes.
    #[serde(default = "default_per_10min")]
    pub per_10min: usize,
    /// At most this many in 24 hours; past it, the address gets no automatic mail until the day has passed.
    #[serde(default = "default_per_day")]
    pub per_day: usize,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_10min: default_per_10min(),
            per_day: default_per_day(),
        }
    }
}

fn default_per_10min() -> usize {
    10
}
fn default_per_day() -> usize {
    60
}
fn default_staff_per_hour() -> usize {
    2000
}
fn default_embed_max_bytes() -> usize {
    65536
}
fn default_send_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_retry_base() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_max_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(3 * 24 * 3600))
}
fn default_concurrency() -> usize {
    8
}

fn default_transport() -> TransportKind {
    TransportKind::Smtp
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            transport: TransportKind::Smtp,
            file_dir: None,
            sendmail_command: None,
            templates_dir: None,
            smtp: None,
            message_id_secret: None,
            retry_base: default_retry_base(),
            max_age: default_max_age(),
            concurrency: default_concurrency(),
            rate_limit: RateLimit::default(),
            staff_per_hour: default_staff_per_hour(),
            embed_max_bytes: default_embed_max_bytes(),
            send_timeout: default_send_timeout(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain connection upgraded with STARTTLS (submission port 587).
    Starttls,
    /// TLS from the first byte (465 for SMTP, 993 for IMAP).
    Implicit,
    /// No TLS at all: only for loopback test servers.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Relay host name (also the name its certificate is checked against).
    pub host: String,
    /// Relay port: 587 with `starttls`, 465 with `implicit`.
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// `starttls`, `implicit` or `none`.
    #[serde(default = "default_starttls")]
    pub tls: TlsMode,
    /// Login name; leave out for an unauthenticated relay.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password (first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A PEM file of extra CA certificates to trust (for a relay with a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The password, read from `password_file`/`password_env` at load time.
    #[serde(skip)]
    pub password: Option<Secret>,
}

fn default_smtp_port() -> u16 {
    587
}
fn default_starttls() -> TlsMode {
    TlsMode::Starttls
}

/// One validated `[[region]]`: its zone parsed and its timers resolved.
#[derive(Debug, Clone)]
pub struct RegionConfig {
    /// 2–8 uppercase ASCII letters; ticket ids are `<code>-<n>`.
    pub code: String,
    /// Default language of this region's mail.
    pub locale: Locale,
    /// The region's time zone (`timezone` in the file, parsed; an unknown name is a config error).
    pub timezone: chrono_tz::Tz,
    /// The support address, lower-cased.
    pub address: String,
    /// Display name in the From of this region's mail, if set (see [`RegionConfig::desk_name`]).
    pub display_name: Option<String>,
    /// Addresses allowed to act on tickets by mail, lower-cased.
    pub agents: Vec<String>,
    /// Where new-ticket and customer-reply notifications go.
    pub agent_notify: Option<String>,
    /// First ticket number of this region.
    pub first_number: u64,
    /// Where this region's mail comes from, its password loaded.
    pub intake: Option<IntakeConfig>,
    /// The largest mail `postdesk ingest` stores whole for this region (see `RegionFile`).
    pub max_message_bytes: u64,
    /// The effective timers: `[region.timers]` over the global `[timers]`, merged once at load, with the
    /// business-hours calendar (the region's own or the global one) in the region's zone.
    pub timers: TimersConfig,
}

/// One `[[region]]` as written. Validation turns it into a [`RegionConfig`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionFile {
    /// 2–8 uppercase ASCII letters; ticket ids are `<code>-<n>`.
    code: String,
    /// Default language of this region's mail: `en`, `ja`, `ko` or `zh`.
    #[serde(default = "default_locale")]
    locale: Locale,
    /// IANA time zone used for dates in mail and business hours (e.g. `Asia/Tokyo`).
    #[serde(default = "default_timezone")]
    timezone: String,
    /// The support address customers write to, and the From of this region's mail.
    address: String,
    /// Display name in the From of this region's mail (default: "<code> Support").
    #[serde(default)]
    display_name: Option<String>,
    /// Addresses allowed to act on tickets by mail.
    #[serde(default)]
    agents: Vec<String>,
    /// Where new-ticket and customer-reply notifications go.
    #[serde(default)]
    agent_notify: Option<String>,
    /// First ticket number of this region (default 1000).
    #[serde(default = "default_first_number")]
    first_number: u64,
    /// Where this region's mail comes from (leave out when mail arrives only through `postdesk ingest`).
    #[serde(default)]
    intake: Option<IntakeConfig>,
    /// Mail delivered by `postdesk ingest` larger than this is stored from its headers and the start of
    /// its text (the customer gets the `oversize` notice), and what the store accepts of the original (this
    /// many bytes) is kept in quarantine. Default: the intake's `max_message_bytes`, else 25 MiB; at most
    /// 64 MiB (what `ingest` reads).
    #[serde(default)]
    max_message_bytes: Option<u64>,
    /// Overrides of `[timers]` for this region.
    #[serde(default)]
    timers: Option<TimersOverride>,
}

fn default_locale() -> Locale {
    Locale::En
}
fn default_timezone() -> String {
    "UTC".to_string()
}
fn default_first_number() -> u64 {
    1000
}

impl RegionConfig {
    /// The display name used in From headers and signatures.
    pub fn desk_name(&self) -> String {
        self.display_name
            .clone()
            .unwrap_or_else(|| format!("{} Support", self.code))
    }

    /// Who is told about a ticket's activity: the region's `agent_notify` address and the ticket's assignee
    /// (lower-cased, once each).
    pub fn agent_recipients(&self, assignee: Option<&String>) -> Vec<String> {
        let mut to: Vec<String> = self
            .agent_notify
            .iter()
            .map(|a| a.to_ascii_lowercase())
            .collect();
        if let Some(a) = assignee {
            if !to.contains(a) {
                to.push(a.clone());
            }
        }
        to
    }

    /// Whether `address` (already lower-cased) is one of this region's agents.
    pub fn is_agent(&self, address: &str) -> bool {
        self.agents.iter().any(|a| a.eq_ignore_ascii_case(address))
    }

    /// The domain of the support address, used for the Message-IDs postdesk writes.
    pub fn domain(&self) -> &str {
        self.address
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or("postdesk.invalid")
    }
}

/// Where a region's mail comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum IntakeConfig {
    /// Poll or IDLE on IMAP mailboxes.
    Imap(Box<ImapIntake>),
    /// Watch a Maildir: `new/` is read, stored mail moves to `cur/`.
    Maildir(MaildirIntake),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaildirIntake {
    /// The Maildir (holding `new/`, `cur/`, `tmp/`; created if missing).
    pub path: PathBuf,
    /// How often `new/` is scanned.
    #[serde(default = "default_maildir_poll")]
    pub poll_interval: HumanDuration,
    /// Larger mail is stored from its headers and the start of its text (the customer gets the
    /// `oversize` notice) and the file itself moves, whole, to the Maildir++ folder
    /// `.postdesk-quarantine/` of this Maildir; it is never read whole into memory.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
}

fn default_maildir_poll() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapIntake {
    /// IMAP server host name (also the name its certificate is checked against).
    pub host: String,
    /// 993 with `implicit`, 143 with `starttls` or `none`.
    #[serde(default = "default_imap_port")]
    pub port: u16,
    /// `implicit`, `starttls` or `none`.
    #[serde(default = "default_implicit")]
    pub tls: TlsMode,
    /// Login name.
    pub username: String,
    /// File holding the password (first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A PEM file of extra CA certificates to trust (for a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Mailboxes to take mail from.
    #[serde(default = "default_mailboxes")]
    pub mailboxes: Vec<String>,
    /// What to do with a stored mail: `seen`, `move:<Folder>` or `delete`. A relative folder name
    /// (`move:Processed`) goes under the server's personal namespace (`INBOX.Processed` on Cyrus), as a
    /// mail client does; a name written in full (`move:INBOX.Processed`) is used as it is. Non-ASCII
    /// names (`move:処理済み`) are fine. The folder is created when missing.
    #[serde(default = "default_after")]
    pub after: String,
    /// Where oversized and unreadable mail is moved (whole) on the server, named like `after`'s folder:
    /// relative names go under the personal namespace. Created when missing. Until it has verifiably
    /// arrived there such mail stays where it is: `after` never flags or deletes it.
    #[serde(default = "default_quarantine_folder")]
    pub quarantine_folder: String,
    /// Use IDLE when the server offers it.
    #[serde(default = "default_true")]
    pub idle: bool,
    /// How often to poll when IDLE is off or not offered.
    #[serde(default = "default_imap_poll")]
    pub poll_interval: HumanDuration,
    /// Mail older than this on first contact is imported without an acknowledgement.
    #[serde(default = "default_ack_max_age")]
    pub ack_max_age: HumanDuration,
    /// Larger mail is quarantined (headers and text kept).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
    /// How to log in: `login` (IMAP LOGIN) or `plain` (AUTHENTICATE PLAIN, SASL).
    #[serde(default)]
    pub auth: ImapAuth,
    /// Longest wait between reconnection attempts (the backoff doubles up to this).
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max: HumanDuration,
    /// The password, read at load time.
    #[serde(skip)]
    pub password: Option<Secret>,
}

/// IMAP authentication mechanism.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ImapAuth {
    #[default]
    Login,
    Plain,
}

fn default_reconnect_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

fn default_imap_port() -> u16 {
    993
}
fn default_implicit() -> TlsMode {
    TlsMode::Implicit
}
fn default_mailboxes() -> Vec<String> {
    vec!["INBOX".to_string()]
}
fn default_after() -> String {
    "seen".to_string()
}
fn default_quarantine_folder() -> String {
    "postdesk-quarantine".to_string()
}
fn default_true() -> bool {
    true
}
fn default_imap_poll() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_ack_max_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(24 * 3600))
}
fn default_max_message_bytes() -> u64 {
    25 * 1024 * 1024
}
/// The smallest `max_message_bytes`: below it even the headers of ordinary mail would not fit.
pub const MIN_MESSAGE_BYTES: u64 = 10_000;
/// The most `postdesk ingest` reads from its standard input (and a control request carries).
pub const MAX_INGEST_BYTES: u64 = 64 * 1024 * 1024;

/// First-response targets per priority.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstResponse {
    #[serde(default = "h4")]
    pub urgent: HumanDuration,
    #[serde(default = "h8")]
    pub high: HumanDuration,
    #[serde(default = "h24")]
    pub normal: HumanDuration,
    #[serde(default = "h72")]
    pub low: HumanDuration,
}

fn hours(n: u64) -> HumanDuration {
    HumanDuration(Duration::from_secs(n * 3600))
}
fn h4() -> HumanDuration {
    hours(4)
}
fn h8() -> HumanDuration {
    hours(8)
}
fn h24() -> HumanDuration {
    hours(24)
}
fn h72() -> HumanDuration {
    hours(72)
}

impl Default for FirstResponse {
    fn default() -> Self {
        FirstResponse {
            urgent: h4(),
            high: h8(),
            normal: h24(),
            low: h72(),
        }
    }
}

impl FirstResponse {
    pub fn for_priority(&self, p: Priority) -> Duration {
        match p {
            Priority::Urgent => self.urgent.0,
            Priority::High => self.high.0,
            Priority::Normal => self.normal.0,
            Priority::Low => self.low.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimersConfig {
    /// A ticket waiting for the customer this long gets a reminder.
    #[serde(default = "h48")]
    pub customer_reminder_after: HumanDuration,
    /// After this many unanswered reminders the ticket is resolved with a notice.
    #[serde(default = "two")]
    pub customer_reminders: u32,
    /// A resolved ticket is closed after this long.
    #[serde(default = "d7")]
    pub autoclose_after: HumanDuration,
    /// Ask for a 1–5 rating when a ticket is resolved.
    #[serde(default = "default_true")]
    pub survey: bool,
    /// Where SLA breaches are escalated.
    #[serde(default)]
    pub escalate_to: Option<String>,
    /// First-response targets per priority.
    #[serde(default)]
    pub first_response: FirstResponse,
    /// Optional working hours: when set, first-response targets count working time only.
    #[serde(default)]
    pub business_hours: Option<BusinessHours>,
}

/// `[timers.business_hours]` (or `[region.timers.business_hours]`, which replaces it for one region): the
/// days and hours agents work, in the region's `timezone`. SLA clocks stop outside them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessHours {
    /// Working days: `["mon-fri"]` (the default), `["mon", "tue", "wed", "thu", "fri", "sat"]`, ...
    #[serde(default = "mon_fri")]
    pub days: Vec<String>,
    /// Opening hours of a working day, local time: `"09:00-18:00"`, or with a break
    /// `"09:00-12:00, 13:00-18:00"`.
    #[serde(default = "nine_to_six")]
    pub hours: String,
    /// Days off besides the weekend (public holidays, company days): `["2027-01-01", ...]`.
    #[serde(default)]
    pub holidays: Vec<String>,
    /// The parsed form, filled in by validation; in a region's effective timers ([`RegionConfig::timers`])
    /// it is in the region's zone.
    #[serde(skip)]
    pub calendar: Calendar,
}

fn mon_fri() -> Vec<String> {
    vec!["mon-fri".to_string()]
}
fn nine_to_six() -> String {
    "09:00-18:00".to_string()
}

impl BusinessHours {
    fn validate(&mut self, key: &str) -> Result<(), ConfigError> {
        self.calendar = Calendar::parse(&self.days, &self.hours, &self.holidays)
            .map_err(|(field, reason)| ConfigError::invalid(format!("{key}.{field}"), reason))?;
        Ok(())
    }
}

impl TimersConfig {
    /// These timers with a region's overrides applied (absent keys inherit, `first_response` and
    /// `business_hours` replace as a whole), the business-hours calendar in the region's `zone`. Run once
    /// per region at load, after both calendars were validated.
    fn merged(&self, o: TimersOverride, zone: chrono_tz::Tz) -> TimersConfig {
        let mut t = TimersConfig {
            customer_reminder_after: o
                .customer_reminder_after
                .unwrap_or(self.customer_reminder_after),
            customer_reminders: o.customer_reminders.unwrap_or(self.customer_reminders),
            autoclose_after: o.autoclose_after.unwrap_or(self.autoclose_after),
            survey: o.survey.unwrap_or(self.survey),
            escalate_to: o.escalate_to.or_else(|| self.escalate_to.clone()),
            first_response: o
                .first_response
                .unwrap_or_else(|| self.first_response.clone()),
            business_hours: o.business_hours.or_else(|| self.business_hours.clone()),
        };
        if let Some(b) = &mut t.business_hours {
            b.calendar.tz = zone;
        }
        t
    }

    /// The instant `target` of SLA time after `start`: working time when business hours are set, else the
    /// wall clock.
    pub fn sla_after(
        &self,
        start: chrono::DateTime<chrono::Utc>,
        target: chrono::Duration,
    ) -> chrono::DateTime<chrono::Utc> {
        match &self.business_hours {
            Some(b) => b.calendar.add(start, target),
            None => start + target,
        }
    }
}

fn h48() -> HumanDuration {
    hours(48)
}
fn d7() -> HumanDuration {
    hours(24 * 7)
}
fn two() -> u32 {
    2
}

impl Default for TimersConfig {
    fn default() -> Self {
        TimersConfig {
            customer_reminder_after: h48(),
            customer_reminders: 2,
            autoclose_after: d7(),
            survey: true,
            escalate_to: None,
            first_response: FirstResponse::default(),
            business_hours: None,
        }
    }
}

/// Per-region overrides of [`TimersConfig`]; absent keys inherit the global value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimersOverride {
    pub customer_reminder_after: Option<HumanDuration>,
    pub customer_reminders: Option<u32>,
    pub autoclose_after: Option<HumanDuration>,
    pub survey: Option<bool>,
    pub escalate_to: Option<String>,
    pub first_response: Option<FirstResponse>,
    pub business_hours: Option<BusinessHours>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address (`IP:port`) of the health and metrics listener; loopback by default. Port 0 picks a free
    /// port (logged at startup).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Allow `listen` on an address other than loopback. The endpoints have no authentication: put a
    /// firewall or an authenticating proxy in front before you set this.
    #[serde(default)]
    pub allow_remote: bool,
    /// `/healthz` answers 503 once an intake has been failing this long.
    #[serde(default = "default_unhealthy_after")]
    pub unhealthy_after: HumanDuration,
    /// `listen`, parsed by validation.
    #[serde(skip)]
    pub addr: Option<std::net::SocketAddr>,
}

fn default_listen() -> String {
    "127.0.0.1:9187".to_string()
}

fn default_unhealthy_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

impl HttpConfig {
    /// Check `[http]`: `listen` is an `IP:port`, on loopback unless `allow_remote = true`.
    fn validate(&mut self) -> Result<(), ConfigError> {
        let addr: std::net::SocketAddr = self.listen.trim().parse().map_err(|_| {
            ConfigError::invalid(
                "http.listen",
                format!(
                    "{:?} is not an IP address and port, like \"127.0.0.1:9187\"",
                    self.listen
                ),
            )
        })?;
        if !addr.ip().is_loopback() && !self.allow_remote {
            return Err(ConfigError::invalid(
                "http.listen",
                format!(
                    "{addr} is not a loopback address; the health and metrics endpoints have no authentication, so set `allow_remote = true` in [http] only if a firewall or proxy guards them"
                ),
            ));
        }
        if self.unhealthy_after.0 < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "http.unhealthy_after",
                "must be at least 1s",
            ));
        }
        self.addr = Some(addr);
        Ok(())
    }
}

/// Whether loading a config reads the password files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secrets {
    /// Read them (and fail on one that cannot be read): the daemon, `check-config`.
    Read,
    /// Leave them unread (`password` stays `None`): commands that only reach the store (`ingest`,
    /// `tickets`, …) never log in anywhere, and an MTA or an admin running them need not be able to read
    /// the daemon's credentials.
    Skip,
}

impl Config {
    /// Read, parse and validate the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with(path, Secrets::Read)
    }

    /// [`Config::load`], reading the password files or not.
    pub fn load_with(path: &Path, secrets: Secrets) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_with(&text, path, secrets)
    }

    /// Parse and validate config text; `origin` is only used in messages.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        Self::from_toml_with(text, origin, Secrets::Read)
    }

    /// [`Config::from_toml`], reading the password files or not.
    pub fn from_toml_with(
        text: &str,
        origin: &Path,
        secrets: Secrets,
    ) -> Result<Config, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| {
            ConfigError::Syntax {
                path: origin.to_path_buf(),
                message: e.to_string(),
            }
            .redacted(text)
        })?;
        file.validate(secrets).map_err(|e| e.redacted(text))
    }

    /// What is wrong but does not stop postdesk, one line each naming the key and what to do: a password
    /// file that users other than postdesk's can read. `check-config` prints them, `run` logs them.
    pub fn warnings(&self) -> Vec<String> {
        let mut files = Vec::new();
        if let Some(file) = self
            .outbound
            .smtp
            .as_ref()
            .and_then(|s| s.password_file.as_ref())
        {
            files.push(("outbound.smtp.password_file".to_string(), file));
        }
        for (i, r) in self.region.iter().enumerate() {
            if let Some(IntakeConfig::Imap(imap)) = &r.intake {
                if let Some(file) = &imap.password_file {
                    files.push((format!("region[{i}].intake.password_file"), file));
                }
            }
        }
        files
            .into_iter()
            .filter_map(|(key, file)| readable_by_others(&key, &resolve_password_file(file)))
            .collect()
    }

    /// The region with this code.
    pub fn region(&self, code: &str) -> Option<&RegionConfig> {
        self.region.iter().find(|r| r.code == code)
    }

    /// The region whose support address is `address` (lower-case compare, `+tag` subaddresses included).
    pub fn region_by_address(&self, address: &str) -> Option<&RegionConfig> {
        self.region
            .iter()
            .find(|r| same_mailbox(&r.address, address))
    }

    /// Whether `address` is one of postdesk's own addresses (support or notification addresses), also with
    /// a `+tag` subaddress (`support-jp+x@example.com` is delivered to `support-jp@example.com`): mail from
    /// them is never answered, which is what breaks loops between two regions.
    pub fn is_own_address(&self, address: &str) -> bool {
        self.region.iter().any(|r| {
            same_mailbox(&r.address, address)
                || r.agent_notify
                    .as_deref()
                    .is_some_and(|n| same_mailbox(n, address))
        })
    }
}

/// Whether `address` is delivered to the mailbox `own`: the same address (ASCII case ignored), or `own`'s
/// local part followed by a `+tag` subaddress (RFC 5233), at the same domain.
pub fn same_mailbox(own: &str, address: &str) -> bool {
    if own.eq_ignore_ascii_case(address) {
        return true;
    }
    let (Some((own_local, own_domain)), Some((local, domain))) =
        (own.rsplit_once('@'), address.rsplit_once('@'))
    else {
        return false;
    };
    domain.eq_ignore_ascii_case(own_domain)
        && local
            .get(..own_local.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(own_local))
        && local[own_local.len()..].starts_with('+')
}

impl ConfigFile {
    /// Check every section and build the [`Config`] from it; the first problem found is the error.
    fn validate(self, secrets: Secrets) -> Result<Config, ConfigError> {
        let ConfigFile {
            storage,
            mut outbound,
            region,
            mut timers,
            mut http,
            agents,
            categories,
            privacy,
            mut retention,
            spam,
            alerts,
        } = self;
        if storage.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid("storage.path", "must not be empty"));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&storage.ingest_timeout.0)
        {
            return Err(ConfigError::invalid(
                "storage.ingest_timeout",
                "must be between 1s and 1h (the default is 60s)",
            ));
        }
        if let Some(b) = &mut timers.business_hours {
            b.validate("timers.business_hours")?;
        }
        retention.validate()?;
        spam.validate()?;
        // Spam is purged by retention like closed tickets, whether a filter or an agent marked it.
        retention.spam_after = Some(spam.keep);
        if let Some(a) = &alerts {
            a.validate()?;
        }
        outbound.validate(secrets)?;
        let category_rules = match &categories {
            Some(table) => category_rules(table)?,
            None => Vec::new(),
        };
        if let Some(http) = http.as_mut() {
            http.validate()?;
        }
        if region.is_empty() {
            return Err(ConfigError::invalid(
                "region",
                "at least one [[region]] is required",
            ));
        }
        let mut seen = Seen::default();
        let region = region
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.validate(i, &timers, secrets, &mut seen))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            storage,
            outbound,
            region,
            timers,
            http,
            agents,
            category_rules,
            privacy,
            retention,
            spam,
            alerts,
        })
    }
}

/// `[categories]`: each entry a non-empty list of words, read into lower-cased rules in the order written.
fn category_rules(table: &toml::Table) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let mut rules = Vec::new();
    for (name, words) in table {
        let list = words
            .as_array()
            .filter(|a| a.iter().all(|w| w.is_str()) && !a.is_empty())
            .ok_or_else(|| {
                ConfigError::invalid(
                    format!("categories.{name}"),
                    "must be a non-empty list of words, like [\"refund\", \"返金\"]",
                )
            })?;
        let words = list
            .iter()
            .filter_map(|w| w.as_str())
            .map(str::to_lowercase)
            .collect();
        rules.push((name.to_ascii_lowercase(), words));
    }
    Ok(rules)
}

impl RetentionConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            (
                "retention.closed_attachments_after",
                self.closed_attachments_after,
            ),
            ("retention.closed_tickets_after", self.closed_tickets_after),
        ] {
            if value.is_some_and(|d| d.0.is_zero()) {
                return Err(ConfigError::invalid(
                    key,
                    "must be longer than 0s (leave it out to keep data forever)",
                ));
            }
        }
        Ok(())
    }
}

impl OutboundConfig {
    /// Check `[outbound]` and load the SMTP password (unless `secrets` says to skip it).
    fn validate(&mut self, secrets: Secrets) -> Result<(), ConfigError> {
        match self.transport {
            TransportKind::File => {
                if self.file_dir.is_none() {
                    return Err(ConfigError::invalid(
                        "outbound.file_dir",
                        "is required when outbound.transport = \"file\"",
                    ));
                }
            }
            TransportKind::Smtp => {
                let Some(smtp) = self.smtp.as_mut() else {
                    return Err(ConfigError::invalid(
                        "outbound.smtp",
                        "is required when outbound.transport = \"smtp\" (add an [outbound.smtp] table with host and port, or choose transport = \"file\")",
                    ));
                };
                if smtp.host.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        "outbound.smtp.host",
                        "must not be empty",
                    ));
                }
                if secrets == Secrets::Read {
                    smtp.password = read_password(
                        "outbound.smtp",
                        smtp.password_file.as_deref(),
                        smtp.password_env.as_deref(),
                    )?;
                }
                if smtp.username.is_some()
                    && smtp.password_file.is_none()
                    && smtp.password_env.is_none()
                {
                    return Err(ConfigError::invalid(
                        "outbound.smtp.password_file",
                        "a username is set but neither password_file nor password_env is",
                    ));
                }
            }
            TransportKind::Sendmail => {}
        }
        if !(1..=64).contains(&self.concurrency) {
            return Err(ConfigError::invalid(
                "outbound.concurrency",
                "must be between 1 and 64",
            ));
        }
        if self.rate_limit.per_10min == 0 || self.rate_limit.per_day < self.rate_limit.per_10min {
            return Err(ConfigError::invalid(
                "outbound.rate_limit",
                "per_10min must be at least 1 and per_day at least per_10min",
            ));
        }
        if self.staff_per_hour == 0 {
            return Err(ConfigError::invalid(
                "outbound.staff_per_hour",
                "must be at least 1 (it bounds staff mail in a loop; the default is 2000)",
            ));
        }
        if !(1024..=64 << 20).contains(&self.embed_max_bytes) {
            return Err(ConfigError::invalid(
                "outbound.embed_max_bytes",
                "must be between 1024 and 67108864 (the default is 65536: 64 KiB of the customer's text)",
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.send_timeout.0) {
            return Err(ConfigError::invalid(
                "outbound.send_timeout",
                "must be between 1s and 1h (the default is 60s)",
            ));
        }
        if self
            .message_id_secret
            .as_ref()
            .is_some_and(|s| s.expose().len() < 16)
        {
            return Err(ConfigError::invalid(
                "outbound.message_id_secret",
                "must be at least 16 characters",
            ));
        }
        Ok(())
    }
}

/// Region codes and support addresses already taken by an earlier `[[region]]`.
#[derive(Default)]
struct Seen {
    codes: HashSet<String>,
    addresses: HashSet<String>,
}

impl RegionFile {
    /// Check `region[i]` and build its [`RegionConfig`]: the zone parsed, addresses lower-cased, the timers
    /// merged over `global`, the intake's password loaded (unless `secrets` says to skip it).
    fn validate(
        self,
        i: usize,
        global: &TimersConfig,
        secrets: Secrets,
        seen: &mut Seen,
    ) -> Result<RegionConfig, ConfigError> {
        let key = |k: &str| format!("region[{i}].{k}");
        let RegionFile {
            code,
            locale,
            timezone,
            address,
            display_name,
            mut agents,
            agent_notify,
            first_number,
            mut intake,
            max_message_bytes,
            timers,
        } = self;
        let code_ok = (2..=8).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_uppercase());
        if !code_ok {
            return Err(ConfigError::invalid(
                key("code"),
                format!("{code:?} must be 2 to 8 uppercase ASCII letters, like \"JP\""),
            ));
        }
        if !seen.codes.insert(code.clone()) {
            return Err(ConfigError::invalid(
                key("code"),
                format!("region code {code:?} is used twice"),
            ));
        }
        if !is_plausible_address(&address) {
            return Err(ConfigError::invalid(
                key("address"),
                format!("{address:?} is not an email address"),
            ));
        }
        let address = address.to_ascii_lowercase();
        if !seen.addresses.insert(address.clone()) {
            return Err(ConfigError::invalid(
                key("address"),
                format!("{address:?} is used by two regions"),
            ));
        }
        let zone: chrono_tz::Tz = timezone.parse().map_err(|_| {
            ConfigError::invalid(
                key("timezone"),
                format!(
                    "{timezone:?} is not an IANA time zone name; use one like \"Asia/Tokyo\", \"Asia/Seoul\" or \"UTC\""
                ),
            )
        })?;
        let mut overrides = timers.unwrap_or_default();
        if let Some(b) = overrides.business_hours.as_mut() {
            b.validate(&key("timers.business_hours"))?;
        }
        let timers = global.merged(overrides, zone);
        for (j, agent) in agents.iter_mut().enumerate() {
            if !is_plausible_address(agent) {
                return Err(ConfigError::invalid(
                    format!("region[{i}].agents[{j}]"),
                    format!("{agent:?} is not an email address"),
                ));
            }
            *agent = agent.to_ascii_lowercase();
        }
        if let Some(n) = &agent_notify {
            if !is_plausible_address(n) {
                return Err(ConfigError::invalid(
                    key("agent_notify"),
                    format!("{n:?} is not an email address"),
                ));
            }
        }
        if let Some(intake) = intake.as_mut() {
            intake.validate(&key("intake"), secrets)?;
        }
        let intake_cap = match &intake {
            Some(IntakeConfig::Imap(imap)) => Some(imap.max_message_bytes),
            Some(IntakeConfig::Maildir(m)) => Some(m.max_message_bytes),
            None => None,
        };
        if max_message_bytes.is_some_and(|n| !(MIN_MESSAGE_BYTES..=MAX_INGEST_BYTES).contains(&n)) {
            return Err(ConfigError::invalid(
                key("max_message_bytes"),
                format!("must be between {MIN_MESSAGE_BYTES} and {MAX_INGEST_BYTES} bytes (64 MiB, what `postdesk ingest` reads)"),
            ));
        }
        let max_message_bytes = max_message_bytes
            .or(intake_cap)
            .unwrap_or_else(default_max_message_bytes)
            .min(MAX_INGEST_BYTES);
        Ok(RegionConfig {
            code,
            locale,
            timezone: zone,
            address,
            display_name,
            agents,
            agent_notify,
            first_number,
            intake,
            max_message_bytes,
            timers,
        })
    }
}

impl IntakeConfig {
    /// Check `[region.intake]` (`prefix` is its key, `region[N].intake`) and load an IMAP password.
    fn validate(&mut self, prefix: &str, secrets: Secrets) -> Result<(), ConfigError> {
        match self {
            IntakeConfig::Imap(imap) => {
                if secrets == Secrets::Read {
                    imap.password = read_password(
                        prefix,
                        imap.password_file.as_deref(),
                        imap.password_env.as_deref(),
                    )?;
                }
                if imap.password_file.is_none() && imap.password_env.is_none() {
                    return Err(ConfigError::invalid(
                        format!("{prefix}.password_file"),
                        "an IMAP intake needs password_file or password_env",
                    ));
                }
                if imap.mailboxes.is_empty() {
                    return Err(ConfigError::invalid(
                        format!("{prefix}.mailboxes"),
                        "must name at least one mailbox",
                    ));
                }
                let after_ok = imap.after == "seen"
                    || imap.after == "delete"
                    || imap
                        .after
                        .strip_prefix("move:")
                        .is_some_and(|f| !f.trim().is_empty());
                if !after_ok {
                    return Err(ConfigError::invalid(
                        format!("{prefix}.after"),
                        format!(
                            "{:?} must be \"seen\", \"delete\" or \"move:<Folder>\"",
                            imap.after
                        ),
                    ));
                }
                // Folder names go into IMAP quoted strings: no line breaks; anything else is encoded.
                let bad_folder = |f: &str| f.trim().is_empty() || f.contains(['\r', '\n', '\0']);
                if imap
                    .after
                    .strip_prefix("move:")
                    .is_some_and(|f| f.contains(['\r', '\n', '\0']))
                {
                    return Err(ConfigError::invalid(
                        format!("{prefix}.after"),
                        "the folder name must not contain line breaks",
                    ));
                }
                if bad_folder(&imap.quarantine_folder) {
                    return Err(ConfigError::invalid(
                        format!("{prefix}.quarantine_folder"),
                        "must name a folder (not empty, no line breaks)",
                    ));
                }
                if imap.quarantine_folder.eq_ignore_ascii_case("INBOX")
                    || imap.mailboxes.contains(&imap.quarantine_folder)
                {
                    return Err(ConfigError::invalid(
                        format!("{prefix}.quarantine_folder"),
                        format!(
                            "{:?} is a mailbox postdesk takes mail from: quarantined mail would be taken again",
                            imap.quarantine_folder
                        ),
                    ));
                }
                if imap
                    .mailboxes
                    .iter()
                    .any(|m| m.contains(['\r', '\n', '\0']))
                {
                    return Err(ConfigError::invalid(
                        format!("{prefix}.mailboxes"),
                        "a mailbox name must not contain line breaks",
                    ));
                }
                if imap.reconnect_max.0 < Duration::from_secs(1) {
                    return Err(ConfigError::invalid(
                        format!("{prefix}.reconnect_max"),
                        "must be at least 1s",
                    ));
                }
                if imap.poll_interval.0 < Duration::from_millis(100) {
                    return Err(ConfigError::invalid(
                        format!("{prefix}.poll_interval"),
                        "must be at least 100ms",
                    ));
                }
            }
            IntakeConfig::Maildir(m) if m.path.as_os_str().is_empty() => {
                return Err(ConfigError::invalid(
                    format!("{prefix}.path"),
                    "must not be empty",
                ));
            }
            IntakeConfig::Maildir(m) if m.max_message_bytes < MIN_MESSAGE_BYTES => {
                return Err(ConfigError::invalid(
                    format!("{prefix}.max_message_bytes"),
                    format!("must be at least {MIN_MESSAGE_BYTES} bytes"),
                ));
            }
            IntakeConfig::Maildir(_) => {}
        }
        Ok(())
    }
}

/// Read a password from a file (first line, trailing newline removed) or an environment variable.
/// `$CREDENTIALS_DIRECTORY` (systemd's LoadCredential) is honoured for relative file names.
fn read_password(
    key: &str,
    file: Option<&Path>,
    env: Option<&str>,
) -> Result<Option<Secret>, ConfigError> {
    if let Some(file) = file {
        let resolved = resolve_password_file(file);
        let text = std::fs::read_to_string(&resolved).map_err(|e| {
            ConfigError::invalid(
                format!("{key}.password_file"),
                format!(
                    "cannot read {}: {e}{}",
                    resolved.display(),
                    relative_password_file_hint(file)
                ),
            )
        })?;
        let pw = text.lines().next().unwrap_or("").to_string();
        if pw.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.password_file"),
                format!("{} is empty", resolved.display()),
            ));
        }
        return Ok(Some(Secret(pw)));
    }
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(Secret(v))),
            _ => Err(ConfigError::invalid(
                format!("{key}.password_env"),
                format!("environment variable {var} is not set or empty"),
            )),
        };
    }
    Ok(None)
}

/// How a relative `password_file` is found, for the error when it was not (issue 16: `check-config` run by
/// hand, without `$CREDENTIALS_DIRECTORY`, looked in the current directory and did not say why). Worded
/// without `name=value` pairs: the config error's text is redacted like the file, and a word such as
/// `LoadCredential` before an `=` would hide the rest.
fn relative_password_file_hint(file: &Path) -> String {
    if !file.is_relative() {
        return String::new();
    }
    let f = file.display();
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) => format!(
            " (a relative password_file is looked up in $CREDENTIALS_DIRECTORY, here {}, as {f} or \
             postdesk_{f}: put the file in /etc/postdesk/credentials/ and restart postdesk)",
            Path::new(&dir).display()
        ),
        None => format!(
            " (a relative password_file is looked up in $CREDENTIALS_DIRECTORY, which systemd sets for the \
             service from the unit's LoadCredential line; it is not set here, so {f} was looked for in the \
             current directory. Check by hand with the environment variable CREDENTIALS_DIRECTORY set to \
             /etc/postdesk/credentials (sudo, then that variable, then postdesk check-config), or give an \
             absolute path)"
        ),
    }
}

/// The file a `password_file` names: in `$CREDENTIALS_DIRECTORY` when relative and that is set.
fn resolve_password_file(file: &Path) -> PathBuf {
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if file.is_relative() => credential_path(Path::new(&dir), file),
        _ => file.to_path_buf(),
    }
}

/// A warning when users other than the file's owner (and postdesk's own group) can read `file`.
fn readable_by_others(key: &str, file: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(file).ok()?;
        let mode = meta.mode() & 0o777;
        // SAFETY: getegid has no preconditions and cannot fail.
        let own_group = meta.gid() == unsafe { libc::getegid() };
        let others = mode & 0o007 != 0;
        let group = mode & 0o070 != 0 && !own_group;
        if others || group {
            let who = if others {
                "any local user"
            } else {
                "its group"
            };
            let f = file.display();
            return Some(format!(
                "config key `{key}`: {f} can be read by {who} (mode {mode:04o}); run `chmod 600 {f}` (or `chgrp postdesk {f}; chmod 640 {f}` to share it with group postdesk)"
            ));
        }
    }
    let _ = (key, file);
    None
}

/// Where a relative `password_file` is in a credentials directory: `<dir>/<file>`, or else
/// `<dir>/postdesk_<file>`, the name systemd gives a file of `/etc/postdesk/credentials/` when the unit loads
/// that directory (`LoadCredential=postdesk:/etc/postdesk/credentials`). So `password_file = "smtp.pass"`
/// works both under systemd and for an admin command run with `CREDENTIALS_DIRECTORY=/etc/postdesk/credentials`.
fn credential_path(dir: &Path, file: &Path) -> PathBuf {
    let plain = dir.join(file);
    if plain.exists() {
        return plain;
    }
    // systemd flattens subdirectories of a loaded directory with `_`.
    let flat = format!("postdesk_{}", file.to_string_lossy().replace('/', "_"));
    let prefixed = dir.join(flat);
    if prefixed.exists() {
        prefixed
    } else {
        plain
    }
}

/// A cheap shape check (one `@`, something on both sides, no spaces): real validation is the mail server's.
pub fn is_plausible_address(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const BASE: &str = r#"
[storage]
path = "/tmp/x"
[outbound]
transport = "file"
file_dir = "/tmp/out"
[[region]]
code = "JP"
locale = "ja"
address = "Support-JP@example.com"
agents = ["Agent1@example.com"]
"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn base_config_loads_and_lowercases_addresses() {
        let c = load(BASE).expect("valid");
        assert_eq!(c.region[0].address, "support-jp@example.com");
        assert!(c.region[0].is_agent("agent1@example.com"));
        assert_eq!(c.region[0].first_number, 1000);
        assert_eq!(c.timers.first_response.normal.0, Duration::from_secs(86400));
    }

    #[test]
    fn ingest_timeout_defaults_to_60s_and_is_bounded() {
        assert_eq!(
            load(BASE).unwrap().storage.ingest_timeout.0,
            Duration::from_secs(60)
        );
        let with = |t: &str| {
            BASE.replace(
                "path = \"/tmp/x\"\n",
                &format!("path = \"/tmp/x\"\ningest_timeout = \"{t}\"\n"),
            )
        };
        assert_eq!(
            load(&with("5s")).unwrap().storage.ingest_timeout.0,
            Duration::from_secs(5)
        );
        for bad in ["0s", "2h"] {
            let err = load(&with(bad)).unwrap_err().to_string();
            assert!(
                err.contains("storage.ingest_timeout") && err.contains("between 1s and 1h"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load(&format!("{BASE}colour = \"blue\"\n")).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn duplicate_region_code_is_rejected() {
        let text = format!("{BASE}[[region]]\ncode = \"JP\"\naddress = \"other@example.com\"\n");
        let err = load(&text).unwrap_err().to_string();
        assert!(
            err.contains("region[1].code") && err.contains("twice"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_address_is_rejected_case_insensitively() {
        let text =
            format!("{BASE}[[region]]\ncode = \"KR\"\naddress = \"support-jp@EXAMPLE.com\"\n");
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("region[1].address"), "{err}");
    }

    #[test]
    fn bad_code_is_rejected() {
        let err = load(&BASE.replace("\"JP\"", "\"jp1\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("region[0].code"), "{err}");
    }

    #[test]
    fn bad_duration_names_the_key_and_the_reason() {
        let err = load(&format!("{BASE}[timers]\nautoclose_after = \"soon\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("autoclose_after") && err.contains("invalid duration"),
            "{err}"
        );
    }

    #[test]
    fn commands_that_skip_secrets_load_without_the_password_files() {
        let text = format!(
            "{BASE}[region.intake]\nkind = \"imap\"\nhost = \"h\"\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"\n"
        );
        assert!(Config::from_toml(&text, Path::new("t.toml")).is_err());
        let c = Config::from_toml_with(&text, Path::new("t.toml"), Secrets::Skip).unwrap();
        let Some(IntakeConfig::Imap(imap)) = &c.region[0].intake else {
            panic!("imap intake expected");
        };
        assert!(imap.password.is_none());
        // The shape is still checked: an IMAP intake without any password source is an error.
        let none =
            format!("{BASE}[region.intake]\nkind = \"imap\"\nhost = \"h\"\nusername = \"u\"\n");
        let err = Config::from_toml_with(&none, Path::new("t.toml"), Secrets::Skip)
            .unwrap_err()
            .to_string();
        assert!(err.contains("password_file"), "{err}");
    }

    #[test]
    fn credentials_are_found_by_their_own_name_or_as_systemd_names_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("smtp.pass"), "a").unwrap();
        std::fs::write(dir.path().join("postdesk_jp.pass"), "b").unwrap();
        std::fs::write(dir.path().join("postdesk_imap_kr.pass"), "c").unwrap();
        let found = |f: &str| credential_path(dir.path(), Path::new(f));
        assert_eq!(found("smtp.pass"), dir.path().join("smtp.pass"));
        assert_eq!(found("jp.pass"), dir.path().join("postdesk_jp.pass"));
        assert_eq!(
            found("imap/kr.pass"),
            dir.path().join("postdesk_imap_kr.pass")
        );
        // Neither: the error will name the plain path.
        assert_eq!(found("cn.pass"), dir.path().join("cn.pass"));
    }

    #[test]
    fn unreadable_password_file_is_named() {
        let text = format!(
            "{BASE}[region.intake]\nkind = \"imap\"\nhost = \"imap.example.com\"\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"\n"
        );
        let err = load(&text).unwrap_err().to_string();
        assert!(
            err.contains("region[0].intake.password_file") && err.contains("/nonexistent/pw"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_inside_intake_is_rejected() {
        let text = format!(
            "{BASE}[region.intake]\nkind = \"maildir\"\npath = \"/tmp/m\"\nfolder = \"x\"\n"
        );
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("folder"), "{err}");
    }

    #[test]
    fn quarantine_folder_defaults_and_bad_ones_are_rejected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "secret\n").unwrap();
        let imap = |extra: &str| {
            format!(
                "{BASE}[region.intake]\nkind = \"imap\"\nhost = \"h\"\nusername = \"u\"\npassword_file = {pw:?}\n{extra}"
            )
        };
        let config = load(&imap("after = \"move:処理済み\"\n")).unwrap();
        let Some(IntakeConfig::Imap(i)) = &config.region[0].intake else {
            panic!("not imap")
        };
        assert_eq!(i.quarantine_folder, "postdesk-quarantine");
        assert_eq!(i.after, "move:処理済み");
        for bad in [
            "quarantine_folder = \"\"\n",
            "quarantine_folder = \"INBOX\"\n",
            "quarantine_folder = \"a\\nb\"\n",
            "mailboxes = [\"Tickets\"]\nquarantine_folder = \"Tickets\"\n",
        ] {
            let err = load(&imap(bad)).unwrap_err().to_string();
            assert!(
                err.contains("region[0].intake.quarantine_folder"),
                "{bad}: {err}"
            );
        }
        let err = load(&imap("after = \"move:a\\rb\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("region[0].intake.after"), "{err}");
    }

    #[test]
    fn bad_after_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "secret\n").unwrap();
        let text = format!(
            "{BASE}[region.intake]\nkind = \"imap\"\nhost = \"h\"\nusername = \"u\"\npassword_file = {:?}\nafter = \"archive\"\n",
            pw
        );
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("region[0].intake.after"), "{err}");
    }

    #[test]
    fn smtp_transport_needs_smtp_table() {
        let err = load(&BASE.replace("transport = \"file\"", "transport = \"smtp\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("outbound.smtp"), "{err}");
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let s = Secret("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn http_is_off_when_absent_and_loopback_unless_allowed() {
        assert!(load(BASE).unwrap().http.is_none());
        let c = load(&format!("{BASE}[http]\n")).unwrap();
        let http = c.http.unwrap();
        assert_eq!(http.addr, Some("127.0.0.1:9187".parse().unwrap()));
        assert_eq!(http.unhealthy_after.0, Duration::from_secs(300));
        let err = load(&format!("{BASE}[http]\nlisten = \"0.0.0.0:9187\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("http.listen") && err.contains("allow_remote = true"),
            "{err}"
        );
        let c = load(&format!(
            "{BASE}[http]\nlisten = \"[::]:9187\"\nallow_remote = true\nunhealthy_after = \"30s\"\n"
        ))
        .unwrap();
        assert_eq!(c.http.unwrap().unhealthy_after.0, Duration::from_secs(30));
        let err = load(&format!("{BASE}[http]\nlisten = \"localhost:80\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.listen"), "{err}");
    }

    #[test]
    fn region_timers_override_globals() {
        let text = format!("{BASE}[region.timers]\nautoclose_after = \"1d\"\n");
        let c = load(&text).unwrap();
        let t = &c.region[0].timers;
        assert_eq!(t.autoclose_after.0, Duration::from_secs(86400));
        assert_eq!(t.customer_reminders, 2);
    }

    #[test]
    fn unknown_zone_is_an_error_naming_the_key_not_a_silent_utc() {
        let err = load(&BASE.replace(
            "locale = \"ja\"",
            "locale = \"ja\"\ntimezone = \"Asia/Tokio\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("region[0].timezone")
                && err.contains("\"Asia/Tokio\"")
                && err.contains("IANA"),
            "{err}"
        );
        // A later region is named by its own index.
        let second = format!(
            "{BASE}[[region]]\ncode = \"KR\"\naddress = \"kr@example.com\"\ntimezone = \"Seoul\"\n"
        );
        let err = load(&second).unwrap_err().to_string();
        assert!(err.contains("region[1].timezone"), "{err}");
        // A known zone is parsed once, at load; an absent one is UTC.
        let c = load(&BASE.replace(
            "locale = \"ja\"",
            "locale = \"ja\"\ntimezone = \"Asia/Tokyo\"",
        ))
        .unwrap();
        assert_eq!(c.region[0].timezone, chrono_tz::Asia::Tokyo);
        assert_eq!(load(BASE).unwrap().region[0].timezone, chrono_tz::Tz::UTC);
    }

    /// The merge `Config::timers_for` did on each call before the timers were resolved at load, kept here as
    /// the reference the resolved timers must equal.
    fn old_timers_for(
        global: &TimersConfig,
        over: Option<&TimersOverride>,
        tz: chrono_tz::Tz,
    ) -> TimersConfig {
        let mut t = global.clone();
        if let Some(o) = over {
            if let Some(v) = o.customer_reminder_after {
                t.customer_reminder_after = v;
            }
            if let Some(v) = o.customer_reminders {
                t.customer_reminders = v;
            }
            if let Some(v) = o.autoclose_after {
                t.autoclose_after = v;
            }
            if let Some(v) = o.survey {
                t.survey = v;
            }
            if let Some(v) = &o.escalate_to {
                t.escalate_to = Some(v.clone());
            }
            if let Some(v) = &o.first_response {
                t.first_response = v.clone();
            }
            if let Some(v) = &o.business_hours {
                t.business_hours = Some(v.clone());
            }
        }
        if let Some(b) = &mut t.business_hours {
            b.calendar.tz = tz;
        }
        t
    }

    #[test]
    fn region_timers_resolved_at_load_equal_the_old_per_call_merge() {
        let global = "[timers]\nescalate_to = \"leads@example.com\"\nsurvey = false\n[timers.business_hours]\nhours = \"09:00-17:00\"\n";
        let kr =
            "[[region]]\ncode = \"KR\"\naddress = \"kr@example.com\"\ntimezone = \"Asia/Seoul\"\n";
        let cases = [
            // No override: the global timers, business hours in the region's zone.
            format!("{BASE}timezone = \"Asia/Tokyo\"\n{global}"),
            // Scalars and first_response overridden, business hours inherited.
            format!(
                "{BASE}timezone = \"Asia/Tokyo\"\n[region.timers]\nautoclose_after = \"1d\"\ncustomer_reminders = 4\nescalate_to = \"jp-leads@example.com\"\n[region.timers.first_response]\nurgent = \"1h\"\n{global}"
            ),
            // Business hours replaced in one region, inherited by the other.
            format!(
                "{BASE}timezone = \"Asia/Tokyo\"\n[region.timers.business_hours]\ndays = [\"mon-sat\"]\nhours = \"10:00-19:00\"\n{kr}{global}"
            ),
        ];
        for text in &cases {
            let c = load(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let mut file: ConfigFile = toml::from_str(text).unwrap();
            for (i, (region, written)) in c.region.iter().zip(&mut file.region).enumerate() {
                if let Some(b) = written
                    .timers
                    .as_mut()
                    .and_then(|t| t.business_hours.as_mut())
                {
                    b.validate("test").unwrap();
                }
                let old = old_timers_for(&c.timers, written.timers.as_ref(), region.timezone);
                assert_eq!(
                    format!("{:?}", region.timers),
                    format!("{old:?}"),
                    "region[{i}] of\n{text}"
                );
            }
        }
        // The same, said plainly for the second and third cases.
        let c = load(&cases[1]).unwrap();
        let t = &c.region[0].timers;
        assert_eq!(t.autoclose_after.0, Duration::from_secs(86400));
        assert_eq!(t.customer_reminders, 4);
        assert_eq!(t.customer_reminder_after.0, Duration::from_secs(48 * 3600));
        assert!(!t.survey, "inherited from [timers]");
        assert_eq!(t.escalate_to.as_deref(), Some("jp-leads@example.com"));
        assert_eq!(t.first_response.urgent.0, Duration::from_secs(3600));
        let hours = t.business_hours.as_ref().expect("inherited business hours");
        assert_eq!(hours.calendar.tz, chrono_tz::Asia::Tokyo);
        assert_eq!(
            c.timers.business_hours.as_ref().unwrap().calendar.tz,
            chrono_tz::Tz::UTC
        );
        let c = load(&cases[2]).unwrap();
        let jp = c.region[0].timers.business_hours.as_ref().unwrap();
        let kr = c.region[1].timers.business_hours.as_ref().unwrap();
        assert_eq!(
            (jp.hours.as_str(), jp.calendar.tz),
            ("10:00-19:00", chrono_tz::Asia::Tokyo)
        );
        assert_eq!(
            (kr.hours.as_str(), kr.calendar.tz),
            ("09:00-17:00", chrono_tz::Asia::Seoul)
        );
    }

    #[test]
    fn missing_smtp_password_file_is_an_error_naming_the_key_at_load() {
        let smtp = BASE.replace(
            "transport = \"file\"\nfile_dir = \"/tmp/out\"",
            "transport = \"smtp\"\n[outbound.smtp]\nhost = \"relay.example.com\"\nusername = \"desk\"\npassword_file = \"/nonexistent/smtp.pass\"",
        );
        let err = load(&smtp).unwrap_err().to_string();
        assert!(
            err.contains("outbound.smtp.password_file") && err.contains("/nonexistent/smtp.pass"),
            "{err}"
        );
        let env = smtp.replace(
            "password_file = \"/nonexistent/smtp.pass\"",
            "password_env = \"POSTDESK_TEST_SURELY_UNSET_PASSWORD\"",
        );
        let err = load(&env).unwrap_err().to_string();
        assert!(
            err.contains("outbound.smtp.password_env")
                && err.contains("POSTDESK_TEST_SURELY_UNSET_PASSWORD"),
            "{err}"
        );
        // Commands that never log in load it regardless.
        let c = Config::from_toml_with(&smtp, Path::new("t.toml"), Secrets::Skip).unwrap();
        assert!(c.outbound.smtp.unwrap().password.is_none());
    }

    #[test]
    fn debug_of_the_config_prints_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let smtp_pw = dir.path().join("smtp.pass");
        let imap_pw = dir.path().join("imap.pass");
        std::fs::write(&smtp_pw, "smtp-hunter2\n").unwrap();
        std::fs::write(&imap_pw, "imap-hunter2\n").unwrap();
        let text = format!(
            "[storage]\npath = \"/tmp/x\"\n[outbound]\nmessage_id_secret = \"msgid-hunter2-0123456789\"\n[outbound.smtp]\nhost = \"relay.example.com\"\nusername = \"desk\"\npassword_file = {smtp:?}\n[[region]]\ncode = \"JP\"\naddress = \"jp@example.com\"\n[region.intake]\nkind = \"imap\"\nhost = \"imap.example.com\"\nusername = \"jp\"\npassword_file = {imap:?}\n",
            smtp = smtp_pw.display().to_string(),
            imap = imap_pw.display().to_string(),
        );
        let c = load(&text).unwrap();
        // The secrets were loaded…
        assert_eq!(
            c.outbound
                .smtp
                .as_ref()
                .unwrap()
                .password
                .as_ref()
                .unwrap()
                .expose(),
            "smtp-hunter2"
        );
        let Some(IntakeConfig::Imap(imap)) = &c.region[0].intake else {
            panic!("imap intake expected");
        };
        assert_eq!(imap.password.as_ref().unwrap().expose(), "imap-hunter2");
        assert_eq!(
            c.outbound.message_id_secret.as_ref().unwrap().expose(),
            "msgid-hunter2-0123456789"
        );
        // …and none of them shows in Debug, which is what a `?config` in a log line would print.
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert_eq!(debug.matches("Secret(***)").count(), 3, "{debug}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// config.example.toml is documentation: it must stay a valid config (password files aside).
    #[test]
    fn the_shipped_example_config_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let mut text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
                .unwrap();
        for name in ["smtp.pass", "jp.pass"] {
            let p = dir.path().join(name);
            std::fs::write(&p, "secret\n").unwrap();
            // Relative names are credentials (`$CREDENTIALS_DIRECTORY`): point them at the test's files.
            text = text.replace(
                &format!("\"{name}\""),
                &format!("{:?}", p.display().to_string()),
            );
        }
        let c = Config::from_toml(&text, Path::new("config.example.toml")).unwrap();
        assert_eq!(c.region.len(), 2);
        assert!(matches!(c.region[0].intake, Some(IntakeConfig::Imap(_))));
        assert_eq!(
            c.outbound
                .smtp
                .as_ref()
                .unwrap()
                .password
                .as_ref()
                .unwrap()
                .expose(),
            "secret"
        );
        assert!(c.privacy.mask_card_numbers);
        assert_eq!(
            c.retention.closed_attachments_after.map(|d| d.0.as_secs()),
            Some(90 * 86400)
        );
        assert!(c.retention.closed_tickets_after.is_some());
    }

    #[test]
    fn a_toml_error_never_echoes_a_password() {
        use super::tests::BASE;
        let load = |t: &str| Config::from_toml(t, Path::new("test.toml"));
        for tail in [
            "[outbound.smtp]\nhost = \"h\"\npassword = \"pw-hunter2\n",
            "[outbound.smtp]\nhost = \"h\"\npassword = \"pw-hunter2\" x\n",
            "[outbound.smtp]\nhost = \"h\"\npassword = \"pw-hunter2\"\n",
            "[outbound.smtp]\nhost = \"h\"\npassword = \"\"\"pw-hunter2\nmore-hunter2\n",
            "[outbound.smtp]\nhost = 5\napi_token = 'pw-hunter2'\n",
            "[[region]]\ncode = \"KR\"\naddress = \"k@example.com\"\nintake = { kind = \"imap\", password = \"pw-hunter2\", }\n",
        ] {
            let e = load(&format!("{BASE}{tail}")).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{tail:?}: {e}");
        }
        // Other values still show, so the message stays useful.
        let e = load(&format!("{BASE}[outbound.smtp]\nhost = \"relay\" x\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("relay"), "{e}");
    }

    #[test]
    fn redaction_keeps_the_key_and_hides_the_value() {
        let src = "password = \"abc\"\nmessage_id_secret = \"long-secret-value\"\n";
        let msg = "2 | password = \"abc\"\nsaw long-secret-value here, line 1";
        let r = redact_secrets(msg, src);
        assert_eq!(r, "2 | password = <redacted>\nsaw <redacted> here, line 1");
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! The config builder of the unit tests, in the style of the integration tests' `tests/support/config.rs`
    //! (which `src/` cannot use). [`TestConfig::new(root)`](TestConfig::new) starts from storage in
    //! `ROOT/data` and the file outbox in `ROOT/out`, no region; its methods add `[outbound]` keys,
    //! `[timers]`, other tables as raw TOML, and regions ([`TestRegion`]). [`TestConfig::parse`] gives the
    //! validated [`Config`]; [`TestConfig::load`] the result, for the tests of a refusal.
    //!
    //! ```ignore
    //! let config = TestConfig::new(dir.path())
    //!     .timers("escalate_to = \"leads@example.com\"")
    //!     .region(TestRegion::jp().agent_notify("jp-agents@example.com"))
    //!     .parse();
    //! ```

    use std::path::{Path, PathBuf};

    use super::{Config, ConfigError};

    /// A TOML basic string (quoted and escaped).
    fn q(s: &str) -> String {
        toml::Value::String(s.to_string()).to_string()
    }

    /// A whole test config; see the overview above.
    #[derive(Clone, Debug)]
    pub(crate) struct TestConfig {
        root: PathBuf,
        outbound: Vec<String>,
        tables: Vec<String>,
        regions: Vec<TestRegion>,
    }

    impl TestConfig {
        /// Storage in `root/data`, outgoing mail as files in `root/out`, no region yet.
        pub(crate) fn new(root: &Path) -> TestConfig {
            TestConfig {
                root: root.to_path_buf(),
                outbound: Vec::new(),
                tables: Vec::new(),
                regions: Vec::new(),
            }
        }

        /// More `[outbound]` lines, e.g. `staff_per_hour = 3`.
        pub(crate) fn outbound(mut self, lines: &str) -> TestConfig {
            self.outbound.push(lines.to_string());
            self
        }

        /// `[timers]` with these lines (sub-tables such as `[timers.business_hours]` may follow in them).
        pub(crate) fn timers(self, lines: &str) -> TestConfig {
            self.table(&format!("[timers]\n{lines}"))
        }

        /// Any other table(s), as TOML text with their headers (`[privacy]`, `[outbound.rate_limit]`, …).
        pub(crate) fn table(mut self, toml: &str) -> TestConfig {
            self.tables.push(toml.to_string());
            self
        }

        pub(crate) fn region(mut self, region: TestRegion) -> TestConfig {
            self.regions.push(region);
            self
        }

        pub(crate) fn regions(
            mut self,
            regions: impl IntoIterator<Item = TestRegion>,
        ) -> TestConfig {
            self.regions.extend(regions);
            self
        }

        /// The config file's text.
        pub(crate) fn toml(&self) -> String {
            let dir = |d: &str| q(&self.root.join(d).display().to_string());
            let mut text = format!(
                "[storage]\npath = {}\n[outbound]\ntransport = \"file\"\nfile_dir = {}\n",
                dir("data"),
                dir("out")
            );
            for lines in self.outbound.iter().chain(&self.tables) {
                text.push_str(lines);
                text.push('\n');
            }
            for r in &self.regions {
                text.push_str(&r.toml());
            }
            text
        }

        /// What loading the config gives (password files read).
        pub(crate) fn load(&self) -> Result<Config, ConfigError> {
            Config::from_toml(&self.toml(), Path::new("test.toml"))
        }

        /// The validated [`Config`]; panics, with the text, if it is refused.
        pub(crate) fn parse(&self) -> Config {
            self.load()
                .unwrap_or_else(|e| panic!("test config: {e}\n{}", self.toml()))
        }
    }

    /// One `[[region]]` of a [`TestConfig`].
    #[derive(Clone, Debug)]
    pub(crate) struct TestRegion {
        code: String,
        address: String,
        lines: Vec<String>,
        intake: Option<String>,
    }

    impl TestRegion {
        /// A region with only its code and address (the default locale, no agents, no intake).
        pub(crate) fn new(code: &str, address: &str) -> TestRegion {
            TestRegion {
                code: code.to_string(),
                address: address.to_string(),
                lines: Vec::new(),
                intake: None,
            }
        }

        /// JP, Japanese, `support-jp@example.com`: the region of most tests.
        pub(crate) fn jp() -> TestRegion {
            TestRegion::new("JP", "support-jp@example.com").locale("ja")
        }

        /// KR, Korean, `support-kr@example.com`.
        pub(crate) fn kr() -> TestRegion {
            TestRegion::new("KR", "support-kr@example.com").locale("ko")
        }

        pub(crate) fn locale(self, locale: &str) -> TestRegion {
            self.line(&format!("locale = {}", q(locale)))
        }

        pub(crate) fn agents(self, agents: &[&str]) -> TestRegion {
            let list: Vec<String> = agents.iter().map(|a| q(a)).collect();
            self.line(&format!("agents = [{}]", list.join(", ")))
        }

        pub(crate) fn agent_notify(self, address: &str) -> TestRegion {
            self.line(&format!("agent_notify = {}", q(address)))
        }

        /// Any other `[[region]]` line(s); the last may end with a sub-table such as `[region.timers]`.
        pub(crate) fn line(mut self, lines: &str) -> TestRegion {
            self.lines.push(lines.to_string());
            self
        }

        /// `[region.intake]` lines (`kind = "maildir"`, `path = …`).
        pub(crate) fn intake(mut self, lines: &str) -> TestRegion {
            self.intake = Some(lines.to_string());
            self
        }

        fn toml(&self) -> String {
            let mut text = format!(
                "[[region]]\ncode = {}\naddress = {}\n",
                q(&self.code),
                q(&self.address)
            );
            for l in &self.lines {
                text.push_str(l);
                text.push('\n');
            }
            if let Some(intake) = &self.intake {
                text.push_str("[region.intake]\n");
                text.push_str(intake);
                text.push('\n');
            }
            text
        }
    }
}
