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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_changes_no_result() {
    let broker = Broker::mock();
    let config = common::test_config(&broker, "kill9");
    let partitions = 3;
    broker.create_topics(&config, partitions).await;
    let scenario = Scenario {
        customers: 300,
        days: 3,
        visits_per_day: 3.0,
    };
    let (events, data_start, data_end) = scenario::events(&scenario, 21);
    let address = common::free_address();
    let log = std::env::temp_dir().join(format!("cxpulse-kill9-{}.log", std::process::id()));
    let mut child = start(&config, &address, &log);
    let producer = common::producer(&broker);
    let mut rng = SmallRng::seed_from_u64(std::process::id() as u64);
    let chunks: Vec<_> = events.chunks(events.len() / 12 + 1).collect();
    let mut kills = 0;
    for (index, chunk) in chunks.iter().enumerate() {
        common::produce_events(&producer, &config, chunk, Format::Json).await;
        if index % 4 == 1 {
            wait_ready(&address).await;
            // Somewhere in the middle of processing what was just produced.
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
            child.0.kill().expect("kill -9");
            child.0.wait().expect("reaped");
            kills += 1;
            child = start(&config, &address, &log);
        }
    }
    let flush_time = scenario::produce_flush(&producer, &config, partitions).await;
    scenario::verify(
        &broker, &config, partitions, &events, data_start, data_end, flush_time, true,
    );
    eprintln!(
        "{kills} kill -9 during {} events: every window and profile equals the model",
        events.len()
    );
    terminate(&mut child);
    assert!(kills >= 3);
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
    let broker = Broker::mock();
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
