//! Sink: the one idempotent producer every output goes through.
//!
//! `send` never drops a record: when librdkafka's queue is full it waits for
//! deliveries to free room (backpressure reaches the consumer loop, which
//! stops fetching meanwhile) and tries again.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::config::{ClientRole, ConfigError, KafkaConfig};
use crate::output::OutputRecord;

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
    producer: FutureProducer,
}

impl Sink {
    /// Creates the idempotent producer from config; transactional when `transactional_id` is given.
    pub fn new(config: &KafkaConfig, transactional_id: Option<&str>) -> Result<Self, SinkError> {
        let mut client = ClientConfig::new();
        client
            .set("client.id", format!("{}-producer", config.client_id))
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", "300000");
        if let Some(id) = transactional_id {
            // A record may not outlive its transaction (librdkafka's default is 60s).
            client
                .set("transactional.id", id)
                .set("message.timeout.ms", "60000");
        }
        let producer: FutureProducer =
            config.client_over(ClientRole::Producer, client)?.create()?;
        if transactional_id.is_some() {
            producer.init_transactions(Duration::from_secs(30))?;
        }
        Ok(Sink { producer })
    }

    /// Queues `record`; the future resolves when the brokers acknowledged it.
    pub fn send(&self, record: &OutputRecord) -> Result<DeliveryFuture, KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_slice()),
            });
        }
        let future_record = FutureRecord::to(&record.topic)
            .key(&record.key)
            .payload(&record.value)
            .headers(headers);
        self.enqueue(future_record)
    }

    /// Queues a state record for partition `partition` of `topic`; `None` is a tombstone.
    pub fn send_state(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<DeliveryFuture, KafkaError> {
        let mut future_record = FutureRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .key(key);
        if let Some(value) = value {
            future_record = future_record.payload(value);
        }
        self.enqueue(future_record)
    }

    fn enqueue<K, P>(
        &self,
        mut future_record: FutureRecord<'_, K, P>,
    ) -> Result<DeliveryFuture, KafkaError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        loop {
            match self.producer.send_result(future_record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    // Backpressure: let in-flight deliveries complete, then retry.
                    self.producer.poll(Duration::from_millis(50));
                    future_record = returned;
                }
                Err((error, _)) => return Err(error),
            }
        }
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
