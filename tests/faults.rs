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

/// A tansu broker of this test's own, on sqlite so it can be restarted with its data.
struct Tansu {
    child: Child,
    address: String,
    storage: String,
    log: std::path::PathBuf,
}

impl Tansu {
    fn spawn(address: &str, storage: &str, log: &std::path::Path) -> Option<Child> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .ok()?;
        let url = format!("tcp://{address}");
        std::process::Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                storage,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .ok()
    }

    fn start(address: &str, storage: &str, log: &std::path::Path) -> Option<Tansu> {
        let child = Tansu::spawn(address, storage, log)?;
        Some(Tansu {
            child,
            address: address.to_string(),
            storage: storage.to_string(),
            log: log.to_path_buf(),
        })
    }

    /// Kills the broker (no clean shutdown) and starts it again on the same storage.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Tansu::spawn(&self.address, &self.storage, &self.log).expect("tansu restarts");
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_run_changes_no_result() {
    // Needs the tansu binary (scripts/test installs it); REQUIRE_TANSU makes its absence a failure.
    if Broker::tansu().is_none() {
        return;
    }
    let [broker_address, http]: [String; 2] = common::free_addresses(2).try_into().unwrap();
    // tansu reads `sqlite://PATH` relative to its working directory (the crate root here).
    let dir = std::path::PathBuf::from(format!("target/tmp/broker-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let storage = format!("sqlite://{}", dir.join("tansu.db").display());
    let mut tansu =
        Tansu::start(&broker_address, &storage, &dir.join("tansu.log")).expect("tansu starts");
    let up = common::eventually(Duration::from_secs(30), || {
        std::net::TcpStream::connect(&broker_address).is_ok()
    })
    .await;
    assert!(up, "tansu did not start");
    let broker = Broker::External(broker_address.clone());
    let config = common::test_config(&broker, "broker-restart");
    let partitions = 2;
    broker.create_topics(&config, partitions).await;
    let scenario = Scenario {
        customers: 150,
        days: 2,
        visits_per_day: 3.0,
    };
    let (events, data_start, data_end) = scenario::events(&scenario, 44);
    let log = dir.join("cxpulse.log");
    let mut instance = start(&config, &http, &log);
    wait_ready(&http).await;
    let (first, second) = events.split_at(events.len() / 2);
    let producer = common::producer(&broker);
    common::produce_events(&producer, &config, first, Format::Json).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    tansu.restart();
    let back = common::eventually(Duration::from_secs(30), || {
        std::net::TcpStream::connect(&broker_address).is_ok()
    })
    .await;
    assert!(back, "tansu did not come back");
    common::produce_events(&producer, &config, second, Format::Json).await;
    let flush_time = scenario::produce_flush(&producer, &config, partitions).await;
    scenario::verify(
        &broker, &config, partitions, &events, data_start, data_end, flush_time, true,
    );
    eprintln!(
        "broker restarted once during {} events: every window and profile equals the model",
        events.len()
    );
    terminate(&mut instance);
}
