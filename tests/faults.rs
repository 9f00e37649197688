//! Fault tests: `kill -9` of the real binary at random points while a
//! generated population streams in; after restarts, every window and profile
//! equals the model (the uninterrupted result), field for field.

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::scenario::{self, Scenario};
use common::Broker;
use cxpulse::decode::Format;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

async fn wait_ready(address: &str) {
    let ready = common::eventually(Duration::from_secs(90), || {
        common::http_get(address, "/readyz").is_some_and(|(status, _)| status == 200)
    })
    .await;
    assert!(ready, "cxpulse never became ready");
}

/// A running `cxpulse` that is killed if the test ends early (a failed assertion).
struct Instance(Child);

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &cxpulse::config::Config, address: &str, log: &std::path::Path) -> Instance {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Instance(common::spawn_run(config, address, Stdio::from(file)))
}

/// One bad record of each kind of SPEC section 2 that fits in a small value: (topic, value).
fn bad_records(config: &cxpulse::config::Config) -> Vec<(String, String)> {
    let now = cxpulse::event::EventTime::now();
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

/// Every bad record produced by [`stream_with_kills`] is in the DLQ; returns how often each id is there.
fn dead_letters(
    broker: &Broker,
    config: &cxpulse::config::Config,
) -> std::collections::BTreeMap<String, usize> {
    let expected = 12 * bad_records(config).len();
    let records = common::read_until(
        broker,
        &config.topics.dlq,
        Duration::from_secs(60),
        |records| {
            records
                .iter()
                .map(|r| r.header("test-bad-id"))
                .collect::<std::collections::HashSet<_>>()
                .len()
                >= expected
        },
    );
    let mut counts = std::collections::BTreeMap::new();
    for record in &records {
        assert!(!record.header("cxpulse.error.reason").is_empty());
        *counts
            .entry(record.header("test-bad-id").to_string())
            .or_insert(0) += 1;
    }
    counts
}

/// Streams a population while killing the binary with `kill -9` three times; returns
/// the events, the data bounds and the flush time for verification.
async fn stream_with_kills(
    broker: &Broker,
    config: &cxpulse::config::Config,
    partitions: i32,
    seed: u64,
) -> (
    Vec<cxpulse::event::Event>,
    i64,
    i64,
    cxpulse::event::EventTime,
    Instance,
) {
    let scenario = Scenario {
        customers: 300,
        days: 3,
        visits_per_day: 3.0,
    };
    let (events, data_start, data_end) = scenario::events(&scenario, seed);
    let address = common::free_address();
    let log = std::env::temp_dir().join(format!(
        "cxpulse-{}-{}.log",
        config.kafka.group_id,
        std::process::id()
    ));
    let mut child = start(config, &address, &log);
    let producer = common::producer(broker);
    let mut rng = SmallRng::seed_from_u64(std::process::id() as u64);
    let chunks: Vec<_> = events.chunks(events.len().div_ceil(12)).collect();
    assert_eq!(chunks.len(), 12);
    let mut kills = 0;
    for (index, chunk) in chunks.iter().enumerate() {
        common::produce_events(&producer, config, chunk, Format::Json).await;
        // Every kind of bad record, mixed in, each with an id to find it in the DLQ.
        for (kind, (topic, value)) in bad_records(config).into_iter().enumerate() {
            let id = format!("bad-{index}-{kind}");
            let headers: &[(&str, &[u8])] = &[
                ("content-type", b"application/json"),
                ("test-bad-id", id.as_bytes()),
            ];
            common::produce_raw(
                &producer,
                &topic,
                None,
                Some(b"c-bad"),
                value.as_bytes(),
                headers,
            )
            .await;
        }
        if index % 4 == 1 {
            wait_ready(&address).await;
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
            child.0.kill().expect("kill -9");
            child.0.wait().expect("reaped");
            kills += 1;
            child = start(config, &address, &log);
        }
    }
    assert_eq!(kills, 3);
    let flush_time = scenario::produce_flush(&producer, config, partitions).await;
    (events, data_start, data_end, flush_time, child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_duplicates_no_derived_event_across_crashes() {
    let broker = Broker::kafka();
    let mut config = common::test_config(&broker, "eos");
    config.processing.guarantee = cxpulse::config::Guarantee::ExactlyOnce;
    config.kafka.transactional_id = format!("cxpulse-eos-{}", std::process::id());
    let partitions = 3;
    broker.create_topics(&config, partitions).await;
    let (events, data_start, data_end, flush_time, mut instance) =
        stream_with_kills(&broker, &config, partitions, 55).await;
    // No duplicate window at all (crashes = false), and every window and profile equals the model.
    scenario::verify(
        &broker, &config, partitions, &events, data_start, data_end, flush_time, false,
    );
    let unique: std::collections::HashSet<_> = events
        .iter()
        .map(|e| (e.customer_id.clone(), e.event_id.clone()))
        .collect();
    let enriched = common::read_until(
        &broker,
        &config.topics.enriched,
        Duration::from_secs(60),
        |records| records.len() >= unique.len() + partitions as usize,
    );
    let mut ids = std::collections::HashSet::new();
    for record in &enriched {
        let id = record.header("ce_id").to_string();
        assert!(
            ids.insert(id.clone()),
            "enriched event {id} committed twice"
        );
    }
    assert_eq!(
        enriched.len(),
        unique.len() + 3 * partitions as usize,
        "one enriched event per valid input (flush included)"
    );
    let dlq = dead_letters(&broker, &config);
    assert_eq!(
        dlq.len(),
        12 * bad_records(&config).len(),
        "every bad record is in the DLQ"
    );
    assert!(
        dlq.values().all(|count| *count == 1),
        "exactly once: no dead letter twice"
    );
    eprintln!(
        "exactly-once: 3 kill -9, {} enriched events and {} dead letters, none duplicated",
        enriched.len(),
        dlq.len()
    );
    terminate(&mut instance);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_changes_no_result() {
    let broker = Broker::kafka();
    let config = common::test_config(&broker, "kill9");
    let partitions = 3;
    broker.create_topics(&config, partitions).await;
    let (events, data_start, data_end, flush_time, mut instance) =
        stream_with_kills(&broker, &config, partitions, 21).await;
    // At-least-once: a window may repeat across a crash, always with the same content.
    scenario::verify(
        &broker, &config, partitions, &events, data_start, data_end, flush_time, true,
    );
    let dlq = dead_letters(&broker, &config);
    assert_eq!(
        dlq.len(),
        12 * bad_records(&config).len(),
        "every bad record is in the DLQ, none lost"
    );
    eprintln!(
        "3 kill -9 during {} events and {} bad records: every window and profile equals the model, every bad record is in the DLQ",
        events.len(),
        dlq.len()
    );
    terminate(&mut instance);
}

fn tasks_assigned(address: &str) -> Option<f64> {
    let (_, body) = common::http_get(address, "/metrics")?;
    body.lines()
        .find(|line| line.starts_with("cxpulse_tasks_assigned "))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

fn terminate(instance: &mut Instance) {
    let child = &mut instance.0;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("reaped");
    assert!(status.success(), "graceful stop exits 0: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_from_1_to_3_to_1_instances_changes_no_result() {
    let broker = Broker::kafka();
    let config = common::test_config(&broker, "scale");
    let partitions = 6;
    broker.create_topics(&config, partitions).await;
    let scenario = Scenario {
        customers: 300,
        days: 3,
        visits_per_day: 3.0,
    };
    let (events, data_start, data_end) = scenario::events(&scenario, 33);
    let log = std::env::temp_dir().join(format!("cxpulse-scale-{}.log", std::process::id()));
    let addresses = common::free_addresses(3);
    let producer = common::producer(&broker);
    let chunks: Vec<_> = events.chunks(events.len() / 3 + 1).collect();

    let mut first = start(&config, &addresses[0], &log);
    wait_ready(&addresses[0]).await;
    common::produce_events(&producer, &config, chunks[0], Format::Json).await;

    // Scale out: three members share six tasks.
    let mut others: Vec<Instance> = addresses[1..]
        .iter()
        .map(|address| start(&config, address, &log))
        .collect();
    let split = common::eventually(Duration::from_secs(90), || {
        let counts: Vec<Option<f64>> = addresses.iter().map(|a| tasks_assigned(a)).collect();
        counts.iter().all(|c| c.is_some_and(|c| c >= 1.0))
            && counts.iter().flatten().sum::<f64>() == partitions as f64
    })
    .await;
    assert!(split, "three instances never split the six tasks");
    common::produce_events(&producer, &config, chunks[1], Format::Json).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Scale in: two members leave gracefully; the first takes every task back.
    for child in &mut others {
        terminate(child);
    }
    let back = common::eventually(Duration::from_secs(90), || {
        tasks_assigned(&addresses[0]) == Some(partitions as f64)
    })
    .await;
    assert!(back, "the remaining instance never took all tasks back");
    common::produce_events(&producer, &config, chunks[2], Format::Json).await;
    let flush_time = scenario::produce_flush(&producer, &config, partitions).await;
    scenario::verify(
        &broker, &config, partitions, &events, data_start, data_end, flush_time, true,
    );
    eprintln!(
        "1 → 3 → 1 instances over {} events: every window and profile equals the model",
        events.len()
    );
    terminate(&mut first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_run_changes_no_result() {
    let http = common::free_address();
    let mut kafka = common::OwnKafka::up("broker-restart", &[]);
    let broker = kafka.broker();
    let config = common::test_config(&broker, "broker-restart");
    let partitions = 2;
    broker.create_topics(&config, partitions).await;
    let scenario = Scenario {
        customers: 150,
        days: 2,
        visits_per_day: 3.0,
    };
    let (events, data_start, data_end) = scenario::events(&scenario, 44);
    let log = kafka.dir.join("cxpulse.log");
    let mut instance = start(&config, &http, &log);
    wait_ready(&http).await;
    let (first, second) = events.split_at(events.len() / 2);
    let producer = common::producer(&broker);
    common::produce_events(&producer, &config, first, Format::Json).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // No clean shutdown: the broker recovers its logs from disk.
    kafka.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    kafka.restart();
    common::produce_events(&producer, &config, second, Format::Json).await;
    let flush_time = scenario::produce_flush(&producer, &config, partitions).await;
    scenario::verify(
        &broker, &config, partitions, &events, data_start, data_end, flush_time, true,
    );
    eprintln!(
        "broker killed and restarted once during {} events: every window and profile equals the model",
        events.len()
    );
    terminate(&mut instance);
}
