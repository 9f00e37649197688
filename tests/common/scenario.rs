//! One end-to-end scenario: a generated population through a real broker,
//! and the check of every window and profile read back against the model.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use cxpulse::config::Config;
use cxpulse::event::{Event, EventTime};
use cxpulse::generate::population::{Population, PopulationConfig};
use cxpulse::window::millis;
use rdkafka::producer::FutureProducer;

use super::model::{self, Counts, Rules};
use super::Broker;

pub const DAY: i64 = 86_400_000;

/// What to generate.
pub struct Scenario {
    pub customers: usize,
    pub days: i64,
    pub visits_per_day: f64,
}

/// A population over `days` of event time ending eight days ago, plus
/// redeliveries; also returns where the data starts and ends.
pub fn events(scenario: &Scenario, seed: u64) -> (Vec<Event>, i64, i64) {
    let start = (EventTime::now().millis() - (scenario.days + 8) * DAY) / DAY * DAY;
    let end = start + scenario.days * DAY;
    let generated = Population::new(PopulationConfig {
        customers: scenario.customers,
        visits_per_day: scenario.visits_per_day,
        start: EventTime::from_millis(start),
        max_disorder_millis: 120_000,
        seed,
    })
    .take_while(|event| event.occurred_at.millis() < end);
    // Every 50th event is delivered again three events later.
    let mut events = Vec::new();
    let mut pending: Vec<(usize, Event)> = Vec::new();
    for (index, event) in generated.enumerate() {
        if index % 50 == 7 {
            pending.push((index + 3, event.clone()));
        }
        events.push(event);
        while pending.first().is_some_and(|(due, _)| *due <= index) {
            events.push(pending.remove(0).1);
        }
    }
    events.extend(pending.into_iter().map(|(_, event)| event));
    (events, start, end)
}

/// One flush event per input partition, long after the data: it makes every data
/// window final while its own windows stay open. Returns its event time.
pub async fn produce_flush(
    producer: &FutureProducer,
    config: &Config,
    partitions: i32,
) -> EventTime {
    let flush_time = EventTime::now().plus_millis(-3_600_000);
    let flush_at = flush_time.to_rfc3339();
    for partition in 0..partitions {
        let customer = format!("flush-{partition}");
        let survey = format!(
            r#"{{"event_id":"flush-s-{partition}","customer_id":"{customer}","occurred_at":"{flush_at}","survey_id":"f","kind":"nps","score":9}}"#
        );
        let ticket = format!(
            r#"{{"event_id":"flush-t-{partition}","customer_id":"{customer}","occurred_at":"{flush_at}","ticket_id":"flush","action":"customer_replied"}}"#
        );
        let purchase = format!(
            r#"{{"event_id":"flush-p-{partition}","customer_id":"{customer}","occurred_at":"{flush_at}","order_id":"f","action":"fulfilled","complete_first_shipment":true}}"#
        );
        let json: &[(&str, &[u8])] = &[("content-type", b"application/json")];
        for (topic, value) in [
            (&config.topics.surveys, survey),
            (&config.topics.tickets, ticket),
            (&config.topics.purchases, purchase),
        ] {
            super::produce_raw(
                producer,
                topic,
                Some(partition),
                Some(customer.as_bytes()),
                value.as_bytes(),
                json,
            )
            .await;
        }
    }

    flush_time
}

/// Reads `cx.metrics` and `cx.profiles` and checks them against the model. With
/// `crashes`, a window may appear more than once (at-least-once) but always the same.
#[allow(clippy::too_many_arguments)]
pub fn verify(
    broker: &Broker,
    config: &Config,
    partitions: i32,
    events: &[Event],
    data_start: i64,
    data_end: i64,
    flush_time: EventTime,
    crashes: bool,
) -> String {
    let rules = Rules::from_config(config);
    let largest = rules.specs.iter().map(|spec| spec.size).max().unwrap_or(0);
    // From the first window every task has surely started (one window size into the data)
    // to a week after the data: all of it final once the flush events arrive.
    let expected = model::windows(events, &rules, data_start + largest, data_end + 7 * DAY);
    assert!(
        expected.len() > 500,
        "the model should see many windows: {}",
        expected.len()
    );
    let records = super::read_until(
        broker,
        &config.topics.metrics,
        Duration::from_secs(120),
        |records| {
            let present: HashSet<String> = records
                .iter()
                .map(|r| String::from_utf8_lossy(&r.key).into_owned())
                .collect();
            expected.keys().all(|(window, end)| {
                let end = EventTime::from_millis(*end).to_rfc3339();
                (0..partitions).all(|task| present.contains(&format!("{window}/{end}/{task}")))
            })
        },
    );

    let window_records = records.len();
    let mut keys = HashSet::new();
    let mut seen_values: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut actual: BTreeMap<(String, i64), (Counts, usize)> = BTreeMap::new();
    for record in &records {
        let json = record.json();
        let key = String::from_utf8_lossy(&record.key).into_owned();
        if !keys.insert(key.clone()) {
            assert!(crashes, "window {key} emitted twice without a crash");
            let first = seen_values.get(&key).expect("first copy");
            assert_eq!(
                first, &record.value,
                "window {key} emitted twice with different content"
            );
            continue;
        }
        seen_values.insert(key.clone(), record.value.clone());
        let window = json["window"].as_str().expect("window").to_string();
        let end =
            EventTime::parse_rfc3339(json["end"].as_str().expect("end")).expect("RFC 3339 end");
        let start =
            EventTime::parse_rfc3339(json["start"].as_str().expect("start")).expect("start");
        let spec = rules
            .specs
            .iter()
            .find(|s| s.name == window)
            .expect("configured window");
        assert_eq!(end.millis() - start.millis(), spec.size);
        assert_eq!(
            key,
            format!(
                "{window}/{}/{}",
                json["end"].as_str().unwrap(),
                json["task"]
            )
        );
        let (counts, tasks) = actual.entry((window, end.millis())).or_default();
        model::add_result(counts, &json);
        *tasks += 1;
    }
    let mut mismatches = Vec::new();
    for (key, expected_counts) in &expected {
        match actual.get(key) {
            None => mismatches.push(format!("{key:?}: missing")),
            Some((_, tasks)) if *tasks != partitions as usize => mismatches.push(format!(
                "{key:?}: {tasks} of {partitions} tasks reported it"
            )),
            Some((actual_counts, _)) if actual_counts != expected_counts => mismatches.push(
                format!("{key:?}:\n  expected {expected_counts:?}\n  actual   {actual_counts:?}"),
            ),
            Some(_) => {}
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} windows differ from the model:\n{}",
        mismatches.len(),
        expected.len(),
        mismatches
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let nps_answers: u64 = expected
        .values()
        .map(|c| c.nps_promoters + c.nps_passives + c.nps_detractors)
        .sum();
    let first_responses: u64 = expected.values().map(|c| c.first_responses).sum();
    assert!(nps_answers > 0 && first_responses > 0);
    eprintln!(
        "{} events: {} windows equal the model ({nps_answers} NPS answers, {first_responses} first responses over all windows)",
        events.len(),
        expected.len()
    );

    // Profiles: the latest record per customer, as of the last timers the flush let fire.
    let profile_rules = model::ProfileRules::from_config(config);
    let lateness = millis(config.processing.allowed_lateness);
    let expected_profiles =
        model::profiles(events, &profile_rules, flush_time.millis() - lateness - 1);
    let records = super::read_until(
        broker,
        &config.topics.profiles,
        Duration::from_secs(120),
        |records| {
            let keys: HashSet<&[u8]> = records.iter().map(|r| r.key.as_slice()).collect();
            expected_profiles
                .keys()
                .all(|customer| keys.contains(customer.as_bytes()))
        },
    );
    let mut latest: BTreeMap<String, cxpulse::proto::Profile> = BTreeMap::new();
    for record in records {
        let customer = String::from_utf8_lossy(&record.key).into_owned();
        if customer.starts_with("flush-") {
            continue;
        }
        let mut profile: cxpulse::proto::Profile =
            serde_json::from_slice(&record.value).expect("profile JSON");
        profile.updated_at = String::new();
        latest.insert(customer, profile);
    }
    assert_eq!(latest.len(), expected_profiles.len());
    let differing: Vec<String> = expected_profiles
        .iter()
        .filter(|(customer, profile)| latest.get(*customer) != Some(profile))
        .map(|(customer, profile)| {
            format!(
                "{customer}:\n  expected {profile:?}\n  actual   {:?}",
                latest.get(customer)
            )
        })
        .collect();
    assert!(
        differing.is_empty(),
        "{} of {} profiles differ from the model:\n{}",
        differing.len(),
        expected_profiles.len(),
        differing
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("{} profiles equal the model", expected_profiles.len());
    format!(
        "{} windows ({} window records) and {} profiles equal the model",
        expected.len(),
        window_records,
        expected_profiles.len()
    )
}
