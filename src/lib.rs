//! postdesk: an email helpdesk daemon. Customers write to a support address per region; every mail becomes
//! or joins a ticket (`JP-1042`), customers get the number to quote, agents answer from their mail client.
//!
//! The crate is a functional core inside an imperative shell:
//! - [`mail`] turns raw bytes into one decoded [`mail::Inbound`] and classifies it (pure);
//! - [`desk`] decides what a mail changes: which ticket, which status, what to send (pure);
//! - [`store`] commits a decision in one sled transaction;
//! - [`service`] is the one application service: read what a decision needs → decide → render → commit;
//! - [`intake`] brings mail in (IMAP, Maildir, the MTA pipe) and acknowledges it only once it is durable;
//! - [`outbound`] renders templates and delivers the outbox; [`schedule`] fires tickets' timers;
//! - [`telemetry`] gathers intake health and metrics, which [`http`] serves (`/healthz`, `/metrics`);
//! - [`privacy`] exports and erases a customer's data and carries out retention;
//! - [`daemon`] runs, reloads and stops it all, reporting to systemd through [`notify`]; [`control`] lets commands reach a running daemon; [`config`] is the TOML file; [`cli`] is what `postdesk` prints.

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
