//! The task's changelog: its state as records of a compacted topic,
//! partition = task id, one key per piece of state.
//!
//! | key | value (`proto/cxpulse/state/v1/state.proto`) |
//! |---|---|
//! | `p/{customer_id}` | `Customer`: profile and de-duplication memory |
//! | `t/{ticket_id}` | `Ticket` (tombstone when forgotten) |
//! | `w/{window}/{pane_start}` | `Pane` counts (tombstone when dropped) |
//! | `a/{time}` | `ActiveDelta` (tombstone when gone) |
//! | `m` | `Meta`: input offsets included, flush number, watermark, window progress |
//! | `c/{flush}/{index}/{count}` | `WriteAheadChunk`: chunk `index` of a flush's records |
//!
//! Values are Protobuf rather than JSON: a restore reads every record of the
//! partition before the task may consume, and binary values are several times
//! smaller and faster to parse.
//!
//! [`Task::take_changelog`] returns what changed since the previous call
//! (never a full snapshot), meta last. The meta record names the input
//! offsets the state includes, so inputs replayed after a crash are skipped.
//! Timers are not stored: a restore rebuilds them from profiles and tickets.
//!
//! A flush is several records. Inside a Kafka transaction (exactly-once) they
//! become visible together; otherwise a crash can cut them short, and some keys
//! would hold the new state while the meta still names the old offsets, so the
//! replay would count those records twice. [`write_ahead()`] frames a flush so
//! that any prefix of it restores to the state before or after the flush: the
//! whole flush first as write-ahead chunks, then the per-key records (which
//! compaction keeps), then tombstones of the chunks. A restore applies a
//! complete batch newer than the meta record, and ignores an incomplete one
//! (none of its per-key records can have been written yet).
//!
//! [`Restorer`] applies records as they are read, oldest first: each record
//! holds the whole value of its key, so applying them in order leaves the
//! latest of each key (what compaction keeps) without first collecting them;
//! only write-ahead chunks and the meta record wait for the end.
//!
//! One file per job: this one holds the keys and the types every job shares;
//! `codec` converts values to and from Protobuf, `persist` takes a task's
//! changes as records, `restore` rebuilds a task from them, and `write_ahead`
//! frames a flush.
//!
//! [`Task::take_changelog`]: super::Task::take_changelog

mod codec;
mod persist;
mod restore;
mod write_ahead;

pub use restore::Restorer;
pub use write_ahead::{write_ahead, CHUNK_BYTES};

use crate::event::{CustomerId, TicketId};

/// A changelog record: key, and value or `None` for a tombstone.
pub type ChangeRecord = (Vec<u8>, Option<Vec<u8>>);

/// Key of the meta record.
const META_KEY: &[u8] = b"m";

/// What every write-ahead chunk key starts with.
const CHUNK_PREFIX: &[u8] = b"c/";

/// `p/{customer_id}`.
fn customer_key(customer_id: &CustomerId) -> Vec<u8> {
    let id = customer_id.as_str().as_bytes();
    let mut key = Vec::with_capacity(2 + id.len());
    key.extend_from_slice(b"p/");
    key.extend_from_slice(id);
    key
}

/// `t/{ticket_id}`.
fn ticket_key(ticket_id: &TicketId) -> Vec<u8> {
    format!("t/{ticket_id}").into_bytes()
}

/// `w/{window}/{pane_start}`.
fn pane_key(window: &str, pane_start: i64) -> Vec<u8> {
    format!("w/{window}/{pane_start}").into_bytes()
}

/// `a/{time}`.
fn active_key(at: i64) -> Vec<u8> {
    format!("a/{at}").into_bytes()
}

/// `c/{flush}/{index}/{count}`.
fn chunk_key(flush: u64, index: usize, count: usize) -> Vec<u8> {
    format!("c/{flush}/{index}/{count}").into_bytes()
}

/// True for the key of a write-ahead chunk.
fn is_chunk_key(key: &[u8]) -> bool {
    key.starts_with(CHUNK_PREFIX)
}

/// Why a changelog record could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The key is not one cxpulse writes.
    #[error("unknown changelog key {0:?}")]
    UnknownKey(String),
    /// The value is not Protobuf of the key's message.
    #[error("changelog record {key:?}: {source}")]
    BadValue {
        /// The key.
        key: String,
        /// The decode error.
        source: prost::DecodeError,
    },
    /// The value decodes but holds something cxpulse never writes.
    #[error("changelog record {key:?}: {reason}")]
    Invalid {
        /// The key.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Maps a decode error of the value of `key` to [`RestoreError::BadValue`].
fn bad_value(key: &[u8]) -> impl FnOnce(prost::DecodeError) -> RestoreError + '_ {
    move |source| RestoreError::BadValue {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    }
}

/// [`RestoreError::Invalid`] of `key`.
fn invalid(key: &[u8], reason: &'static str) -> RestoreError {
    RestoreError::Invalid {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    }
}

/// [`RestoreError::UnknownKey`] of `key`.
fn unknown_key(key: &[u8]) -> RestoreError {
    RestoreError::UnknownKey(String::from_utf8_lossy(key).into_owned())
}

/// Helpers of the tests of more than one job.
#[cfg(test)]
mod testing {
    use crate::task::Emitted;
    use crate::window::FinalWindow;

    /// The final windows among `emitted`, in order.
    pub(super) fn windows(emitted: &[Emitted]) -> Vec<FinalWindow> {
        emitted
            .iter()
            .filter_map(|item| match item {
                Emitted::Window(window) => Some((**window).clone()),
                _ => None,
            })
            .collect()
    }
}
