//! Sink: the one idempotent producer every output goes through.
//!
//! Records are sent in [`Batch`]es: the producer's delivery reports settle
//! each batch's count on librdkafka's polling thread, with no future, channel
//! or wake-up per record. A batch keeps the records the brokers refused (for
//! the dead-letter topic) and the first failure of any other kind.
//!
//! `send` never drops a record: when librdkafka's queue is full it waits for
//! deliveries to free room (backpressure reaches the consumer loop, which
//! stops fetching meanwhile) and tries again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use metrics::{counter, Counter};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::config::{ClientRole, ConfigError, KafkaConfig};
use crate::output::OutputRecord;
use crate::telemetry;

/// Why the producer could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// librdkafka refused the configuration, or the transactions could not start.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The Kafka client configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The output producer (cheap to clone: clones share one librdkafka producer).
#[derive(Clone)]
pub struct Sink {
    producer: Arc<ThreadedProducer<Deliveries>>,
}

impl Sink {
    /// Creates the idempotent producer from config; transactional when `transactional_id` is given.
    /// `topics` are the output topics whose produced records are counted by name.
    pub fn new(
        config: &KafkaConfig,
        transactional_id: Option<&str>,
        topics: &[&str],
    ) -> Result<Self, SinkError> {
        let mut client = ClientConfig::new();
        client
            .set("client.id", format!("{}-producer", config.client_id))
            .set("enable.idempotence", "true")
            // The Java client's partitioner (murmur2 of the key), so that a Kafka
            // Streams or Flink job can join the outputs with its own topics of the
            // same keys and partition count without a repartition.
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", "300000");
        if let Some(id) = transactional_id {
            // A record may not outlive its transaction (librdkafka's default is 60s).
            client
                .set("transactional.id", id)
                .set("message.timeout.ms", "60000");
        }
        let context = Deliveries {
            produced: topics
                .iter()
                .map(|topic| {
                    let counter =
                        counter!(telemetry::RECORDS_PRODUCED, "topic" => topic.to_string());
                    (topic.to_string(), counter)
                })
                .collect(),
            settled: (Mutex::new(()), Condvar::new()),
        };
        let producer: ThreadedProducer<Deliveries> = config
            .client_over(ClientRole::Producer, client)?
            .create_with_context(context)?;
        if transactional_id.is_some() {
            producer.init_transactions(Duration::from_secs(30))?;
        }
        Ok(Sink {
            producer: Arc::new(producer),
        })
    }

    /// Queues `record` as part of `batch`.
    pub fn send(&self, record: &OutputRecord, batch: &Arc<Batch>) -> Result<(), KafkaError> {
        let base = BaseRecord::with_opaque_to(&record.topic, batch.clone())
            .key(record.key.as_slice())
            .payload(record.value.as_slice())
            .headers(record.kafka_headers());
        self.enqueue(base, batch)
    }

    /// Queues a state record for partition `partition` of `topic` as part of
    /// `batch`; `None` is a tombstone.
    pub fn send_state(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
        batch: &Arc<Batch>,
    ) -> Result<(), KafkaError> {
        let mut base = BaseRecord::<[u8], [u8], Arc<Batch>>::with_opaque_to(topic, batch.clone())
            .partition(partition)
            .key(key);
        if let Some(value) = value {
            base = base.payload(value);
        }
        self.enqueue(base, batch)
    }

    fn enqueue<K, P>(
        &self,
        mut record: BaseRecord<'_, K, P, Arc<Batch>>,
        batch: &Batch,
    ) -> Result<(), KafkaError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        // Counted before the send: the delivery report may come before `send` returns.
        batch.pending.fetch_add(1, Ordering::SeqCst);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    // Backpressure: let in-flight deliveries complete, then retry.
                    std::thread::sleep(Duration::from_millis(5));
                    record = returned;
                }
                Err((error, _)) => {
                    batch.pending.fetch_sub(1, Ordering::SeqCst);
                    return Err(error);
                }
            }
        }
    }

    /// Waits until every record of `batch` has its delivery report, or `timeout` passes;
    /// true when settled.
    pub fn wait(&self, batch: &Batch, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let (lock, settled) = &self.producer.context().settled;
        let mut guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while !batch.is_settled() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = settled
                .wait_timeout(guard, left.min(Duration::from_millis(100)))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Starts a transaction (exactly-once mode).
    pub fn begin(&self) -> Result<(), KafkaError> {
        self.producer.begin_transaction()
    }

    /// Adds the input offsets to the open transaction and commits it.
    pub fn commit(
        &self,
        offsets: &rdkafka::TopicPartitionList,
        group: &rdkafka::consumer::ConsumerGroupMetadata,
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        self.producer
            .send_offsets_to_transaction(offsets, group, timeout)?;
        self.producer.commit_transaction(timeout)
    }

    /// Aborts the open transaction.
    pub fn abort(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.abort_transaction(timeout)
    }

    /// Waits until every queued record is delivered or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

/// A group of records whose deliveries are awaited together.
#[derive(Debug, Default)]
pub struct Batch {
    /// Records queued and not yet reported.
    pending: AtomicUsize,
    /// What went wrong, if anything.
    failures: Mutex<Failures>,
}

/// The failed deliveries of a batch.
#[derive(Debug, Default)]
pub struct Failures {
    /// Records the brokers refused for good (too large, invalid): retrying cannot help.
    pub refused: Vec<(KafkaError, OwnedMessage)>,
    /// The first failure of another kind, with its topic.
    pub failed: Option<(KafkaError, String)>,
}

impl Batch {
    /// A new, empty batch.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// True when every record queued so far has its delivery report.
    pub fn is_settled(&self) -> bool {
        self.pending.load(Ordering::SeqCst) == 0
    }

    /// The failures reported so far (taken: a second call sees only later ones).
    pub fn take_failures(&self) -> Failures {
        std::mem::take(&mut *self.failures.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The producer's context: settles batches and counts produced records per topic.
pub struct Deliveries {
    /// Produced-record counters of the known output topics.
    produced: Vec<(String, Counter)>,
    /// Signalled whenever a batch settles.
    settled: (Mutex<()>, Condvar),
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Arc<Batch>;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: Arc<Batch>) {
        match result {
            Ok(message) => {
                let topic = message.topic();
                match self.produced.iter().find(|(name, _)| name == topic) {
                    Some((_, produced)) => produced.increment(1),
                    None => counter!(telemetry::RECORDS_PRODUCED, "topic" => topic.to_string())
                        .increment(1),
                }
            }
            Err((error, message)) => {
                counter!(telemetry::PRODUCE_ERRORS).increment(1);
                let mut failures = batch
                    .failures
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if refused_for_good(error) {
                    failures.refused.push((error.clone(), message.detach()));
                } else if failures.failed.is_none() {
                    failures.failed = Some((error.clone(), message.topic().to_string()));
                }
            }
        }
        if batch.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            let (lock, settled) = &self.settled;
            let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
            settled.notify_all();
        }
    }
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
