//! What only a real broker can show, on Apache Kafka: inputs in every
//! compression codec, SASL_SSL with SCRAM configured through config alone (the
//! password from the environment or a file, a wrong one failing clearly), a
//! changelog that is not compacted refused at start-up, and a restore from a
//! changelog the broker really compacted.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::instance::Instance;
use common::scenario::{self, Scenario};
use common::{Broker, OwnKafka};
use cxpulse::config::{Config, PropertyValue};
use cxpulse::decode::Format;
use cxpulse::topics::{self, TopicSpec};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_in_every_compression_codec_equal_the_model() {
    let broker = Broker::kafka();
    let config = common::test_config(&broker, "codecs");
    let partitions = 2;
    broker.create_topics(&config, partitions).await;
    let running = common::start(&config).await;
    let scenario = Scenario {
        customers: 150,
        days: 2,
        visits_per_day: 3.0,
    };
    let (events, data_start, data_end) = scenario::events(&scenario, 5);
    let codecs = ["zstd", "lz4", "snappy", "gzip"];
    let chunks: Vec<_> = events.chunks(events.len().div_ceil(codecs.len())).collect();
    for (codec, chunk) in codecs.iter().zip(&chunks) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .set("enable.idempotence", "true")
            .set("compression.type", *codec)
            .set("linger.ms", "20")
            .create()
            .unwrap_or_else(|error| panic!("a {codec} producer: {error}"));
        common::produce_events(&producer, &config, chunk, Format::Json).await;
    }
    let producer = common::producer(&broker);
    let flush_time = scenario::produce_flush(&producer, &config, partitions).await;
    let compared = scenario::verify(
        &broker, &config, partitions, &events, data_start, data_end, flush_time, false,
    );
    eprintln!("inputs compressed with {codecs:?}: {compared}");
    let outputs_partitioned =
        outputs_are_partitioned_as_the_java_client(&broker, &config, partitions).await;
    eprintln!("{outputs_partitioned}");
    running.stop();
    tokio::task::spawn_blocking(move || running.join())
        .await
        .unwrap()
        .unwrap();
}

/// Every keyed record of `cx.profiles` and `cx.enriched` is in the partition the
/// Java client puts its key in: Kafka's own console producer writes each key to
/// a scratch topic of the same partition count, and the partitions are compared.
async fn outputs_are_partitioned_as_the_java_client(
    broker: &Broker,
    config: &Config,
    partitions: i32,
) -> String {
    let timeout = Duration::from_secs(60);
    let mut placed: BTreeMap<Vec<u8>, (String, i32)> = BTreeMap::new();
    for topic in [&config.topics.profiles, &config.topics.enriched] {
        for record in common::read_until(broker, topic, timeout, |records| !records.is_empty()) {
            if record.key.is_empty() {
                continue;
            }
            let (earlier_topic, partition) = placed
                .entry(record.key.clone())
                .or_insert_with(|| (topic.clone(), record.partition));
            assert_eq!(
                *partition,
                record.partition,
                "key {:?} is in partition {partition} of {earlier_topic} but {} of {topic}",
                String::from_utf8_lossy(&record.key),
                record.partition,
            );
        }
    }
    let scratch = format!("{}.java-partitioner", config.topics.profiles);
    let spec = TopicSpec {
        name: scratch.clone(),
        partitions,
        configs: Vec::new(),
    };
    topics::ensure(config, &[spec])
        .await
        .expect("scratch topic");
    let lines: String = placed
        .keys()
        .map(|key| format!("{}\tjava\n", String::from_utf8_lossy(key)))
        .collect();
    let mut producer = std::process::Command::new(common::kafka_script())
        .args(["run-class", "org.apache.kafka.tools.ConsoleProducer"])
        .args([
            "--bootstrap-server",
            &broker.bootstrap(),
            "--topic",
            &scratch,
        ])
        .args([
            "--reader-property",
            "parse.key=true",
            "--reader-property",
            "key.separator=\t",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("the Java console producer starts");
    use std::io::Write as _;
    producer
        .stdin
        .take()
        .expect("stdin")
        .write_all(lines.as_bytes())
        .expect("keys written to the console producer");
    assert!(producer.wait().expect("console producer").success());
    let java = common::read_until(broker, &scratch, timeout, |records| {
        records.len() >= placed.len()
    });
    assert_eq!(
        java.len(),
        placed.len(),
        "the Java producer wrote every key once"
    );
    for record in &java {
        let (topic, partition) = &placed[&record.key];
        assert_eq!(
            *partition,
            record.partition,
            "key {:?}: cxpulse put it in partition {partition} of {topic}, the Java client in {}",
            String::from_utf8_lossy(&record.key),
            record.partition,
        );
    }
    let in_first = java.iter().filter(|record| record.partition == 0).count();
    format!(
        "{} output keys in the Java client's partitions ({in_first} in partition 0)",
        java.len()
    )
}

/// The SASL_SSL listener of the broker `scripts/test` started: (bootstrap, CA, user, password).
fn sasl_ssl() -> (String, String, String, String) {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/test"))
    };
    (
        var("KAFKA_SASL_BOOTSTRAP"),
        var("KAFKA_CA"),
        var("KAFKA_SCRAM_USER"),
        var("KAFKA_SCRAM_PASSWORD"),
    )
}

fn sasl_config(name: &str) -> Config {
    let (bootstrap, ca, user, _) = sasl_ssl();
    let mut config = common::test_config(&Broker::kafka(), name);
    config.kafka.bootstrap_servers = bootstrap;
    for (key, value) in [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanisms", "SCRAM-SHA-512"),
        ("sasl.username", user.as_str()),
        ("ssl.ca.location", ca.as_str()),
    ] {
        config
            .kafka
            .properties
            .insert(key.into(), PropertyValue::Text(value.into()));
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_with_scram_from_the_environment_or_a_file() {
    let (_, _, _, password) = sasl_ssl();
    let broker = Broker::kafka();
    let config = sasl_config("sasl");
    // Topics made over PLAINTEXT; the service itself speaks SASL_SSL only.
    broker
        .create_topics(&common::test_config(&broker, "sasl"), 1)
        .await;
    let log = std::env::temp_dir().join(format!("cxpulse-sasl-{}.log", std::process::id()));
    let producer = common::producer(&broker);

    // The password from the environment.
    let address = common::free_address();
    let mut instance = Instance::start_with(
        &config,
        &address,
        &log,
        &[("CXPULSE_KAFKA__SASL_PASSWORD", &password)],
    );
    instance.wait_ready().await;
    let at = cxpulse::event::EventTime::now()
        .plus_millis(-60_000)
        .to_rfc3339();
    let survey = |id: &str| {
        format!(
            r#"{{"event_id":"{id}","customer_id":"c1","occurred_at":"{at}","survey_id":"s","kind":"nps","score":9}}"#
        )
    };
    let json: &[(&str, &[u8])] = &[("content-type", b"application/json")];
    common::produce_raw(
        &producer,
        &config.topics.surveys,
        None,
        Some(b"c1"),
        survey("e1").as_bytes(),
        json,
    )
    .await;
    let applied = |address: &str, events: u32| {
        common::http_get(address, "/v1/customers/c1").is_some_and(|(status, body)| {
            status == 200 && body.contains(&format!("\"events\":{events}"))
        })
    };
    assert!(common::eventually(Duration::from_secs(60), || applied(&address, 1)).await);
    instance.terminate();

    // The password from a file (a mounted Secret).
    let file = std::env::temp_dir().join(format!("cxpulse-sasl-password-{}", std::process::id()));
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let address = common::free_address();
    let mut instance = Instance::start_with(
        &config,
        &address,
        &log,
        &[(
            "CXPULSE_KAFKA__SASL_PASSWORD_FILE",
            file.to_str().expect("a UTF-8 path"),
        )],
    );
    instance.wait_ready().await;
    common::produce_raw(
        &producer,
        &config.topics.surveys,
        None,
        Some(b"c1"),
        survey("e2").as_bytes(),
        json,
    )
    .await;
    assert!(common::eventually(Duration::from_secs(60), || applied(&address, 2)).await);
    instance.terminate();
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log_text.contains(&password),
        "the password never reaches the log"
    );
    eprintln!("SASL_SSL + SCRAM-SHA-512 with the password from CXPULSE_KAFKA__SASL_PASSWORD and from the file CXPULSE_KAFKA__SASL_PASSWORD_FILE names: events applied, password never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_start_up_clearly_without_showing_it() {
    let config = sasl_config("sasl-wrong");
    let wrong = "not-the-password-Zq81";
    let log = std::env::temp_dir().join(format!("cxpulse-sasl-wrong-{}.log", std::process::id()));
    let mut instance = Instance::start_with(
        &config,
        &common::free_address(),
        &log,
        &[("CXPULSE_KAFKA__SASL_PASSWORD", wrong)],
    );
    let started = std::time::Instant::now();
    let status = instance.wait_exit(Duration::from_secs(60)).await;
    assert!(
        status.is_some_and(|status| !status.success()),
        "a wrong password must stop start-up with an error: {status:?}"
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("authentication failed"),
        "a clear error: {log_text}"
    );
    assert!(!log_text.contains(wrong), "the password is never shown");
    eprintln!(
        "wrong password: exit {status:?} after {:.1} s with a clear error that does not contain it",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_password_in_the_config_file_is_refused() {
    let dir = std::env::temp_dir().join(format!("cxpulse-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, toml) in [
        ("direct", "[kafka]\nsasl_password = \"hunter2\"\n"),
        (
            "property",
            "[kafka.properties]\n\"sasl.password\" = \"hunter2\"\n",
        ),
        (
            "consumer",
            "[kafka.consumer]\n\"ssl.key.password\" = \"hunter2\"\n",
        ),
        (
            "misspelt",
            "[kafka.properties]\n\"sasl.pasword\" = \"hunter2\"\n",
        ),
        ("api token", "[http]\napi_token = \"hunter2\"\n"),
    ] {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, toml).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_cxpulse"))
            .args(["check-config", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{name}: accepted a password in the file"
        );
        assert!(
            stderr.contains("secrets are not read from the config file"),
            "{name}: {stderr}"
        );
        assert!(
            !stderr.contains("hunter2"),
            "{name}: the password is shown: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changelog_that_is_not_compacted_is_refused() {
    let broker = Broker::kafka();
    let config = common::test_config(&broker, "not-compacted");
    let mut specs = topics::inputs(&config, 1);
    specs.push(TopicSpec {
        name: config.topics.changelog.clone(),
        partitions: 1,
        configs: vec![("cleanup.policy", "delete")],
    });
    topics::ensure(&config, &specs).await.unwrap();
    let _ = cxpulse::telemetry::install_recorder();
    let runtime = tokio::runtime::Handle::current();
    let started = tokio::task::spawn_blocking(move || {
        cxpulse::pipeline::start(config, runtime, Default::default()).map(|_| ())
    })
    .await
    .unwrap();
    let error = format!(
        "{:#}",
        started.expect_err("a delete-policy changelog is refused")
    );
    assert!(
        error.contains("cleanup.policy") && error.contains("compact"),
        "{error}"
    );
}

/// Records per key of a topic partition, read whole: (records, distinct keys).
fn records_and_keys(broker: &Broker, topic: &str) -> (usize, usize) {
    let records = common::read_until(broker, topic, Duration::from_secs(20), |_| false);
    let keys: HashMap<Vec<u8>, usize> = records.iter().fold(HashMap::new(), |mut keys, r| {
        *keys.entry(r.key.clone()).or_insert(0) += 1;
        keys
    });
    (records.len(), keys.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_from_a_compacted_changelog_equals_the_model() {
    let kafka = OwnKafka::up("compaction", &[("KAFKA_EAGER_COMPACTION", "1")]);
    let broker = kafka.broker();
    let config = common::test_config(&broker, "compaction");
    let partitions = 2;
    broker.create_topics(&config, partitions).await;
    let scenario = Scenario {
        customers: 150,
        days: 3,
        visits_per_day: 4.0,
    };
    let (events, data_start, data_end) = scenario::events(&scenario, 8);
    let (first, second) = events.split_at(events.len() * 2 / 3);
    let producer = common::producer(&broker);
    let log = kafka.dir.join("cxpulse.log");
    let address = common::free_address();
    let mut instance = Instance::start(&config, &address, &log);
    instance.wait_ready().await;
    for chunk in first.chunks(first.len().div_ceil(6)) {
        common::produce_events(&producer, &config, chunk, Format::Json).await;
        // Not a wait for the instance: segments roll on the first append 2 s (wall
        // time, segment.ms) after they opened, and only rolled segments are compacted,
        // so the changelog is written over several seconds on purpose.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let written = instance
        .metric("cxpulse_state_changelog_records_total")
        .unwrap_or(0.0);
    let profiles_written: f64 = common::instance::metric_samples(
        &common::http_get(&address, "/metrics").unwrap().1,
        "cxpulse_records_produced_total",
    )
    .filter(|(labels, _)| labels.contains(&config.topics.profiles))
    .map(|(_, value)| value)
    .sum();
    instance.terminate();
    let mut compacted = BTreeMap::new();
    let done = common::eventually(Duration::from_secs(60), || {
        let changelog = records_and_keys(&broker, &config.topics.changelog);
        let profiles = records_and_keys(&broker, &config.topics.profiles);
        compacted.insert("changelog", changelog);
        compacted.insert("profiles", profiles);
        // At least half of the superseded records are gone (the active segment stays).
        let superseded = |(records, keys): (usize, usize), written: f64| {
            ((records - keys) as f64) < (written - keys as f64) / 2.0
        };
        superseded(changelog, written) && superseded(profiles, profiles_written)
    })
    .await;
    assert!(
        done,
        "the broker never compacted: {written} changelog and {profiles_written} profile records written, now {compacted:?} (records, keys)"
    );
    // A new instance restores from the compacted changelog and goes on.
    let mut instance = Instance::start(&config, &address, &log);
    instance.wait_ready().await;
    common::produce_events(&producer, &config, second, Format::Json).await;
    let flush_time = scenario::produce_flush(&producer, &config, partitions).await;
    let compared = scenario::verify(
        &broker, &config, partitions, &events, data_start, data_end, flush_time, true,
    );
    eprintln!(
        "compaction: {written} changelog records written, {:?} (records, keys) left after compaction; {profiles_written} profile records written, {:?} left; restored and continued: {compared}",
        compacted["changelog"], compacted["profiles"]
    );
    instance.terminate();
}
