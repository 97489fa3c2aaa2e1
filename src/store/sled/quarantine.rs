//! Quarantine: input that could not become a ticket, as a row in `quarantine` and its raw bytes in the
//! blob store, kept so nothing is lost in silence.

use chrono::Utc;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::apply::put_blob;
use super::keys::{from_json, to_json};
use super::{engine_error, Store};
use crate::store::{Quarantined, StoreError};

pub(super) fn add(
    store: &Store,
    region: &str,
    source: &str,
    reason: &str,
    raw: &[u8],
) -> Result<Quarantined, StoreError> {
    use sha2::{Digest, Sha256};
    store.check_writable()?;
    let sha = hex::encode(Sha256::digest(raw));
    let q = Quarantined {
        id: store.next_id(super::Ids::Quarantine)?,
        region: region.to_string(),
        source: source.to_string(),
        reason: reason.to_string(),
        size: raw.len() as u64,
        raw_sha256: sha.clone(),
        received_at: Utc::now(),
    };
    let blob_id = store.next_id(super::Ids::Blob)?;
    let _gate = store.write_gate();
    let h = store.h()?;
    (&h.blobs, &h.blob_data, &h.quarantine)
        .transaction(|(blobs, blob_data, quarantine)| {
            put_blob::<()>(blobs, blob_data, &sha, raw, blob_id)?;
            quarantine.insert(&q.id.to_be_bytes(), to_json(&q))?;
            Ok::<_, ConflictableTransactionError<()>>(())
        })
        .map_err(|e| match e {
            TransactionError::Storage(e) => engine_error(e),
            TransactionError::Abort(()) => StoreError::Conflict("quarantine".into()),
        })?;
    Ok(q)
}

pub(super) fn list(store: &Store) -> Result<Vec<Quarantined>, StoreError> {
    store
        .h()?
        .quarantine
        .iter()
        .values()
        .map(|v| from_json("quarantine", &v.map_err(engine_error)?))
        .collect()
}
