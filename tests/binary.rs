//! Black-box tests of the `cxpulse` binary: configuration errors name the
//! key; `check-config` tolerates what Kubernetes injects, prints TOML that loads
//! back and never shows a secret; `cxpulse run` serves a real broker, answers
//! HTTP, exits 0 on SIGTERM (during start-up too), and fails its liveness probe
//! when its loop hangs.

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
    command.env("CXPULSE_HTTP__API_TOKEN", common::API_TOKEN);
    command
}

fn check_config(
    file: Option<&std::path::Path>,
    environment: &[(&str, &str)],
) -> (bool, String, String) {
    let mut command = cxpulse();
    command.arg("check-config");
    if let Some(file) = file {
        command.arg("--config").arg(file);
    }
    let output = command.envs(environment.iter().copied()).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn check_config_passes_with_the_variables_kubernetes_injects_for_a_service() {
    // A Service named `cxpulse` in the namespace: every pod gets these.
    let (ok, stdout, stderr) = check_config(
        None,
        &[
            ("CXPULSE_PORT", "tcp://10.96.0.17:9898"),
            ("CXPULSE_PORT_9898_TCP", "tcp://10.96.0.17:9898"),
            ("CXPULSE_PORT_9898_TCP_ADDR", "10.96.0.17"),
            ("CXPULSE_PORT_9898_TCP_PORT", "9898"),
            ("CXPULSE_PORT_9898_TCP_PROTO", "tcp"),
            ("CXPULSE_SERVICE_HOST", "10.96.0.17"),
            ("CXPULSE_SERVICE_PORT", "9898"),
            ("CXPULSE_SERVICE_PORT_HTTP", "9898"),
            ("CXPULSE_KAFKA__BOOTSTRAP_SERVERS", "kafka-0.kafka:9092"),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("kafka-0.kafka:9092"), "{stdout}");
    // A misspelt key with levels is still an error, named.
    let (ok, _, stderr) = check_config(None, &[("CXPULSE_KAFKA__BOOTSTRAP_SERVRS", "k:9092")]);
    assert!(!ok && stderr.contains("bootstrap_servrs"), "{stderr}");
}

#[test]
fn check_config_prints_toml_that_loads_back_with_secrets_redacted() {
    let dir = std::env::temp_dir().join(format!("cxpulse-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("in.toml");
    std::fs::write(
        &file,
        "[processing]\nallowed_lateness = \"10m\"\n\n[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n",
    )
    .unwrap();
    let secret_file = dir.join("token");
    std::fs::write(&secret_file, "token-Zk19\n").unwrap();
    let secrets = [
        ("CXPULSE_KAFKA__PROPERTIES__SASL_PASSWORD", "hunter2-Qx7"),
        ("CXPULSE_KAFKA__SASL_PASSWORD", "hunter3-Qx7"),
        (
            "CXPULSE_HTTP__API_TOKEN_FILE",
            secret_file.to_str().unwrap(),
        ),
        ("CXPULSE_SLA__CHAT", "45m"),
    ];
    let (ok, rendered, stderr) = check_config(Some(&file), &secrets);
    assert!(ok, "{stderr}");
    for secret in ["hunter2-Qx7", "hunter3-Qx7", "token-Zk19"] {
        assert!(!rendered.contains(secret), "{secret} shown: {rendered}");
    }
    // Durations as written, not as seconds and nanoseconds.
    assert!(
        rendered.contains("allowed_lateness = \"10m\""),
        "{rendered}"
    );
    assert!(rendered.contains("chat = \"45m\""), "{rendered}");
    for redacted in [
        "kafka.sasl_password",
        "http.api_token",
        "kafka.properties.\"sasl.password\"",
    ] {
        assert!(
            rendered.contains(&format!("# {redacted} is set (redacted)")),
            "{redacted}: {rendered}"
        );
    }
    // Fed back, it is accepted and says the same (less the secrets it no longer has).
    let again = dir.join("rendered.toml");
    std::fs::write(&again, &rendered).unwrap();
    let (ok, rerendered, stderr) = check_config(Some(&again), &[]);
    assert!(ok, "{stderr}\n{rendered}");
    let settings = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(settings(&rerendered), settings(&rendered));
}

#[test]
fn misspelt_librdkafka_properties_fail_check_config_without_showing_their_value() {
    for (name, value) in [
        ("CXPULSE_KAFKA__PROPERTIES__SASL_PASWORD", "hunter2-Zr4"),
        ("CXPULSE_KAFKA__CONSUMER__FETCH_WAIT_MAX_MSS", "hunter2-Zr4"),
    ] {
        let (ok, stdout, stderr) = check_config(None, &[(name, value)]);
        assert!(!ok, "{name} accepted: {stdout}");
        assert!(
            stderr.contains("No such configuration property"),
            "{stderr}"
        );
        assert!(
            !stderr.contains(value) && !stdout.contains(value),
            "{stderr}"
        );
    }
    // In the file, a misspelt password is still recognised as a secret and refused.
    let dir = std::env::temp_dir().join(format!("cxpulse-misspelt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("misspelt.toml");
    std::fs::write(
        &file,
        "[kafka.properties]\n\"sasl.pasword\" = \"hunter2-Zr4\"\n",
    )
    .unwrap();
    let (ok, _, stderr) = check_config(Some(&file), &[]);
    assert!(!ok, "accepted");
    assert!(
        stderr.contains("secrets are not read from the config file"),
        "{stderr}"
    );
    assert!(
        stderr.contains("CXPULSE_KAFKA__PROPERTIES__SASL_PASWORD"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2-Zr4"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_start_up_ends_the_process_promptly() {
    let [closed, listen]: [String; 2] = common::free_addresses(2).try_into().unwrap();
    let log = std::env::temp_dir().join(format!("cxpulse-start-term-{}.log", std::process::id()));
    let mut child = cxpulse()
        .arg("run")
        .env("CXPULSE_KAFKA__BOOTSTRAP_SERVERS", &closed)
        .env("CXPULSE_HTTP__LISTEN", &listen)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let waiting = common::eventually(Duration::from_secs(60), || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("retrying"))
    })
    .await;
    assert!(waiting, "never waited for the brokers");
    let signalled = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if signalled.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("SIGTERM during start-up ignored for 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}: {text}");
    assert!(
        text.contains("shutdown requested during start-up"),
        "{text}"
    );
    eprintln!(
        "SIGTERM while waiting for unreachable brokers: exit 0 after {:.1} s",
        signalled.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_fails_when_the_processing_loop_hangs() {
    let broker = Broker::mock();
    let config = common::test_config(&broker, "liveness");
    broker.create_topics(&config, 1).await;
    let address = common::free_address();
    let log = std::env::temp_dir().join(format!("cxpulse-liveness-{}.log", std::process::id()));
    let instance = common::instance::Instance::start_with(
        &config,
        &address,
        &log,
        &[
            ("CXPULSE_PROCESSING__STALL_TIMEOUT", "3s"),
            // Idle cycles end every batch_max_wait (20 ms): the hang comes within seconds.
            (cxpulse::fault::HANG_AFTER_CYCLES, "300"),
        ],
    );
    instance.wait_ready().await;
    let live = |address: &str| common::http_get(address, "/healthz");
    assert_eq!(live(&address).map(|(status, _)| status), Some(200));
    let hung = Instant::now();
    let failed = common::eventually(Duration::from_secs(60), || {
        live(&address).is_some_and(|(status, body)| status == 503 && body.contains("stalled"))
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        failed,
        "/healthz kept answering 200 with the loop hung: {text}"
    );
    assert!(text.contains("the processing loop hangs"), "{text}");
    eprintln!(
        "loop hung: /healthz 503 within {:.1} s (stall_timeout 3 s)",
        hung.elapsed().as_secs_f64()
    );
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
        .env("CXPULSE_CONFIG", "config/default.toml")
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
