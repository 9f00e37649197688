//! One processing cycle, with no Kafka and no tokio in it: a batch of input
//! records in, every output record, state change and completed offset out.
//!
//! For each task the records of its three partitions are merged by
//! `occurred_at` (so a replayed backlog gives the same results as live
//! traffic), records the restored state already includes are skipped, the
//! rest are decoded, validated and applied, and what they produce is encoded:
//! the enriched event of each applied record, the signals and final windows the
//! task emits, and dead letters for bad input.
//!
//! State is flushed every cycle under exactly-once (each cycle is a
//! transaction) and once per `kafka.commit_interval` under at-least-once: a
//! task's flush carries the changelog records of every key of the task changed
//! since its previous flush, and one `cx.profiles` record per customer changed
//! since then (both topics are compacted, so the intermediate states would only
//! be overwritten; each enriched event carries the profile context right after
//! it). Tasks flush at staggered times within the interval, so that no cycle
//! encodes and sends every task's state at once while input waits.
//! The pipeline (`pipeline.rs`) polls the batch and commits the [`Cycle`];
//! tests and benches drive [`Processor::process`] directly.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use metrics::{counter, gauge};
use tracing::debug;

use crate::config::{Config, Guarantee};
use crate::decode::{DecodeError, Decoder};
use crate::event::{Event, EventTime, Source};
use crate::output::{timer_profile_id, DeadLetter, Encoder, Header, OutputRecord, SourcePosition};
use crate::task::{changelog, CustomerSlot, Emitted, Outcome, Profile, Task};
use crate::telemetry::{self, EventCounters, TopicCounters, WindowGauges};
use crate::window::FinalWindow;

/// An input record copied out of the consumer's buffer.
#[derive(Debug, Clone)]
pub struct InputRecord {
    /// Which input it came from.
    pub source: Source,
    /// Topic, partition and offset.
    pub position: SourcePosition,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record value.
    pub value: Option<Vec<u8>>,
    /// Record headers, in order.
    pub headers: Vec<Header>,
    /// Kafka record timestamp (ms), for latency.
    pub appended_at: Option<i64>,
}

impl InputRecord {
    fn content_type(&self) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.as_ref())
    }
}

/// An input record with what decoding made of it.
type Decoded = (InputRecord, Result<Event, DecodeError>);

/// A change of task state: (task, key, value; `None` deletes).
pub type StateChange = (u32, Vec<u8>, Option<Vec<u8>>);

/// A changed profile of a flushed task, as it was at the flush, with the id
/// of its `cx.profiles` record: encoded by [`Cycle::take_records`], which
/// under at-least-once runs on the commit thread, off the pipeline's path.
#[derive(Debug)]
pub struct ProfileToPublish {
    /// The profile at the flush.
    pub profile: Profile,
    /// The record's deterministic id.
    pub event_id: String,
}

/// What one processing cycle produced.
#[derive(Debug, Default)]
pub struct Cycle {
    /// Output records, in the order they must be written.
    pub outputs: Vec<OutputRecord>,
    /// Profiles to publish on `cx.profiles` after `outputs`.
    pub profiles: Vec<ProfileToPublish>,
    /// State changes of the tasks this cycle flushed, since their previous flush.
    pub changelog: Vec<StateChange>,
    /// Tasks whose state this cycle flushed: with `changelog` written, every
    /// record of theirs applied so far is in the changelog.
    pub flushed: BTreeSet<u32>,
    /// (topic, partition) → next offset to consume.
    pub offsets: BTreeMap<(String, i32), i64>,
    /// Kafka timestamps of the records applied, for latency.
    pub appended_at: Vec<i64>,
    /// Windows made final, by task.
    pub finals: Vec<(u32, FinalWindow)>,
    /// Valid events applied.
    pub applied: u64,
}

impl Cycle {
    /// True when the cycle has nothing to write or commit.
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
            && self.profiles.is_empty()
            && self.offsets.is_empty()
            && self.changelog.is_empty()
            && self.flushed.is_empty()
    }

    /// Takes the cycle's records in the order they must be written: `outputs`,
    /// then the `cx.profiles` records of `profiles`, encoded by `encoder`.
    pub fn take_records(&mut self, encoder: &Encoder) -> Vec<OutputRecord> {
        let mut records = std::mem::take(&mut self.outputs);
        records.extend(
            self.profiles
                .drain(..)
                .map(|published| published.encode(encoder)),
        );
        records
    }
}

impl ProfileToPublish {
    /// Its `cx.profiles` record (a dead letter if the topic cannot take it).
    pub fn encode(self, encoder: &Encoder) -> OutputRecord {
        encoder.within_limits(encoder.profile_with_id(&self.profile, self.event_id), None)
    }
}

/// What the cycle needs to know of the inputs' health, per task.
pub struct InputHealth<'a> {
    /// Whether the broker holds unread records of `(source, task)`.
    pub backlog: &'a dyn Fn(Source, u32) -> bool,
    /// No broker answers: silence is then not idleness.
    pub brokers_down: bool,
}

/// Decodes, applies and encodes; owns the per-topic counters and window gauges.
pub struct Processor {
    guarantee: Guarantee,
    decoder: Decoder,
    encoder: Encoder,
    counters: [TopicCounters; 3],
    event_counters: EventCounters,
    /// [`telemetry::RECORDS_REPLAYED`].
    replayed: metrics::Counter,
    gauges: WindowGauges,
    window_names: Vec<Arc<str>>,
    /// Wall time between state flushes; `None` flushes every cycle.
    flush_interval: Option<i64>,
    /// When each task's state was last flushed (or, before its first flush, the
    /// time that staggers it).
    last_flush: HashMap<u32, EventTime>,
    /// Flush in the next cycle whatever the interval says.
    flush_requested: bool,
    /// Tasks changed since their last flush.
    dirty: BTreeSet<u32>,
    /// Profiles changed since the last flush, in order of first change: one
    /// record each at the flush (`cx.profiles` is compacted: only the last state
    /// matters, as for the changelog).
    changed_profiles: ChangedProfiles,
}

/// Per task, the profiles changed since the task's last flush.
#[derive(Default)]
struct ChangedProfiles {
    /// A few tasks per instance: a tree, no hashing per event.
    by_task: BTreeMap<u32, TaskProfiles>,
}

/// One task's changed profiles: every change in order, a customer changed
/// twice appearing twice. An append per event touches no per-customer memory
/// (an index by customer cost a cache miss per event); the last change of each
/// customer is picked out at the flush, or when the log grows past `compact_at`.
struct TaskProfiles {
    log: Vec<(CustomerSlot, ProfileChange)>,
    compact_at: usize,
}

impl Default for TaskProfiles {
    fn default() -> Self {
        TaskProfiles {
            log: Vec::new(),
            compact_at: TaskProfiles::FIRST_COMPACTION,
        }
    }
}

impl TaskProfiles {
    /// Log length of the first compaction: a long commit interval at a high
    /// rate must not hold every event's change until the flush.
    const FIRST_COMPACTION: usize = 1 << 16;

    /// Keeps each customer's last change only, in order of last change.
    fn compact(&mut self) {
        let mut seen: Vec<u64> = Vec::new();
        let mut last = Vec::with_capacity(self.log.len().min(self.compact_at / 2));
        for (customer, change) in self.log.drain(..).rev() {
            let slot = customer.0 as usize;
            if seen.len() <= slot / 64 {
                seen.resize(slot / 64 + 1, 0);
            }
            let bit = 1u64 << (slot % 64);
            if seen[slot / 64] & bit == 0 {
                seen[slot / 64] |= bit;
                last.push((customer, change));
            }
        }
        last.reverse();
        self.log = last;
        // Amortised: the next compaction waits for as many new changes as survive.
        self.compact_at = (2 * self.log.len()).max(TaskProfiles::FIRST_COMPACTION);
    }
}

/// What last changed a profile: names its `cx.profiles` record (`ce_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum ProfileChange {
    /// The input record at this position (the id is built only if it is the last).
    Record(Source, i32, i64),
    /// A review timer, by its key.
    Timer(String),
}

impl ChangedProfiles {
    /// Notes that the customer at `customer` of `task` changed by `change`.
    fn note(&mut self, task: u32, customer: CustomerSlot, change: ProfileChange) {
        let changes = self.by_task.entry(task).or_default();
        changes.log.push((customer, change));
        if changes.log.len() >= changes.compact_at {
            changes.compact();
        }
    }

    /// Each changed customer of `task` with its last change, in order of last
    /// change, leaving none.
    fn take(&mut self, task: u32) -> Vec<(CustomerSlot, ProfileChange)> {
        let Some(mut changes) = self.by_task.remove(&task) else {
            return Vec::new();
        };
        changes.compact();
        changes.log
    }
}

impl Processor {
    /// A processor for `config`, encoding with `encoder`.
    pub fn new(config: &Config, encoder: Encoder) -> Self {
        let formats = &config.formats;
        Processor {
            guarantee: config.processing.guarantee,
            decoder: Decoder {
                max_record_bytes: config.processing.max_record_bytes,
                max_future_skew: config.processing.max_future_skew,
                formats: [formats.purchases, formats.tickets, formats.surveys],
            },
            encoder,
            counters: Source::ALL.map(|source| TopicCounters::new(config.topics.input(source))),
            event_counters: EventCounters::default(),
            replayed: counter!(telemetry::RECORDS_REPLAYED),
            gauges: WindowGauges::default(),
            window_names: config
                .windows
                .iter()
                .map(|window| Arc::from(window.name.as_str()))
                .collect(),
            // Exactly-once writes each cycle's state in its transaction; at-least-once
            // coalesces state changes per key over the commit interval (the
            // compacted changelog keeps only the last value anyway).
            flush_interval: match config.processing.guarantee {
                Guarantee::ExactlyOnce => None,
                Guarantee::AtLeastOnce => Some(crate::window::millis(config.kafka.commit_interval)),
            },
            last_flush: HashMap::new(),
            flush_requested: false,
            dirty: BTreeSet::new(),
            changed_profiles: ChangedProfiles::default(),
        }
    }

    /// Notes a task just restored: its first flush rewrites what the restore
    /// found half-written (write-ahead batches), even if no record changes it.
    pub fn restored(&mut self, task: u32) {
        self.dirty.insert(task);
        self.last_flush.remove(&task);
        self.changed_profiles.take(task);
    }

    /// Makes the next cycle flush the state (before a graceful stop).
    pub fn request_flush(&mut self) {
        self.flush_requested = true;
    }

    /// True when the cycle at `wall` flushes the state of `task`.
    ///
    /// A task seen for the first time starts as if it had last flushed a
    /// fraction of the interval ago, the fraction spread by its id (golden-ratio
    /// steps), so that the tasks of an instance flush at different cycles.
    fn flushes(&mut self, task: u32, wall: EventTime) -> bool {
        let Some(interval) = self.flush_interval else {
            return true;
        };
        let last = *self.last_flush.entry(task).or_insert_with(|| {
            let phase = (f64::from(task) * 0.618_033_988_749_895).fract();
            wall.plus_millis(-((interval as f64 * phase) as i64))
        });
        self.flush_requested || wall.millis() - last.millis() >= interval
    }

    /// Applies a batch to `tasks` at wall time `wall`: returns the outputs, state
    /// changes, offsets they complete and append times. Records of a task not in
    /// `tasks` (revoked meanwhile) are left to its new owner.
    pub fn process(
        &mut self,
        records: Vec<InputRecord>,
        tasks: &mut BTreeMap<u32, Task>,
        wall: EventTime,
        health: &InputHealth<'_>,
    ) -> Cycle {
        let mut cycle = Cycle {
            // About one enriched record per input, plus signals.
            outputs: Vec::with_capacity(records.len() * 2),
            appended_at: Vec::with_capacity(records.len()),
            ..Cycle::default()
        };
        let mut touched = std::mem::take(&mut self.dirty);
        let mut emitted = Vec::new();
        // Per task, per source: records in offset order with their decoded events.
        let mut queues: BTreeMap<u32, [VecDeque<Decoded>; 3]> = BTreeMap::new();
        for record in records {
            self.counters[record.source.index()].consumed.increment(1);
            let decoded = self.decoder.decode(
                record.source,
                record.key.as_deref(),
                record.value.as_deref(),
                record.content_type(),
                wall,
            );
            let task = u32::try_from(record.position.partition).unwrap_or(u32::MAX);
            queues.entry(task).or_default()[record.source.index()].push_back((record, decoded));
        }
        for (task_id, mut queue) in queues {
            let Some(task) = tasks.get_mut(&task_id) else {
                continue;
            };
            let mut next_offsets = [None; 3];
            while let Some((record, decoded)) = pop_earliest(&mut queue) {
                next_offsets[record.source.index()] = Some(record.position.offset + 1);
                if task.includes(record.source, record.position.offset) {
                    // Replayed after a crash: the restored state already has it.
                    self.replayed.increment(1);
                    continue;
                }
                self.apply_record(task, &record, decoded, wall, &mut cycle, &mut emitted);
                task.mark_included(record.source, record.position.offset);
                touched.insert(task_id);
                if let Some(at) = record.appended_at {
                    cycle.appended_at.push(at);
                }
                self.publish(task_id, &mut emitted, &mut cycle, Some(&record.position));
            }
            for (counters, next) in self.counters.iter().zip(next_offsets) {
                if let Some(next) = next {
                    let partition = i32::try_from(task_id).unwrap_or(i32::MAX);
                    cycle
                        .offsets
                        .insert((counters.topic.to_string(), partition), next);
                }
            }
        }
        for (task_id, task) in tasks.iter_mut() {
            for source in Source::ALL {
                task.set_backlog(source, (health.backlog)(source, *task_id));
                if health.brokers_down {
                    task.touch(source, wall);
                }
            }
            task.tick(wall, &mut emitted);
            if !emitted.is_empty() {
                touched.insert(*task_id);
            }
            self.publish(*task_id, &mut emitted, &mut cycle, None);
            publish_task_gauges(*task_id, task);
            if self.flushes(*task_id, wall) {
                self.flush(*task_id, task, touched.remove(task_id), &mut cycle);
                self.last_flush.insert(*task_id, wall);
            }
        }
        self.flush_requested = false;
        // Tasks revoked meanwhile are gone: their state is their new owner's.
        touched.retain(|task| tasks.contains_key(task));
        self.dirty = touched;
        cycle
    }

    /// Flushes `task`: its changelog records when it `changed` since its last
    /// flush, and one `cx.profiles` record per customer changed since then.
    fn flush(&mut self, task_id: u32, task: &mut Task, changed: bool, cycle: &mut Cycle) {
        if changed {
            let mut changes = task.take_changelog();
            if self.guarantee == Guarantee::AtLeastOnce {
                // Not one transaction: framed so that a crash mid-flush is harmless.
                changes = changelog::write_ahead(task.changelog_cycle(), changes);
            }
            counter!(telemetry::CHANGELOG_RECORDS, telemetry::PARTITION => task_id.to_string())
                .increment(changes.len() as u64);
            cycle.changelog.extend(
                changes
                    .into_iter()
                    .map(|(key, value)| (task_id, key, value)),
            );
        }
        for (customer, change) in self.changed_profiles.take(task_id) {
            let Some(profile) = task.profile_at(customer) else {
                continue;
            };
            let event_id = match change {
                ProfileChange::Record(source, partition, offset) => SourcePosition {
                    topic: self.counters[source.index()].topic.clone(),
                    partition,
                    offset,
                }
                .id("profile"),
                ProfileChange::Timer(cause) => timer_profile_id(&profile.customer_id, &cause),
            };
            cycle.profiles.push(ProfileToPublish {
                profile: profile.clone(),
                event_id,
            });
        }
        cycle.flushed.insert(task_id);
    }

    fn apply_record(
        &mut self,
        task: &mut Task,
        record: &InputRecord,
        decoded: Result<Event, DecodeError>,
        wall: EventTime,
        cycle: &mut Cycle,
        emitted: &mut Vec<Emitted>,
    ) {
        let counters = &self.counters[record.source.index()];
        let event = match decoded {
            Ok(event) => event,
            Err(error) => {
                counters.invalid(&error);
                debug!(
                    topic = %record.position.topic,
                    partition = record.position.partition,
                    offset = record.position.offset,
                    reason = error.reason(),
                    "record rejected to the dead-letter topic"
                );
                task.touch(record.source, wall);
                cycle
                    .outputs
                    .push(self.encoder.dead_letter(&DeadLetter::rejected(
                        &record.position,
                        record.key.as_deref(),
                        record.value.as_deref(),
                        &record.headers,
                        &error,
                    )));
                return;
            }
        };
        let task_id = task.id();
        match task.apply(&event, wall, emitted) {
            Outcome::Duplicate => counters.duplicate.increment(1),
            Outcome::Applied {
                customer,
                profile,
                measures,
                late,
            } => {
                counters.processed.increment(1);
                if late {
                    counters.late.increment(1);
                }
                self.event_counters.count_event(&event, measures);
                let position = Some(&record.position);
                let encoder = &self.encoder;
                let at = &record.position;
                self.changed_profiles.note(
                    task_id,
                    customer,
                    ProfileChange::Record(record.source, at.partition, at.offset),
                );
                cycle.outputs.push(encoder.within_limits(
                    encoder.enriched(&event, profile, &record.position),
                    position,
                ));
                cycle.applied += 1;
            }
        }
    }

    /// Turns what a task emitted into output records (and window gauges);
    /// `position` is the input record being applied, if any.
    fn publish(
        &mut self,
        task: u32,
        emitted: &mut Vec<Emitted>,
        cycle: &mut Cycle,
        position: Option<&SourcePosition>,
    ) {
        for item in emitted.drain(..) {
            let record = match item {
                Emitted::Window(window) => {
                    self.gauges.publish(task, &window);
                    let record = self.encoder.window(&window, task);
                    cycle.finals.push((task, *window));
                    self.encoder.within_limits(record, None)
                }
                Emitted::Signal(signal) => {
                    self.event_counters.count_signal(signal.kind);
                    self.encoder
                        .within_limits(self.encoder.signal(&signal, position), position)
                }
                Emitted::Profile { customer, cause } => {
                    self.changed_profiles
                        .note(task, customer, ProfileChange::Timer(cause));
                    continue;
                }
            };
            cycle.outputs.push(record);
        }
    }

    /// Forgets a task this instance no longer owns: its pending profile
    /// records (its new owner publishes them) and flush time, and zeroes every
    /// gauge of it (the task gauges, its restore progress and its window
    /// gauges): otherwise two instances report the same task after a rebalance
    /// and `sum()` across pods counts it twice.
    pub fn revoked(&mut self, task: u32) {
        self.changed_profiles.take(task);
        self.last_flush.remove(&task);
        let label = task.to_string();
        for (name, _) in TASK_GAUGES {
            gauge!(name, telemetry::PARTITION => label.clone()).set(0.0);
        }
        gauge!(telemetry::RESTORE_REMAINING, telemetry::PARTITION => label.clone()).set(0.0);
        gauge!(telemetry::RESTORE_RATE, telemetry::PARTITION => label).set(0.0);
        self.gauges.zero_task(task, &self.window_names);
    }
}

/// A gauge of one task's state and how to read it (`None`: nothing to report yet).
type TaskGauge = (&'static str, fn(&Task) -> Option<f64>);

/// Every gauge describing one task's state. Publishing and zeroing on revocation
/// both walk this one list, so no gauge can be published and then left stale by
/// an instance that lost the task.
const TASK_GAUGES: [TaskGauge; 5] = [
    (telemetry::WATERMARK, |task| {
        let watermark = task.watermark();
        (watermark != EventTime::MIN).then(|| watermark.millis() as f64 / 1000.0)
    }),
    (
        telemetry::PROFILES,
        |task| Some(task.profile_count() as f64),
    ),
    (telemetry::TICKETS_TRACKED, |task| {
        Some(task.ticket_count() as f64)
    }),
    (telemetry::TIMERS_PENDING, |task| {
        Some(task.timer_count() as f64)
    }),
    (telemetry::WINDOWS_SKIPPED, |task| {
        Some(task.windows_skipped() as f64)
    }),
];

/// Sets every [`TASK_GAUGES`] of a task this instance owns.
fn publish_task_gauges(id: u32, task: &Task) {
    let label = id.to_string();
    for (name, read) in TASK_GAUGES {
        if let Some(value) = read(task) {
            gauge!(name, telemetry::PARTITION => label.clone()).set(value);
        }
    }
}

/// Takes the head with the smallest `occurred_at` among a task's three partitions;
/// records that failed to decode have no event time and go first.
fn pop_earliest<T>(
    queues: &mut [VecDeque<(T, Result<Event, DecodeError>)>; 3],
) -> Option<(T, Result<Event, DecodeError>)> {
    let mut best: Option<(usize, Option<EventTime>)> = None;
    for (index, queue) in queues.iter().enumerate() {
        let Some((_, head)) = queue.front() else {
            continue;
        };
        let time = head.as_ref().ok().map(|event| event.occurred_at);
        let better = match best {
            None => true,
            Some((_, best_time)) => match (time, best_time) {
                (None, Some(_)) => true,
                (Some(time), Some(best_time)) => time < best_time,
                _ => false,
            },
        };
        if better {
            best = Some((index, time));
        }
    }
    best.and_then(|(index, _)| queues[index].pop_front())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Each customer's last change, in order of last change, by brute force.
    fn last_changes(log: &[(u32, i64)]) -> Vec<(CustomerSlot, ProfileChange)> {
        let mut last: Vec<(CustomerSlot, ProfileChange)> = Vec::new();
        for (slot, offset) in log {
            last.retain(|(customer, _)| customer.0 != *slot);
            last.push((
                CustomerSlot(*slot),
                ProfileChange::Record(Source::Surveys, 0, *offset),
            ));
        }
        last
    }

    /// A write-ahead chunk record (a value of at most `CHUNK_BYTES`, see the
    /// write-ahead tests, and the longest chunk key) is within the largest
    /// record the producer sends by default, framing included.
    #[test]
    fn a_full_write_ahead_chunk_fits_in_a_producer_record() {
        let config = Config::default();
        let encoder = Encoder::new(config.topics.clone(), config.formats.outputs, "test");
        let longest_key = format!("c/{}/{}/{}", u64::MAX, usize::MAX, usize::MAX);
        assert!(
            changelog::CHUNK_BYTES + longest_key.len()
                <= encoder.max_record_bytes(&config.topics.changelog)
        );
    }

    proptest! {
        #[test]
        fn changed_profiles_keep_each_customers_last_change(
            log in proptest::collection::vec((0u32..300, 0i64..1_000_000), 0..3000),
            compact_at in 1usize..200,
        ) {
            let mut changed = ChangedProfiles::default();
            // Small compaction thresholds: compactions happen mid-log too.
            changed.by_task.insert(7, TaskProfiles { log: Vec::new(), compact_at });
            for (slot, offset) in &log {
                changed.note(7, CustomerSlot(*slot), ProfileChange::Record(Source::Surveys, 0, *offset));
            }
            prop_assert_eq!(changed.take(7), last_changes(&log));
            prop_assert!(changed.take(7).is_empty());
        }
    }
}
