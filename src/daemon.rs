//! `postdesk run`: start every part, supervise, stop cleanly.
//!
//! Each part (one intake task per region, the outbox worker) takes the shared [`Desk`] and a
//! [`CancellationToken`]; SIGTERM or SIGINT cancels the token, every part finishes what it holds (the batch
//! in flight, the send in progress), and the store is flushed before the process exits.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, IntakeConfig};
use crate::http;
use crate::intake::{maildir, Desk};
use crate::outbound::transport::Transport;
use crate::outbound::worker;
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Desk(#[from] crate::intake::DeskError),
    #[error(transparent)]
    Transport(#[from] crate::outbound::transport::TransportError),
    #[error(transparent)]
    Http(#[from] crate::http::BindError),
}

/// The running parts.
pub struct Daemon {
    pub desk: Arc<Desk>,
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
    /// Where `/healthz` and `/metrics` answer, when `[http]` is configured.
    pub http_addr: Option<std::net::SocketAddr>,
}

impl Daemon {
    /// Open the store, compile templates, set up the transport and start every task.
    pub fn start(config: Config, shutdown: CancellationToken) -> Result<Daemon, StartError> {
        let transport = Arc::new(Transport::from_config(&config.outbound)?);
        let store = Arc::new(Store::open_waiting(
            &config.storage.path,
            std::time::Duration::from_secs(30),
        )?);
        // Created once per process and handed to every Desk, so it survives config reloads.
        let telemetry = Arc::new(Telemetry::new());
        let desk = Arc::new(Desk::with_telemetry(config, store, telemetry.clone())?);
        // Bound before any task starts: a taken port fails the start, with nothing left running.
        let http = desk.config.http.as_ref().map(http::bind).transpose()?;
        let http_addr = http.as_ref().map(|l| l.addr);
        let tracker = TaskTracker::new();
        if let (Some(listening), Some(cfg)) = (http, &desk.config.http) {
            tracker.spawn(http::serve(
                listening,
                telemetry.clone(),
                desk.store.clone(),
                cfg.unhealthy_after.0,
                shutdown.clone(),
            ));
        }
        for region in &desk.config.region {
            match &region.intake {
                Some(IntakeConfig::Maildir(m)) => {
                    tracker.spawn(maildir::run(
                        desk.clone(),
                        region.clone(),
                        m.clone(),
                        shutdown.clone(),
                    ));
                }
                Some(IntakeConfig::Imap(imap)) => {
                    crate::intake::imap::spawn(&desk, region, imap, &tracker, &shutdown);
                }
                None => {
                    tracing::info!(region = %region.code, "no intake configured: mail arrives through `postdesk ingest`")
                }
            }
        }
        tracker.spawn(crate::schedule::run(desk.clone(), shutdown.clone()));
        tracker.spawn(crate::control::serve(
            desk.clone(),
            crate::control::socket_path(&desk.config),
            shutdown.clone(),
        ));
        tracker.spawn(worker::run(
            desk.store.clone(),
            transport,
            worker::RetryPolicy::from_config(&desk.config.outbound),
            desk.config.outbound.concurrency,
            telemetry,
            shutdown.clone(),
        ));
        tracker.close();
        Ok(Daemon {
            desk,
            tracker,
            shutdown,
            http_addr,
        })
    }

    /// Wait for every task to finish (after `shutdown` is cancelled), then flush the store.
    pub async fn wait(self) -> Result<(), crate::store::StoreError> {
        self.tracker.wait().await;
        self.desk.store.flush_async().await
    }
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
