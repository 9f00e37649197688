//! Restore: reads a task's changelog partition back into a [`Task`] before
//! the task consumes, reporting progress as metrics and log lines.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use metrics::{counter, gauge};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::config::{ClientRole, Config};
use crate::event::EventTime;
use crate::shared::Shared;
use crate::task::changelog::Restorer;
use crate::task::{Task, TaskSettings};
use crate::telemetry;

/// Callbacks of the restore consumer.
struct RestoreContext;

impl ClientContext for RestoreContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // Reaching the end of the changelog is how a restore finishes, not an error:
        // librdkafka's default context would log it at error level on every restore.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        warn!(%error, reason, "restore consumer error");
    }
}

impl ConsumerContext for RestoreContext {}

/// Reads partition `task` of the changelog from the beginning to its end and rebuilds the task.
///
/// Gives up with an error when `shared.stop` is set, and beats `shared.heartbeat`
/// as it goes (a long restore is progress, not a stall).
pub fn restore(
    config: &Config,
    task: u32,
    settings: Arc<TaskSettings>,
    timeout: Duration,
    shared: &Shared,
) -> anyhow::Result<Task> {
    let started = Instant::now();
    let wall = EventTime::now();
    telemetry::register_task(task);
    let mut sink = RestoreSink {
        task,
        settings: settings.clone(),
        wall,
        restorer: None,
    };
    let count = read_changelog(config, task, timeout, &mut sink, shared)?;
    let label = task.to_string();
    let Some(restorer) = sink.restorer else {
        gauge!(telemetry::RESTORE_REMAINING, telemetry::PARTITION => label).set(0.0);
        return Ok(Task::new(task, settings, wall));
    };
    let restored = restorer
        .finish()
        .with_context(|| format!("restoring task {task}"))?;
    let seconds = started.elapsed().as_secs_f64();
    gauge!(telemetry::RESTORE_REMAINING, telemetry::PARTITION => label.clone()).set(0.0);
    gauge!(telemetry::RESTORE_RATE, telemetry::PARTITION => label)
        .set(count as f64 / seconds.max(1e-9));
    info!(
        task,
        records = count,
        profiles = restored.profile_count(),
        seconds,
        records_per_second = (count as f64 / seconds.max(1e-9)).round(),
        "task state restored"
    );
    Ok(restored)
}

/// What a changelog read feeds, record by record.
pub trait ChangelogSink {
    /// The partition holds about `records` records (called once before any record,
    /// not at all when the partition is empty).
    fn start(&mut self, records: usize);

    /// The next record, oldest first, borrowed from librdkafka's buffers.
    fn record(&mut self, key: &[u8], value: Option<&[u8]>) -> anyhow::Result<()>;
}

/// Rebuilds a task from the records as they are read.
struct RestoreSink {
    task: u32,
    settings: Arc<TaskSettings>,
    wall: EventTime,
    restorer: Option<Restorer>,
}

impl ChangelogSink for RestoreSink {
    fn start(&mut self, records: usize) {
        // Sized once for what the partition holds: no rehashing while records arrive.
        self.restorer = Some(Restorer::with_capacity(
            self.task,
            self.settings.clone(),
            self.wall,
            records,
        ));
    }

    fn record(&mut self, key: &[u8], value: Option<&[u8]>) -> anyhow::Result<()> {
        match self.restorer.as_mut() {
            Some(restorer) => Ok(restorer.apply(key, value)?),
            None => Ok(()),
        }
    }
}

/// Reads partition `task` of the changelog from the beginning to its end into
/// `sink`, each record as it comes (nothing is copied or collected first).
/// Returns the number of records read; stops early, with an error, when
/// `shared.stop` is set.
pub fn read_changelog(
    config: &Config,
    task: u32,
    timeout: Duration,
    sink: &mut impl ChangelogSink,
    shared: &Shared,
) -> anyhow::Result<u64> {
    let topic = &config.topics.changelog;
    let partition = task as i32;
    let mut client = config.kafka.client(ClientRole::Admin)?;
    client
        .set("group.id", format!("{}-restore", config.kafka.group_id))
        .set("enable.auto.commit", "false")
        // The end of what read_committed may read: transaction markers (never handed
        // to us) and open transactions can leave the last offsets unreadable.
        .set("enable.partition.eof", "true")
        // State from aborted transactions must never come back.
        .set("isolation.level", "read_committed")
        // A restore reads one partition from start to end as fast as it can. With
        // librdkafka's defaults a fetch of small records overfills the pre-fetch
        // queue (queued.min.messages, 100,000) and the next fetch then waits
        // fetch.queue.backoff.ms (1 s): a million-record changelog read at 20 MB/s
        // with the broker and both sides idle. Large fetches, a queue bounded by
        // bytes (queued.max.messages.kbytes, 64 MiB by default) rather than by
        // count, and a short back-off keep the broker streaming.
        .set("fetch.max.bytes", "16777216")
        .set("max.partition.fetch.bytes", "16777216")
        .set("queued.min.messages", "10000000")
        .set("fetch.queue.backoff.ms", "10")
        .set("fetch.wait.max.ms", "10");
    let consumer: BaseConsumer<RestoreContext> = client
        .create_with_context(RestoreContext)
        .context("creating the restore consumer")?;
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, timeout)
        .with_context(|| format!("reading the end offsets of {topic}/{partition}"))?;
    let label = task.to_string();
    counter!(telemetry::RESTORES, telemetry::PARTITION => label.clone()).increment(1);
    let total = (high - low).max(0);
    let started = Instant::now();
    if total == 0 {
        return Ok(0);
    }
    sink.start(total as usize);
    // Visible at once, not only after the first progress report a second later.
    gauge!(telemetry::RESTORE_REMAINING, telemetry::PARTITION => label.clone()).set(total as f64);
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let mut count: u64 = 0;
    let mut counted: u64 = 0;
    let mut last_report = Instant::now();
    let mut position = low;
    while position < high {
        if shared.stop.load(Ordering::SeqCst) {
            anyhow::bail!(
                "restoring task {task} stopped at offset {position} of {high}: shutdown requested"
            );
        }
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(error)) if is_permanent(&error) => {
                return Err(error).context("reading the changelog")
            }
            // Transient (a broker connection lost, all brokers briefly down): librdkafka
            // reconnects by itself; the stall limit below bounds how long we wait.
            Some(Err(_)) => {}
            Some(Ok(message)) => {
                position = message.offset() + 1;
                sink.record(message.key().unwrap_or_default(), message.payload())
                    .with_context(|| {
                        format!(
                            "restoring task {task} at changelog offset {}",
                            message.offset()
                        )
                    })?;
                count += 1;
                // Metrics and clock reads every few thousand records, not per record.
                if count - counted < 4096 && position < high {
                    continue;
                }
            }
        }
        counter!(telemetry::RESTORE_RECORDS, telemetry::PARTITION => label.clone())
            .increment(count - counted);
        counted = count;
        shared.heartbeat.beat();
        if started.elapsed() > timeout.max(Duration::from_secs(60)) * 10 {
            anyhow::bail!("restoring task {task} stalled at offset {position} of {high}");
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            let remaining = (high - position).max(0);
            gauge!(telemetry::RESTORE_REMAINING, telemetry::PARTITION => label.clone())
                .set(remaining as f64);
            info!(
                task,
                restored = count,
                remaining,
                records_per_second = (count as f64 / started.elapsed().as_secs_f64()).round(),
                "restoring task state"
            );
            last_report = Instant::now();
        }
    }
    counter!(telemetry::RESTORE_RECORDS, telemetry::PARTITION => label).increment(count - counted);
    Ok(count)
}

/// Errors a restore cannot outlast by waiting: missing topic, refused access.
fn is_permanent(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::Fatal
        )
    )
}
