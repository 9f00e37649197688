//! Commit strategies: how the outputs, state changes and input offsets of a
//! processing [`Cycle`] become durable.
//!
//! - [`AtLeastOnce`]: every output is sent at once; a committer task awaits the
//!   deliveries of each cycle in order, then writes and awaits the cycle's
//!   changelog records, and only then stores its input offsets (librdkafka
//!   commits stored offsets). A crash replays records whose outputs may already
//!   be out (with the same deterministic ids); the restored state says which
//!   input offsets it includes, so state and windows count each event once.
//! - [`ExactlyOnce`]: outputs, changelog records and input offsets of a cycle in
//!   one Kafka transaction; any failure aborts it and stops the pipeline, and
//!   the restart resumes from the last committed transaction.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use metrics::{counter, histogram};
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::DeliveryFuture;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, error, warn};

use crate::event::EventTime;
use crate::fault;
use crate::output::{DeadLetter, Encoder, OutputRecord};
use crate::process::Cycle;
use crate::sink::Sink;
use crate::source::{owned_headers, InputConsumer};
use crate::telemetry;

/// How a cycle's work is made durable.
pub trait CommitStrategy {
    /// Fails when work already handed over can no longer become durable.
    fn check(&self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Writes a cycle's outputs and state, and commits its input offsets once safe.
    fn commit(&mut self, cycle: Cycle) -> anyhow::Result<()>;
    /// At shutdown: waits until everything handed over is durable.
    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        Ok(())
    }
}

/// At-least-once outputs, effectively-once state (see the module documentation).
pub struct AtLeastOnce {
    consumer: Arc<InputConsumer>,
    sink: Sink,
    runtime: tokio::runtime::Handle,
    checkpoints: mpsc::Sender<Checkpoint>,
    committer: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl AtLeastOnce {
    /// Starts the committer task on `runtime`.
    pub fn start(
        consumer: Arc<InputConsumer>,
        sink: Sink,
        encoder: Encoder,
        changelog_topic: String,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let (checkpoints, receiver) = mpsc::channel(64);
        let committer = runtime.spawn(commit_delivered(
            consumer.clone(),
            sink.clone(),
            encoder,
            changelog_topic,
            receiver,
        ));
        AtLeastOnce {
            consumer,
            sink,
            runtime,
            checkpoints,
            committer,
        }
    }
}

impl CommitStrategy for AtLeastOnce {
    fn check(&self) -> anyhow::Result<()> {
        if self.committer.is_finished() {
            anyhow::bail!(
                "output delivery failed; stopping so that no offset passes undelivered work"
            );
        }
        Ok(())
    }

    fn commit(&mut self, cycle: Cycle) -> anyhow::Result<()> {
        let mut deliveries = Vec::with_capacity(cycle.outputs.len());
        for record in &cycle.outputs {
            let delivery = self
                .sink
                .send(record)
                .with_context(|| format!("queueing a record for {}", record.topic))?;
            deliveries.push((record.topic.clone(), delivery));
        }
        let checkpoint = Checkpoint {
            deliveries,
            changelog: cycle.changelog,
            offsets: cycle.offsets,
            appended_at: cycle.appended_at,
        };
        if self.checkpoints.blocking_send(checkpoint).is_err() {
            anyhow::bail!("the committer stopped");
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        // Every queued checkpoint is awaited and its offsets stored.
        let AtLeastOnce {
            consumer,
            runtime,
            checkpoints,
            committer,
            ..
        } = *self;
        drop(checkpoints);
        // Keep the consumer polled while the drain lasts (its partitions are paused, so
        // no record comes; one that raced the pause is dropped, its offset never
        // stored): a drain longer than `max.poll.interval.ms` would otherwise lose
        // the assignment, and with it the final commit.
        while !committer.is_finished() {
            let _ = consumer.poll(Duration::from_millis(100));
        }
        runtime.block_on(committer).context("committer task")?
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
        let result = (|| -> anyhow::Result<()> {
            for record in &cycle.outputs {
                self.sink.send(record)?;
            }
            for (task, key, value) in &cycle.changelog {
                self.sink
                    .send_state(&self.changelog_topic, *task as i32, key, value.as_deref())?;
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
                for record in &cycle.outputs {
                    counter!(telemetry::RECORDS_PRODUCED, "topic" => record.topic.clone())
                        .increment(1);
                }
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

/// Outputs of one cycle and the offsets they complete.
struct Checkpoint {
    deliveries: Vec<(String, DeliveryFuture)>,
    /// State changes to write once the outputs are delivered: (task, key, value).
    changelog: Vec<(u32, Vec<u8>, Option<Vec<u8>>)>,
    /// (topic, partition) → next offset to consume.
    offsets: BTreeMap<(String, i32), i64>,
    appended_at: Vec<i64>,
}

/// Awaits the deliveries of each checkpoint in order, then writes and awaits its
/// state changes, then stores its offsets.
async fn commit_delivered(
    consumer: Arc<InputConsumer>,
    sink: Sink,
    encoder: Encoder,
    changelog_topic: String,
    mut checkpoints: mpsc::Receiver<Checkpoint>,
) -> anyhow::Result<()> {
    while let Some(mut checkpoint) = checkpoints.recv().await {
        let refused = await_deliveries(std::mem::take(&mut checkpoint.deliveries)).await?;
        // Records the brokers refuse for good become dead letters, never a crash loop.
        let mut replacements = Vec::with_capacity(refused.len());
        for (error, message) in refused {
            let letter = dead_letter_of_refused(&encoder, &error, &message);
            let delivery = sink
                .send(&letter)
                .context("queueing the dead letter of a refused record")?;
            replacements.push((letter.topic, delivery));
        }
        let still_refused = await_deliveries(replacements).await?;
        if let Some((error, message)) = still_refused.first() {
            anyhow::bail!(
                "the dead-letter topic refused the dead letter of a record refused by {}: {error}",
                message.topic()
            );
        }
        let mut state_deliveries = Vec::with_capacity(checkpoint.changelog.len());
        for (task, key, value) in &checkpoint.changelog {
            let delivery = sink
                .send_state(&changelog_topic, *task as i32, key, value.as_deref())
                .context("queueing a changelog record")?;
            state_deliveries.push((changelog_topic.clone(), delivery));
            fault::changelog_record_queued(|| {
                let _ = sink.flush(Duration::from_secs(30));
            });
        }
        // State is never replaced by a dead letter: without it results would be wrong.
        if let Some((error, _)) = await_deliveries(state_deliveries).await?.first() {
            anyhow::bail!("the changelog refused a state record: {error}");
        }
        let now = EventTime::now().millis();
        for appended in checkpoint.appended_at {
            histogram!(telemetry::PROCESSING_LATENCY)
                .record((now - appended).max(0) as f64 / 1000.0);
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in &checkpoint.offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        if let Err(error) = consumer.store_offsets(&tpl) {
            // Partitions revoked meanwhile: their new owner replays them (at-least-once).
            debug!(%error, "offsets not stored");
        }
    }
    Ok(())
}

/// Awaits deliveries in order; returns the records the brokers refused for good
/// (too large, invalid); any other failure stops the committer.
async fn await_deliveries(
    deliveries: Vec<(String, DeliveryFuture)>,
) -> anyhow::Result<Vec<(KafkaError, OwnedMessage)>> {
    let mut refused = Vec::new();
    for (topic, delivery) in deliveries {
        match delivery.await {
            Ok(Ok(_)) => counter!(telemetry::RECORDS_PRODUCED, "topic" => topic).increment(1),
            Ok(Err((error, message))) => {
                counter!(telemetry::PRODUCE_ERRORS).increment(1);
                if refused_for_good(&error) {
                    warn!(%error, %topic, "the broker refused an output record; it goes to the dead-letter topic");
                    refused.push((error, message));
                    continue;
                }
                error!(%error, %topic, "output delivery failed");
                anyhow::bail!("delivery to {topic} failed: {error}");
            }
            Err(_) => anyhow::bail!("the producer dropped a delivery"),
        }
    }
    Ok(refused)
}

/// Errors that no retry or restart can cure: the record itself is unacceptable.
fn refused_for_good(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::MessageBatchTooLarge
        )
    )
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
