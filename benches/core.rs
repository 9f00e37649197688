//! Criterion benchmarks of the pure core: decoding, applying events to a task
//! (profiles, tickets, windows) and building window results.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use cxpulse::config::Config;
use cxpulse::decode::{Decoder, Format};
use cxpulse::event::{Event, EventTime};
use cxpulse::generate::population::{Population, PopulationConfig};
use cxpulse::generate::wire;
use cxpulse::task::{Task, TaskSettings};

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

criterion_group!(benches, decode, apply);
criterion_main!(benches);
