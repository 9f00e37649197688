//! Criterion benchmarks of the pure core: decoding, applying events to a task
//! (profiles, tickets, windows) and building window results, encoding the
//! per-event output records, and the whole Kafka-free cycle of the pipeline
//! thread (`Processor::process`).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use cxpulse::config::Config;
use cxpulse::decode::{Decoder, Format};
use cxpulse::event::{Event, EventTime};
use cxpulse::generate::population::{Population, PopulationConfig};
use cxpulse::generate::wire;
use cxpulse::output::{Encoder, SourcePosition};
use cxpulse::process::{InputHealth, InputRecord, Processor};
use cxpulse::task::signal::Signal;
use cxpulse::task::{Emitted, Outcome, Profile, Task, TaskSettings};

// The allocator of the cxpulse binary (src/main.rs): allocation is a large part of the cost.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn events(count: usize) -> Vec<Event> {
    Population::new(PopulationConfig {
        customers: 10_000,
        visits_per_day: 2.0,
        start: EventTime::now().plus_millis(-30 * 86_400_000),
        max_disorder_millis: 120_000,
        seed: 1,
    })
    .take(count)
    .collect()
}

fn decode(c: &mut Criterion) {
    let events = events(10_000);
    let config = Config::default();
    let decoder = Decoder {
        max_record_bytes: config.processing.max_record_bytes,
        max_future_skew: config.processing.max_future_skew,
        formats: [Format::Json; 3],
    };
    let now = EventTime::now();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(events.len() as u64));
    for format in [Format::Json, Format::Protobuf] {
        let encoded: Vec<(Event, Vec<u8>)> = events
            .iter()
            .map(|e| (e.clone(), wire::encode(e, format)))
            .collect();
        group.bench_function(format!("{format:?}"), |b| {
            b.iter(|| {
                for (event, value) in &encoded {
                    let decoded = decoder.decode(
                        event.source(),
                        Some(event.customer_id.as_str().as_bytes()),
                        Some(value),
                        Some(format.content_type().as_bytes()),
                        now,
                    );
                    assert!(decoded.is_ok());
                }
            })
        });
    }
    group.finish();
}

fn apply(c: &mut Criterion) {
    let events = events(100_000);
    let settings = Arc::new(TaskSettings::from_config(&Config::default()));
    let mut group = c.benchmark_group("task");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.sample_size(10);
    group.bench_function("apply_100k_events_default_windows", |b| {
        b.iter_batched(
            || Task::new(0, settings.clone(), EventTime::now()),
            |mut task| {
                let mut finals = Vec::new();
                let wall = EventTime::now();
                for event in &events {
                    task.apply(event, wall, &mut finals);
                }
                (task, finals)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// What one task produced from `events`: each applied event with its profile
/// after it and its position, and every signal raised.
fn applied(
    events: &[Event],
    config: &Config,
) -> (Vec<(Event, Profile, SourcePosition)>, Vec<Signal>) {
    let settings = Arc::new(TaskSettings::from_config(config));
    let wall = EventTime::now();
    let mut task = Task::new(0, settings, wall);
    let topic: Arc<str> = Arc::from("cx.purchases");
    let (mut applied, mut signals, mut emitted) = (Vec::new(), Vec::new(), Vec::new());
    for (offset, event) in events.iter().enumerate() {
        if let Outcome::Applied { profile, .. } = task.apply(event, wall, &mut emitted) {
            let position = SourcePosition {
                topic: topic.clone(),
                partition: 0,
                offset: offset as i64,
            };
            applied.push((event.clone(), profile.clone(), position));
        }
        signals.extend(emitted.drain(..).filter_map(|item| match item {
            Emitted::Signal(signal) => Some(signal),
            _ => None,
        }));
    }
    (applied, signals)
}

/// The records of profiles, enriched events and signals, without decoding or
/// applying: what `output` costs per event.
fn encode(c: &mut Criterion) {
    let config = Config::default();
    let (applied, signals) = applied(&events(10_000), &config);
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(applied.len() as u64));
    for format in [Format::Json, Format::Protobuf] {
        let encoder = Encoder::new(config.topics.clone(), format, "bench");
        group.bench_function(format!("profile_enriched_signal_{format:?}"), |b| {
            b.iter(|| {
                let mut bytes = 0;
                for (event, profile, position) in &applied {
                    bytes += encoder.profile(profile, position).value.len();
                    bytes += encoder.enriched(event, profile, position).value.len();
                }
                for signal in &signals {
                    bytes += encoder.signal(signal, None).value.len();
                }
                bytes
            })
        });
    }
    group.finish();
}

/// Tasks of the `process` bench: the peer benchmark's 12 partitions.
const TASKS: u32 = 12;

/// `events` as JSON input records, each on the partition of its customer.
fn input_records(events: &[Event], config: &Config) -> Vec<InputRecord> {
    use std::hash::{Hash, Hasher};
    let topics: [Arc<str>; 3] =
        cxpulse::event::Source::ALL.map(|s| Arc::from(config.topics.input(s)));
    let mut offsets = [[0i64; TASKS as usize]; 3];
    events
        .iter()
        .map(|event| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            event.customer_id.as_str().hash(&mut hasher);
            let partition = (hasher.finish() % u64::from(TASKS)) as usize;
            let source = event.source();
            let offset = &mut offsets[source.index()][partition];
            *offset += 1;
            InputRecord {
                source,
                position: SourcePosition {
                    topic: topics[source.index()].clone(),
                    partition: partition as i32,
                    offset: *offset - 1,
                },
                key: Some(event.customer_id.as_str().as_bytes().to_vec()),
                value: Some(wire::encode(event, Format::Json)),
                headers: Vec::new(),
                appended_at: None,
            }
        })
        .collect()
}

fn process(c: &mut Criterion) {
    let config = Config::default();
    let records = input_records(&events(100_000), &config);
    let settings = Arc::new(TaskSettings::from_config(&config));
    let encoder = Encoder::new(config.topics.clone(), Format::Json, "bench");
    let no_backlog = |_: cxpulse::event::Source, _: u32| false;
    let health = InputHealth {
        backlog: &no_backlog,
        brokers_down: false,
    };
    let batch = config.processing.batch_max_records;
    let mut group = c.benchmark_group("process");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.sample_size(10);
    // What the pipeline thread does per record (decode, apply, encode), plus the
    // flushed profiles' records, which the commit thread encodes: one flush per
    // 20 batches, about a commit interval at 100k events/s.
    group.bench_function("100k_json_records_12_tasks", |b| {
        b.iter_batched(
            || {
                let wall = EventTime::now();
                let tasks: std::collections::BTreeMap<u32, Task> = (0..TASKS)
                    .map(|id| (id, Task::new(id, settings.clone(), wall)))
                    .collect();
                (
                    Processor::new(&config, encoder.clone()),
                    tasks,
                    records.clone(),
                )
            },
            |(mut processor, mut tasks, records)| {
                let wall = EventTime::now();
                let mut records = records.into_iter().peekable();
                let mut out = 0;
                let mut cycles = 0;
                while records.peek().is_some() {
                    cycles += 1;
                    if cycles % 20 == 0 {
                        processor.request_flush();
                    }
                    let mut cycle = processor.process(
                        records.by_ref().take(batch).collect(),
                        &mut tasks,
                        wall,
                        &health,
                    );
                    out += cycle.take_records(&encoder).len();
                }
                out
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, decode, apply, encode, process);
criterion_main!(benches);
