//! Exactly-once: the outputs, changelog records and input offsets of a cycle
//! in one Kafka transaction, committed before the next poll.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use metrics::counter;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::{dead_letter_of_refused, CommitStrategy};
use crate::fault;
use crate::output::{Encoder, OutputRecord};
use crate::process::Cycle;
use crate::sink::{Batch, Failures, Sink};
use crate::source::InputConsumer;
use crate::telemetry;

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
