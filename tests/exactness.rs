//! Property tests: random event streams through the engine equal the
//! brute-force model of the SPEC, for every field of every final window and
//! every profile.
//!
//! Each case draws a population (size, visit rate, seed), window specs, an
//! allowed lateness, an activity horizon short enough for churn and
//! reactivation to happen, disorder up to the lateness, redeliveries and bad
//! records. Records go through the real decoder (JSON or Protobuf) into one
//! task; at the end the watermark is moved past the data so every window is
//! final and every timer has fired.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::model::{self, Rules};
use cxpulse::config::{Config, WindowConfig};
use cxpulse::decode::{Decoder, Format};
use cxpulse::event::{Event, EventTime};
use cxpulse::generate::population::{Population, PopulationConfig};
use cxpulse::generate::wire;
use cxpulse::output::profile_message;
use cxpulse::task::{Emitted, Outcome, Task, TaskSettings};
use cxpulse::window::millis;
use cxpulse::window::result::window_result;
use proptest::prelude::*;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

#[derive(Debug, Clone)]
struct Case {
    customers: usize,
    visits_per_day: f64,
    seed: u64,
    days: i64,
    lateness_minutes: i64,
    horizon_days: i64,
    steps: (i64, i64),
    redeliver_every: usize,
    garbage_every: usize,
    protobuf: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1usize..25,
        0.2f64..6.0,
        any::<u64>(),
        1i64..20,
        1i64..30,
        2i64..12,
        (
            prop::sample::select(vec![5i64, 10, 15, 30, 60]),
            prop::sample::select(vec![1i64, 2, 4, 6]),
        ),
        3usize..40,
        5usize..60,
        any::<bool>(),
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
                redeliver_every,
                garbage_every,
                protobuf,
            )| Case {
                customers,
                visits_per_day,
                seed,
                days,
                lateness_minutes,
                horizon_days,
                steps,
                redeliver_every,
                garbage_every,
                protobuf,
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
    config.segments.new_period = Duration::from_secs(2 * 86_400);
    config.segments.champion_recency = Duration::from_secs(3 * 86_400);
    config.segments.champion_min_orders = 2;
    config.segments.champion_min_value = 5_000;
    config.sla.chat = Duration::from_secs(20 * 60);
    config
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let config = config_for(case);
    let lateness = millis(config.processing.allowed_lateness);
    let start = 1_780_000_000_000 / DAY * DAY;
    let end = start + case.days * DAY;
    let events: Vec<Event> = Population::new(PopulationConfig {
        customers: case.customers,
        visits_per_day: case.visits_per_day,
        start: EventTime::from_millis(start),
        max_disorder_millis: lateness / 2,
        seed: case.seed,
    })
    .take_while(|event| event.occurred_at.millis() < end)
    .take(3000)
    .collect();
    // Arrival order: the population's (disordered within the lateness), with redeliveries
    // shortly after the original and garbage records mixed in.
    let format = if case.protobuf {
        Format::Protobuf
    } else {
        Format::Json
    };
    let mut arrivals: Vec<(cxpulse::event::Source, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut delivered: Vec<Event> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        let record = (
            event.source(),
            event.customer_id.as_str().as_bytes().to_vec(),
            wire::encode(event, format),
        );
        arrivals.push(record.clone());
        delivered.push(event.clone());
        if index % case.redeliver_every == 1 {
            arrivals.push(record);
            delivered.push(event.clone());
        }
        if index % case.garbage_every == 2 {
            arrivals.push((event.source(), b"c".to_vec(), b"\x00\x01garbage{".to_vec()));
        }
    }

    let settings = Arc::new(TaskSettings::from_config(&config));
    let decoder = Decoder {
        max_record_bytes: config.processing.max_record_bytes,
        max_future_skew: config.processing.max_future_skew,
        formats: [format; 3],
    };
    // Wall clock: constant while records flow, so no partition is idle (1 ms timeout) until the end.
    let wall = EventTime::from_millis(0);
    let now = EventTime::from_millis(end + DAY);
    let mut task = Task::new(0, settings, wall);
    let mut emitted = Vec::new();
    let (mut duplicates, mut late, mut rejected) = (0, 0, 0);
    for (source, key, value) in &arrivals {
        match decoder.decode(*source, Some(key), Some(value), None, now) {
            Err(_) => {
                rejected += 1;
                task.touch(*source, wall);
            }
            Ok(event) => match task.apply(&event, wall, &mut emitted) {
                Outcome::Duplicate => duplicates += 1,
                Outcome::Applied { late: true, .. } => late += 1,
                Outcome::Applied { .. } => {}
            },
        }
    }
    prop_assert_eq!(late, 0, "disorder within the lateness makes nothing late");
    prop_assert_eq!(duplicates, delivered.len() - events.len());
    prop_assert!(rejected > 0 || arrivals.len() < 3);
    // Every partition idle: the watermark follows the wall clock to well past the data.
    let final_wall = EventTime::from_millis(40 * DAY);
    task.tick(final_wall, &mut emitted);
    let watermark = task.watermark().millis();

    // Windows: exactly the boundaries from the first measure's window to the last final one.
    let rules = Rules::from_config(&config);
    let mut actual = BTreeMap::new();
    for item in &emitted {
        if let Emitted::Window(window) = item {
            let key = (window.name.to_string(), window.end.millis());
            let mut counts = model::Counts::default();
            model::add_result(
                &mut counts,
                &serde_json::to_value(window_result(window, 0)).unwrap(),
            );
            prop_assert!(
                actual.insert(key.clone(), counts).is_none(),
                "{:?} emitted twice",
                key
            );
        }
    }
    for spec in &rules.specs {
        let ends: Vec<i64> = actual
            .keys()
            .filter(|(name, _)| *name == spec.name)
            .map(|(_, end)| *end)
            .collect();
        let (Some(first), Some(last)) = (ends.first(), ends.last()) else {
            continue;
        };
        prop_assert_eq!(
            ends.len() as i64,
            (last - first) / spec.step + 1,
            "contiguous boundaries"
        );
        prop_assert!(
            last + spec.step + lateness > watermark,
            "every final window emitted"
        );
        let expected = model::windows(
            &delivered,
            &Rules {
                specs: vec![spec.clone()],
                ..rules.clone()
            },
            *first,
            *last,
        );
        for (key, expected_counts) in &expected {
            prop_assert_eq!(actual.get(key), Some(expected_counts), "window {:?}", key);
        }
        // Nothing before the first emitted window had any measure.
        let earlier = model::windows(
            &delivered,
            &Rules {
                specs: vec![spec.clone()],
                ..rules.clone()
            },
            first - 20 * spec.size,
            first - spec.step,
        );
        for (key, counts) in earlier {
            let empty = model::Counts {
                customers_at_start: counts.customers_at_start,
                customers_at_end: counts.customers_at_end,
                first_response_buckets: counts.first_response_buckets.clone(),
                ..Default::default()
            };
            prop_assert_eq!(
                counts,
                empty,
                "window {:?} before the first emitted one is not empty",
                key
            );
        }
    }

    // Profiles: every field but the wall-clock `updated_at`, as of the last fired timer.
    let profile_rules = model::ProfileRules::from_config(&config);
    let expected = model::profiles(&delivered, &profile_rules, watermark - lateness - 1);
    prop_assert_eq!(task.profile_count(), expected.len());
    for (customer, expected_profile) in expected {
        let profile = task
            .profile(&cxpulse::event::CustomerId::new(customer.clone()))
            .expect("profile held");
        let mut actual_profile = profile_message(profile);
        actual_profile.updated_at = String::new();
        prop_assert_eq!(actual_profile, expected_profile, "profile of {}", customer);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_equals_the_model(case in case()) {
        run_case(&case)?;
    }
}
