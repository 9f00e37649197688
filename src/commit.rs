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
//! The producer's delivery reports settle [`Batch`]es, so nothing is awaited
//! per record. Exactly-once runs on the pipeline thread: a cycle's transaction
//! commits before the next poll, so no transaction is open when a rebalance
//! changes the group generation. At-least-once runs in [`Background`], on a
//! thread of its own: queueing a cycle's records into the producer, writing a
//! flushed task's changelog and storing offsets then overlap with processing
//! the next batch instead of delaying it (the latency tail was a flush's
//! records queued while input waited).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
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
use crate::process::{Cycle, ProfileToPublish, StateChange};
use crate::sink::{Batch, Failures, Sink};
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

/// What the pipeline asks of a [`Background`] strategy.
enum Command {
    Commit(Box<Cycle>),
    Settle,
    Forget(u32),
}

/// How often a settle waiting for the background thread calls its keep-alive.
pub const KEEP_ALIVE_EVERY: Duration = Duration::from_millis(100);

/// How often the background thread lets its strategy advance while deliveries are awaited.
const BACKGROUND_CHECK_EVERY: Duration = Duration::from_millis(5);

/// Cycles handed to the background thread and not yet taken: beyond this
/// `commit` waits, which holds the pipeline back when writing falls behind.
const BACKGROUND_QUEUE: usize = 16;

/// A commit strategy run on a thread of its own, fed in order by the pipeline
/// thread. Its first error stops it and is returned by the next call.
pub struct Background {
    commands: Option<SyncSender<Command>>,
    settled: Receiver<anyhow::Result<()>>,
    failure: Arc<Mutex<Option<anyhow::Error>>>,
    /// Set once an error was returned: the thread stops, if not yet stopped.
    stopped: bool,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Starts `strategy` on a thread named `cxpulse-commit`.
    pub fn start(mut strategy: impl CommitStrategy + Send + 'static) -> anyhow::Result<Self> {
        let (commands, received) = mpsc::sync_channel::<Command>(BACKGROUND_QUEUE);
        let (settle_reply, settled) = mpsc::channel();
        let failure = Arc::new(Mutex::new(None));
        let failed = failure.clone();
        let thread = std::thread::Builder::new()
            .name("cxpulse-commit".into())
            .spawn(move || loop {
                // Slices of a flush go out back to back while no cycle comes
                // (a command is still taken between two slices); deliveries
                // are checked for every few milliseconds; an idle thread
                // sleeps until the next command.
                let command = match strategy.pending() {
                    Pending::Records => match received.try_recv() {
                        Err(TryRecvError::Empty) => Err(RecvTimeoutError::Timeout),
                        Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                        Ok(command) => Ok(command),
                    },
                    Pending::Deliveries => received.recv_timeout(BACKGROUND_CHECK_EVERY),
                    Pending::Nothing => received.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                let result = match command {
                    Ok(Command::Commit(cycle)) => strategy.commit(*cycle),
                    Ok(Command::Settle) => {
                        let result = strategy.settle();
                        let failed = result.is_err();
                        let _ = settle_reply.send(result);
                        if failed {
                            return;
                        }
                        Ok(())
                    }
                    Ok(Command::Forget(task)) => {
                        strategy.forget(task);
                        Ok(())
                    }
                    Err(RecvTimeoutError::Timeout) => strategy.check(),
                    Err(RecvTimeoutError::Disconnected) => return,
                };
                if let Err(error) = result {
                    *failed.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
                    return;
                }
            })
            .context("starting the commit thread")?;
        Ok(Background {
            commands: Some(commands),
            settled,
            failure,
            stopped: false,
            thread: Some(thread),
        })
    }

    /// Fails once the background thread stopped: with its error the first time.
    fn failure(&mut self) -> anyhow::Result<()> {
        let error = self
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(error) = error {
            // The thread may still be on its way out: remember that it stops.
            self.stopped = true;
            return Err(error);
        }
        if self.stopped || self.thread.as_ref().is_none_or(JoinHandle::is_finished) {
            anyhow::bail!("the commit thread stopped");
        }
        Ok(())
    }

    /// Why the thread no longer answers: its error, if not yet returned.
    fn stopped_error(&mut self) -> anyhow::Error {
        self.failure()
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("the commit thread stopped"))
    }

    fn send(&mut self, command: Command) -> anyhow::Result<()> {
        let sent = self
            .commands
            .as_ref()
            .is_some_and(|commands| commands.send(command).is_ok());
        if sent {
            Ok(())
        } else {
            Err(self.stopped_error())
        }
    }
}

impl CommitStrategy for Background {
    fn check(&mut self) -> anyhow::Result<()> {
        self.failure()
    }

    fn commit(&mut self, cycle: Cycle) -> anyhow::Result<()> {
        self.failure()?;
        self.send(Command::Commit(Box::new(cycle)))
    }

    fn settle(&mut self) -> anyhow::Result<()> {
        self.settle_keeping_alive(&mut || {})
    }

    fn settle_keeping_alive(&mut self, keep_alive: &mut dyn FnMut()) -> anyhow::Result<()> {
        self.send(Command::Settle)?;
        loop {
            match self.settled.recv_timeout(KEEP_ALIVE_EVERY) {
                Ok(result) => return result,
                Err(RecvTimeoutError::Timeout) => keep_alive(),
                Err(RecvTimeoutError::Disconnected) => return Err(self.stopped_error()),
            }
        }
    }

    fn forget(&mut self, task: u32) {
        // A stopped thread forgets nothing; its error comes with the next call.
        let _ = self.send(Command::Forget(task));
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has done what was queued.
        self.commands = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Outputs, changelog and offsets of each cycle in one transaction.
pub struct ExactlyOnce {
    consumer: Arc<InputConsumer>,
    sink: Sink,
    encoder: Encoder,
    changelog_topic: String,
}

impl ExactlyOnce {
    /// Commits through `sink`'s transactional producer.
    pub fn new(
        consumer: Arc<InputConsumer>,
        sink: Sink,
        encoder: Encoder,
        changelog_topic: String,
    ) -> Self {
        ExactlyOnce {
            consumer,
            sink,
            encoder,
            changelog_topic,
        }
    }
}

impl ExactlyOnce {
    /// One attempt at the cycle's transaction: `records`, the changelog and the
    /// input offsets. On failure the transaction is aborted and the failure
    /// says which records the brokers refused for good.
    fn transact(
        &self,
        records: &[OutputRecord],
        cycle: &Cycle,
        group: &rdkafka::consumer::ConsumerGroupMetadata,
    ) -> Result<(), Box<(anyhow::Error, Failures)>> {
        let timeout = Duration::from_secs(30);
        let batch = Batch::new();
        let result = (|| -> anyhow::Result<()> {
            self.sink.begin().context("beginning a transaction")?;
            for record in records {
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
            // A failed delivery fails the commit.
            self.sink.commit(&offsets, group, timeout)?;
            Ok(())
        })();
        let Err(error) = result else {
            return Ok(());
        };
        // Aborting purges what was not sent, so every delivery report then comes.
        if let Err(abort) = self.sink.abort(timeout) {
            warn!(%abort, "aborting the transaction failed");
        }
        self.sink.wait(&batch, timeout);
        Err(Box::new((error, batch.take_failures())))
    }
}

impl CommitStrategy for ExactlyOnce {
    /// Exactly-once: outputs, changelog and input offsets of one cycle in one transaction.
    /// A record the brokers refuse for good (too large for its topic now) would abort
    /// the transaction again on every restart, so the transaction is retried with it
    /// replaced by its dead letter, as at-least-once does. Any other failure aborts it
    /// and stops the pipeline; the restart restores the state of the last committed
    /// transaction and replays from its offsets.
    fn commit(&mut self, mut cycle: Cycle) -> anyhow::Result<()> {
        let group = self
            .consumer
            .group_metadata()
            .context("no consumer group metadata for the transaction")?;
        let mut records = cycle.take_records(&self.encoder);
        loop {
            let (error, failures) = match self.transact(&records, &cycle, &group) {
                Ok(()) => {
                    counter!(telemetry::COMMITS, "result" => "transaction").increment(1);
                    return Ok(());
                }
                Err(failure) => *failure,
            };
            let stop = |error: anyhow::Error| {
                error.context(
                    "transaction failed (aborted); restart replays from the last committed one",
                )
            };
            if failures.refused.is_empty() {
                return Err(stop(error));
            }
            for (refused_error, message) in &failures.refused {
                let topic = message.topic();
                // State is never replaced by a dead letter, nor a dead letter by another:
                // that would lose results, or loop.
                if topic == self.changelog_topic {
                    return Err(stop(anyhow::anyhow!(
                        "the changelog refused a state record: {refused_error}"
                    )));
                }
                let Some(index) = records.iter().position(|record| {
                    *record.topic == *topic
                        && record.key.as_slice() == message.key().unwrap_or_default()
                        && record.value.as_slice() == message.payload().unwrap_or_default()
                }) else {
                    return Err(stop(error));
                };
                if self.encoder.is_dead_letter(&records[index]) {
                    return Err(stop(anyhow::anyhow!(
                        "the dead-letter topic refused a dead letter: {refused_error}"
                    )));
                }
                warn!(%refused_error, topic, "the broker refused an output record; it goes to the dead-letter topic");
                records[index] = dead_letter_of_refused(&self.encoder, refused_error, message);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What a strategy was asked, in order.
    #[derive(Debug, Clone, PartialEq)]
    enum Call {
        Commit(u64),
        Settle,
        Forget(u32),
    }

    /// Records calls; fails the commit of a cycle whose `applied` is `fail_at`.
    struct Recording {
        calls: Arc<Mutex<Vec<Call>>>,
        fail_at: Option<u64>,
        slow: Duration,
    }

    impl CommitStrategy for Recording {
        fn commit(&mut self, cycle: Cycle) -> anyhow::Result<()> {
            std::thread::sleep(self.slow);
            self.calls.lock().unwrap().push(Call::Commit(cycle.applied));
            if Some(cycle.applied) == self.fail_at {
                anyhow::bail!("cycle {} failed", cycle.applied);
            }
            Ok(())
        }
        fn settle(&mut self) -> anyhow::Result<()> {
            self.calls.lock().unwrap().push(Call::Settle);
            Ok(())
        }
        fn forget(&mut self, task: u32) {
            self.calls.lock().unwrap().push(Call::Forget(task));
        }
    }

    fn cycle(applied: u64) -> Cycle {
        Cycle {
            applied,
            ..Cycle::default()
        }
    }

    fn background(fail_at: Option<u64>, slow: Duration) -> (Background, Arc<Mutex<Vec<Call>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let strategy = Recording {
            calls: calls.clone(),
            fail_at,
            slow,
        };
        (Background::start(strategy).unwrap(), calls)
    }

    #[test]
    fn background_keeps_the_order_and_settle_waits_for_everything_before_it() {
        let (mut background, calls) = background(None, Duration::from_millis(2));
        for applied in 1..=30 {
            background.commit(cycle(applied)).unwrap();
        }
        background.forget(7);
        background.settle().unwrap();
        // Everything handed over before settle was done when it returned.
        let mut expected: Vec<Call> = (1..=30).map(Call::Commit).collect();
        expected.extend([Call::Forget(7), Call::Settle]);
        assert_eq!(*calls.lock().unwrap(), expected);
        drop(background);
    }

    #[test]
    fn background_failure_stops_it_and_is_returned_by_the_next_call() {
        let (mut background, calls) = background(Some(2), Duration::ZERO);
        background.commit(cycle(1)).unwrap();
        background.commit(cycle(2)).unwrap();
        let error = background.settle().unwrap_err();
        assert!(error.to_string().contains("cycle 2 failed"), "{error:#}");
        // Stopped: nothing after the failure reaches the strategy.
        assert!(background.commit(cycle(3)).is_err());
        assert!(background.check().is_err());
        assert_eq!(
            *calls.lock().unwrap(),
            vec![Call::Commit(1), Call::Commit(2)]
        );
    }

    #[test]
    fn background_drop_finishes_what_was_handed_over() {
        let (mut background, calls) = background(None, Duration::from_millis(5));
        for applied in 1..=5 {
            background.commit(cycle(applied)).unwrap();
        }
        drop(background);
        assert_eq!(calls.lock().unwrap().len(), 5);
    }
}
