//! Pipeline: runs the data's path on its own thread.
//!
//! Each cycle polls a batch of records, decodes them, hands each task its
//! records in `occurred_at` order (merging its three partitions), sends every
//! output through the one producer, and queues a checkpoint.
//!
//! Delivery guarantee (at-least-once outputs, effectively-once state): the
//! committer awaits the delivery of every output of a checkpoint, in order,
//! then writes the changelog records of the state those records produced,
//! awaits them, and only then stores the offsets of the records; librdkafka
//! commits stored offsets. A crash therefore replays records whose outputs may
//! already be out (the replayed outputs carry the same deterministic
//! `event_id`), and the restored state says which input offsets it already
//! includes, so a replayed record changes profiles and windows only once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use metrics::{counter, gauge, histogram};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::DeliveryFuture;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::config::{ClientRole, Config, Guarantee};
use crate::event::{EventTime, Source};
use crate::output::{DeadLetter, Encoder, OutputRecord, SourcePosition, PRODUCER_MAX_RECORD_BYTES};
use crate::process::{Cycle, InputHealth, InputRecord, Processor};
use crate::sink::Sink;
use crate::source::{self, Assignment, InputConsumer};
use crate::task::{Task, TaskSettings};
use crate::telemetry;
use crate::window::FinalWindow;
use crate::{fault, restore, topics};

/// State shared between the pipeline thread, the HTTP server and the demo.
#[derive(Default)]
pub struct Shared {
    /// The tasks this instance owns, by partition number.
    pub tasks: Mutex<BTreeMap<u32, Task>>,
    /// True once the first assignment was received and consumption runs.
    pub ready: AtomicBool,
    /// Set to ask the pipeline to stop gracefully.
    pub stop: AtomicBool,
    /// Valid events applied since start.
    pub events_applied: AtomicU64,
    /// Latest final window per (window name, task).
    pub latest_windows: Mutex<BTreeMap<(Arc<str>, u32), FinalWindow>>,
}

impl Shared {
    /// Locks the tasks, recovering from a poisoned lock (state is still consistent per event).
    pub fn tasks(&self) -> MutexGuard<'_, BTreeMap<u32, Task>> {
        self.tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Locks the latest windows.
    pub fn latest_windows(&self) -> MutexGuard<'_, BTreeMap<(Arc<str>, u32), FinalWindow>> {
        self.latest_windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running pipeline.
pub struct Running {
    shared: Arc<Shared>,
    partitions: usize,
    thread: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Shared state, for HTTP and summaries.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Partitions of each input topic.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// Asks the pipeline to stop after the current cycle.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }

    /// True when the pipeline thread has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the pipeline thread and returns how it ended.
    pub fn join(self) -> anyhow::Result<()> {
        match self.thread.join() {
            Ok(result) => result,
            Err(_) => anyhow::bail!("the pipeline thread panicked"),
        }
    }
}

/// Checks the inputs, subscribes and starts the pipeline thread.
pub fn start(
    config: Config,
    runtime: tokio::runtime::Handle,
    shared: Arc<Shared>,
) -> anyhow::Result<Running> {
    let consumer = source::consumer(&config).context("creating the consumer")?;
    let partitions = source::wait_for_inputs(&consumer, &config)?;
    // Outputs and the changelog exist, co-partitioned, before any task restores or produces.
    let outputs = topics::outputs(&config, partitions as i32);
    runtime.block_on(topics::ensure(&config, &outputs))?;
    let record_limits = runtime.block_on(topics::check_outputs(&config, &outputs))?;
    let changelog = &config.topics.changelog;
    let metadata = consumer.fetch_metadata(Some(changelog), Duration::from_secs(30))?;
    let changelog_partitions = metadata
        .topics()
        .first()
        .map_or(0, |topic| topic.partitions().len());
    if changelog_partitions != partitions {
        anyhow::bail!(
            "changelog topic `{changelog}` has {changelog_partitions} partitions but the inputs have {partitions}; \
             it must be co-partitioned (topics.changelog names it)"
        );
    }
    let inputs: Vec<&str> = Source::ALL
        .iter()
        .map(|source| config.topics.input(*source))
        .collect();
    consumer
        .subscribe(&inputs)
        .context("subscribing to the input topics")?;
    info!(partitions, topics = ?inputs, "inputs are co-partitioned; subscribed");
    let transactional_id = (config.processing.guarantee == Guarantee::ExactlyOnce).then(|| {
        if config.kafka.transactional_id.is_empty() {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "cxpulse".into());
            format!("{}-{host}", config.kafka.group_id)
        } else {
            config.kafka.transactional_id.clone()
        }
    });
    let sink =
        Sink::new(&config.kafka, transactional_id.as_deref()).context("creating the producer")?;
    let thread_shared = shared.clone();
    let thread = std::thread::Builder::new()
        .name("cxpulse-pipeline".into())
        .spawn(move || {
            Loop::new(
                config,
                consumer,
                sink,
                thread_shared,
                runtime,
                record_limits,
            )
            .run()
        })
        .context("spawning the pipeline thread")?;
    Ok(Running {
        shared,
        partitions,
        thread,
    })
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

/// The processing loop and everything it owns.
struct Loop {
    config: Config,
    consumer: Arc<InputConsumer>,
    sink: Sink,
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    settings: Arc<TaskSettings>,
    encoder: Encoder,
    processor: Processor,
    /// Since when librdkafka reports every broker down, and when we last probed.
    brokers_down: Option<(Instant, Instant)>,
}

impl Loop {
    fn new(
        config: Config,
        consumer: InputConsumer,
        sink: Sink,
        shared: Arc<Shared>,
        runtime: tokio::runtime::Handle,
        record_limits: topics::RecordLimits,
    ) -> Self {
        let producer_max_bytes = config
            .kafka
            .client(ClientRole::Producer)
            .ok()
            .and_then(|client| client.get("message.max.bytes")?.parse().ok())
            .unwrap_or(PRODUCER_MAX_RECORD_BYTES);
        let encoder = Encoder::new(
            config.topics.clone(),
            config.formats.outputs,
            &config.kafka.client_id,
        )
        .with_limits(producer_max_bytes, record_limits);
        Loop {
            settings: Arc::new(TaskSettings::from_config(&config)),
            processor: Processor::new(&config, encoder.clone()),
            encoder,
            brokers_down: None,
            consumer: Arc::new(consumer),
            sink,
            shared,
            runtime,
            config,
        }
    }

    fn run(mut self) -> anyhow::Result<()> {
        let (checkpoints, receiver) = mpsc::channel(64);
        let committer = self.runtime.spawn(commit_delivered(
            self.consumer.clone(),
            self.sink.clone(),
            self.encoder.clone(),
            self.config.topics.changelog.clone(),
            receiver,
        ));
        let result = self.cycle_until_stopped(&checkpoints, &committer);
        // Drain: every queued checkpoint is awaited and stored, then committed.
        drop(checkpoints);
        let drained = self.runtime.block_on(committer);
        if let Err(error) = self.sink.flush(self.config.processing.shutdown_timeout) {
            warn!(%error, "producer flush at shutdown failed");
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => info!("final offsets committed"),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
                info!("all offsets were already committed")
            }
            Err(error) => {
                warn!(%error, "final commit failed; the next owner replays from the last commit")
            }
        }
        self.consumer.unsubscribe();
        self.shared.ready.store(false, Ordering::SeqCst);
        result?;
        drained.context("committer task")??;
        info!("pipeline stopped");
        Ok(())
    }

    fn cycle_until_stopped(
        &mut self,
        checkpoints: &mpsc::Sender<Checkpoint>,
        committer: &tokio::task::JoinHandle<anyhow::Result<()>>,
    ) -> anyhow::Result<()> {
        while !self.shared.stop.load(Ordering::SeqCst) {
            if committer.is_finished() {
                anyhow::bail!(
                    "output delivery failed; stopping so that no offset passes undelivered work"
                );
            }
            let records = self.poll_batch();
            self.check_brokers()?;
            self.apply_assignment_changes()?;
            let cycle = self.process(records);
            if cycle.is_empty() {
                continue;
            }
            if self.config.processing.guarantee == Guarantee::ExactlyOnce {
                self.commit_transaction(cycle)?;
                continue;
            }
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
            if checkpoints.blocking_send(checkpoint).is_err() {
                anyhow::bail!("the committer stopped");
            }
        }
        Ok(())
    }

    /// Exactly-once: outputs, changelog and input offsets of one cycle in one transaction.
    /// Any failure aborts it and stops the pipeline; the restart restores the state of
    /// the last committed transaction and replays from its offsets.
    fn commit_transaction(&mut self, cycle: Cycle) -> anyhow::Result<()> {
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
                self.sink.send_state(
                    &self.config.topics.changelog,
                    *task as i32,
                    key,
                    value.as_deref(),
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

    /// Fails once every broker has been unreachable for `kafka.unreachable_timeout`;
    /// until then librdkafka keeps retrying and a probe every few seconds notices recovery.
    fn check_brokers(&mut self) -> anyhow::Result<()> {
        let Some((since, probed)) = self.brokers_down else {
            return Ok(());
        };
        let limit = self.config.kafka.unreachable_timeout;
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
    fn poll_batch(&mut self) -> Vec<InputRecord> {
        let processing = &self.config.processing;
        let deadline = Instant::now() + processing.batch_max_wait;
        let mut records = Vec::new();
        while records.len() < processing.batch_max_records {
            let wait = if records.is_empty() {
                deadline.saturating_duration_since(Instant::now())
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
                    let Some(source) = self.config.topics.source_of(message.topic()) else {
                        continue;
                    };
                    let headers = owned_headers(&message);
                    records.push(InputRecord {
                        source,
                        position: SourcePosition {
                            topic: message.topic().to_string(),
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
            if Instant::now() >= deadline && !records.is_empty() {
                break;
            }
        }
        records
    }

    /// Creates (restoring from the changelog) or drops tasks after a rebalance.
    fn apply_assignment_changes(&mut self) -> anyhow::Result<()> {
        let changes = self.consumer.context().take_changes();
        if changes.is_empty() {
            return Ok(());
        }
        let shared = self.shared.clone();
        for change in changes {
            match change {
                Assignment::Assigned(ids) => {
                    // Not ready while restoring: a restored task consumes, an unrestored one never does.
                    shared.ready.store(false, Ordering::SeqCst);
                    for id in ids {
                        if shared.tasks().contains_key(&id) {
                            continue;
                        }
                        // Without the lock: a restore can take minutes, and HTTP handlers
                        // (`/v1/customers`) lock the tasks on the runtime's few threads.
                        let task = restore::restore(
                            &self.config,
                            id,
                            self.settings.clone(),
                            Duration::from_secs(30),
                        )?;
                        shared.tasks().insert(id, task);
                    }
                    shared.ready.store(true, Ordering::SeqCst);
                }
                Assignment::Revoked(ids) => {
                    for id in ids {
                        shared.tasks().remove(&id);
                        self.processor.zero_task_gauges(id);
                        shared.latest_windows().retain(|(_, task), _| *task != id);
                    }
                }
            }
        }
        gauge!(telemetry::TASKS_ASSIGNED).set(shared.tasks().len() as f64);
        Ok(())
    }

    /// Applies a batch under the tasks lock (see [`Processor::process`]), then
    /// publishes the windows it made final to the live view.
    fn process(&mut self, records: Vec<InputRecord>) -> Cycle {
        let consumer = self.consumer.clone();
        let topics = &self.config.topics;
        let backlog = |source: Source, task: u32| {
            consumer
                .context()
                .has_backlog(topics.input(source), task as i32)
        };
        let health = InputHealth {
            backlog: &backlog,
            brokers_down: self.brokers_down.is_some(),
        };
        let shared = self.shared.clone();
        let mut cycle = {
            let mut tasks = shared.tasks();
            self.processor
                .process(records, &mut tasks, EventTime::now(), &health)
        };
        shared
            .events_applied
            .fetch_add(cycle.applied, Ordering::Relaxed);
        if !cycle.finals.is_empty() {
            let mut latest = shared.latest_windows();
            for (task, window) in cycle.finals.drain(..) {
                latest.insert((window.name.clone(), task), window);
            }
        }
        cycle
    }
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

/// A record's headers, copied out of librdkafka's buffer (a null header value is empty).
fn owned_headers(message: &impl Message) -> Vec<(String, Vec<u8>)> {
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| {
                    (
                        header.key.to_string(),
                        header.value.unwrap_or_default().to_vec(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
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
