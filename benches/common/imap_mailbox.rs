//! What the IMAP benches share (`imap_ingest`, `daemon`): a mailbox seeded with the corpus, a raw fetch of it
//! (the figure postdesk's intake is compared with), and their environment knobs. Included with `#[path]` by
//! benches that also include `tests/support` as `support`.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use postdesk::config::ImapIntake;
use postdesk::intake::imap::connect;

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Seed the mailbox by writing Maildir files directly (the fastest way; LMTP and APPEND are slower).
pub fn seed(
    stack: &crate::support::Stack,
    user: &str,
    mails: impl Iterator<Item = Vec<u8>>,
) -> usize {
    let mut total = 0;
    let new = stack
        .dir
        .join("mail")
        .join(user)
        .join("Maildir")
        .join("new");
    std::fs::create_dir_all(&new).expect("maildir");
    for (i, m) in mails.enumerate() {
        total += m.len();
        std::fs::write(
            new.join(format!("1700000000.M{i}P1.bench,S={}", m.len())),
            &m,
        )
        .expect("write");
    }
    let status = std::process::Command::new("chown")
        .arg("-R")
        .arg("dovecot:dovecot")
        .arg(stack.dir.join("mail").join(user))
        .status()
        .expect("chown");
    assert!(status.success());
    total
}

/// A raw `UID FETCH 1:* BODY.PEEK[]` of INBOX by the same IMAP library, doing nothing else: (time, mails, bytes).
pub async fn raw_fetch(cfg: &ImapIntake) -> (Duration, usize, u64) {
    let start = Instant::now();
    let mut s = connect(cfg).await.expect("connect");
    s.select("INBOX").await.expect("select");
    let (mut n, mut bytes) = (0usize, 0u64);
    {
        let mut stream = s
            .uid_fetch("1:*", "(UID BODY.PEEK[])")
            .await
            .expect("fetch");
        while let Some(item) = stream.next().await {
            let item = item.expect("item");
            bytes += item.body().map(|b| b.len() as u64).unwrap_or(0);
            n += 1;
        }
    }
    let took = start.elapsed();
    let _ = s.logout().await;
    (took, n, bytes)
}
