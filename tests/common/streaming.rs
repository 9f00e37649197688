//! A population streamed into the inputs, with every kind of bad record mixed
//! in, while the binary is crashed in chosen ways and restarted.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use cxpulse::config::Config;
use cxpulse::decode::Format;
use cxpulse::event::EventTime;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::instance::Instance;
use super::scenario::{self, Scenario};
use super::Broker;

/// How a run is interrupted after one chunk of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// Nothing happens.
    None,
    /// `kill -9` at a random moment within 1.5 s of the chunk.
    Kill,
    /// The instance aborts itself right after its Nth changelog record is on the
    /// broker (fault point; in exactly-once mode, inside an open transaction).
    AbortAfterChangelogRecords(u64),
}

/// One bad record of each kind of SPEC section 2 that fits in a small value: (topic, value).
pub fn bad_records(config: &Config) -> Vec<(String, String)> {
    let now = EventTime::now();
    let at = now.plus_millis(-60_000).to_rfc3339();
    let future = now.plus_millis(7_200_000).to_rfc3339();
    let common = format!(r#""event_id":"b","customer_id":"c-bad","occurred_at":"{at}""#);
    let t = &config.topics;
    vec![
        (t.surveys.clone(), "{not json".to_string()),
        (t.purchases.clone(), format!(r#"{{{common},"order_id":"o","action":"stolen"}}"#)),
        (t.surveys.clone(), format!(r#"{{{common},"survey_id":"s","kind":"mood","score":1}}"#)),
        (t.tickets.clone(), format!(r#"{{{common},"action":"opened","channel":"chat"}}"#)),
        (t.surveys.clone(), format!(r#"{{{common},"survey_id":"s","kind":"nps","score":11}}"#)),
        (t.purchases.clone(), format!(r#"{{{common},"order_id":"o","action":"placed","amount_minor":-1,"currency":"EUR"}}"#)),
        (t.purchases.clone(), format!(r#"{{{common},"order_id":"o","action":"placed","amount_minor":1,"currency":"eu"}}"#)),
        (t.surveys.clone(), r#"{"event_id":"b","customer_id":"c-bad","occurred_at":"soon","survey_id":"s","kind":"nps","score":1}"#.to_string()),
        (t.surveys.clone(), format!(r#"{{"event_id":"b","customer_id":"c-bad","occurred_at":"{future}","survey_id":"s","kind":"nps","score":1}}"#)),
    ]
}

/// What [`stream_with_crashes`] produced, for verification.
pub struct Streamed {
    /// Every valid event produced (redeliveries included).
    pub events: Vec<super::generator::Input>,
    /// Where the data starts and ends (event time, ms).
    pub data_start: i64,
    /// End of the data.
    pub data_end: i64,
    /// Event time of the flush events.
    pub flush_time: EventTime,
    /// Bad records produced (each with a `test-bad-id` header).
    pub bad: usize,
    /// Crashes that happened: (chunk index, how).
    pub crashes: Vec<(usize, Crash)>,
    /// The instance still running.
    pub instance: Instance,
    /// Its log file.
    pub log: PathBuf,
}

/// Streams a 300-customer, 3-day population in 12 chunks with bad records mixed in;
/// after chunk `i` the instance suffers `plan[i]` (missing entries: nothing) and a
/// new one is started. Returns once the flush events are produced.
pub async fn stream_with_crashes(
    broker: &Broker,
    config: &Config,
    partitions: i32,
    seed: u64,
    plan: &[Crash],
) -> Streamed {
    let scenario = Scenario {
        customers: 300,
        days: 3,
        visits_per_day: 3.0,
    };
    let (events, data_start, data_end) = scenario::events(&scenario, seed);
    let address = super::free_address();
    let log = std::env::temp_dir().join(format!(
        "cxpulse-{}-{}.log",
        config.kafka.group_id,
        std::process::id()
    ));
    let mut instance = Instance::start(config, &address, &log);
    let producer = super::producer(broker);
    let mut rng = SmallRng::seed_from_u64(std::process::id() as u64);
    let chunks: Vec<_> = events.chunks(events.len().div_ceil(12)).collect();
    let mut crashes = Vec::new();
    let mut bad = 0;
    for (index, chunk) in chunks.iter().enumerate() {
        let crash = plan.get(index).copied().unwrap_or(Crash::None);
        if let Crash::AbortAfterChangelogRecords(records) = crash {
            // A fresh instance that will abort itself while applying this chunk.
            instance.wait_ready().await;
            instance.kill();
            instance = Instance::start_with(
                config,
                &address,
                &log,
                &[(
                    cxpulse::fault::ABORT_AFTER_CHANGELOG_RECORDS,
                    &records.to_string(),
                )],
            );
        }
        super::produce_events(&producer, config, chunk, Format::Json).await;
        // Every kind of bad record, mixed in, each with an id to find it in the DLQ.
        for (kind, (topic, value)) in bad_records(config).into_iter().enumerate() {
            let id = format!("bad-{index}-{kind}");
            let headers: &[(&str, &[u8])] = &[
                ("content-type", b"application/json"),
                ("test-bad-id", id.as_bytes()),
            ];
            super::produce_raw(
                &producer,
                &topic,
                None,
                Some(b"c-bad"),
                value.as_bytes(),
                headers,
            )
            .await;
            bad += 1;
        }
        match crash {
            Crash::None => continue,
            Crash::Kill => {
                instance.wait_ready().await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
                instance.kill();
            }
            Crash::AbortAfterChangelogRecords(records) => {
                let status = instance.wait_exit(Duration::from_secs(90)).await;
                let aborted = status.is_some_and(|status| {
                    std::os::unix::process::ExitStatusExt::signal(&status) == Some(6)
                });
                assert!(
                    aborted,
                    "the fault point after {records} changelog records did not abort the instance: {status:?}"
                );
            }
        }
        crashes.push((index, crash));
        instance = Instance::start(config, &address, &log);
    }
    let flush_time = scenario::produce_flush(&producer, config, partitions).await;
    Streamed {
        events,
        data_start,
        data_end,
        flush_time,
        bad,
        crashes,
        instance,
        log,
    }
}

/// Reads the DLQ until every bad record is there; returns how often each bad-record id is.
pub fn dead_letters(broker: &Broker, config: &Config, bad: usize) -> BTreeMap<String, usize> {
    let records = super::read_until(
        broker,
        &config.topics.dlq,
        Duration::from_secs(60),
        |records| {
            records
                .iter()
                .map(|r| r.header("test-bad-id"))
                .collect::<HashSet<_>>()
                .len()
                >= bad
        },
    );
    let mut counts = BTreeMap::new();
    for record in &records {
        assert!(!record.header("cxpulse.error.reason").is_empty());
        *counts
            .entry(record.header("test-bad-id").to_string())
            .or_insert(0) += 1;
    }
    counts
}
