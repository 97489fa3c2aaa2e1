//! The one config builder of the tests. [`TestConfig::new(root)`](TestConfig::new) starts from sensible
//! defaults — storage in `ROOT/data`, the file outbox writing `.eml` files into `ROOT/out`, no region — and
//! has a method for each thing tests vary: the regions ([`Region`]: locale, agents, `agent_notify`, display
//! name, first number, a Maildir or IMAP intake), the transport (file or the stack's SMTP), `[outbound]`
//! keys (`templates_dir`, `concurrency`, …), `[timers]`, and any other table as raw TOML. It produces the
//! TOML text ([`TestConfig::toml`]), the file ([`TestConfig::write`]) or the parsed [`Config`]
//! ([`TestConfig::parse`]).
//!
//! ```ignore
//! let config = TestConfig::new(dir.path())
//!     .timers("customer_reminder_after = \"1s\"")
//!     .region(Region::jp().agent_notify("jp-agents@example.com"))
//!     .write_to(&dir.path().join("config.toml"));
//! ```

use std::path::{Path, PathBuf};

use postdesk::config::Config;

use super::stack::{password, Stack};

/// A TOML basic string (quoted and escaped).
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn qp(p: &Path) -> String {
    q(&p.display().to_string())
}

/// How outgoing mail leaves.
#[derive(Clone, Debug)]
enum Transport {
    /// `transport = "file"`: one `.eml` per mail in the directory.
    File(PathBuf),
    /// `transport = "smtp"` with these `[outbound.smtp]` lines.
    Smtp(String),
}

/// A whole test config, built from defaults; see the module overview.
#[derive(Clone, Debug)]
pub struct TestConfig {
    storage: PathBuf,
    transport: Transport,
    outbound: Vec<String>,
    tables: Vec<String>,
    regions: Vec<Region>,
}

impl TestConfig {
    /// Storage in `root/data`, outgoing mail as files in `root/out`, no region yet.
    pub fn new(root: &Path) -> TestConfig {
        TestConfig {
            storage: root.join("data"),
            transport: Transport::File(root.join("out")),
            outbound: Vec::new(),
            tables: Vec::new(),
            regions: Vec::new(),
        }
    }

    /// `[storage] path`.
    pub fn storage(mut self, path: &Path) -> TestConfig {
        self.storage = path.to_path_buf();
        self
    }

    /// `transport = "file"`, writing into `dir`.
    pub fn file_outbox(mut self, dir: &Path) -> TestConfig {
        self.transport = Transport::File(dir.to_path_buf());
        self
    }

    /// Send through the stack's Postfix: plain SMTP on 127.0.0.1, quick retries (`retry_base = "200ms"`).
    pub fn smtp(self, s: &Stack) -> TestConfig {
        let server = format!(
            "host = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
            s.smtp_port
        );
        self.smtp_server(&server).outbound("retry_base = \"200ms\"")
    }

    /// Send through the stack's Postfix over STARTTLS to `localhost`, its certificate checked against the
    /// stack's CA; quick retries.
    pub fn smtp_starttls(self, s: &Stack) -> TestConfig {
        let server = format!(
            "host = \"localhost\"\nport = {}\ntls = \"starttls\"\nca_file = {}\n",
            s.smtp_port,
            qp(&s.ca_pem)
        );
        self.smtp_server(&server).outbound("retry_base = \"200ms\"")
    }

    /// `transport = "smtp"` with these `[outbound.smtp]` lines (host, port, tls, username, …).
    pub fn smtp_server(mut self, lines: &str) -> TestConfig {
        self.transport = Transport::Smtp(lines.to_string());
        self
    }

    /// More `[outbound]` lines, e.g. `concurrency = 1` or `templates_dir = "…"` (see [`Self::templates_dir`]).
    pub fn outbound(mut self, lines: &str) -> TestConfig {
        self.outbound.push(lines.to_string());
        self
    }

    /// `[outbound] templates_dir`: template overrides.
    pub fn templates_dir(self, dir: &Path) -> TestConfig {
        let line = format!("templates_dir = {}", qp(dir));
        self.outbound(&line)
    }

    /// `[timers]` with these lines (sub-tables such as `[timers.first_response]` may follow in them).
    pub fn timers(self, lines: &str) -> TestConfig {
        self.table(&format!("[timers]\n{lines}"))
    }

    /// `[http]` with these lines.
    pub fn http(self, lines: &str) -> TestConfig {
        self.table(&format!("[http]\n{lines}"))
    }

    /// Any other table(s), as TOML text with their headers (`[retention]`, `[outbound.rate_limit]`, …).
    pub fn table(mut self, toml: &str) -> TestConfig {
        self.tables.push(toml.to_string());
        self
    }

    pub fn region(mut self, region: Region) -> TestConfig {
        self.regions.push(region);
        self
    }

    pub fn regions(mut self, regions: impl IntoIterator<Item = Region>) -> TestConfig {
        self.regions.extend(regions);
        self
    }

    /// The storage path (to open the store beside the daemon or the CLI).
    pub fn storage_path(&self) -> &Path {
        &self.storage
    }

    /// The config file's text.
    pub fn toml(&self) -> String {
        let mut text = format!("[storage]\npath = {}\n[outbound]\n", qp(&self.storage));
        match &self.transport {
            Transport::File(dir) => {
                text.push_str(&format!("transport = \"file\"\nfile_dir = {}\n", qp(dir)))
            }
            Transport::Smtp(_) => text.push_str("transport = \"smtp\"\n"),
        }
        for lines in &self.outbound {
            text.push_str(lines);
            text.push('\n');
        }
        if let Transport::Smtp(lines) = &self.transport {
            text.push_str("[outbound.smtp]\n");
            text.push_str(lines);
            text.push('\n');
        }
        for table in &self.tables {
            text.push_str(table);
            text.push('\n');
        }
        for r in &self.regions {
            text.push_str(&r.toml());
        }
        text
    }

    /// Write the config to `path`; returns `path`.
    pub fn write_to(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.toml()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path.to_path_buf()
    }

    /// The validated [`Config`], as the daemon would load it (password files read).
    pub fn parse(&self) -> Config {
        Config::from_toml(&self.toml(), Path::new("test.toml")).expect("test config")
    }
}

/// One `[[region]]` of a [`TestConfig`].
#[derive(Clone, Debug)]
pub struct Region {
    code: String,
    address: String,
    lines: Vec<String>,
    intake: Option<String>,
}

impl Region {
    /// A region with only its code and address (locale `en`, no agents, no intake: `postdesk ingest` only).
    pub fn new(code: &str, address: &str) -> Region {
        Region {
            code: code.to_string(),
            address: address.to_string(),
            lines: Vec::new(),
            intake: None,
        }
    }

    /// JP, Japanese, `support-jp@example.com`: the region of most tests.
    pub fn jp() -> Region {
        Region::new("JP", "support-jp@example.com").locale("ja")
    }

    /// KR, Korean, `support-kr@example.com`.
    pub fn kr() -> Region {
        Region::new("KR", "support-kr@example.com").locale("ko")
    }

    /// The support address (for a region taking mail from a stack user, that user).
    pub fn address(mut self, address: &str) -> Region {
        self.address = address.to_string();
        self
    }

    pub fn locale(self, locale: &str) -> Region {
        self.line(&format!("locale = {}", q(locale)))
    }

    pub fn agents(self, agents: &[&str]) -> Region {
        let list: Vec<String> = agents.iter().map(|a| q(a)).collect();
        self.line(&format!("agents = [{}]", list.join(", ")))
    }

    pub fn agent_notify(self, address: &str) -> Region {
        self.line(&format!("agent_notify = {}", q(address)))
    }

    pub fn display_name(self, name: &str) -> Region {
        self.line(&format!("display_name = {}", q(name)))
    }

    pub fn first_number(self, n: u64) -> Region {
        self.line(&format!("first_number = {n}"))
    }

    /// Any other `[[region]]` line(s).
    pub fn line(mut self, lines: &str) -> Region {
        self.lines.push(lines.to_string());
        self
    }

    /// A Maildir intake at `path`, scanned every `poll_interval` (e.g. `"100ms"`).
    pub fn maildir(mut self, path: &Path, poll_interval: &str) -> Region {
        self.intake = Some(format!(
            "kind = \"maildir\"\npath = {}\npoll_interval = {}\n",
            qp(path),
            q(poll_interval)
        ));
        self
    }

    /// An IMAP intake of stack user `user`'s INBOX: plain IMAP on 127.0.0.1 unless `tls` is `"implicit"` or
    /// `"starttls"` (then `localhost`, checked against the stack's CA). Its password is written to
    /// `pw_dir/<user>.pass`; the support address becomes `user`.
    pub fn imap(self, s: &Stack, user: &str, pw_dir: &Path, tls: &str) -> Region {
        self.imap_with_password(s, user, pw_dir, tls, &password(user))
    }

    /// [`Region::imap`] with another password (a wrong one, to test a failing login).
    pub fn imap_with_password(
        mut self,
        s: &Stack,
        user: &str,
        pw_dir: &Path,
        tls: &str,
        pass: &str,
    ) -> Region {
        let pw = pw_dir.join(format!("{user}.pass"));
        std::fs::write(&pw, format!("{pass}\n")).expect("password file");
        let (host, port) = match tls {
            "implicit" => ("localhost", s.imaps_port),
            "starttls" => ("localhost", s.imap_port),
            _ => ("127.0.0.1", s.imap_port),
        };
        self.address = user.to_string();
        // A stack without MOVE may be a bare IMAP4rev1 server without IDLE too: poll it often.
        let poll = if s.moves { "60s" } else { "1s" };
        self.intake = Some(format!(
            "kind = \"imap\"\nhost = \"{host}\"\nport = {port}\ntls = {}\nusername = {}\npassword_file = {}\nca_file = {}\npoll_interval = \"{poll}\"\n",
            q(tls),
            q(user),
            qp(&pw),
            qp(&s.ca_pem)
        ));
        self
    }

    /// More `[region.intake]` lines (`mailboxes = […]`, `after = "move:Processed"`, `reconnect_max`, …).
    pub fn intake(mut self, lines: &str) -> Region {
        if lines.is_empty() {
            return self;
        }
        let intake = self.intake.get_or_insert_with(String::new);
        intake.push_str(lines);
        if !lines.ends_with('\n') {
            intake.push('\n');
        }
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
        }
        text
    }
}
