//! Commit strategies: how the outputs, state changes and input offsets of a
//! processing [`Cycle`] become durable.
//!
//! - [`AtLeastOnce`]: every output is sent at once. The cycles handed over are
//!   then settled in order, each through three stages: its outputs delivered
//!   (records the brokers refuse for good replaced by dead letters), its state
//!   changes written (when the cycle flushed the state, about once per
//!   `kafka.commit_interval`), and only then its input offsets stored
//!   (librdkafka commits stored offsets). A task's offsets wait for its next
//!   state flush: an offset committed past state that is not in the changelog
//!   would lose those events on a restart. A crash replays records whose outputs may
//!   already be out (with the same deterministic ids); the restored state says
//!   which input offsets it includes, so state and windows count each event once.
//! - [`ExactlyOnce`]: outputs, changelog records and input offsets of a cycle in
//!   one Kafka transaction. A record the brokers refuse for good is replaced
//!   by its dead letter and the transaction retried; any other failure aborts
//!   it and stops the pipeline, and the restart resumes from the last
//!   committed transaction.
//!
//! The producer's delivery reports settle [`Batch`](crate::sink::Batch)es, so
//! nothing is awaited per record. Exactly-once runs on the pipeline thread: a
//! cycle's transaction commits before the next poll, so no transaction is open
//! when a rebalance changes the group generation. At-least-once runs in
//! [`Background`], on a thread of its own: queueing a cycle's records into the
//! producer, writing a flushed task's changelog and storing offsets then
//! overlap with processing the next batch instead of delaying it (the latency
//! tail was a flush's records queued while input waited).
//!
//! One file per job: `at_least_once` holds the stage machine of
//! [`AtLeastOnce`], `background` the thread it runs on, `exactly_once` the
//! transactions of [`ExactlyOnce`].

mod at_least_once;
mod background;
mod exactly_once;

pub use at_least_once::AtLeastOnce;
pub use background::{Background, KEEP_ALIVE_EVERY};
pub use exactly_once::ExactlyOnce;

use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};

use crate::output::{DeadLetter, Encoder, OutputRecord};
use crate::process::Cycle;
use crate::source::owned_headers;

/// How a cycle's work is made durable.
pub trait CommitStrategy {
    /// Makes progress on work handed over; fails when some of it can no longer
    /// become durable.
    fn check(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Writes a cycle's outputs and state, and commits its input offsets once safe.
    fn commit(&mut self, cycle: Cycle) -> anyhow::Result<()>;
    /// Waits until everything handed over is durable (at shutdown, and before a
    /// restore reads the changelog).
    fn settle(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// [`settle`](Self::settle), calling `keep_alive` every [`KEEP_ALIVE_EVERY`]
    /// while it waits (when the work is done elsewhere): the shutdown drain polls
    /// its paused consumer with it, so that a drain longer than
    /// `max.poll.interval.ms` keeps the group membership its final commit needs.
    fn settle_keeping_alive(&mut self, _keep_alive: &mut dyn FnMut()) -> anyhow::Result<()> {
        self.settle()
    }
    /// Forgets the offsets held back for `task`, whose in-memory state was
    /// dropped or replaced by a restore: they describe state that no flush will write.
    fn forget(&mut self, _task: u32) {}
    /// What work handed over still waits for, which says when
    /// [`check`](Self::check) next has something to do.
    fn pending(&self) -> Pending {
        Pending::Nothing
    }
}

/// What work handed over to a commit strategy still waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// Nothing: only a new command brings work.
    Nothing,
    /// Delivery reports: a check a few milliseconds later may move it on.
    Deliveries,
    /// Records to queue (slices of a flush): a check has work at once.
    Records,
}

/// The dead letter of an output record the brokers refused: its key and headers
/// (with its deterministic `ce_id`), without its value. Both strategies
/// replace such records by their dead letters.
fn dead_letter_of_refused(
    encoder: &Encoder,
    error: &KafkaError,
    message: &OwnedMessage,
) -> OutputRecord {
    let headers = owned_headers(message);
    let value_bytes = message.payload().map_or(0, <[u8]>::len);
    encoder.dead_letter(&DeadLetter {
        position: None,
        key: message.key(),
        value: None,
        headers: &headers,
        reason: "output_refused",
        message: format!(
            "topic {} refused a record of {value_bytes} value bytes: {error}",
            message.topic()
        ),
    })
}
