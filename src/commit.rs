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
//!   one Kafka transaction; any failure aborts it and stops the pipeline, and
//!   the restart resumes from the last committed transaction.
//!
//! Both run on the pipeline thread: the producer's delivery reports settle
//! [`Batch`]es, and the at-least-once stages advance whenever the loop comes
//! by, so nothing is awaited per record.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use metrics::{counter, histogram, Histogram};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use crate::event::EventTime;
use crate::fault;
use crate::output::{DeadLetter, Encoder, OutputRecord};
use crate::process::{Cycle, StateChange};
use crate::sink::{Batch, Sink};
use crate::source::{owned_headers, InputConsumer};
use crate::telemetry;

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
    /// Forgets the offsets held back for `task`, whose in-memory state was
    /// dropped or replaced by a restore: they describe state that no flush will write.
    fn forget(&mut self, _task: u32) {}
}

/// Cycles handed over and not yet settled before `commit` waits for the oldest.
const MAX_PENDING_CYCLES: usize = 64;

/// At-least-once outputs, effectively-once state (see the module documentation).
pub struct AtLeastOnce {
    consumer: Arc<InputConsumer>,
    sink: Sink,
    encoder: Encoder,
    changelog_topic: String,
    /// Cycles handed over, oldest first.
    pending: VecDeque<Checkpoint>,
    /// Offsets of settled cycles whose task's state is not yet in a flush.
    settled_offsets: BTreeMap<(String, i32), i64>,
    latency: Histogram,
}

/// A cycle on its way to durability.
struct Checkpoint {
    stage: Stage,
    /// The records of the current stage.
    batch: Arc<Batch>,
    /// State changes, written once the outputs are delivered.
    changelog: Vec<StateChange>,
    /// Tasks the cycle flushed (its changelog holds every change of theirs so far).
    flushed: BTreeSet<u32>,
    /// (topic, partition) → next offset to consume.
    offsets: BTreeMap<(String, i32), i64>,
    appended_at: Vec<i64>,
}

/// What a checkpoint waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The cycle's outputs.
    Outputs,
    /// Dead letters replacing outputs the brokers refused.
    DeadLetters,
    /// The cycle's state changes.
    State,
}

impl AtLeastOnce {
    /// Commits through `sink`, storing offsets on `consumer`.
    pub fn new(
        consumer: Arc<InputConsumer>,
        sink: Sink,
        encoder: Encoder,
        changelog_topic: String,
    ) -> Self {
        AtLeastOnce {
            consumer,
            sink,
            encoder,
            changelog_topic,
            pending: VecDeque::new(),
            settled_offsets: BTreeMap::new(),
            latency: histogram!(telemetry::PROCESSING_LATENCY),
        }
    }

    /// Moves the oldest checkpoints through their stages as far as their deliveries allow.
    fn advance(&mut self) -> anyhow::Result<()> {
        while let Some(mut checkpoint) = self.pending.pop_front() {
            if !checkpoint.batch.is_settled() {
                self.pending.push_front(checkpoint);
                break;
            }
            let failures = checkpoint.batch.take_failures();
            if let Some((error, topic)) = failures.failed {
                anyhow::bail!(
                    "delivery to {topic} failed: {error}; stopping so that no offset passes undelivered work"
                );
            }
            match checkpoint.stage {
                Stage::Outputs => {
                    let now = EventTime::now().millis();
                    for appended in &checkpoint.appended_at {
                        self.latency.record((now - appended).max(0) as f64 / 1000.0);
                    }
                    if failures.refused.is_empty() {
                        self.write_state(&mut checkpoint)?;
                    } else {
                        // Records the brokers refuse for good become dead letters, never a crash loop.
                        let batch = Batch::new();
                        for (error, message) in &failures.refused {
                            warn!(%error, topic = message.topic(), "the broker refused an output record; it goes to the dead-letter topic");
                            let letter = dead_letter_of_refused(&self.encoder, error, message);
                            self.sink
                                .send(&letter, &batch)
                                .context("queueing the dead letter of a refused record")?;
                        }
                        checkpoint.batch = batch;
                        checkpoint.stage = Stage::DeadLetters;
                    }
                }
                Stage::DeadLetters => {
                    if let Some((error, message)) = failures.refused.first() {
                        anyhow::bail!(
                            "the dead-letter topic refused the dead letter of a record refused by {}: {error}",
                            message.topic()
                        );
                    }
                    self.write_state(&mut checkpoint)?;
                }
                Stage::State => {
                    // State is never replaced by a dead letter: without it results would be wrong.
                    if let Some((error, _)) = failures.refused.first() {
                        anyhow::bail!("the changelog refused a state record: {error}");
                    }
                    self.settled_offsets.extend(checkpoint.offsets);
                    self.store_offsets(&checkpoint.flushed)?;
                    continue;
                }
            }
            self.pending.push_front(checkpoint);
        }
        Ok(())
    }

    /// Queues the checkpoint's state changes; its outputs are delivered.
    fn write_state(&self, checkpoint: &mut Checkpoint) -> anyhow::Result<()> {
        let batch = Batch::new();
        for (task, key, value) in &checkpoint.changelog {
            self.sink
                .send_state(
                    &self.changelog_topic,
                    *task as i32,
                    key,
                    value.as_deref(),
                    &batch,
                )
                .context("queueing a changelog record")?;
            fault::changelog_record_queued(|| {
                let _ = self.sink.flush(Duration::from_secs(30));
            });
        }
        checkpoint.changelog = Vec::new();
        checkpoint.batch = batch;
        checkpoint.stage = Stage::State;
        Ok(())
    }

    /// Stores the settled offsets of the `flushed` tasks, whose state is now durable.
    fn store_offsets(&mut self, flushed: &BTreeSet<u32>) -> anyhow::Result<()> {
        let task_of = |partition: i32| u32::try_from(partition).unwrap_or(u32::MAX);
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in &self.settled_offsets {
            if flushed.contains(&task_of(*partition)) {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        self.settled_offsets
            .retain(|(_, partition), _| !flushed.contains(&task_of(*partition)));
        if let Err(error) = self.consumer.store_offsets(&tpl) {
            // Partitions revoked meanwhile: their new owner replays them (at-least-once).
            debug!(%error, "offsets not stored");
        }
        Ok(())
    }

    /// Waits for the oldest checkpoint's current stage (keeping the consumer
    /// polled, so that a long wait does not cost the assignment).
    fn wait_for_oldest(&mut self) {
        if let Some(oldest) = self.pending.front() {
            let batch = oldest.batch.clone();
            self.sink.wait(&batch, Duration::from_millis(100));
            // The inputs are paused while draining; a record that raced the pause
            // is dropped here, its offset never stored.
            let _ = self.consumer.poll(Duration::ZERO);
        }
    }
}

impl CommitStrategy for AtLeastOnce {
    fn check(&mut self) -> anyhow::Result<()> {
        self.advance()
    }

    fn commit(&mut self, cycle: Cycle) -> anyhow::Result<()> {
        self.advance()?;
        while self.pending.len() >= MAX_PENDING_CYCLES {
            self.wait_for_oldest();
            self.advance()?;
        }
        let batch = Batch::new();
        for record in &cycle.outputs {
            self.sink
                .send(record, &batch)
                .with_context(|| format!("queueing a record for {}", record.topic))?;
        }
        self.pending.push_back(Checkpoint {
            stage: Stage::Outputs,
            batch,
            changelog: cycle.changelog,
            flushed: cycle.flushed,
            offsets: cycle.offsets,
            appended_at: cycle.appended_at,
        });
        self.advance()
    }

    fn settle(&mut self) -> anyhow::Result<()> {
        loop {
            self.advance()?;
            if self.pending.is_empty() {
                return Ok(());
            }
            self.wait_for_oldest();
        }
    }

    fn forget(&mut self, task: u32) {
        // Stored later, they would commit input the task's restored state lacks.
        self.settled_offsets
            .retain(|(_, partition), _| u32::try_from(*partition).ok() != Some(task));
    }
}

/// Outputs, changelog and offsets of each cycle in one transaction.
pub struct ExactlyOnce {
    consumer: Arc<InputConsumer>,
    sink: Sink,
    changelog_topic: String,
}

impl ExactlyOnce {
    /// Commits through `sink`'s transactional producer.
    pub fn new(consumer: Arc<InputConsumer>, sink: Sink, changelog_topic: String) -> Self {
        ExactlyOnce {
            consumer,
            sink,
            changelog_topic,
        }
    }
}

impl CommitStrategy for ExactlyOnce {
    /// Exactly-once: outputs, changelog and input offsets of one cycle in one transaction.
    /// Any failure aborts it and stops the pipeline; the restart restores the state of
    /// the last committed transaction and replays from its offsets.
    fn commit(&mut self, cycle: Cycle) -> anyhow::Result<()> {
        let timeout = Duration::from_secs(30);
        let group = self
            .consumer
            .group_metadata()
            .context("no consumer group metadata for the transaction")?;
        self.sink.begin().context("beginning a transaction")?;
        // A failed delivery fails the commit: the transaction is then aborted.
        let batch = Batch::new();
        let result = (|| -> anyhow::Result<()> {
            for record in &cycle.outputs {
                self.sink.send(record, &batch)?;
            }
            for (task, key, value) in &cycle.changelog {
                self.sink.send_state(
                    &self.changelog_topic,
                    *task as i32,
                    key,
                    value.as_deref(),
                    &batch,
                )?;
                fault::changelog_record_queued(|| {
                    let _ = self.sink.flush(timeout);
                });
            }
            let mut offsets = TopicPartitionList::new();
            for ((topic, partition), next) in &cycle.offsets {
                offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
            }
            self.sink.commit(&offsets, &group, timeout)?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                counter!(telemetry::COMMITS, "result" => "transaction").increment(1);
                Ok(())
            }
            Err(error) => {
                if let Err(abort) = self.sink.abort(timeout) {
                    warn!(%abort, "aborting the transaction failed");
                }
                Err(error.context(
                    "transaction failed (aborted); restart replays from the last committed one",
                ))
            }
        }
    }
}

/// The dead letter of an output record the brokers refused: its key and headers
/// (with its deterministic `ce_id`), without its value.
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
