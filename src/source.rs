//! Source: the Kafka consumer of the three input topics.
//!
//! One consumer group member per instance subscribes to the inputs with a
//! `range` assignor (the client's with the classic protocol, the brokers' with
//! KIP-848), so partition `i` of every input topic lands on the same member:
//! that set is task `i`. With KIP-848 rebalances are incremental, and with a
//! `group.instance.id` (static membership) a restarted instance takes its tasks
//! back without a rebalance. The consumer is a `BaseConsumer` polled by
//! the pipeline's own thread. Under at-least-once, the commit strategy stores
//! a record's offset only once its outputs are delivered and its task's state
//! is in the changelog (see `commit`), and librdkafka commits stored offsets
//! every `commit_interval` and on revocation; under exactly-once the offsets
//! are committed in each cycle's transaction.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message as _;
// `Producer` provides the probe's `context()`.
use rdkafka::producer::{BaseProducer, Producer as _};
use rdkafka::statistics::Statistics;
use rdkafka::TopicPartitionList;
use tracing::{info, warn};

use crate::output::{Header, SourcePosition};
use crate::process::InputRecord;

use crate::config::{ClientRole, Config, ConfigError, GroupProtocol};
use crate::event::Source;
use crate::telemetry;

/// A change of the partitions this instance owns, seen during `poll`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// These task ids (partition numbers) were assigned.
    Assigned(BTreeSet<u32>),
    /// These task ids were revoked.
    Revoked(BTreeSet<u32>),
}

/// Consumer callbacks: rebalances, commits and statistics.
#[derive(Default)]
pub struct SourceContext {
    changes: Mutex<Vec<Assignment>>,
    /// `changes` is not empty: read per polled record, so without the lock.
    changed: AtomicBool,
    /// Consumer lag of the partitions this member owns, from statistics.
    lag: Mutex<PartitionLag>,
}

/// The partitions this member owns and their last reported lag.
///
/// Ownership comes from the rebalance callbacks, not from the statistics: a
/// statistics report made just before a revocation can be served just after
/// it, still calling the revoked partitions desired, and would bring their
/// lag gauges back from zero (double counted by `sum()` across pods).
#[derive(Default)]
struct PartitionLag {
    /// (topic, partition) pairs assigned to this member.
    owned: HashSet<(String, i32)>,
    /// Records not yet handed to the application, per owned (topic, partition).
    records: HashMap<(String, i32), i64>,
}

impl PartitionLag {
    /// Forgets a partition and zeroes its gauge if one was reported.
    fn forget(&mut self, topic: &str, partition: i32) {
        let key = (topic.to_string(), partition);
        self.owned.remove(&key);
        if self.records.remove(&key).is_some() {
            gauge!(telemetry::CONSUMER_LAG, "topic" => key.0, "partition" => key.1.to_string())
                .set(0.0);
        }
    }
}

impl SourceContext {
    /// Assignment changes since the last call, in order.
    pub fn take_changes(&self) -> Vec<Assignment> {
        let mut changes = self
            .changes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.changed.store(false, Ordering::Release);
        std::mem::take(&mut *changes)
    }

    /// True when an assignment change waits to be taken.
    pub fn has_changes(&self) -> bool {
        self.changed.load(Ordering::Acquire)
    }

    /// The owned partitions and their lag (a poisoned lock still holds consistent sets).
    fn partition_lag(&self) -> MutexGuard<'_, PartitionLag> {
        self.lag.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True when the statistics last reported records of this partition not yet consumed.
    pub fn has_backlog(&self, topic: &str, partition: i32) -> bool {
        let lag = self.partition_lag();
        lag.records
            .get(&(topic.to_string(), partition))
            .is_some_and(|lag| *lag > 0)
    }

    fn push(&self, change: Assignment) {
        let mut changes = self
            .changes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        changes.push(change);
        self.changed.store(true, Ordering::Release);
    }
}

fn tasks_of(tpl: &TopicPartitionList) -> BTreeSet<u32> {
    tpl.elements()
        .iter()
        .filter_map(|element| u32::try_from(element.partition()).ok())
        .collect()
}

/// A client whose only job is to report, at start-up, that the brokers refused our
/// credentials or certificate; librdkafka's reason names the mechanism, never the secret.
#[derive(Default)]
struct AuthProbe(Mutex<Option<String>>);

impl AuthProbe {
    fn failure(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl ClientContext for AuthProbe {
    fn error(&self, error: KafkaError, reason: &str) {
        if is_authentication(&error) {
            *self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(reason.to_string());
        }
    }
}

impl rdkafka::producer::ProducerContext for AuthProbe {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Errors that mean the brokers refused our credentials or certificate.
fn is_authentication(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            rdkafka::types::RDKafkaErrorCode::Authentication
                | rdkafka::types::RDKafkaErrorCode::SaslAuthenticationFailed
                | rdkafka::types::RDKafkaErrorCode::SSL
        )
    )
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        let mut lag = self.partition_lag();
        for (topic, topic_stats) in &statistics.topics {
            for (partition, stats) in &topic_stats.partitions {
                let key = (topic.clone(), *partition);
                // Lag -1 means unknown; partition -1 is librdkafka's internal UA
                // partition and is never owned.
                if !lag.owned.contains(&key) || !stats.desired || stats.consumer_lag < 0 {
                    continue;
                }
                gauge!(telemetry::CONSUMER_LAG, "topic" => topic.clone(), "partition" => partition.to_string())
                    .set(stats.consumer_lag as f64);
                lag.records.insert(key, stats.consumer_lag);
            }
        }
    }
}

impl SourceContext {
    /// Records partitions this member now owns; their lag is reported from the next statistics.
    fn own(&self, assigned: &TopicPartitionList) {
        let mut lag = self.partition_lag();
        for element in assigned.elements() {
            lag.owned
                .insert((element.topic().to_string(), element.partition()));
        }
    }

    /// Zeroes the lag gauges of partitions this member gives up, at once: the
    /// statistics would stop reporting them only at their next report, and
    /// meanwhile `sum()` across pods would count those partitions twice.
    fn disown(&self, revoked: &TopicPartitionList) {
        let mut lag = self.partition_lag();
        for element in revoked.elements() {
            lag.forget(element.topic(), element.partition());
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Commit what is delivered before another member takes over (rust-rdkafka #627).
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(())
                | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
                Err(error) => {
                    warn!(%error, "commit on revoke failed; records may be processed again")
                }
            }
            self.disown(tpl);
            let tasks = tasks_of(tpl);
            info!(?tasks, "tasks revoked");
            self.push(Assignment::Revoked(tasks));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.own(tpl);
                let tasks = tasks_of(tpl);
                info!(?tasks, "tasks assigned");
                self.push(Assignment::Assigned(tasks));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => warn!(%error, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        let outcome = match result {
            Ok(()) => "ok",
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => return,
            Err(error) => {
                warn!(%error, "offset commit failed");
                "error"
            }
        };
        counter!(telemetry::COMMITS, "result" => outcome).increment(1);
    }
}

/// The input consumer.
pub type InputConsumer = BaseConsumer<SourceContext>;

/// Why the inputs cannot be consumed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// librdkafka refused the configuration or a request failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The Kafka client configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The brokers refused the client's credentials or certificate.
    #[error("Kafka authentication failed: {0} (check kafka.properties sasl.username/sasl.mechanisms, the password in CXPULSE_KAFKA__SASL_PASSWORD or the file CXPULSE_KAFKA__SASL_PASSWORD_FILE names, and ssl.ca.location)")]
    Authentication(String),
    /// No broker answered within `kafka.unreachable_timeout`.
    #[error("no Kafka broker answered within {0:?} (kafka.unreachable_timeout): {1}")]
    Unreachable(Duration, KafkaError),
    /// An input topic is missing.
    #[error("input topic `{0}` does not exist (create it with the same partition count as the other inputs)")]
    MissingTopic(String),
    /// Input topics have different partition counts.
    #[error("input topics are not co-partitioned: {0}; all three need the same partition count")]
    NotCoPartitioned(String),
    /// A shutdown was requested while waiting for the brokers.
    #[error("start-up abandoned: shutdown requested")]
    Stopped,
}

/// Creates the consumer (not yet subscribed).
pub fn consumer(config: &Config) -> Result<InputConsumer, SourceError> {
    let kafka = &config.kafka;
    // Ours first, so that `kafka.properties` and `kafka.consumer` can tune them.
    let mut client = ClientConfig::new();
    client
        .set("group.id", &kafka.group_id)
        .set("client.id", format!("{}-consumer", kafka.client_id))
        .set("enable.auto.commit", "true")
        .set(
            "auto.commit.interval.ms",
            kafka.commit_interval.as_millis().to_string(),
        )
        // The commit strategy stores offsets once outputs and state are durable (`commit`).
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Lag per partition feeds the metrics and the idle-partition rule.
        .set("statistics.interval.ms", "1000")
        // How long a fetch may wait at the broker for data. With librdkafka's 500 ms
        // default the pipeline bench on Apache Kafka showed latency spikes of about
        // that length even at 5,000 events/s; a short wait costs at most 40 idle
        // fetches a second. (Other tail sources remain: see the bench's figures.)
        .set("fetch.wait.max.ms", "25")
        // Prefetch: at most 16 MiB queued locally (librdkafka's default is 64 MiB,
        // touched page by page while a backlog is read), and a partition over it
        // fetches again after 100 ms rather than librdkafka's 1 s: the pipeline
        // drains the queue well within a second, so catching up on a backlog
        // stalled for most of each second (600k events: 3.6-4.1 s instead of 5.4).
        .set("queued.max.messages.kbytes", "16384")
        .set("fetch.queue.backoff.ms", "100");
    match kafka.group_protocol {
        // Partition i of every input lands on one member: that set is task i.
        GroupProtocol::Classic => client.set("partition.assignment.strategy", "range"),
        GroupProtocol::Consumer => client
            .set("group.protocol", "consumer")
            .set("group.remote.assignor", "range"),
    };
    if !kafka.group_instance_id.is_empty() {
        client.set("group.instance.id", &kafka.group_instance_id);
    }
    if config.processing.guarantee == crate::config::Guarantee::ExactlyOnce {
        // Offsets commit inside the producer's transactions; aborted records are never read.
        client
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
    }
    // (`config_map` would hide secrets: the configured properties go on top of ours.)
    let mut client = kafka.client_over(ClientRole::Consumer, client)?;
    if kafka.group_protocol == GroupProtocol::Consumer {
        // KIP-848 moves these to the brokers; librdkafka refuses them with that protocol.
        for key in [
            "partition.assignment.strategy",
            "session.timeout.ms",
            "heartbeat.interval.ms",
        ] {
            client.remove(key);
        }
    }
    Ok(client.create_with_context(SourceContext::default())?)
}

/// Checks the inputs, retrying while the brokers are unreachable, for at most
/// `kafka.unreachable_timeout`; returns the partition count.
pub fn wait_for_inputs(
    consumer: &InputConsumer,
    config: &Config,
    stop: &AtomicBool,
) -> Result<usize, SourceError> {
    let started = std::time::Instant::now();
    let limit = config.kafka.unreachable_timeout;
    let probe: BaseProducer<AuthProbe> = config
        .kafka
        .client(ClientRole::Admin)?
        .create_with_context(AuthProbe::default())?;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(SourceError::Stopped);
        }
        // A consumer that is not subscribed reports no errors: the probe does.
        probe.poll(Duration::ZERO);
        if let Some(reason) = probe.context().failure() {
            return Err(SourceError::Authentication(reason));
        }
        let attempt = Duration::from_secs(2)
            .min(limit.saturating_sub(started.elapsed()))
            .max(Duration::from_millis(500));
        match check_co_partitioning(consumer, config, attempt) {
            Err(SourceError::Kafka(error)) if started.elapsed() < limit => {
                warn!(%error, waited = ?started.elapsed(), ?limit, "brokers unreachable at start-up; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(SourceError::Kafka(error)) => {
                return Err(SourceError::Unreachable(limit, error));
            }
            other => return other,
        }
    }
}

/// Checks that the three inputs exist and share one partition count; returns it.
pub fn check_co_partitioning(
    consumer: &InputConsumer,
    config: &Config,
    timeout: Duration,
) -> Result<usize, SourceError> {
    let mut counts = Vec::new();
    for source in Source::ALL {
        let topic = config.topics.input(source);
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|candidate| candidate.name() == topic && candidate.error().is_none())
            .map(|found| found.partitions().len())
            .filter(|count| *count > 0)
            .ok_or_else(|| SourceError::MissingTopic(topic.to_string()))?;
        counts.push((topic, partitions));
    }
    if counts.iter().any(|(_, count)| *count != counts[0].1) {
        let listing: Vec<String> = counts
            .iter()
            .map(|(topic, count)| format!("{topic} has {count}"))
            .collect();
        return Err(SourceError::NotCoPartitioned(listing.join(", ")));
    }
    Ok(counts[0].1)
}

/// A record's headers, copied out of librdkafka's buffer (a null header value is empty).
pub fn owned_headers(message: &impl rdkafka::message::Message) -> Vec<Header> {
    use rdkafka::message::Headers as _;
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| {
                    (
                        Cow::Owned(header.key.to_string()),
                        Cow::Owned(header.value.unwrap_or_default().to_vec()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `wait` rounded up to whole milliseconds, librdkafka's unit: rdkafka's poll
/// truncates, and spins with zero timeouts through the sub-millisecond rest.
fn whole_millis(wait: Duration) -> Duration {
    Duration::from_millis(u64::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u64::MAX))
}

/// The input side of the loop: polls batches of input records off the
/// consumer and tracks whether the brokers answer.
pub struct InputSource {
    consumer: std::sync::Arc<InputConsumer>,
    topics: crate::config::TopicsConfig,
    /// The input topics' names, by [`Source::index`], shared by every record's position.
    input_topics: [std::sync::Arc<str>; 3],
    batch_max_records: usize,
    batch_max_wait: Duration,
    unreachable_timeout: Duration,
    /// Since when librdkafka reports every broker down, and when we last probed.
    brokers_down: Option<(Instant, Instant)>,
}

impl InputSource {
    /// Batches of `config.processing`'s size from `consumer`.
    pub fn new(consumer: std::sync::Arc<InputConsumer>, config: &Config) -> Self {
        InputSource {
            consumer,
            topics: config.topics.clone(),
            input_topics: Source::ALL
                .map(|source| std::sync::Arc::from(config.topics.input(source))),
            batch_max_records: config.processing.batch_max_records,
            batch_max_wait: config.processing.batch_max_wait,
            unreachable_timeout: config.kafka.unreachable_timeout,
            brokers_down: None,
        }
    }

    /// True while librdkafka reports every broker down.
    pub fn brokers_down(&self) -> bool {
        self.brokers_down.is_some()
    }

    /// Whether the broker holds unread records of `source`'s partition `task`.
    pub fn has_backlog(&self, source: Source, task: u32) -> bool {
        self.consumer
            .context()
            .has_backlog(self.topics.input(source), task as i32)
    }

    /// Fails once every broker has been unreachable for `kafka.unreachable_timeout`;
    /// until then librdkafka keeps retrying and a probe every few seconds notices recovery.
    pub fn check_brokers(&mut self) -> anyhow::Result<()> {
        let Some((since, probed)) = self.brokers_down else {
            return Ok(());
        };
        let limit = self.unreachable_timeout;
        if since.elapsed() >= limit {
            anyhow::bail!(
                "every Kafka broker has been unreachable for {:?} (kafka.unreachable_timeout); giving up",
                since.elapsed()
            );
        }
        if probed.elapsed() >= Duration::from_secs(5) {
            if self
                .consumer
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok()
            {
                info!("brokers reachable again");
                self.brokers_down = None;
            } else {
                warn!(down_for = ?since.elapsed(), limit = ?limit, "brokers still unreachable; retrying");
                self.brokers_down = Some((since, Instant::now()));
            }
        }
        Ok(())
    }

    /// Polls up to `batch_max_records`, waiting at most `batch_max_wait` for the first.
    pub fn poll_batch(&mut self) -> Vec<InputRecord> {
        // The clock is read once per this many records, not per record.
        const CLOCK_EVERY: usize = 64;
        let deadline = Instant::now() + self.batch_max_wait;
        let mut records = Vec::with_capacity(self.batch_max_records.min(4096));
        while records.len() < self.batch_max_records {
            let wait = if records.is_empty() {
                whole_millis(deadline.saturating_duration_since(Instant::now()))
            } else {
                Duration::ZERO
            };
            match self.consumer.poll(wait) {
                None => break,
                Some(Err(error)) => {
                    if let KafkaError::Global(RDKafkaErrorCode::AllBrokersDown) = error {
                        let now = Instant::now();
                        self.brokers_down.get_or_insert((now, now));
                    }
                    warn!(%error, "consumer error");
                    break;
                }
                Some(Ok(message)) => {
                    self.brokers_down = None;
                    let Some(source) = self.topics.source_of(message.topic()) else {
                        continue;
                    };
                    let headers = owned_headers(&message);
                    records.push(InputRecord {
                        source,
                        position: SourcePosition {
                            topic: self.input_topics[source.index()].clone(),
                            partition: message.partition(),
                            offset: message.offset(),
                        },
                        key: message.key().map(<[u8]>::to_vec),
                        value: message.payload().map(<[u8]>::to_vec),
                        headers,
                        appended_at: message.timestamp().to_millis(),
                    });
                }
            }
            if records.len() % CLOCK_EVERY == 0 && Instant::now() >= deadline && !records.is_empty()
            {
                break;
            }
            // A rebalance ends the batch: its records all come from before it, so
            // those of a task that is then restored can be dropped and read again.
            if self.consumer.context().has_changes() {
                break;
            }
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::statistics::{Partition, Topic};

    fn partitions(topic: &str, partitions: &[i32]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            list.add_partition(topic, *partition);
        }
        list
    }

    /// A report in which every listed partition is desired with the given lag.
    fn report(topic: &str, lags: &[(i32, i64)]) -> Statistics {
        let partitions = lags
            .iter()
            .map(|&(partition, consumer_lag)| {
                let stats = Partition {
                    partition,
                    desired: true,
                    consumer_lag,
                    ..Partition::default()
                };
                (partition, stats)
            })
            .collect();
        let topic_stats = Topic {
            topic: topic.to_string(),
            partitions,
            ..Topic::default()
        };
        Statistics {
            topics: HashMap::from([(topic.to_string(), topic_stats)]),
            ..Statistics::default()
        }
    }

    #[test]
    fn lag_is_kept_only_for_owned_partitions() {
        let context = SourceContext::default();
        context.own(&partitions("cx.purchases", &[0, 1]));
        context.stats(report("cx.purchases", &[(0, 5), (1, 0), (2, 7)]));
        assert!(context.has_backlog("cx.purchases", 0));
        assert!(!context.has_backlog("cx.purchases", 1));
        assert!(!context.has_backlog("cx.purchases", 2), "never owned");
    }

    #[test]
    fn a_report_made_before_a_revocation_does_not_bring_its_lag_back() {
        let context = SourceContext::default();
        context.own(&partitions("cx.purchases", &[0, 3]));
        context.stats(report("cx.purchases", &[(0, 5), (3, 300)]));
        context.disown(&partitions("cx.purchases", &[3]));
        assert!(!context.has_backlog("cx.purchases", 3));
        // Served after the revocation, it still calls partition 3 desired.
        context.stats(report("cx.purchases", &[(0, 5), (3, 300)]));
        assert!(!context.has_backlog("cx.purchases", 3));
        assert!(context.has_backlog("cx.purchases", 0));
    }
}
