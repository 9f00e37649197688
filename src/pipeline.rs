//! Pipeline: runs the data's path on its own thread.
//!
//! Each cycle polls a batch of input records (`source`), processes it with no
//! Kafka in the way (`process`: merge by event time, decode, apply, encode),
//! and hands the result to the commit strategy of the configured guarantee
//! (`commit`: at-least-once or exactly-once). Start-up checks, broker health,
//! rebalances with their restores, and the drain at shutdown live here too.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use metrics::gauge;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use tracing::{debug, info, warn};

use crate::commit::{AtLeastOnce, Background, CommitStrategy, ExactlyOnce};
use crate::config::{ClientRole, Config, Guarantee};
use crate::event::{EventTime, Source};
use crate::output::{Encoder, PRODUCER_MAX_RECORD_BYTES};
use crate::process::{Cycle, InputHealth, InputRecord, Processor};
use crate::sink::Sink;
use crate::source::{self, Assignment, InputConsumer, InputSource};
use crate::task::{Task, TaskSettings};
use crate::telemetry;
use crate::{fault, restore, topics};

/// Re-exported where they were first defined: the HTTP server, the service and
/// the benches name them here.
pub use crate::shared::{Heartbeat, Shared};

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
    let partitions = source::wait_for_inputs(&consumer, &config, &shared.stop)?;
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
    let output_topics: Vec<&str> = outputs.iter().map(|topic| topic.name.as_str()).collect();
    let sink = Sink::new(&config.kafka, transactional_id.as_deref(), &output_topics)
        .context("creating the producer")?;
    let thread_shared = shared.clone();
    let thread = std::thread::Builder::new()
        .name("cxpulse-pipeline".into())
        .spawn(move || Loop::new(config, consumer, sink, thread_shared, record_limits).run())
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
    settings: Arc<TaskSettings>,
    encoder: Encoder,
    processor: Processor,
    input: InputSource,
}

impl Loop {
    fn new(
        config: Config,
        consumer: InputConsumer,
        sink: Sink,
        shared: Arc<Shared>,
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
        let consumer = Arc::new(consumer);
        Loop {
            settings: Arc::new(TaskSettings::from_config(&config)),
            processor: Processor::new(&config, encoder.clone()),
            encoder,
            input: InputSource::new(consumer.clone(), &config),
            consumer,
            sink,
            shared,
            config,
        }
    }

    fn run(mut self) -> anyhow::Result<()> {
        let changelog = self.config.topics.changelog.clone();
        let mut strategy: Box<dyn CommitStrategy> = match self.config.processing.guarantee {
            Guarantee::AtLeastOnce => Box::new(Background::start(AtLeastOnce::new(
                self.consumer.clone(),
                self.sink.clone(),
                self.encoder.clone(),
                changelog,
            ))?),
            Guarantee::ExactlyOnce => Box::new(ExactlyOnce::new(
                self.consumer.clone(),
                self.sink.clone(),
                self.encoder.clone(),
                changelog,
            )),
        };
        let result = self.cycle_until_stopped(strategy.as_mut());
        // Stop fetching, flush the state, then drain: everything handed over
        // becomes durable, then offsets are committed.
        match self.consumer.assignment() {
            Ok(assignment) => {
                if let Err(error) = self.consumer.pause(&assignment) {
                    warn!(%error, "pausing the inputs for the drain failed");
                }
            }
            Err(error) => warn!(%error, "no assignment to pause for the drain"),
        }
        // The inputs are paused, so polling returns no record of theirs (one
        // fetched before the pause is left unprocessed, its offset never stored:
        // the next owner reads it); it only keeps this member in the group.
        let consumer = self.consumer.clone();
        let mut keep_alive = || {
            if let Some(Ok(message)) = consumer.poll(Duration::ZERO) {
                debug!(
                    topic = message.topic(),
                    offset = message.offset(),
                    "record polled during the drain left for the next owner"
                );
            }
        };
        let drained = if result.is_ok() {
            self.processor.request_flush();
            let cycle = self.process(Vec::new());
            strategy
                .commit(cycle)
                .and_then(|()| strategy.settle_keeping_alive(&mut keep_alive))
        } else {
            strategy.settle_keeping_alive(&mut keep_alive)
        };
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
            // Idle or busy, an iteration ends within about `batch_max_wait`: a loop
            // silent for `stall_timeout` is stuck with its input waiting.
            self.shared.heartbeat.beat();
            fault::cycle_started();
            strategy.check()?;
            let mut records = self.input.poll_batch();
            self.input.check_brokers()?;
            let replaced = self.apply_assignment_changes(strategy)?;
            if !replaced.is_empty() {
                // Polled before the rebalance: a restored task re-reads them from
                // its committed offsets, after the state it restored.
                records.retain(|record| {
                    u32::try_from(record.position.partition)
                        .is_ok_and(|task| !replaced.contains(&task))
                });
            }
            let cycle = self.process(records);
            if !cycle.is_empty() {
                strategy.commit(cycle)?;
            }
        }
        Ok(())
    }

    /// Creates (restoring from the changelog) or drops tasks after a rebalance;
    /// returns the tasks dropped or restored, whose in-memory state was replaced.
    fn apply_assignment_changes(
        &mut self,
        strategy: &mut dyn CommitStrategy,
    ) -> anyhow::Result<BTreeSet<u32>> {
        let mut replaced = BTreeSet::new();
        let changes = self.consumer.context().take_changes();
        if changes.is_empty() {
            return Ok(replaced);
        }
        // State still in flight reaches the changelog before any restore reads it.
        strategy.settle()?;
        for change in &changes {
            let (Assignment::Assigned(ids) | Assignment::Revoked(ids)) = change;
            for id in ids {
                strategy.forget(*id);
            }
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
                        let task = match restore::restore(
                            &self.config,
                            id,
                            self.settings.clone(),
                            Duration::from_secs(30),
                            &shared,
                        ) {
                            Ok(task) => task,
                            // Stopping: the loop ends; the task was never consumed here.
                            Err(error) if shared.stop.load(Ordering::SeqCst) => {
                                info!(task = id, %error, "restore abandoned: shutdown requested");
                                return Ok(replaced);
                            }
                            Err(error) => return Err(error),
                        };
                        self.resume_after(&task);
                        shared.tasks().insert(id, task);
                        self.processor.restored(id);
                        replaced.insert(id);
                    }
                    shared.ready.store(true, Ordering::SeqCst);
                }
                Assignment::Revoked(ids) => {
                    for id in ids {
                        shared.tasks().remove(&id);
                        replaced.insert(id);
                        self.processor.revoked(id);
                        shared.latest_windows().retain(|(_, task), _| *task != id);
                    }
                }
            }
        }
        gauge!(telemetry::TASKS_ASSIGNED).set(shared.tasks().len() as f64);
        Ok(replaced)
    }

    /// Points the consumer at the first input record a restored task's state
    /// lacks, so that records the state includes are not read again. Either
    /// way, records of the task polled before its restore are dropped and read
    /// again (from here, or from the committed offsets, which the state
    /// includes: replays are skipped), never applied to the restored state.
    fn resume_after(&self, task: &Task) {
        let partition = i32::try_from(task.id()).unwrap_or(i32::MAX);
        for source in Source::ALL {
            let next = task.next_offset(source);
            if next < 0 {
                continue; // nothing applied yet: the committed offset is the start
            }
            let topic = self.config.topics.input(source);
            let offset = rdkafka::Offset::Offset(next);
            if let Err(error) =
                self.consumer
                    .seek(topic, partition, offset, Duration::from_secs(10))
            {
                warn!(%error, topic, partition, next, "seek after restore failed; replaying from the committed offset");
            }
        }
    }

    /// Applies a batch under the tasks lock (see [`Processor::process`]), then
    /// publishes the windows it made final to the live view.
    fn process(&mut self, records: Vec<InputRecord>) -> Cycle {
        let input = &self.input;
        let backlog = |source: Source, task: u32| input.has_backlog(source, task);
        let health = InputHealth {
            backlog: &backlog,
            brokers_down: self.input.brokers_down(),
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
