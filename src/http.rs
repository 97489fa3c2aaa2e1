//! The health and metrics endpoint (`[http] listen`): `GET /healthz` and `GET /metrics`.
//!
//! Off unless the config has an `[http]` table; on loopback unless `allow_remote = true` (the endpoints carry
//! no authentication and `/healthz` names the regions). Both answers are computed per request from the
//! shared [`Telemetry`] and the store, on the blocking pool, because they read the store:
//!
//! - `/healthz`: JSON `{status, regions: [{region, mailbox, state, last_ok, failing_since, last_error}],
//!   outbox: {queued, failed}}`; 200 while healthy, 503 when an intake has been failing for
//!   `unhealthy_after` or longer (see [`crate::telemetry::unhealthy`]) or the store cannot be read;
//! - `/metrics`: the OpenMetrics text exposition of every postdesk metric.
//!
//! The listener is bound by [`bind`] while the daemon starts, so that a taken port is a startup error that
//! names the address, not a log line nobody reads; [`serve`] then runs until the shutdown token fires.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::HttpConfig;
use crate::store::{Storage, Store};
use crate::telemetry::{unhealthy, IntakeHealth, Telemetry};

/// The content type `prometheus-client`'s text encoder produces.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long open connections may delay shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Why the listener could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (config key http.listen): {source}; choose a free address and port in [http] listen, or remove [http] to run without health and metrics")]
pub struct BindError {
    pub addr: String,
    #[source]
    pub source: std::io::Error,
}

/// A bound, not yet serving, listener.
pub struct Listening {
    listener: tokio::net::TcpListener,
    /// The address actually bound (the port is known even when the config said 0).
    pub addr: SocketAddr,
}

/// Bind `[http] listen`. Must run inside a tokio runtime.
pub fn bind(config: &HttpConfig) -> Result<Listening, BindError> {
    let err = |source| BindError {
        addr: config.listen.clone(),
        source,
    };
    let wanted: SocketAddr = match config.addr {
        Some(a) => a,
        None => config.listen.trim().parse().map_err(|_| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not an IP address and port",
            ))
        })?,
    };
    let std_listener = std::net::TcpListener::bind(wanted).map_err(err)?;
    std_listener.set_nonblocking(true).map_err(err)?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    Ok(Listening { listener, addr })
}

#[derive(Clone)]
struct AppState {
    telemetry: Arc<Telemetry>,
    store: Arc<Store>,
    unhealthy_after: Duration,
}

/// The `/healthz` body.
#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok` or `failing`.
    pub status: &'static str,
    pub regions: Vec<IntakeHealth>,
    /// `null` when the store could not be read (which also makes the status `failing`).
    pub outbox: Option<OutboxDepth>,
}

#[derive(Debug, Serialize)]
pub struct OutboxDepth {
    pub queued: u64,
    pub failed: u64,
}

/// Build the health answer: the HTTP status and the body.
pub fn health(
    telemetry: &Telemetry,
    store: &Store,
    unhealthy_after: Duration,
) -> (StatusCode, Health) {
    let regions = telemetry.intakes();
    let bad = !unhealthy(&regions, Utc::now(), unhealthy_after).is_empty();
    let outbox = match store.outbox_counts() {
        Ok(c) => Some(OutboxDepth {
            queued: c.queued,
            failed: c.failed,
        }),
        Err(e) => {
            tracing::error!("/healthz: cannot read the outbox: {e}");
            None
        }
    };
    let ok = !bad && outbox.is_some();
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Health {
            status: if ok { "ok" } else { "failing" },
            regions,
            outbox,
        },
    )
}

async fn healthz(State(s): State<AppState>) -> Response {
    let answer = tokio::task::spawn_blocking(move || {
        let (code, body) = health(&s.telemetry, &s.store, s.unhealthy_after);
        (code, serde_json::to_string(&body).unwrap_or_default())
    })
    .await;
    match answer {
        Ok((code, body)) => {
            (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    match tokio::task::spawn_blocking(move || s.telemetry.render(&s.store)).await {
        Ok(Ok(text)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::error!("/metrics: cannot read the store: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot read the store; see postdesk's log\n",
            )
                .into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Serve `/healthz` and `/metrics` on `listening` until `shutdown`; connections still open then get
/// [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    listening: Listening,
    telemetry: Arc<Telemetry>,
    store: Arc<Store>,
    unhealthy_after: Duration,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(AppState {
            telemetry,
            store,
            unhealthy_after,
        });
    let addr = listening.addr;
    tracing::info!(%addr, "health and metrics on http://{addr}/healthz and /metrics");
    let server = axum::serve(listening.listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        r = server => {
            if let Err(e) = r {
                tracing::error!(%addr, "health and metrics listener failed: {e}");
            }
        }
        _ = grace => tracing::debug!(%addr, "closing health and metrics connections still open"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_503_once_an_intake_fails_longer_than_the_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t = Telemetry::new();
        t.intake_ok("JP", "INBOX", Utc::now());
        let (code, body) = health(&t, &store, Duration::from_secs(60));
        assert_eq!((code, body.status), (StatusCode::OK, "ok"));
        assert_eq!(body.outbox.map(|o| (o.queued, o.failed)), Some((0, 0)));
        t.intake_failed(
            "KR",
            "INBOX",
            "auth",
            Utc::now() - chrono::Duration::seconds(30),
        );
        assert_eq!(
            health(&t, &store, Duration::from_secs(60)).0,
            StatusCode::OK
        );
        let (code, body) = health(&t, &store, Duration::from_secs(10));
        assert_eq!(
            (code, body.status),
            (StatusCode::SERVICE_UNAVAILABLE, "failing")
        );
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["regions"][1]["region"], "KR");
        assert_eq!(json["regions"][1]["state"], "failing");
        assert_eq!(json["regions"][1]["last_error"], "auth");
        assert!(json["regions"][0]["failing_since"].is_null());
    }
}
