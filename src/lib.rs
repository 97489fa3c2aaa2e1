//! postdesk: an email helpdesk daemon. Customers write to a support address per region; every mail becomes
//! or joins a ticket (`JP-1042`), customers get the number to quote, agents answer from their mail client.
//!
//! # The flow
//! ```text
//!  intake::{imap, maildir, pipe} ── raw bytes ──> mail::parse ── Inbound ──┐
//!  schedule (due timers), commands (CLI, control socket) ───────────────────┤
//!                                                                           v
//!  service::Desk:  read what the decision needs (store::Lookup, inside store.write(|tx| …))
//!                  → desk::decide / desk::timers::on_timer / desk::decide::set_status   (pure, typed)
//!                  → outbound::compose (render the typed replies; a failing template is a failed row)
//!                  → tx.commit(Change)   (ticket, messages, indexes, outbox rows, timers, intake cursor)
//!  the source acknowledges only after store.flush_async()
//!  outbound::worker: outbox rows ──> transport (SMTP | sendmail | file) ──> sent / retry / failed
//! ```
//!
//! # The layers (lowest first; imports point down only, checked by `tests/layers.rs`)
//! - [`types`], [`notify`]: shared vocabulary (ids, locale, priority, status) and the sd_notify protocol: leaves.
//! - [`config`]: the TOML file, validated once into settings (zones parsed, region timers merged, secrets loaded).
//! - [`logging`]: log output for a terminal or journald.
//! - [`mail`]: bytes → one decoded [`mail::Inbound`]; classification, quoting, redaction (pure).
//! - [`desk`]: the pure decisions: threading, lifecycle, agent commands, timers, typed replies with an audience.
//! - [`store`]: the storage interface (`Lookup`, `Tx`, `Storage`) and the sled engine behind it.
//! - [`telemetry`]: intake health and the Prometheus counters.
//! - [`outbound`]: templates and their typed contract, transports, the outbox worker, limits, Message-IDs.
//! - [`service`]: the one application service (read → decide → render → commit).
//! - [`intake`] (sources only), [`schedule`], [`privacy`], [`stats`], [`http`], [`alerts`]: the shell around the service.
//! - [`commands`]: what the CLI and the control socket both execute; [`control`]: the versioned socket.
//! - [`daemon`]: runs, reloads and stops it all; [`demo`]: the embedded default; [`cli`]: the command line.
//!
//! ARCHITECTURE.md in the repository holds the contracts (ids, statuses, threading, CLI, JSON, config, exit
//! codes) and the reasons behind this shape.

pub mod alerts;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod desk;
pub mod http;
pub mod intake;
pub mod logging;
pub mod mail;
pub mod notify;
pub mod outbound;
pub mod privacy;
pub mod schedule;
pub mod service;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod types;
