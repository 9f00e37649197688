//! Pipeline: runs the data's path on its own thread.
//!
//! Each cycle polls a batch of input records (`source`), processes it with no
//! Kafka in the way (`process`: merge by event time, decode, apply, encode),
//! and hands the result to the commit strategy of the configured guarantee
//! (`commit`: at-least-once or exactly-once). Start-up checks, broker health,
//! rebalances with their restores, and the drain at shutdown live here too.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use metrics::gauge;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use tracing::{info, warn};

use crate::commit::{AtLeastOnce, CommitStrategy, ExactlyOnce};
use crate::config::{ClientRole, Config, Guarantee};
use crate::event::{EventTime, Source};
use crate::output::{Encoder, SourcePosition, PRODUCER_MAX_RECORD_BYTES};
use crate::process::{Cycle, InputHealth, InputRecord, Processor};
use crate::sink::Sink;
use crate::source::{self, Assignment, InputConsumer};
use crate::task::{Task, TaskSettings};
use crate::telemetry;
use crate::window::FinalWindow;
use crate::{restore, topics};

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
        let changelog = self.config.topics.changelog.clone();
        let mut strategy: Box<dyn CommitStrategy> = match self.config.processing.guarantee {
            Guarantee::AtLeastOnce => Box::new(AtLeastOnce::start(
                self.consumer.clone(),
                self.sink.clone(),
                self.encoder.clone(),
                changelog,
                self.runtime.clone(),
            )),
            Guarantee::ExactlyOnce => Box::new(ExactlyOnce::new(
                self.consumer.clone(),
                self.sink.clone(),
                changelog,
            )),
        };
        let result = self.cycle_until_stopped(strategy.as_mut());
        // Drain: everything handed over becomes durable, then offsets are committed.
        let drained = strategy.finish();
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
        drained?;
        info!("pipeline stopped");
        Ok(())
    }

    /// Poll, process, commit, until asked to stop.
    fn cycle_until_stopped(&mut self, strategy: &mut dyn CommitStrategy) -> anyhow::Result<()> {
        while !self.shared.stop.load(Ordering::SeqCst) {
            strategy.check()?;
            let records = self.poll_batch();
            self.check_brokers()?;
            self.apply_assignment_changes()?;
            let cycle = self.process(records);
            if !cycle.is_empty() {
                strategy.commit(cycle)?;
            }
        }
        Ok(())
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
                    let headers = source::owned_headers(&message);
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
