//! Exactly-once on Apache Kafka with real transactions: instances killed with
//! `kill -9` at random points and aborted by a fault point inside open
//! transactions while input streams in; a verifier reading `read_committed`
//! finds every output exactly once and equal to the model, and reading
//! `read_uncommitted` finds the aborted records that were written and hidden.
//! A frozen instance whose `transactional.id` is taken over is fenced.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::instance::Instance;
use common::scenario::{self, Scenario};
use common::streaming::{self, Crash};
use common::Broker;
use cxpulse::config::{Config, Guarantee};
use cxpulse::decode::Format;

fn exactly_once_config(broker: &Broker, name: &str) -> Config {
    let mut config = common::test_config(broker, name);
    config.processing.guarantee = Guarantee::ExactlyOnce;
    config.kafka.transactional_id = format!("cxpulse-{name}-{}", std::process::id());
    config
}

/// How often each `ce_id` of a topic's records appears, at an isolation level.
fn ids(broker: &Broker, topic: &str, isolation: &str, at_least: usize) -> BTreeMap<String, usize> {
    let records = common::read_with_isolation(
        broker,
        topic,
        isolation,
        Duration::from_secs(60),
        |records| records.len() >= at_least,
    );
    let mut counts = BTreeMap::new();
    for record in records {
        *counts
            .entry(record.header("ce_id").to_string())
            .or_insert(0) += 1;
    }
    counts
}

/// Reads `cx.enriched` committed: one enriched event per valid input (flush events
/// included), none twice; returns how often each `ce_id` is there.
fn enriched_exactly_once(
    broker: &Broker,
    config: &Config,
    events: &[common::generator::Input],
    partitions: i32,
) -> BTreeMap<String, usize> {
    let valid: HashSet<_> = events
        .iter()
        .map(|e| (e.customer.clone(), e.event_id.clone()))
        .collect();
    let expected = valid.len() + 3 * partitions as usize;
    let committed = ids(broker, &config.topics.enriched, "read_committed", expected);
    let twice: Vec<_> = committed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "enriched events committed twice: {twice:?}"
    );
    assert_eq!(
        committed.len(),
        expected,
        "one enriched event per valid input (flush events included)"
    );
    committed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_and_aborts_mid_transaction_leave_every_output_exactly_once() {
    let broker = Broker::kafka();
    let config = exactly_once_config(&broker, "eos-kills");
    let partitions = 3;
    broker.create_topics(&config, partitions).await;
    // Two aborts certainly inside a transaction (after its changelog records are on
    // the broker, before the commit), three kill -9 at random moments.
    let plan = [
        Crash::None,
        Crash::Kill,
        Crash::AbortAfterChangelogRecords(5),
        Crash::None,
        Crash::Kill,
        Crash::None,
        Crash::AbortAfterChangelogRecords(40),
        Crash::None,
        Crash::Kill,
    ];
    let mut run = streaming::stream_with_crashes(&broker, &config, partitions, 55, &plan).await;
    // No window twice (crashes = false), and every window and profile equals the model.
    let compared = scenario::verify(
        &broker,
        &config,
        partitions,
        &run.events,
        run.data_start,
        run.data_end,
        run.flush_time,
        false,
    );
    let committed = enriched_exactly_once(&broker, &config, &run.events, partitions);
    let expected_enriched = committed.len();
    let dlq = streaming::dead_letters(&broker, &config, run.bad);
    assert_eq!(dlq.len(), run.bad, "every bad record is in the DLQ");
    assert!(
        dlq.values().all(|n| *n == 1),
        "exactly once: no dead letter twice"
    );

    // The aborted transactions really wrote records, and read_committed hid them.
    let uncommitted_records = common::read_with_isolation(
        &broker,
        &config.topics.enriched,
        "read_uncommitted",
        Duration::from_secs(60),
        |records| records.len() > expected_enriched,
    );
    let uncommitted = uncommitted_records.len();
    let aborted = uncommitted - expected_enriched;
    assert!(
        aborted > 0,
        "aborted transactions should have left records that read_committed hides"
    );
    assert!(
        uncommitted_records
            .iter()
            .all(|r| committed.contains_key(r.header("ce_id"))),
        "every aborted record was redone and committed once"
    );
    eprintln!(
        "exactly-once on Apache Kafka: {} crashes ({:?}); read_committed: {} enriched events, {} dead letters, none twice, {compared}; read_uncommitted: {uncommitted} enriched records, {aborted} of them aborted and hidden",
        run.crashes.len(),
        run.crashes,
        committed.len(),
        dlq.len(),
    );
    run.instance.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_instance_is_fenced_and_writes_nothing_visible() {
    let broker = Broker::kafka();
    let config = exactly_once_config(&broker, "eos-zombie");
    let partitions = 2;
    broker.create_topics(&config, partitions).await;
    let scenario = Scenario {
        customers: 150,
        days: 2,
        visits_per_day: 3.0,
    };
    let (events, data_start, data_end) = scenario::events(&scenario, 77);
    let chunks: Vec<_> = events.chunks(events.len().div_ceil(4)).collect();
    let log = std::env::temp_dir().join(format!("cxpulse-zombie-{}.log", std::process::id()));
    let [first_address, second_address]: [String; 2] =
        common::free_addresses(2).try_into().unwrap();
    let producer = common::producer(&broker);

    let mut zombie = Instance::start(&config, &first_address, &log);
    zombie.wait_ready().await;
    common::produce_events(&producer, &config, chunks[0], Format::Json).await;
    common::produce_events(&producer, &config, chunks[1], Format::Json).await;
    // Frozen in the middle of its work, with transactions open or about to be: as
    // soon as it has consumed part of the two chunks.
    common::instance::wait_consumed(&[&first_address], 1, Duration::from_secs(60)).await;
    zombie.signal("STOP");

    // Same transactional.id (a restarted pod): its producer fences the frozen one,
    // and the group gives it every task once the frozen member's session expires.
    let mut successor = Instance::start(&config, &second_address, &log);
    successor.wait_ready().await;
    let took_over = common::eventually(Duration::from_secs(60), || {
        successor.metric("cxpulse_tasks_assigned") == Some(partitions as f64)
    })
    .await;
    assert!(took_over, "the successor never took every task");
    common::produce_events(&producer, &config, chunks[2], Format::Json).await;
    // The successor has committed the first three chunks (and their outputs).
    let caught_up = common::eventually(Duration::from_secs(90), || {
        common::instance::group_caught_up(&config, partitions)
    })
    .await;
    assert!(
        caught_up,
        "the successor never committed the first three chunks"
    );

    // Resumed, the zombie rejoins the group (its session expired) and, given a task
    // again, finds its producer fenced at its first transaction: it stops without
    // committing anything.
    zombie.signal("CONT");
    // The last chunk comes once the zombie either stopped at once (frozen inside a
    // transaction, its commit is fenced) or is back in the group with a task, so
    // that it has input to use its fenced producer on.
    let tasks = |address: &str| common::instance::metric(address, "cxpulse_tasks_assigned");
    let rejoined = common::eventually(Duration::from_secs(60), || {
        matches!(zombie.child.try_wait(), Ok(Some(_)))
            || (tasks(&first_address) == Some(1.0) && tasks(&second_address) == Some(1.0))
    })
    .await;
    assert!(
        rejoined,
        "the resumed zombie neither stopped nor rejoined the group"
    );
    common::produce_events(&producer, &config, chunks[3], Format::Json).await;
    let status = zombie.wait_exit(Duration::from_secs(90)).await;
    assert!(
        status.is_some_and(|status| !status.success()),
        "a fenced instance must stop with an error: {status:?}"
    );
    let flush_time = scenario::produce_flush(&producer, &config, partitions).await;
    let compared = scenario::verify(
        &broker, &config, partitions, &events, data_start, data_end, flush_time, false,
    );
    let committed = enriched_exactly_once(&broker, &config, &events, partitions);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.to_lowercase().contains("fenced"),
        "the zombie's log says it was fenced"
    );
    eprintln!(
        "zombie fenced (exit {status:?}); read_committed: {} enriched events, none twice; {compared}",
        committed.len()
    );
    successor.terminate();
}
