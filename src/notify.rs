//! Telling systemd how the daemon is doing: the `sd_notify(3)` protocol, without libsystemd.
//!
//! A unit with `Type=notify` starts postdesk with `$NOTIFY_SOCKET` naming a Unix datagram socket; the
//! daemon sends newline-separated `KEY=VALUE` assignments to it:
//!
//! - `READY=1` once the store is open and the intake tasks run (until then `systemctl start` waits, and
//!   units ordered after postdesk wait too);
//! - `STATUS=…` a one-line summary shown by `systemctl status postdesk`;
//! - `WATCHDOG=1` regularly when the unit sets `WatchdogSec=`: if the pings stop, systemd kills and
//!   restarts the daemon (`Restart=on-failure`);
//! - `RELOADING=1` … `READY=1` around a SIGHUP reload, and `STOPPING=1` when shutting down.
//!
//! The protocol is small enough that a dependency would add more than it saves: one datagram per message,
//! to a path (`/run/systemd/notify`) or an abstract-namespace name (a leading `@`). Outside systemd
//! (`$NOTIFY_SOCKET` unset) every call is a no-op, so the daemon behaves the same under a terminal.
//!
//! The other half of knowing systemd lives here too: [`sandbox_hint`], what to tell an admin when a write
//! fails in the way the unit's sandbox makes it fail (`ProtectSystem=strict` leaves only
//! `ReadWritePaths=` writable, and the service user owns little), so that every module that writes outside
//! the store words it the same.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A handle on systemd's notification socket; does nothing when postdesk is not started by systemd.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// The socket named by `$NOTIFY_SOCKET`, if any. An address postdesk cannot use (a `vsock:` one, say)
    /// is logged once and ignored: notifications are a courtesy, never a reason not to run.
    pub fn from_env() -> Notifier {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Notifier::default(),
            Some(name) => match Notifier::connect(&name.to_string_lossy()) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("cannot use $NOTIFY_SOCKET: {e}; systemd will not hear from postdesk (use Type=simple, or fix the unit)");
                    Notifier::default()
                }
            },
        }
    }

    /// A notifier sending to `name`: an absolute path, or `@name` for an abstract-namespace socket.
    pub fn connect(name: &str) -> io::Result<Notifier> {
        let addr = socket_addr(name)?;
        let socket = UnixDatagram::unbound()?;
        // systemd reads its socket promptly; a stuck one must not stall the daemon's main loop.
        socket.set_write_timeout(Some(Duration::from_secs(1)))?;
        Ok(Notifier {
            target: Some((socket, addr)),
        })
    }

    /// Whether a notification socket is configured.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Send `fields` as one notification. Errors are logged at debug level and otherwise ignored: systemd
    /// going away (at shutdown) is no reason to fail.
    pub fn send(&self, fields: &[(&str, &str)]) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        let message = message(fields);
        if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
            tracing::debug!("sd_notify {message:?} failed: {e}");
        }
    }

    /// `READY=1` with the current status line.
    pub fn ready(&self, status: &str) {
        self.send(&[("READY", "1"), ("STATUS", status)]);
    }

    /// `RELOADING=1`: a reload has started; `ready` ends it.
    pub fn reloading(&self) {
        self.send(&[
            ("RELOADING", "1"),
            ("STATUS", "reloading the configuration"),
        ]);
    }

    /// `STOPPING=1`: shutdown has started.
    pub fn stopping(&self) {
        self.send(&[
            ("STOPPING", "1"),
            ("STATUS", "stopping: finishing work in flight"),
        ]);
    }

    /// `STATUS=…` alone.
    pub fn status(&self, status: &str) {
        self.send(&[("STATUS", status)]);
    }

    /// `WATCHDOG=1`: still alive.
    pub fn watchdog(&self) {
        self.send(&[("WATCHDOG", "1")]);
    }
}

/// The address for a `$NOTIFY_SOCKET` value.
fn socket_addr(name: &str) -> io::Result<SocketAddr> {
    if let Some(abstract_name) = name.strip_prefix('@') {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use std::os::linux::net::SocketAddrExt;
            return SocketAddr::from_abstract_name(abstract_name.as_bytes());
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = abstract_name;
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract sockets exist on Linux only",
            ));
        }
    }
    if name.starts_with('/') {
        return SocketAddr::from_pathname(name);
    }
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{name:?} is neither an absolute path nor an @abstract name"),
    ))
}

/// What to add to an error about writing `dir` that failed with `error`, when the cause is one the unit's
/// sandbox (or the service user's permissions) gives: a read-only file system (everything outside
/// `ReadWritePaths=` under `ProtectSystem=strict`) or a permission denied. Empty for other errors. It starts
/// with `"; "`, to follow the error text.
pub fn sandbox_hint(error: &io::Error, dir: &std::path::Path) -> String {
    let dir = dir.display();
    match error.raw_os_error() {
        Some(libc::EROFS) => format!(
            "; {dir} is read-only for postdesk: under systemd (ProtectSystem=strict) list it in \
             ReadWritePaths= in a drop-in (systemctl edit postdesk: [Service] ReadWritePaths=-{dir}), then \
             systemctl restart postdesk"
        ),
        Some(libc::EACCES) | Some(libc::EPERM) => format!(
            "; the user postdesk may not write {dir}: give it the directory (chown postdesk) or its group \
             (group-writable, and SupplementaryGroups= in a drop-in), and under systemd make sure {dir} is \
             in ReadWritePaths= (systemctl edit postdesk)"
        ),
        _ => String::new(),
    }
}

/// One notification: `KEY=VALUE` lines. A value is one line by protocol, so line breaks in it (a status
/// built from an error message, say) become spaces.
pub fn message(fields: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (key, value) in fields {
        out.push_str(key);
        out.push('=');
        out.extend(
            value
                .chars()
                .map(|c| if c == '\n' || c == '\r' { ' ' } else { c }),
        );
        out.push('\n');
    }
    out
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises, when the
/// watchdog is on and meant for this process (`$WATCHDOG_PID` absent or ours).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_interval`] on explicit values.
pub fn watchdog_interval_from(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_key_value_lines_with_one_line_values() {
        assert_eq!(message(&[("READY", "1")]), "READY=1\n");
        assert_eq!(
            message(&[("READY", "1"), ("STATUS", "JP: imap\r\nfailing")]),
            "READY=1\nSTATUS=JP: imap  failing\n"
        );
        assert_eq!(message(&[]), "");
    }

    #[test]
    fn watchdog_interval_is_half_and_only_for_this_process() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_interval_from(Some("30000000"), None, 42), half);
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("42"), 42),
            half
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("43"), 42),
            None
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("x"), 42),
            None
        );
        assert_eq!(watchdog_interval_from(None, Some("42"), 42), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 42), None);
    }

    #[test]
    fn sandbox_hints_name_the_directory_and_read_write_paths() {
        let dir = std::path::Path::new("/var/mail/support-kr");
        let rofs = sandbox_hint(&io::Error::from_raw_os_error(libc::EROFS), dir);
        assert!(
            rofs.starts_with("; /var/mail/support-kr is read-only"),
            "{rofs}"
        );
        assert!(
            rofs.contains("ReadWritePaths=-/var/mail/support-kr"),
            "{rofs}"
        );
        let denied = sandbox_hint(&io::Error::from_raw_os_error(libc::EACCES), dir);
        assert!(
            denied.contains("ReadWritePaths=") && denied.contains("SupplementaryGroups="),
            "{denied}"
        );
        assert_eq!(
            sandbox_hint(&io::Error::from_raw_os_error(libc::ENOSPC), dir),
            ""
        );
    }

    #[test]
    fn unusable_addresses_are_refused() {
        assert!(Notifier::connect("relative/path").is_err());
        assert!(Notifier::connect("vsock:2:1234").is_err());
        assert!(!Notifier::default().is_enabled());
        Notifier::default().ready("nothing happens"); // a no-op, not a panic
    }

    fn recv(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::connect(path.to_str().unwrap()).unwrap();
        assert!(n.is_enabled());
        n.ready("JP: maildir");
        assert_eq!(recv(&server), "READY=1\nSTATUS=JP: maildir\n");
        n.watchdog();
        assert_eq!(recv(&server), "WATCHDOG=1\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("postdesk-notify-test-{}", std::process::id());
        let server =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let n = Notifier::connect(&format!("@{name}")).unwrap();
        n.stopping();
        assert_eq!(
            recv(&server),
            "STOPPING=1\nSTATUS=stopping: finishing work in flight\n"
        );
    }
}
