//! Per-task gauges across a rebalance, on Apache Kafka with the real binary:
//! one instance holds all four tasks; a second joins and takes two. Summed over
//! both instances the state gauges (profiles, tickets, timers pending, windows
//! skipped) equal those of the single instance, each task is reported by its
//! owner with the value it had before the move, and every gauge labelled with a
//! task an instance lost (watermark, window results, restore progress, consumer
//! lag of its partitions) is zero there. When the second instance leaves, the
//! first reports every task again as before.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::instance::{metric, Instance};
use common::Broker;

/// Gauges of one task's state: with every input applied they stay put, so they
/// must add up across instances exactly.
const STATE_GAUGES: [&str; 4] = [
    "cxpulse_profiles",
    "cxpulse_tickets_tracked",
    "cxpulse_timers_pending",
    "cxpulse_windows_skipped",
];

/// One sample of `/metrics`: (metric name, value of label `label`) → value.
/// Every per-task metric labels its task `partition`, as the consumer lag does.
type Samples = BTreeMap<(String, String), f64>;

/// Every gauge sample of `body` with label `label` (counters, `_total`, excluded).
fn labelled(body: &str, label: &str) -> Samples {
    let needle = format!("{label}=\"");
    let mut samples = Samples::new();
    for line in body.lines().filter(|line| !line.starts_with('#')) {
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        if name.ends_with("_total") {
            continue;
        }
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let Some(start) = labels.find(&needle) else {
            continue;
        };
        let tail = &labels[start + needle.len()..];
        let id = tail.split('"').next().unwrap_or_default().to_string();
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        // Several label sets per (name, task), e.g. window and category: add them up.
        *samples.entry((name.to_string(), id)).or_default() += value;
    }
    samples
}

fn metrics(address: &str) -> String {
    common::http_get(address, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// The tasks of the last `tasks assigned` line of an instance's own JSON log.
fn owned(log: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["message"] == "tasks assigned")
        .filter_map(|entry| entry["tasks"].as_str().map(str::to_string))
        .next_back()
        .unwrap_or_default()
        .trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .map(|task| task.trim().to_string())
        .filter(|task| !task.is_empty())
        .collect()
}

/// The state gauges per (name, task) of `address`, once two reads in a row agree.
async fn settled_state(address: &str) -> Samples {
    let mut previous = Samples::new();
    let mut current = Samples::new();
    let settled = common::eventually(Duration::from_secs(60), || {
        previous = std::mem::take(&mut current);
        current = labelled(&metrics(address), "partition");
        current.retain(|(name, _), _| STATE_GAUGES.contains(&name.as_str()));
        !current.is_empty() && current == previous
    })
    .await;
    assert!(settled, "the task gauges of {address} never settled");
    current
}

/// Asserts that every gauge `address` reports for a task (partition) it does not
/// own is zero; returns how many such samples there were.
fn assert_lost_tasks_zeroed(address: &str, owned: &BTreeSet<String>) -> usize {
    let mut checked = 0;
    for ((name, id), value) in labelled(&metrics(address), "partition") {
        if owned.contains(&id) {
            continue;
        }
        checked += 1;
        assert_eq!(
            value, 0.0,
            "{address} still reports {name} of partition {id}, which it does not own (it owns {owned:?})"
        );
    }
    checked
}

fn sum(samples: &Samples, name: &str) -> f64 {
    samples
        .iter()
        .filter(|((n, _), _)| n == name)
        .map(|(_, value)| value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_task_gauges_add_up_across_instances_after_a_rebalance() {
    let broker = Broker::kafka();
    let config = common::test_config(&broker, "task-gauges");
    let partitions = 4;
    broker.create_topics(&config, partitions).await;
    let (events, _) = common::fault_workload(400, 8, "tg");
    let pid = std::process::id();
    let first_log = std::env::temp_dir().join(format!("cxpulse-gauges-first-{pid}.log"));
    let second_log = std::env::temp_dir().join(format!("cxpulse-gauges-second-{pid}.log"));
    for log in [&first_log, &second_log] {
        let _ = std::fs::remove_file(log);
    }
    let [first_address, second_address]: [String; 2] =
        common::free_addresses(2).try_into().expect("two addresses");
    let mut first = Instance::start(&config, &first_address, &first_log);
    first.wait_ready().await;
    let producer = common::producer(&broker);
    common::produce_workload(&producer, &config, &events).await;
    let applied = common::eventually(Duration::from_secs(120), || {
        metric(&first_address, "cxpulse_events_processed_total")
            .is_some_and(|n| n >= events.len() as f64)
    })
    .await;
    assert!(applied, "the events were never applied");
    let single = settled_state(&first_address).await;
    for name in STATE_GAUGES {
        let tasks = single.keys().filter(|(n, _)| n == name).count();
        assert_eq!(
            tasks, partitions as usize,
            "{name} of every task: {single:?}"
        );
    }
    assert!(sum(&single, "cxpulse_profiles") == 400.0, "{single:?}");
    assert!(sum(&single, "cxpulse_timers_pending") > 0.0, "{single:?}");
    assert!(sum(&single, "cxpulse_tickets_tracked") > 0.0, "{single:?}");

    // Every input consumed and its offsets committed (lag 0 on each of the 3 × 4
    // partitions) before the rebalance: a partition whose progress was not yet
    // committed has no known lag at its new owner until that owner commits.
    let committed = common::eventually(Duration::from_secs(60), || {
        let body = metrics(&first_address);
        let lags: Vec<f64> = body
            .lines()
            .filter(|line| line.starts_with("cxpulse_consumer_lag_records{"))
            .filter_map(|line| line.rsplit_once(' ')?.1.trim().parse().ok())
            .collect();
        lags.len() == 3 * partitions as usize && lags.iter().all(|lag| *lag == 0.0)
    })
    .await;
    assert!(committed, "the first instance never committed every input");

    // Scale out: the second instance takes two of the four tasks.
    let mut second = Instance::start(&config, &second_address, &second_log);
    common::instance::wait_tasks_shared(&first_address, &second_address, partitions).await;
    first.wait_ready().await;
    second.wait_ready().await;
    let (first_owns, second_owns) = (owned(&first_log), owned(&second_log));
    assert!(
        first_owns.is_disjoint(&second_owns) && first_owns.len() + second_owns.len() == 4,
        "{first_owns:?} and {second_owns:?}"
    );
    let first_state = settled_state(&first_address).await;
    let second_state = settled_state(&second_address).await;
    for name in STATE_GAUGES {
        let both = sum(&first_state, name) + sum(&second_state, name);
        assert_eq!(
            both,
            sum(&single, name),
            "{name} summed over two instances differs from one instance's"
        );
        for ((n, task), value) in single.iter().filter(|((n, _), _)| n == name) {
            let owner = if first_owns.contains(task) {
                &first_state
            } else {
                &second_state
            };
            assert_eq!(
                owner.get(&(n.clone(), task.clone())),
                Some(value),
                "{name} of task {task} on its owner after the move"
            );
        }
    }
    let zeroed = assert_lost_tasks_zeroed(&first_address, &first_owns)
        + assert_lost_tasks_zeroed(&second_address, &second_owns);
    // The lag of the partitions an instance does own is still reported (from the
    // consumer statistics, once a second).
    for (address, owns) in [
        (&first_address, &first_owns),
        (&second_address, &second_owns),
    ] {
        let reported = common::eventually(Duration::from_secs(30), || {
            let lag = labelled(&metrics(address), "partition");
            owns.iter().all(|partition| {
                lag.contains_key(&(
                    "cxpulse_consumer_lag_records".to_string(),
                    partition.clone(),
                ))
            })
        })
        .await;
        let lag: Vec<String> = metrics(address)
            .lines()
            .filter(|line| line.starts_with("cxpulse_consumer_lag_records"))
            .map(str::to_string)
            .collect();
        assert!(
            reported,
            "{address} reports no consumer lag of some of {owns:?}: {lag:?}"
        );
    }

    // Scale in: the first instance takes every task back.
    second.terminate();
    let back = common::eventually(Duration::from_secs(120), || {
        metric(&first_address, "cxpulse_tasks_assigned") == Some(partitions as f64)
    })
    .await;
    assert!(back, "the first instance never took every task back");
    first.wait_ready().await;
    let again = settled_state(&first_address).await;
    assert_eq!(
        again, single,
        "one instance holding every task again reports what it did before"
    );
    eprintln!(
        "one instance: {:?}; after the rebalance tasks {first_owns:?} + {second_owns:?}, state gauges add up to the same, {zeroed} gauge samples of lost tasks and partitions all zero; back on one instance: equal again",
        STATE_GAUGES.map(|name| (name, sum(&single, name)))
    );
    first.terminate();
}
