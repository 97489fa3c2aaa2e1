//! `postdesk run`: start every part, supervise, reload, stop cleanly.
//!
//! The daemon holds one [`Store`] for its whole life (sled lets one process open it) and runs *generations*
//! on it. A generation is one configuration at work: the [`Desk`] built from it (config, compiled templates)
//! and the tasks using that desk (one intake task per region or IMAP mailbox, the scheduler, the control
//! socket, the outbox worker), all spawned on the generation's [`TaskTracker`] with the generation's
//! [`CancellationToken`], a child of the daemon's `shutdown` token.
//!
//! - **SIGTERM/SIGINT** cancel `shutdown`, hence every generation: each task finishes what it holds (the
//!   batch in flight is stored and acknowledged at its source, the send in progress is recorded), the store
//!   is flushed, and `postdesk run` exits 0.
//! - **SIGHUP** ([`Daemon::reload`]) reads the config file again and builds the next generation's desk
//!   *before* touching the running one: a file that does not parse, a key that does not validate, a template
//!   that does not compile, or a changed `[storage] path` rejects the reload with an error log line, and the
//!   old generation keeps running untouched. Only a good config stops the old generation (its tasks finish
//!   their work in flight, as at shutdown) and starts the new one on the same store.
//!
//! The health and metrics listener (`[http]`) and the [`Telemetry`] it serves belong to the daemon, not to a
//! generation: counters and intake health carry on across reloads, and the port is bound once, at start
//! (a changed `[http]` needs a restart).
//!
//! Under systemd (`Type=notify`) the main loop ([`Daemon::serve`]) also reports to the service manager
//! through [`crate::notify`]: `READY=1`, a `STATUS=` line, `WATCHDOG=1` pings, `RELOADING=1` and
//! `STOPPING=1`.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError, IntakeConfig};
use crate::http;
use crate::intake::maildir;
use crate::notify::Notifier;
use crate::outbound::transport::{Transport, TransportError};
use crate::outbound::worker;
use crate::service::{Desk, DeskError};
use crate::store::{Storage, Store, StoreError};
use crate::telemetry::{IntakeState, Telemetry};

/// How often the status line is recomputed in any case (and sent to systemd when it changed), for the
/// outbox count; a change of an intake's state is sent at once ([`Telemetry::intake_changed`]).
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Desk(#[from] DeskError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Http(#[from] http::BindError),
    /// A template override breaks its event's contract (`check-config` says the same): refused at start, so
    /// that no customer's mail meets it at run time.
    #[error(transparent)]
    Templates(#[from] crate::outbound::render::RenderError),
}

/// Why a reload was rejected. The running configuration stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("config key `storage.path` changed from {old} to {new}: the store cannot move while postdesk runs; restart postdesk to use the new path")]
    StorageMoved { old: String, new: String },
    #[error("[http] changed: the health and metrics listener is bound once, at start; restart postdesk to apply it")]
    HttpChanged,
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Desk(#[from] DeskError),
    #[error("templates: {0}")]
    Templates(#[from] crate::outbound::render::RenderError),
    #[error("shutting down")]
    ShuttingDown,
}

/// The running daemon: the store, and the generation at work on it.
pub struct Daemon {
    /// The desk of the running generation; a reload replaces it.
    pub desk: Arc<Desk>,
    /// Cancelled on SIGTERM/SIGINT: ends every generation.
    pub shutdown: CancellationToken,
    generation: Generation,
    /// The health and metrics listener's task, when `[http]` is configured; it outlives generations.
    http: TaskTracker,
    /// Where `/healthz` and `/metrics` answer, when `[http]` is configured.
    pub http_addr: Option<std::net::SocketAddr>,
    /// systemd's notification socket (set by [`Daemon::serve`]; silent otherwise).
    notifier: Notifier,
    /// How often systemd wants `WATCHDOG=1`, if at all.
    watchdog: Option<Duration>,
}

/// The tasks of one configuration: started together, stopped together.
struct Generation {
    number: u64,
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Daemon {
    /// Open the store, compile templates, set up the transport and start the first generation.
    pub fn start(config: Config, shutdown: CancellationToken) -> Result<Daemon, StartError> {
        for w in config.warnings() {
            tracing::warn!("{w}");
        }
        let transport = Transport::from_config(&config.outbound)?;
        let store = Arc::new(Store::open_waiting(
            &config.storage.path,
            Duration::from_secs(30),
        )?);
        // Created once per process and handed to every desk, so it survives reloads.
        let telemetry = Arc::new(Telemetry::new());
        let desk = Arc::new(Desk::with_telemetry(config, store, telemetry.clone())?);
        // The same test as `check-config` and reload: every template renders its event's sample and uses
        // only its event's variables.
        desk.composer.renderer.self_test()?;
        // Bound before any task starts: a taken port fails the start, with nothing left running.
        let listening = desk.config.http.as_ref().map(http::bind).transpose()?;
        let http_addr = listening.as_ref().map(|l| l.addr);
        let http = TaskTracker::new();
        if let (Some(listening), Some(cfg)) = (listening, &desk.config.http) {
            http.spawn(http::serve(
                listening,
                telemetry,
                desk.store.clone(),
                cfg.unhealthy_after.0,
                shutdown.clone(),
            ));
        }
        http.close();
        let generation = spawn_generation(1, &desk, transport, &shutdown);
        Ok(Daemon {
            desk,
            shutdown,
            generation,
            http,
            http_addr,
            notifier: Notifier::default(),
            watchdog: None,
        })
    }

    /// Reload the config file at `path`: validate it and build the next desk on the same store, and only
    /// then stop the running generation (its work in flight is finished) and start the next one. On error
    /// nothing has changed.
    pub async fn reload(&mut self, path: &Path) -> Result<(), ReloadError> {
        let config = Config::load(path)?;
        for w in config.warnings() {
            tracing::warn!("{w}");
        }
        let old_path = &self.desk.config.storage.path;
        if config.storage.path.components().ne(old_path.components()) {
            return Err(ReloadError::StorageMoved {
                old: old_path.display().to_string(),
                new: config.storage.path.display().to_string(),
            });
        }
        if config
            .http
            .as_ref()
            .map(|h| (&h.listen, h.allow_remote, h.unhealthy_after))
            != self
                .desk
                .config
                .http
                .as_ref()
                .map(|h| (&h.listen, h.allow_remote, h.unhealthy_after))
        {
            return Err(ReloadError::HttpChanged);
        }
        let transport = Transport::from_config(&config.outbound)?;
        // `check-config` runs the same test: every template renders with sample data. Done before the desk
        // is built, because building it re-registers the regions in the shared telemetry.
        crate::outbound::render::Renderer::load(config.outbound.templates_dir.as_deref())
            .map_err(DeskError::from)?
            .self_test()?;
        let desk = Arc::new(Desk::with_telemetry(
            config,
            self.desk.store.clone(),
            self.desk.telemetry.clone(),
        )?);

        self.generation.stop.cancel();
        pinging(
            &self.notifier,
            self.watchdog,
            self.generation.tracker.wait(),
        )
        .await;
        if self.shutdown.is_cancelled() {
            return Err(ReloadError::ShuttingDown);
        }
        self.generation =
            spawn_generation(self.generation.number + 1, &desk, transport, &self.shutdown);
        self.desk = desk;
        Ok(())
    }

    /// Wait for every task to finish (after `shutdown` is cancelled), then flush the store.
    pub async fn wait(self) -> Result<(), StoreError> {
        self.generation.tracker.wait().await;
        self.http.wait().await;
        self.desk.store.flush_async().await
    }

    /// The main loop of `postdesk run`: tell systemd the daemon is ready, reload on SIGHUP, feed the
    /// watchdog, keep the status line current; on shutdown finish the work in flight and flush the store.
    pub async fn serve(mut self, config_path: &Path, notifier: Notifier) -> Result<(), StoreError> {
        let mut hangup = hangup_signal();
        let watchdog = crate::notify::watchdog_interval();
        self.notifier = notifier;
        self.watchdog = watchdog;
        let mut watchdog_tick =
            tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        let mut status_tick = tokio::time::interval(STATUS_EVERY);
        status_tick.reset(); // the first status goes with READY=1, below
        let mut status = status_of(&self.desk);
        self.notifier.ready(&status);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = next_hangup(&mut hangup) => {
                    tracing::info!(config = %config_path.display(), "SIGHUP: reloading the configuration");
                    self.notifier.reloading();
                    match self.reload(config_path).await {
                        Ok(()) => {
                            let regions: Vec<&str> = self.desk.config.region.iter().map(|r| r.code.as_str()).collect();
                            tracing::info!(generation = self.generation.number, regions = %regions.join(","), "configuration reloaded");
                        }
                        Err(ReloadError::ShuttingDown) => break,
                        Err(e) => tracing::error!("reload rejected: {e}; still running the previous configuration (fix the file, then reload again)"),
                    }
                    status = status_of(&self.desk);
                    self.notifier.ready(&status);
                }
                _ = watchdog_tick.tick(), if watchdog.is_some() => self.notifier.watchdog(),
                // Issue 16: STATUS lagged the regions by up to a refresh period (and said "starting"
                // well after the first scan). Only the regions are looked at here: cheap, however
                // often an IMAP intake goes from connected to idle and back.
                _ = self.desk.telemetry.intake_changed() => {
                    let regions = region_statuses(&self.desk.config, &self.desk.telemetry);
                    let same = status
                        .strip_prefix(&status_regions(&regions))
                        .is_some_and(|rest| rest.starts_with("; outbox"));
                    if !same {
                        let now = status_of(&self.desk);
                        self.notifier.status(&now);
                        status = now;
                    }
                }
                _ = status_tick.tick() => {
                    let now = status_of(&self.desk);
                    if now != status {
                        self.notifier.status(&now);
                        status = now;
                    }
                }
            }
        }
        self.notifier.stopping();
        pinging(&self.notifier, watchdog, self.generation.tracker.wait()).await;
        pinging(&self.notifier, watchdog, self.http.wait()).await;
        self.desk.store.flush_async().await
    }
}

/// Start the tasks of generation `number` on `desk`.
fn spawn_generation(
    number: u64,
    desk: &Arc<Desk>,
    transport: Transport,
    shutdown: &CancellationToken,
) -> Generation {
    let stop = shutdown.child_token();
    let tracker = TaskTracker::new();
    for region in &desk.config.region {
        match &region.intake {
            Some(IntakeConfig::Maildir(m)) => {
                tracker.spawn(maildir::run(
                    desk.clone(),
                    region.clone(),
                    m.clone(),
                    stop.clone(),
                ));
            }
            Some(IntakeConfig::Imap(imap)) => {
                crate::intake::imap::spawn(desk, region, imap, &tracker, &stop);
            }
            None => {
                tracing::info!(region = %region.code, "no intake configured: mail arrives through `postdesk ingest`")
            }
        }
    }
    tracker.spawn(crate::schedule::run(desk.clone(), stop.clone()));
    tracker.spawn(crate::control::serve(
        desk.clone(),
        crate::control::socket_path(&desk.config),
        stop.clone(),
    ));
    let transport = Arc::new(transport);
    tracker.spawn(crate::alerts::run(
        desk.clone(),
        transport.clone(),
        stop.clone(),
    ));
    tracker.spawn(worker::run(
        desk.store.clone(),
        transport,
        worker::RetryPolicy::from_config(&desk.config.outbound),
        desk.config.outbound.concurrency,
        desk.telemetry.clone(),
        stop.clone(),
    ));
    tracker.close();
    Generation {
        number,
        tracker,
        stop,
    }
}

/// Await `fut`, sending `WATCHDOG=1` meanwhile: stopping a generation waits for work in flight, which
/// must not look like a hang to systemd.
async fn pinging<F: Future>(notifier: &Notifier, watchdog: Option<Duration>, fut: F) -> F::Output {
    let Some(every) = watchdog else {
        return fut.await;
    };
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = tokio::time::sleep(every) => notifier.watchdog(),
        }
    }
}

/// One region's part of the status line: its code and what its intake is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionStatus {
    pub code: String,
    pub state: String,
}

/// The line `systemctl status postdesk` shows, e.g. `JP: imap, KR: maildir; outbox 3 queued`. Pure, so
/// a richer source of region states (live intake health) can feed it unchanged.
pub fn status_line(regions: &[RegionStatus], outbox_queued: usize) -> String {
    format!("{}; outbox {outbox_queued} queued", status_regions(regions))
}

/// The regions' part of [`status_line`], up to the `;`.
fn status_regions(regions: &[RegionStatus]) -> String {
    if regions.is_empty() {
        "no regions".to_string()
    } else {
        regions
            .iter()
            .map(|r| format!("{}: {}", r.code, r.state))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Each region's intake kind and, from the live health registry, what it is doing: `imap ok`,
/// `imap failing (auth)`, `maildir starting`, `pipe` (mail arrives through `postdesk ingest`).
pub fn region_statuses(config: &Config, telemetry: &Telemetry) -> Vec<RegionStatus> {
    let intakes = telemetry.intakes();
    config
        .region
        .iter()
        .map(|r| {
            let kind = match &r.intake {
                Some(IntakeConfig::Imap(_)) => "imap",
                Some(IntakeConfig::Maildir(_)) => "maildir",
                None => "pipe",
            };
            let mine: Vec<_> = intakes.iter().filter(|i| i.region == r.code).collect();
            let state = if let Some(f) = mine.iter().find(|i| i.state == IntakeState::Failing) {
                format!(
                    "{kind} failing ({})",
                    f.last_error.as_deref().unwrap_or("error")
                )
            } else if mine.iter().any(|i| i.state == IntakeState::Starting) {
                format!("{kind} starting")
            } else if mine.is_empty() {
                kind.to_string()
            } else {
                format!("{kind} ok")
            };
            RegionStatus {
                code: r.code.clone(),
                state,
            }
        })
        .collect()
}

fn status_of(desk: &Desk) -> String {
    status_line(
        &region_statuses(&desk.config, &desk.telemetry),
        desk.store.outbox_queued(),
    )
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

/// Listen for SIGHUP (`systemctl reload postdesk`). Without a handler, a SIGHUP would kill the daemon.
fn hangup_signal() -> Hangup {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("cannot install the SIGHUP handler ({e}); to apply a new configuration, restart postdesk");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

/// Keep an early SIGHUP (a reload asked for while the store is still being opened) from killing the
/// daemon, which is the signal's default action. tokio leaves its handler installed for the life of the
/// process once one listener was made; [`Daemon::serve`] listens from then on (a SIGHUP before that is
/// dropped: the config was read moments ago).
pub fn survive_early_hangup() {
    drop(hangup_signal());
}

async fn next_hangup(hangup: &mut Hangup) {
    #[cfg(unix)]
    if let Some(s) = hangup {
        if s.recv().await.is_some() {
            return;
        }
    }
    #[cfg(not(unix))]
    let _ = hangup;
    std::future::pending::<()>().await
}

/// Cancel `token` on SIGTERM or SIGINT.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                tracing::error!(
                    "cannot install signal handlers; stop postdesk with SIGKILL only if you must"
                );
                return;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: finishing work in flight, then stopping"),
                _ = int.recv() => tracing::info!("SIGINT: finishing work in flight, then stopping"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        token.cancel();
    });
}

/// Have glibc's malloc use one arena for every thread. By default it gives each thread that allocates its
/// own arena (up to 8 per core), and sled's I/O threads, tokio's blocking pool (the intake's parse-and-store
/// step) and the runtime's workers each keep freed memory in theirs: the daemon's peak RSS on a
/// 10,000-mail mailbox was 468 MiB with the default and 191 MiB with one arena, at the same intake speed
/// (`benches/daemon.rs`, BENCHMARKS.md). `MALLOC_ARENA_MAX` in the environment still wins. Call it first in
/// `main`, before any thread is started; elsewhere (musl, other systems) it does nothing.
pub fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a parameter of the allocator; it is called before any other thread
        // exists, so nothing allocates concurrently.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{TestConfig, TestRegion};

    fn region(code: &str, state: &str) -> RegionStatus {
        RegionStatus {
            code: code.into(),
            state: state.into(),
        }
    }

    #[test]
    fn status_line_names_each_region_and_the_queue() {
        assert_eq!(
            status_line(&[region("JP", "imap"), region("KR", "maildir")], 3),
            "JP: imap, KR: maildir; outbox 3 queued"
        );
        assert_eq!(status_line(&[], 0), "no regions; outbox 0 queued");
    }

    #[test]
    fn region_statuses_name_the_intake_kind() {
        let config = TestConfig::new(Path::new("/tmp/x"))
            .region(TestRegion::jp().intake("kind = \"maildir\"\npath = \"/tmp/x/jp\""))
            .region(TestRegion::kr())
            .parse();
        let telemetry = Telemetry::new();
        telemetry.configure(&config);
        assert_eq!(
            region_statuses(&config, &telemetry),
            vec![region("JP", "maildir starting"), region("KR", "pipe")]
        );
        telemetry.intake_ok("JP", "/tmp/x/jp", chrono::Utc::now());
        assert_eq!(region_statuses(&config, &telemetry)[0].state, "maildir ok");
        telemetry.intake_failed("JP", "/tmp/x/jp", "maildir", chrono::Utc::now());
        assert_eq!(
            region_statuses(&config, &telemetry)[0].state,
            "maildir failing (maildir)"
        );
    }
}
