//! Black-box tests of the `cxpulse` binary: configuration errors name the
//! key, and `cxpulse run` serves a real broker, answers HTTP and exits 0 on SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Broker;
use cxpulse::decode::Format;
use cxpulse::event::EventTime;
use cxpulse::generate::population::{Population, PopulationConfig};

fn cxpulse() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cxpulse"));
    // Only what a test sets reaches the binary's configuration.
    for (key, _) in std::env::vars() {
        if key.starts_with("CXPULSE_") {
            command.env_remove(key);
        }
    }
    command
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = std::env::temp_dir().join(format!("cxpulse-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[processing]\nallowed_lateness = \"five minutes\"\n").unwrap();
    let output = cxpulse()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("allowed_lateness"), "{stderr}");

    let output = cxpulse()
        .arg("check-config")
        .env("CXPULSE_WINDOWS", "[]")
        .env("CXPULSE_PROCESSING__MAX_RECORD_BYTES", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("processing.max_record_bytes"), "{stderr}");

    let output = cxpulse()
        .arg("check-config")
        .env("CXPULSE_CONFIG", "deploy/cxpulse.toml")
        .env("CXPULSE_KAFKA__BOOTSTRAP_SERVERS", "broker-0:9092")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("broker-0:9092"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_http_and_stops_cleanly_on_sigterm() {
    let broker = Broker::mock();
    let config = common::test_config(&broker, "binary");
    broker.create_topics(&config, 2).await;
    let address = common::free_address();
    let mut child = cxpulse()
        .arg("run")
        .env("CXPULSE_KAFKA__BOOTSTRAP_SERVERS", broker.bootstrap())
        .env("CXPULSE_KAFKA__GROUP_ID", &config.kafka.group_id)
        .env("CXPULSE_TOPICS__PURCHASES", &config.topics.purchases)
        .env("CXPULSE_TOPICS__TICKETS", &config.topics.tickets)
        .env("CXPULSE_TOPICS__SURVEYS", &config.topics.surveys)
        .env("CXPULSE_TOPICS__PROFILES", &config.topics.profiles)
        .env("CXPULSE_TOPICS__ENRICHED", &config.topics.enriched)
        .env("CXPULSE_TOPICS__SIGNALS", &config.topics.signals)
        .env("CXPULSE_TOPICS__METRICS", &config.topics.metrics)
        .env("CXPULSE_TOPICS__DLQ", &config.topics.dlq)
        .env("CXPULSE_TOPICS__CHANGELOG", &config.topics.changelog)
        .env("CXPULSE_HTTP__LISTEN", &address)
        .env("CXPULSE_LOG__FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let ready = common::eventually(Duration::from_secs(60), || {
        common::http_get(&address, "/readyz").is_some_and(|(status, _)| status == 200)
    })
    .await;
    assert!(ready, "/readyz never became 200");
    assert_eq!(
        common::http_get(&address, "/healthz").map(|(s, _)| s),
        Some(200)
    );

    let events: Vec<_> = Population::new(PopulationConfig {
        customers: 50,
        visits_per_day: 20.0,
        start: EventTime::now().plus_millis(-2 * 86_400_000),
        max_disorder_millis: 60_000,
        seed: 5,
    })
    .take(2000)
    .collect();
    let producer = common::producer(&broker);
    common::produce_events(&producer, &config, &events, Format::Json).await;
    let consumed = common::eventually(Duration::from_secs(60), || {
        common::http_get(&address, "/metrics").is_some_and(|(_, body)| {
            let total: f64 = body
                .lines()
                .filter(|line| line.starts_with("cxpulse_events_processed_total"))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            total >= 2000.0
        })
    })
    .await;
    assert!(consumed, "the binary did not process the 2000 events");
    let customer = events[0].customer_id.as_str();
    let (status, body) = common::http_get(&address, &format!("/v1/customers/{customer}")).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("\"customer_id\":\"{customer}\"")),
        "{body}"
    );
    assert_eq!(
        common::http_get(&address, "/v1/customers/nobody").map(|(s, _)| s),
        Some(404)
    );

    let started = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no exit within 30s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "exit status {status}: {stderr}");
    assert!(
        stderr.contains("\"message\":\"shutdown requested\""),
        "JSON logs: {stderr}"
    );
    assert!(
        stderr.contains("\"message\":\"pipeline stopped\""),
        "clean stop: {stderr}"
    );
}

#[test]
fn unreachable_brokers_end_in_a_clear_error_and_non_zero_exit() {
    let [closed, listen]: [String; 2] = common::free_addresses(2).try_into().unwrap();
    let started = Instant::now();
    let output = cxpulse()
        .arg("run")
        .env("CXPULSE_KAFKA__BOOTSTRAP_SERVERS", &closed)
        .env("CXPULSE_KAFKA__UNREACHABLE_TIMEOUT", "4s")
        .env("CXPULSE_HTTP__LISTEN", listen)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("kafka.unreachable_timeout"), "{stderr}");
    assert!(
        stderr.contains("retrying"),
        "retries are logged before giving up: {stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}
