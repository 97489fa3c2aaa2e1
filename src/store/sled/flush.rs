//! Durability: the flusher thread and its group commit ([`flush_async`]), and what happens when a flush
//! fails (the store refuses everything until restarted: see [`Store::check_writable`]).

use std::sync::{Arc, Mutex};

use super::{engine_error, Store};
use crate::store::StoreError;

/// Make everything committed so far durable.
///
/// Every caller's request goes to the store's flusher thread, which runs one sled flush at a time and
/// answers all requests that arrived meanwhile with the next one (a group commit, which covers their
/// writes). Why not call sled's `flush_async` from each task: in sled 0.34 its futures, polled at about
/// the same time from several tasks, are sometimes never woken (spacejam/sled#1241, #1308), and postdesk
/// flushes from intake, outbox and scheduler at once; the fault tests hung on it, control socket
/// included. Why not sled's blocking `flush` on tokio's blocking pool: running the flush on threads
/// other than sled's own raised the peak RSS of the IMAP ingest benchmark from 170 to 543 MiB (281 on
/// one dedicated thread). So the flusher thread still has sled's threads do the flush and only waits,
/// alone, re-polling once a second should a wake-up be lost.
pub(super) async fn flush_async(store: &Store) -> Result<(), StoreError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sent = store.flusher.as_ref().map(|f| {
        f.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(tx)
    });
    let result = match (sent, rx.await) {
        (Some(Ok(())), Ok(r)) => r,
        _ => Err(sled::Error::ReportableBug(
            "the store's flusher thread is gone".into(),
        )),
    };
    result.map_err(|e| flush_failed(store, e))?;
    Ok(())
}

/// sled's blocking flush, for one-shot work outside the daemon's tasks (a restore).
pub(super) fn flush_blocking(store: &Store) -> Result<(), StoreError> {
    store.h()?.db.flush().map_err(|e| flush_failed(store, e))?;
    Ok(())
}

/// Remember that a flush failed: from now on [`Store::check_writable`] refuses.
fn flush_failed(store: &Store, e: sled::Error) -> StoreError {
    let why = e.to_string();
    tracing::error!("the store could not write to disk: {why}; postdesk stops storing, sending and acknowledging until it is restarted (check free space and the disk of storage.path)");
    *store.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    engine_error(e)
}

/// The store's flusher: one thread running sled's blocking flush for every [`flush_async`] caller.
pub(super) struct Flusher {
    requests: Mutex<std::sync::mpsc::Sender<FlushRequest>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type FlushRequest = tokio::sync::oneshot::Sender<sled::Result<()>>;

impl Flusher {
    /// The thread flushes whichever database the slot holds when a request arrives (a compaction may
    /// have swapped it; the swap itself flushes the new one before it is put in).
    pub(super) fn start(slot: super::Slot) -> Flusher {
        let (tx, rx) = std::sync::mpsc::channel::<FlushRequest>();
        let thread = std::thread::Builder::new()
            .name("postdesk-flush".into())
            .spawn(move || {
                // Ends when the store (the only sender) is dropped.
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    // sled's own flush runs on sled's threads (its memory stays there); this thread only
                    // waits for it, and being the only caller, never meets the wake-up race.
                    let handle = slot.read().unwrap_or_else(|p| p.into_inner()).clone();
                    let result = match handle {
                        Some(h) => block_on(h.db.flush_async()).map(|_| ()),
                        None => Err(sled::Error::ReportableBug(
                            "the store could not be reopened after a compaction".into(),
                        )),
                    };
                    for w in waiting {
                        let _ = w.send(result.clone());
                    }
                }
            })
            .ok();
        Flusher {
            requests: Mutex::new(tx),
            thread,
        }
    }
}

/// Run a future to completion on this thread (the flusher has nothing else to do meanwhile).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        // A timeout as well as the wake-up: a lost wake-up costs a second, not a hang.
        std::thread::park_timeout(std::time::Duration::from_secs(1));
    }
}

impl Drop for Store {
    /// Stop the flusher thread and wait for it, so that the store's files are released when the store is
    /// dropped (a test or a restore may open the same path right after).
    fn drop(&mut self) {
        if let Some(mut f) = self.flusher.take() {
            drop(f.requests);
            if let Some(t) = f.thread.take() {
                let _ = t.join();
            }
        }
    }
}
