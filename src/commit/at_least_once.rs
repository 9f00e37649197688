//! At-least-once, as a stage machine: every output is sent at once, then the
//! cycles handed over are settled in order, each through its [`Stage`]s (its
//! outputs delivered, dead letters replacing the ones refused for good, its
//! state written) before its input offsets are stored. The guarantee this
//! gives is described in the documentation of the `commit` module.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use metrics::{histogram, Histogram};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use super::{dead_letter_of_refused, CommitStrategy, Pending};
use crate::event::EventTime;
use crate::fault;
use crate::output::Encoder;
use crate::process::{Cycle, ProfileToPublish, StateChange};
use crate::sink::{Batch, Sink};
use crate::source::InputConsumer;
use crate::telemetry;

/// Cycles handed over and not yet settled before `commit` waits for the oldest.
const MAX_PENDING_CYCLES: usize = 64;

/// Deferred records (a flush's profiles and state) queued per call: a flush's
/// thousands of records go out in slices between the next cycles' outputs,
/// which then wait a slice (a few ms) rather than the whole flush.
const DEFERRED_SLICE: usize = 512;

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
    /// Flushed profiles whose `cx.profiles` records are not yet queued (stage
    /// `Outputs`), in the order they were flushed.
    profiles: VecDeque<ProfileToPublish>,
    /// State changes, written once the outputs are delivered; those of the
    /// `State` stage not yet queued.
    changelog: VecDeque<StateChange>,
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

impl Checkpoint {
    /// True when every record of the current stage is queued and has its delivery report.
    fn is_settled(&self) -> bool {
        let queued = match self.stage {
            Stage::Outputs => self.profiles.is_empty(),
            Stage::DeadLetters => true,
            Stage::State => self.changelog.is_empty(),
        };
        queued && self.batch.is_settled()
    }
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
        self.queue_deferred()?;
        while let Some(mut checkpoint) = self.pending.pop_front() {
            if !checkpoint.is_settled() {
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

    /// Starts writing the checkpoint's state changes (its outputs are delivered)
    /// with a first slice.
    fn write_state(&self, checkpoint: &mut Checkpoint) -> anyhow::Result<()> {
        checkpoint.batch = Batch::new();
        checkpoint.stage = Stage::State;
        queue_state(
            &self.sink,
            &self.changelog_topic,
            checkpoint,
            DEFERRED_SLICE,
        )?;
        Ok(())
    }

    /// Queues the next slice of deferred records, oldest first: profiles of
    /// any checkpoint, state of the oldest (state is written in cycle order).
    fn queue_deferred(&mut self) -> anyhow::Result<()> {
        let mut budget = DEFERRED_SLICE;
        if let Some(oldest) = self.pending.front_mut() {
            if oldest.stage == Stage::State {
                budget -= queue_state(&self.sink, &self.changelog_topic, oldest, budget)?;
            }
        }
        for checkpoint in self.pending.iter_mut() {
            if budget == 0 {
                break;
            }
            let count = budget.min(checkpoint.profiles.len());
            for published in checkpoint.profiles.drain(..count) {
                let record = published.encode(&self.encoder);
                self.sink
                    .send(&record, &checkpoint.batch)
                    .with_context(|| format!("queueing a record for {}", record.topic))?;
            }
            budget -= count;
        }
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

    /// Waits a little for the oldest checkpoint's current stage. (It never polls
    /// the consumer: a record polled here would be dropped, and with its
    /// successors' offsets stored, lost.)
    fn wait_for_oldest(&mut self) {
        if let Some(oldest) = self.pending.front() {
            let batch = oldest.batch.clone();
            self.sink.wait(&batch, Duration::from_millis(100));
        }
    }
}

impl CommitStrategy for AtLeastOnce {
    fn check(&mut self) -> anyhow::Result<()> {
        self.advance()
    }

    fn pending(&self) -> Pending {
        let oldest_state = self
            .pending
            .front()
            .is_some_and(|oldest| oldest.stage == Stage::State && !oldest.changelog.is_empty());
        if oldest_state
            || self
                .pending
                .iter()
                .any(|checkpoint| !checkpoint.profiles.is_empty())
        {
            Pending::Records
        } else if self.pending.is_empty() {
            Pending::Nothing
        } else {
            Pending::Deliveries
        }
    }

    fn commit(&mut self, cycle: Cycle) -> anyhow::Result<()> {
        self.advance()?;
        while self.pending.len() >= MAX_PENDING_CYCLES {
            self.wait_for_oldest();
            self.advance()?;
        }
        // The cycle's own outputs go at once; its flushed profiles (every
        // `cx.profiles` record: a timer's change is published at the flush too)
        // and state follow in slices.
        let batch = Batch::new();
        for record in &cycle.outputs {
            self.sink
                .send(record, &batch)
                .with_context(|| format!("queueing a record for {}", record.topic))?;
        }
        self.pending.push_back(Checkpoint {
            stage: Stage::Outputs,
            batch,
            profiles: cycle.profiles.into(),
            changelog: cycle.changelog.into(),
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

/// Queues up to `budget` of the checkpoint's state changes to `topic`; returns how many.
fn queue_state(
    sink: &Sink,
    topic: &str,
    checkpoint: &mut Checkpoint,
    budget: usize,
) -> anyhow::Result<usize> {
    let count = budget.min(checkpoint.changelog.len());
    for (task, key, value) in checkpoint.changelog.drain(..count) {
        sink.send_state(
            topic,
            task as i32,
            &key,
            value.as_deref(),
            &checkpoint.batch,
        )
        .context("queueing a changelog record")?;
        fault::changelog_record_queued(|| {
            let _ = sink.flush(Duration::from_secs(30));
        });
    }
    Ok(count)
}
