//! Restores of large task state on Apache Kafka with the real binary: `/readyz`
//! answers 503 while the changelog is being read (the restore metrics say so)
//! and 200 once it is done; and a second instance joining the group while the
//! first is in the middle of its restore changes no result, with either delivery
//! guarantee: every input has its enriched event (exactly once, read committed,
//! with `exactly_once`), and every profile (in `cx.profiles` and on `/v1/customers`
//! of whichever instance owns it) has all its events, restored ones included.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::instance::{metric, Instance};
use common::{Broker, ExpectedProfile, WorkloadEvent};
use cxpulse::config::{Config, Guarantee};

/// Events per customer before the restart (the state to restore); four more follow it.
const BEFORE: usize = 20;
const AFTER: usize = 4;

/// Builds large task state: one instance applies `customers` × [`BEFORE`] events and
/// stops gracefully. Returns the whole workload (split at the restart) and the
/// profiles expected at its end.
async fn large_state(
    broker: &Broker,
    config: &Config,
    customers: usize,
    log: &std::path::Path,
) -> (
    Vec<WorkloadEvent>,
    Vec<WorkloadEvent>,
    BTreeMap<String, ExpectedProfile>,
) {
    let tag = &config.kafka.group_id;
    let (mut events, expected) = common::fault_workload(customers, BEFORE + AFTER, tag);
    // Events come customer by customer within each round: the first BEFORE rounds first.
    let after = events.split_off(customers * BEFORE);
    let address = common::free_address();
    let mut builder = Instance::start(config, &address, log);
    builder.wait_ready().await;
    let producer = common::producer(broker);
    let started = Instant::now();
    common::produce_workload(&producer, config, &events).await;
    let applied = common::eventually(Duration::from_secs(300), || {
        metric(&address, "cxpulse_events_processed_total").is_some_and(|n| n >= events.len() as f64)
    })
    .await;
    assert!(
        applied,
        "the state-building instance never applied its events"
    );
    let changelog = metric(&address, "cxpulse_state_changelog_records_total").unwrap_or(0.0);
    builder.terminate();
    eprintln!(
        "state built: {} events of {customers} customers applied in {:.1} s, {changelog} changelog records",
        events.len(),
        started.elapsed().as_secs_f64()
    );
    (events, after, expected)
}

/// One look at an instance while it starts: a customer's profile (when asked),
/// then `/readyz` status, then restore progress.
#[derive(Debug, Clone, Copy)]
struct Sample {
    customer: Option<u16>,
    ready: Option<u16>,
    remaining: f64,
    restored: f64,
}

fn sample(address: &str) -> Sample {
    sample_with(address, None)
}

fn sample_with(address: &str, customer: Option<&str>) -> Sample {
    let customer = customer.and_then(|customer| {
        common::http_get(address, &format!("/v1/customers/{customer}")).map(|(status, _)| status)
    });
    let ready = common::http_get(address, "/readyz").map(|(status, _)| status);
    let body = common::http_get(address, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default();
    let sum = |name| {
        common::instance::metric_samples(&body, name)
            .map(|(_, value)| value)
            .sum::<f64>()
    };
    Sample {
        customer,
        ready,
        remaining: sum("cxpulse_state_restore_remaining_records"),
        restored: sum("cxpulse_state_restore_records_total"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_while_restoring_and_200_after() {
    let broker = Broker::kafka();
    let config = common::test_config(&broker, "readyz-restore");
    let partitions = 2;
    broker.create_topics(&config, partitions).await;
    let log = std::env::temp_dir().join(format!("cxpulse-readyz-{}.log", std::process::id()));
    let (before, after, expected) = large_state(&broker, &config, 5000, &log).await;

    let address = common::free_address();
    let mut instance = Instance::start(&config, &address, &log);
    let customer = expected.keys().next().expect("a customer").clone();
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        // Every other sample looks a profile up too, so that the samples without
        // one show `/readyz` even if a lookup were held up.
        let lookup = (samples.len() % 2 == 1).then_some(customer.as_str());
        let now = sample_with(&address, lookup);
        samples.push(now);
        if now.ready == Some(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never ready; last sample {now:?}"
        );
        // Polling interval of a condition, not a wait for it.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready_after = instance.started.elapsed();
    // HTTP handlers are not held up by a restore: a profile lookup answered (404 or,
    // once its task is back, 200) while `/readyz`, asked right after, still said 503
    // with records remaining.
    let answered_while_restoring = samples
        .iter()
        .filter(|s| s.customer.is_some() && s.ready == Some(503) && s.remaining > 0.0)
        .count();
    assert!(
        answered_while_restoring > 0,
        "no /v1/customers answer came back during the restore: {samples:?}"
    );
    let restoring_503 = samples
        .iter()
        .filter(|s| s.ready == Some(503) && s.remaining > 0.0)
        .count();
    assert!(
        restoring_503 > 0,
        "no 503 seen while the restore metrics said records remained: {samples:?}"
    );
    let done = sample(&address);
    assert_eq!(done.ready, Some(200));
    assert_eq!(done.remaining, 0.0, "ready with restore records remaining");
    assert!(
        done.restored > 0.0,
        "ready without having restored anything"
    );
    let producer = common::producer(&broker);
    common::produce_workload(&producer, &config, &after).await;
    let mut all = before;
    all.extend(after);
    let counts = common::enriched_counts(&broker, &config, &all, Duration::from_secs(180));
    let (distinct, _) = common::assert_enriched(&counts, &all, false);
    let profiles = common::assert_profiles(&broker, &config, &expected, Duration::from_secs(120));
    eprintln!(
        "restore of {} changelog records: ready (200) {:.1} s after start; {} samples, {restoring_503} of them 503 while records remained, {answered_while_restoring} with a /v1/customers answer before that 503; then {distinct} inputs enriched, {profiles} profiles equal",
        done.restored,
        ready_after.as_secs_f64(),
        samples.len(),
    );
    instance.terminate();
}

/// The timestamp (RFC 3339, UTC, so it sorts as text) of the last line of a JSON
/// log whose message is `message`.
fn last_logged(log: &std::path::Path, message: &str) -> Option<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["message"] == message)
        .filter_map(|entry| entry["timestamp"].as_str().map(str::to_string))
        .next_back()
}

/// When the first restore of a JSON log ended (its last `task state restored` line
/// before any revocation), and when tasks were first revoked.
fn initial_restore_end(log: &std::path::Path) -> (String, Option<String>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut restored = String::new();
    for entry in text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
    {
        let at = entry["timestamp"].as_str().unwrap_or_default().to_string();
        match entry["message"].as_str() {
            Some("task state restored") => restored = at,
            Some("tasks revoked") => return (restored, Some(at)),
            _ => {}
        }
    }
    (restored, None)
}

/// `config` for one instance: with exactly-once, a `transactional.id` of its own
/// (instances on one host would otherwise share one and fence each other).
fn own(config: &Config, instance: &str) -> Config {
    let mut config = config.clone();
    if config.processing.guarantee == Guarantee::ExactlyOnce {
        config.kafka.transactional_id = format!(
            "{}-{instance}-{}",
            config.kafka.group_id,
            std::process::id()
        );
    }
    config
}

/// The profile of `customer` on whichever instance owns it (exactly one must).
fn owned_profile(addresses: &[&str], customer: &str) -> serde_json::Value {
    let found: Vec<serde_json::Value> = addresses
        .iter()
        .filter_map(|address| common::http_get(address, &format!("/v1/customers/{customer}")))
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| serde_json::from_str(&body).expect("a profile as JSON"))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{customer} must be owned by exactly one instance: {found:?}"
    );
    found.into_iter().next().expect("one profile")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_joining_during_a_restore_changes_no_result() {
    joining_during_a_restore(Guarantee::AtLeastOnce, "restore-rebalance").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_joining_during_a_restore_changes_no_result_exactly_once() {
    joining_during_a_restore(Guarantee::ExactlyOnce, "restore-rebalance-eos").await;
}

/// One instance restores large state; frozen in the middle of it, a second joins;
/// afterwards new input is enriched (exactly once with `exactly_once`, read
/// committed) and every profile, restored part included, is right.
async fn joining_during_a_restore(guarantee: Guarantee, name: &str) {
    let broker = Broker::kafka();
    let mut config = common::test_config(&broker, name);
    config.processing.guarantee = guarantee;
    let exactly_once = guarantee == Guarantee::ExactlyOnce;
    let partitions = 4;
    broker.create_topics(&config, partitions).await;
    let pid = std::process::id();
    let build_log = std::env::temp_dir().join(format!("cxpulse-{name}-build-{pid}.log"));
    let first_log = std::env::temp_dir().join(format!("cxpulse-{name}-first-{pid}.log"));
    let second_log = std::env::temp_dir().join(format!("cxpulse-{name}-second-{pid}.log"));
    for log in [&first_log, &second_log] {
        let _ = std::fs::remove_file(log);
    }
    let customers: usize = std::env::var("RESTORE_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15_000);
    let (_, after, expected) =
        large_state(&broker, &own(&config, "build"), customers, &build_log).await;

    let [first_address, second_address]: [String; 2] =
        common::free_addresses(2).try_into().expect("two addresses");
    let mut first = Instance::start(&own(&config, "first"), &first_address, &first_log);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = sample(&first_address);
        if now.remaining > 0.0 {
            break;
        }
        assert!(
            now.ready != Some(200) && Instant::now() < deadline,
            "the first instance was ready before a restore was seen: {now:?}"
        );
        // Polling interval of a condition, not a wait for it.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The first instance is restoring its four tasks. Frozen there (for less than
    // the session timeout), it cannot finish before a second instance has joined
    // the group, however slowly that one starts on a loaded machine.
    first.signal("STOP");
    let frozen = Instant::now();
    let mut second = Instance::start(&own(&config, "second"), &second_address, &second_log);
    let subscribed = common::eventually(Duration::from_secs(30), || {
        last_logged(&second_log, "inputs are co-partitioned; subscribed").is_some()
    })
    .await;
    first.signal("CONT");
    let frozen_for = frozen.elapsed();
    assert!(subscribed, "the second instance never subscribed");
    common::instance::wait_tasks_shared(&first_address, &second_address, partitions).await;
    let assigned = |address: &str| metric(address, "cxpulse_tasks_assigned").unwrap_or(0.0);
    first.wait_ready().await;
    second.wait_ready().await;
    let joined = last_logged(&second_log, "inputs are co-partitioned; subscribed")
        .expect("the second instance logged its subscription");
    let (restored, revoked) = initial_restore_end(&first_log);
    assert!(
        joined < restored,
        "the second instance joined ({joined}) after the first finished its restore ({restored})"
    );

    let producer = common::producer(&broker);
    common::produce_workload(&producer, &config, &after).await;
    let counts = common::enriched_counts(&broker, &config, &after, Duration::from_secs(180));
    let (distinct, records) = common::assert_enriched(&counts, &after, exactly_once);
    let profiles = common::assert_profiles(&broker, &config, &expected, Duration::from_secs(180));
    let addresses = [first_address.as_str(), second_address.as_str()];
    let mut checked = 0;
    for (customer, want) in expected.iter().step_by((customers / 200).max(1)) {
        common::assert_profile(customer, &owned_profile(&addresses, customer), want);
        checked += 1;
    }
    let restores = |address: &str| metric(address, "cxpulse_state_restores_total").unwrap_or(0.0);
    eprintln!(
        "first instance frozen mid-restore for {:.1} s while the second started; second subscribed at {joined}, the first finished its restore at {restored}, tasks revoked at {revoked:?}; tasks then {} + {}, restores {} + {}; after the restart {distinct} new inputs enriched in {records} records, {profiles} profiles in cx.profiles and {checked} on /v1/customers equal",
        frozen_for.as_secs_f64(),
        assigned(&first_address),
        assigned(&second_address),
        restores(&first_address),
        restores(&second_address),
    );
    second.terminate();
    first.terminate();
}
