//! Property tests: random event streams through the engine equal the
//! independent model, for every output: every field of every window (ratios
//! within a few ulps, nothing unexpected), every profile record, every
//! enriched event's context and every signal.
//!
//! Each case draws a population from the test generator (never the engine's):
//! size, visit rate, seed, window specs, an allowed lateness, an activity
//! horizon short enough for churn and reactivation to happen, disorder up to
//! the lateness across topics and customers, redeliveries, bad records and
//! surveys later than the lateness. Records go through the pipeline's own
//! processing cycle (`process::Processor`: merge by event time, replay skip,
//! decode, apply, encode) in batches of a drawn size; at the end the watermark
//! is moved past the data so every window is final and every timer has fired.
//!
//! `PROPTEST_CASES=5000 cargo test --release --test exactness` is the long
//! mode; failing cases are kept in `proptest-regressions/` and replayed first.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::check::{self, Delivered, Delivery, Outputs, Record};
use common::generator::{self, parse_rfc3339, rfc3339, Plan, Topic, DAY};
use common::model::{self, Position, Rules};
use cxpulse::config::{Config, WindowConfig};
use cxpulse::decode::Format;
use cxpulse::event::{EventTime, Source};
use cxpulse::output::{Encoder, OutputRecord, SourcePosition};
use cxpulse::process::{InputHealth, InputRecord, Processor};
use cxpulse::task::{Task, TaskSettings};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    customers: usize,
    visits_per_day: f64,
    seed: u64,
    days: i64,
    lateness_minutes: i64,
    horizon_days: i64,
    steps: (i64, i64),
    redeliver_one_in: usize,
    garbage_every: usize,
    /// Records per processing cycle.
    batch: usize,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1usize..25,
        0.3f64..5.0,
        any::<u64>(),
        3i64..16,
        1i64..30,
        1i64..6,
        (
            prop::sample::select(vec![5i64, 10, 15, 30, 60]),
            prop::sample::select(vec![1i64, 2, 4, 6]),
        ),
        3usize..40,
        (5usize..60, 1usize..80),
    )
        .prop_map(
            |(
                customers,
                visits_per_day,
                seed,
                days,
                lateness_minutes,
                horizon_days,
                steps,
                redeliver_one_in,
                (garbage_every, batch),
            )| Case {
                customers,
                visits_per_day,
                seed,
                days,
                lateness_minutes,
                horizon_days,
                steps,
                redeliver_one_in,
                garbage_every,
                batch,
            },
        )
}

fn config_for(case: &Case) -> Config {
    let mut config = Config::default();
    let (step_minutes, multiple) = case.steps;
    config.windows = vec![
        WindowConfig::new(
            "a",
            (step_minutes * multiple * 60) as u64,
            (step_minutes * 60) as u64,
        ),
        WindowConfig::new("b", 86_400, 6 * 3600),
    ];
    config.processing.allowed_lateness = Duration::from_secs(case.lateness_minutes as u64 * 60);
    config.processing.activity_horizon = Duration::from_secs(case.horizon_days as u64 * 86_400);
    config.processing.idle_timeout = Duration::from_millis(1);
    // The model remembers every ticket.
    config.processing.ticket_retention = Duration::from_secs(365 * 86_400);
    config.segments.new_period = Duration::from_secs(86_400);
    config.segments.champion_recency = Duration::from_secs(2 * 86_400);
    config.segments.champion_min_orders = 2;
    config.segments.champion_min_value = 5_000;
    config.sla.chat = Duration::from_secs(20 * 60);
    config
}

fn source_of(topic: Topic) -> Source {
    match topic {
        Topic::Purchases => Source::Purchases,
        Topic::Tickets => Source::Tickets,
        Topic::Surveys => Source::Surveys,
    }
}

/// Reads an output record back as the checker's JSON record.
fn read_back(record: &OutputRecord, offset: i64) -> Record {
    Record {
        partition: 0,
        offset,
        key: String::from_utf8(record.key.clone()).expect("UTF-8 key"),
        value: serde_json::from_slice(&record.value).expect("JSON output"),
    }
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let config = config_for(case);
    let rules = Rules::from_config(&config);
    let start = 1_780_000_000_000 / DAY * DAY;
    let generated = generator::generate(&Plan {
        customers: case.customers,
        partitions: 1,
        start,
        days: case.days,
        visits_per_day: case.visits_per_day,
        disorder: rules.lateness,
        redeliver_one_in: case.redeliver_one_in,
        late_surveys: 5,
        activity_horizon: rules.horizon,
        seed: case.seed,
    });
    // A case with no input compares nothing: it is rejected, never passed.
    prop_assume!(!generated.arrivals.is_empty());
    // The very cycle the pipeline runs, in batches of the case's size.
    let encoder = Encoder::new(config.topics.clone(), Format::Json, "exactness");
    let mut processor = Processor::new(&config, encoder.clone());
    let settings = Arc::new(TaskSettings::from_config(&config));
    // Wall clock: constant while records flow, so no partition is idle (1 ms timeout) until the end.
    let wall = EventTime::now();
    let mut tasks = BTreeMap::from([(0, Task::new(0, settings, wall))]);
    let no_backlog = |_: Source, _: u32| false;
    let health = InputHealth {
        backlog: &no_backlog,
        brokers_down: false,
    };
    let mut offsets = [0i64; 3];
    let mut delivered = Vec::new();
    let mut records = Vec::new();
    let mut record = |topic: Topic, value: &[u8], input: Option<&generator::Input>| {
        let position = SourcePosition {
            topic: model::topic_name(&config, topic).into(),
            partition: 0,
            offset: offsets[topic.index()],
        };
        offsets[topic.index()] += 1;
        if let Some(input) = input {
            delivered.push(Delivered {
                input: input.clone(),
                position: Position {
                    topic: position.topic.to_string(),
                    partition: 0,
                    offset: position.offset,
                },
            });
        }
        InputRecord {
            source: source_of(topic),
            key: Some(
                input
                    .map_or("c", |input| input.customer.as_str())
                    .as_bytes()
                    .to_vec(),
            ),
            value: Some(value.to_vec()),
            headers: vec![("content-type".into(), b"application/json".as_slice().into())],
            position,
            appended_at: None,
        }
    };
    let mut garbage = 0;
    for (index, input) in generated.arrivals.iter().enumerate() {
        records.push(record(input.topic(), input.json.as_bytes(), Some(input)));
        if index % case.garbage_every == 2 {
            records.push(record(input.topic(), b"\x00\x01garbage{", None));
            garbage += 1;
        }
    }
    let mut written = Vec::new();
    for batch in records.chunks(case.batch) {
        let mut cycle = processor.process(batch.to_vec(), &mut tasks, wall, &health);
        written.extend(cycle.take_records(&encoder));
    }
    // Late surveys: only those every window of which is final by now.
    let largest = rules
        .windows
        .iter()
        .map(|spec| spec.size + spec.step)
        .max()
        .unwrap_or(0);
    let closed_before = tasks[&0].watermark().millis() - rules.lateness - largest;
    let late: Vec<_> = generated
        .late
        .iter()
        .filter(|input| input.at < closed_before)
        .map(|input| record(input.topic(), input.json.as_bytes(), Some(input)))
        .collect();
    written.extend(
        processor
            .process(late, &mut tasks, wall, &health)
            .take_records(&encoder),
    );
    // Every partition idle: the watermark follows the wall clock to well past the data.
    let later = wall.plus_millis(40 * DAY);
    written.extend(
        processor
            .process(Vec::new(), &mut tasks, later, &health)
            .take_records(&encoder),
    );
    let watermark = tasks[&0].watermark().millis();
    let dead_letters = written
        .iter()
        .filter(|record| *record.topic == *config.topics.dlq)
        .count();
    prop_assert_eq!(dead_letters, garbage, "every bad record is a dead letter");

    let mut outputs = Outputs::default();
    for (offset, record) in written.iter().enumerate() {
        if *record.topic == *config.topics.dlq {
            continue;
        }
        let read = read_back(record, offset as i64);
        let topics = &config.topics;
        match &*record.topic {
            topic if topic == topics.enriched => outputs.enriched.push(read),
            topic if topic == topics.profiles => outputs.profiles.push(read),
            topic if topic == topics.signals => outputs.signals.push(read),
            topic if topic == topics.metrics => outputs.windows.push(read),
            other => panic!("unexpected output topic {other}"),
        }
    }
    let compared = check::check(&delivered, &outputs, &rules, watermark, Delivery::Once);
    eprintln!("{} inputs: {}", delivered.len(), compared.summary());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        // Failing cases are kept (and committed) and replayed before new ones.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct("proptest-regressions/exactness.txt"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_equals_the_model(case in case()) {
        run_case(&case)?;
    }
}

#[test]
fn test_times_round_trip_in_every_offset() {
    for millis in [0, 951_782_400_000, 1_780_000_000_123, 4_102_444_799_999] {
        for offset in [0, 120, -330] {
            assert_eq!(parse_rfc3339(&rfc3339(millis, offset)), millis);
        }
    }
    assert_eq!(rfc3339(951_782_400_000, 0), "2000-02-29T00:00:00Z");
    assert_eq!(
        parse_rfc3339("2000-02-29T02:00:00.5+02:00"),
        951_782_400_500
    );
}
