//! Restarts and rolling updates on Apache Kafka that never stall and never
//! restore needlessly: static membership (`group.instance.id` per instance)
//! with the classic protocol, and the KIP-848 consumer protocol with the
//! brokers' co-partitioning range assignor.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::instance::{metric_samples, Instance};
use common::scenario::{self, Scenario};
use common::Broker;
use cxpulse::config::{Config, GroupProtocol};
use cxpulse::decode::Format;

fn population(seed: u64) -> (Vec<common::generator::Input>, i64, i64) {
    scenario::events(
        &Scenario {
            customers: 300,
            days: 3,
            visits_per_day: 3.0,
        },
        seed,
    )
}

/// Restores per task on one instance's `/metrics`.
fn restores(instance: &Instance) -> BTreeMap<String, f64> {
    let body = common::http_get(&instance.address, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default();
    metric_samples(&body, "cxpulse_state_restores_total")
        .map(|(labels, value)| (labels.to_string(), value))
        .collect()
}

/// What an instance's log says of its assignments.
#[derive(Debug, Default)]
struct History {
    /// Assignment events.
    assignments: usize,
    /// Tasks assigned while not held (each needs a restore).
    acquired: usize,
    /// Tasks still held right after a revocation of others.
    kept_through_a_rebalance: usize,
}

/// Reads the `tasks assigned` / `tasks revoked` lines of a JSON log.
fn assignments(log: &std::path::Path) -> History {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut held = std::collections::BTreeSet::new();
    let mut history = History::default();
    for line in text.lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let tasks: Vec<u32> = entry["tasks"]
            .as_str()
            .unwrap_or_default()
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .filter_map(|task| task.trim().parse().ok())
            .collect();
        match entry["message"].as_str() {
            Some("tasks assigned") => {
                history.assignments += 1;
                for task in tasks {
                    if held.insert(task) {
                        history.acquired += 1;
                    }
                }
            }
            Some("tasks revoked") => {
                for task in &tasks {
                    held.remove(task);
                }
                history.kept_through_a_rebalance += held.len();
            }
            _ => {}
        }
    }
    history
}

fn total(restores: &BTreeMap<String, f64>) -> f64 {
    restores.values().sum()
}

fn with_instance_id(config: &Config, id: &str) -> Config {
    let mut config = config.clone();
    config.kafka.group_instance_id = id.into();
    config
}

/// Seconds from start until the instance has processed (applied) an event.
async fn seconds_to_first_record(instance: &Instance) -> f64 {
    let processed = common::eventually(Duration::from_secs(90), || {
        instance
            .metric("cxpulse_events_processed_total")
            .is_some_and(|processed| processed > 0.0)
    })
    .await;
    assert!(processed, "the restarted instance never processed an event");
    instance.started.elapsed().as_secs_f64()
}

/// Two instances; one of them is killed with `kill -9` three times within 40 s
/// while input streams in, each time restarted: it resumes every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_kills_within_40_seconds_never_stall_the_group() {
    let broker = Broker::kafka();
    let config = common::test_config(&broker, "three-kills");
    let partitions = 4;
    broker.create_topics(&config, partitions).await;
    let (events, data_start, data_end) = population(61);
    let chunks: Vec<_> = events.chunks(events.len().div_ceil(8)).collect();
    let log = std::env::temp_dir().join(format!("cxpulse-three-kills-{}.log", std::process::id()));
    let [steady_address, victim_address]: [String; 2] =
        common::free_addresses(2).try_into().unwrap();
    let producer = common::producer(&broker);
    let mut steady = Instance::start(&with_instance_id(&config, "steady"), &steady_address, &log);
    let victim_config = with_instance_id(&config, "victim");
    let mut victim = Instance::start(&victim_config, &victim_address, &log);
    steady.wait_ready().await;
    victim.wait_ready().await;
    common::produce_events(&producer, &config, chunks[0], Format::Json).await;
    let kills_started = Instant::now();
    let mut resumed = Vec::new();
    for chunk in &chunks[1..4] {
        // The fault's timing, not a wait for something: three kills within 40 s.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        victim.kill();
        victim = Instance::start(&victim_config, &victim_address, &log);
        // Input streams in while it restarts; it must take its tasks back and go on.
        common::produce_events(&producer, &config, chunk, Format::Json).await;
        resumed.push(seconds_to_first_record(&victim).await);
    }
    let kills_took = kills_started.elapsed().as_secs_f64();
    assert!(kills_took < 40.0, "three kills took {kills_took:.1} s");
    for chunk in &chunks[4..] {
        common::produce_events(&producer, &config, chunk, Format::Json).await;
    }
    let flush_time = scenario::produce_flush(&producer, &config, partitions).await;
    let compared = scenario::verify(
        &broker, &config, partitions, &events, data_start, data_end, flush_time, true,
    );
    eprintln!(
        "3 kill -9 of one of two static members within {kills_took:.1} s; seconds from each restart to its first record processed: {resumed:.1?}; {compared}"
    );
    victim.terminate();
    steady.terminate();
}

/// A rolling restart of three static members, one at a time: results equal the
/// model, and only the restarted instance restores, each of its tasks once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_restores_each_task_once_per_move() {
    let broker = Broker::kafka();
    let config = common::test_config(&broker, "rolling");
    let partitions = 6;
    broker.create_topics(&config, partitions).await;
    let (events, data_start, data_end) = population(62);
    let chunks: Vec<_> = events.chunks(events.len().div_ceil(4)).collect();
    let log = std::env::temp_dir().join(format!("cxpulse-rolling-{}.log", std::process::id()));
    let addresses = common::free_addresses(3);
    let configs: Vec<Config> = (0..3)
        .map(|index| with_instance_id(&config, &format!("cxpulse-{index}")))
        .collect();
    let producer = common::producer(&broker);
    let mut instances: Vec<Instance> = (0..3)
        .map(|index| Instance::start(&configs[index], &addresses[index], &log))
        .collect();
    for instance in &instances {
        instance.wait_ready().await;
    }
    let split = common::eventually(Duration::from_secs(60), || {
        instances
            .iter()
            .map(|i| i.metric("cxpulse_tasks_assigned").unwrap_or(0.0))
            .sum::<f64>()
            == partitions as f64
    })
    .await;
    assert!(split, "three members never shared the six tasks");
    common::produce_events(&producer, &config, chunks[0], Format::Json).await;
    let mut restored_by_retired = 0.0;
    let mut moves = 0.0;
    for index in 0..3 {
        // Restores so far on the instances that keep running.
        let before: Vec<f64> = instances.iter().map(|i| total(&restores(i))).collect();
        let owned = instances[index]
            .metric("cxpulse_tasks_assigned")
            .unwrap_or(0.0);
        restored_by_retired += before[index];
        instances[index].terminate();
        instances[index] = Instance::start(&configs[index], &addresses[index], &log);
        instances[index].wait_ready().await;
        common::produce_events(&producer, &config, chunks[index + 1], Format::Json).await;
        let after: Vec<f64> = instances.iter().map(|i| total(&restores(i))).collect();
        for other in (0..3).filter(|other| *other != index) {
            assert_eq!(
                after[other], before[other],
                "instance {other} restored again when instance {index} restarted"
            );
        }
        assert_eq!(
            after[index], owned,
            "the restarted instance restores each of its {owned} tasks once"
        );
        moves += owned;
    }
    let flush_time = scenario::produce_flush(&producer, &config, partitions).await;
    let compared = scenario::verify(
        &broker, &config, partitions, &events, data_start, data_end, flush_time, true,
    );
    let final_restores: f64 = instances.iter().map(|i| total(&restores(i))).sum();
    eprintln!(
        "rolling restart of 3 static members: {} restores in all ({restored_by_retired} at first start, {moves} for {moves} task moves, {final_restores} on the last generation); {compared}",
        restored_by_retired + final_restores
    );
    for instance in &mut instances {
        instance.terminate();
    }
}

/// KIP-848: scaling 1 → 3 → 1 moves only the tasks that change owner; the first
/// instance keeps the state of the tasks it keeps (no restore), and results equal the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_protocol_scales_out_and_in_without_needless_restores() {
    let broker = Broker::kafka();
    let mut config = common::test_config(&broker, "kip848");
    config.kafka.group_protocol = GroupProtocol::Consumer;
    let partitions = 6;
    broker.create_topics(&config, partitions).await;
    let (events, data_start, data_end) = population(63);
    let chunks: Vec<_> = events.chunks(events.len().div_ceil(3)).collect();
    let log = std::env::temp_dir().join(format!("cxpulse-kip848-{}.log", std::process::id()));
    // The first instance logs alone: its assignment history is read back from its log.
    let first_log =
        std::env::temp_dir().join(format!("cxpulse-kip848-first-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&first_log);
    let addresses = common::free_addresses(3);
    let producer = common::producer(&broker);
    let mut first = Instance::start(&config, &addresses[0], &first_log);
    first.wait_ready().await;
    common::produce_events(&producer, &config, chunks[0], Format::Json).await;
    let mut others: Vec<Instance> = addresses[1..]
        .iter()
        .map(|address| Instance::start(&config, address, &log))
        .collect();
    let assigned = |instance: &Instance| instance.metric("cxpulse_tasks_assigned").unwrap_or(0.0);
    let split = common::eventually(Duration::from_secs(90), || {
        assigned(&first) >= 1.0
            && others.iter().all(|o| assigned(o) >= 1.0)
            && assigned(&first) + others.iter().map(assigned).sum::<f64>() == partitions as f64
    })
    .await;
    assert!(split, "three members never shared the six tasks");
    let history = assignments(&first_log);
    assert!(
        history.kept_through_a_rebalance > 0,
        "incremental rebalances: the first instance kept some tasks while others moved"
    );
    assert_eq!(
        total(&restores(&first)),
        history.acquired as f64,
        "the first instance restored only the tasks it did not hold: kept tasks kept their state"
    );
    common::produce_events(&producer, &config, chunks[1], Format::Json).await;
    // Scale in only once the three members took in the second chunk.
    common::instance::wait_consumed(
        &addresses,
        chunks[0].len() + chunks[1].len(),
        Duration::from_secs(90),
    )
    .await;
    for other in &mut others {
        other.terminate();
    }
    let back = common::eventually(Duration::from_secs(90), || {
        assigned(&first) == partitions as f64
    })
    .await;
    assert!(back, "the remaining instance never took every task back");
    let first_restores = total(&restores(&first));
    let history = assignments(&first_log);
    assert_eq!(first_restores, history.acquired as f64);
    common::produce_events(&producer, &config, chunks[2], Format::Json).await;
    let flush_time = scenario::produce_flush(&producer, &config, partitions).await;
    let compared = scenario::verify(
        &broker, &config, partitions, &events, data_start, data_end, flush_time, true,
    );
    eprintln!(
        "KIP-848 1 → 3 → 1: the first instance restored {first_restores} times, once per task it acquired ({} assignments, {} tasks kept through rebalances without a restore); {compared}",
        history.assignments, history.kept_through_a_rebalance
    );
    first.terminate();
}
