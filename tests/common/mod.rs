//! Test harness: a real broker (librdkafka's mock cluster in-process, or
//! Apache Kafka started by `scripts/kafka`), the pipeline running in-process
//! against it, and helpers to produce inputs and read outputs.
#![allow(dead_code)]

pub mod check;
pub mod generator;
pub mod instance;
pub mod model;
pub mod scenario;
pub mod streaming;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cxpulse::config::{Config, WindowConfig};
use cxpulse::decode::Format;
use cxpulse::event::Event;
use cxpulse::generate::wire;
use cxpulse::pipeline::{self, Running, Shared};
use cxpulse::topics;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A broker the test talks Kafka to.
pub enum Broker {
    /// librdkafka's in-process mock cluster.
    Mock(MockCluster<'static, rdkafka::producer::DefaultProducerContext>),
    /// Apache Kafka at this address (`scripts/test`'s shared broker, or a test's own [`OwnKafka`]).
    Kafka(String),
}

impl Broker {
    /// An in-process mock cluster.
    pub fn mock() -> Broker {
        Broker::Mock(MockCluster::new(1).expect("mock cluster"))
    }

    /// The Apache Kafka broker `scripts/test` started (`KAFKA_BOOTSTRAP`). Without it
    /// the test fails: a test that needs a real broker never passes without one.
    pub fn kafka() -> Broker {
        match std::env::var("KAFKA_BOOTSTRAP") {
            Ok(address) if !address.is_empty() => Broker::Kafka(address),
            _ => panic!(
                "KAFKA_BOOTSTRAP is not set: run scripts/test, or `scripts/kafka up DIR` and export \
                 KAFKA_BOOTSTRAP=<the bootstrap it printed>"
            ),
        }
    }

    /// `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        match self {
            Broker::Mock(cluster) => cluster.bootstrap_servers(),
            Broker::Kafka(address) => address.clone(),
        }
    }

    /// Creates inputs and outputs of `config` with `partitions` partitions.
    pub async fn create_topics(&self, config: &Config, partitions: i32) {
        let mut specs = topics::inputs(config, partitions);
        specs.extend(topics::outputs(config, partitions));
        match self {
            Broker::Mock(cluster) => {
                for spec in specs {
                    cluster
                        .create_topic(&spec.name, spec.partitions, 1)
                        .expect("create topic");
                }
            }
            Broker::Kafka(_) => topics::ensure(config, &specs).await.expect("create topics"),
        }
    }
}

/// A config for tests: unique topic names and group per test, fast group timeouts.
pub fn test_config(broker: &Broker, name: &str) -> Config {
    let mut config = Config::default();
    config.kafka.bootstrap_servers = broker.bootstrap();
    config.kafka.group_id = format!("cxpulse-test-{name}");
    let unique = format!("{name}-{}", std::process::id());
    config
        .topics
        .rename_all(|topic| format!("{topic}.{unique}"));
    for (key, value) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
        ("max.poll.interval.ms", "10000"),
    ] {
        config.kafka.consumer.insert(
            key.into(),
            cxpulse::config::PropertyValue::Text(value.into()),
        );
    }
    config.windows = vec![
        WindowConfig::new("1h", 3600, 900),
        WindowConfig::new("6h", 6 * 3600, 3600),
    ];
    // No partition goes idle in a test: a stalled fetch on a loaded machine must never
    // make events late; flush events on every partition close the windows instead.
    config.processing.idle_timeout = Duration::from_secs(3600);
    // Short horizons, so that churn, reactivation and segment changes happen in days of data.
    config.processing.activity_horizon = TEST_ACTIVITY_HORIZON;
    config.segments.new_period = Duration::from_secs(12 * 3600);
    config.segments.champion_recency = Duration::from_secs(86_400);
    config.segments.champion_min_orders = 3;
    config.segments.champion_min_value = 5_000;
    config.processing.batch_max_wait = Duration::from_millis(20);
    config
}

/// The activity horizon of [`test_config`].
pub const TEST_ACTIVITY_HORIZON: Duration = Duration::from_secs(86_400);

/// Starts the pipeline in-process on the current runtime.
pub async fn start(config: &Config) -> Running {
    let _ = cxpulse::telemetry::install_recorder();
    let config = config.clone();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        pipeline::start(config, runtime, Arc::new(Shared::default()))
    })
    .await
    .expect("join")
    .expect("pipeline starts")
}

/// An idempotent producer for test inputs.
pub fn producer(broker: &Broker) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// An input event a test can produce: the engine's own type, or the test generator's.
pub trait TestInput {
    /// The record key.
    fn key(&self) -> &str;
    /// The input topic.
    fn topic<'a>(&self, config: &'a Config) -> &'a str;
    /// The record value in `format`.
    fn value(&self, format: Format) -> Vec<u8>;
}

impl TestInput for Event {
    fn key(&self) -> &str {
        self.customer_id.as_str()
    }
    fn topic<'a>(&self, config: &'a Config) -> &'a str {
        config.topics.input(self.source())
    }
    fn value(&self, format: Format) -> Vec<u8> {
        wire::encode(self, format)
    }
}

impl TestInput for generator::Input {
    fn key(&self) -> &str {
        &self.customer
    }
    fn topic<'a>(&self, config: &'a Config) -> &'a str {
        let topics = &config.topics;
        match generator::Input::topic(self) {
            generator::Topic::Purchases => &topics.purchases,
            generator::Topic::Tickets => &topics.tickets,
            generator::Topic::Surveys => &topics.surveys,
        }
    }
    fn value(&self, format: Format) -> Vec<u8> {
        match format {
            Format::Json => self.json.as_bytes().to_vec(),
            Format::Protobuf => generator::to_protobuf(self),
        }
    }
}

/// Produces one generated input as JSON, to `partition` or by its key.
pub async fn produce_input(
    producer: &FutureProducer,
    config: &Config,
    input: &generator::Input,
    partition: Option<i32>,
) {
    let json: &[(&str, &[u8])] = &[("content-type", b"application/json")];
    produce_raw(
        producer,
        TestInput::topic(input, config),
        partition,
        Some(input.customer.as_bytes()),
        input.json.as_bytes(),
        json,
    )
    .await;
}

/// Produces events, in order, as JSON (or Protobuf) to their input topics.
pub async fn produce_events<E: TestInput>(
    producer: &FutureProducer,
    config: &Config,
    events: &[E],
    format: Format,
) {
    for chunk in events.chunks(1000) {
        let mut deliveries = Vec::new();
        for event in chunk {
            let value = event.value(format);
            let topic = event.topic(config);
            let headers = OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some(format.content_type()),
            });
            let record = FutureRecord::to(topic)
                .key(event.key())
                .payload(&value)
                .headers(headers);
            deliveries.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("queue"),
            );
        }
        for delivery in deliveries {
            delivery.await.expect("delivered").expect("acknowledged");
        }
    }
}

/// Produces one raw record to an explicit partition.
pub async fn produce_raw(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    value: &[u8],
    headers: &[(&str, &[u8])],
) {
    produce_record(producer, topic, partition, key, Some(value), headers).await;
}

/// Produces one record with a null value (no payload) to an explicit partition.
pub async fn produce_null(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    headers: &[(&str, &[u8])],
) {
    produce_record(producer, topic, partition, key, None, headers).await;
}

async fn produce_record(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, &[u8])],
) {
    let mut owned = OwnedHeaders::new();
    for (name, value) in headers {
        owned = owned.insert(Header {
            key: name,
            value: Some(*value),
        });
    }
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(owned);
    if let Some(value) = value {
        record = record.payload(value);
    }
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(partition) = partition {
        record = record.partition(partition);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("delivered");
    producer.flush(Duration::from_secs(10)).expect("flush");
}

/// A record read back from an output topic.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

impl ReadRecord {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.value).expect("output is JSON")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }
}

/// Reads a whole topic from the beginning until `done` says so or `timeout` passes;
/// only what was committed (exactly-once mode writes in transactions).
pub fn read_until(
    broker: &Broker,
    topic: &str,
    timeout: Duration,
    done: impl FnMut(&[ReadRecord]) -> bool,
) -> Vec<ReadRecord> {
    read_with_isolation(broker, topic, "read_committed", timeout, done)
}

/// [`read_until`] with an explicit `isolation.level` (`read_uncommitted` sees aborted records).
pub fn read_with_isolation(
    broker: &Broker,
    topic: &str,
    isolation: &str,
    timeout: Duration,
    mut done: impl FnMut(&[ReadRecord]) -> bool,
) -> Vec<ReadRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("reader-{topic}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("reader");
    let deadline = Instant::now() + timeout;
    let mut assigned = false;
    let mut settle = None;
    let mut records = Vec::new();
    while Instant::now() < deadline {
        if !assigned {
            if let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
                let partitions = metadata
                    .topics()
                    .first()
                    .map(|t| t.partitions().len())
                    .unwrap_or(0);
                if partitions > 0 {
                    let mut tpl = TopicPartitionList::new();
                    for partition in 0..partitions as i32 {
                        tpl.add_partition_offset(topic, partition, Offset::Beginning)
                            .expect("tpl");
                    }
                    consumer.assign(&tpl).expect("assign");
                    assigned = true;
                }
            }
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let headers = message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(ReadRecord {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().unwrap_or_default().to_vec(),
                    value: message.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Some(Err(_)) | None => {
                // Once satisfied, read a little longer so that stragglers show up too.
                if settle.is_none() && done(&records) {
                    settle = Some(Instant::now() + Duration::from_secs(1));
                }
                if settle.is_some_and(|settle| Instant::now() >= settle) {
                    return records;
                }
            }
        }
    }
    records
}

/// Polls `condition` until true or `timeout`; returns whether it became true.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    condition()
}

/// The profile API's bearer token of every instance a test starts.
pub const API_TOKEN: &str = "test-api-token-8f3a";

/// A plain HTTP/1.0 GET on loopback, with the tests' bearer token: (status, body).
pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {address}\r\nAuthorization: Bearer {API_TOKEN}\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// A loopback address with a port that was free a moment ago.
pub fn free_address() -> String {
    free_addresses(1).remove(0)
}

/// `count` distinct loopback addresses whose ports were free a moment ago.
pub fn free_addresses(count: usize) -> Vec<String> {
    // Held together so the kernel cannot hand out one port twice.
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("address").to_string())
        .collect()
}

/// Starts the real `cxpulse run` binary with `config` written to a TOML file
/// (exactly what an operator would do), serving HTTP on `address`, logging JSON to `log`.
pub fn spawn_run(
    config: &Config,
    address: &str,
    log: std::process::Stdio,
    environment: &[(&str, &str)],
) -> std::process::Child {
    let mut config = config.clone();
    config.http.listen = address.parse().expect("socket address");
    config.log.format = cxpulse::config::LogFormat::Json;
    // One file per instance: instances started together must not share (or race on) one.
    let file = std::env::temp_dir().join(format!(
        "cxpulse-{}-{}-{}.toml",
        config.kafka.group_id,
        std::process::id(),
        address.replace([':', '.'], "_")
    ));
    std::fs::write(&file, toml::to_string(&config).expect("config as TOML")).expect("config file");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cxpulse"));
    for (key, _) in std::env::vars() {
        if key.starts_with("CXPULSE_") {
            command.env_remove(key);
        }
    }
    command
        .env("CXPULSE_HTTP__API_TOKEN", API_TOKEN)
        .envs(environment.iter().copied())
        .arg("run")
        .arg("--config")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("cxpulse starts")
}

/// `scripts/kafka` of this repository.
pub fn kafka_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka")
}

/// An Apache Kafka broker of the test's own, started with `scripts/kafka up` in a
/// directory of its own (restart, compaction and security tests); stopped on drop.
pub struct OwnKafka {
    /// Storage, config, credentials and log of the broker.
    pub dir: std::path::PathBuf,
    /// PLAINTEXT `bootstrap.servers`.
    pub bootstrap: String,
    /// What `scripts/kafka` wrote to `DIR/env` (SASL_SSL address, CA, SCRAM user and password).
    pub env: BTreeMap<String, String>,
}

impl OwnKafka {
    /// Starts a broker in a new directory named after `name`, with extra environment
    /// for `scripts/kafka` (e.g. `KAFKA_EAGER_COMPACTION=1`).
    pub fn up(name: &str, environment: &[(&str, &str)]) -> OwnKafka {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("kafka-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("broker directory");
        let mut broker = OwnKafka {
            dir,
            bootstrap: String::new(),
            env: BTreeMap::new(),
        };
        broker.start(environment);
        broker
    }

    fn start(&mut self, environment: &[(&str, &str)]) {
        let output = std::process::Command::new(kafka_script())
            .arg("up")
            .arg(&self.dir)
            .envs(environment.iter().copied())
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("scripts/kafka runs");
        assert!(output.status.success(), "scripts/kafka up failed");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        self.bootstrap = last
            .strip_prefix("bootstrap=")
            .unwrap_or_else(|| panic!("scripts/kafka up printed {last:?} last"))
            .to_string();
        let env = std::fs::read_to_string(self.dir.join("env")).expect("DIR/env");
        self.env = env
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| {
                (
                    key.to_string(),
                    value.trim_matches('"').trim_matches('\'').to_string(),
                )
            })
            .collect();
    }

    /// A [`Broker`] for this broker's PLAINTEXT listener.
    pub fn broker(&self) -> Broker {
        Broker::Kafka(self.bootstrap.clone())
    }

    /// Stops the broker gracefully (`scripts/kafka down`); its data stays.
    pub fn down(&self) {
        self.script("down");
    }

    /// Kills the broker with SIGKILL (`scripts/kafka kill`); its data stays.
    pub fn kill(&self) {
        self.script("kill");
    }

    /// Starts the broker again on its data, ports and credentials.
    pub fn restart(&mut self) {
        self.start(&[]);
    }

    fn script(&self, command: &str) {
        let status = std::process::Command::new(kafka_script())
            .arg(command)
            .arg(&self.dir)
            .status()
            .expect("scripts/kafka runs");
        assert!(status.success(), "scripts/kafka {command} failed");
    }
}

impl Drop for OwnKafka {
    fn drop(&mut self) {
        let _ = std::process::Command::new(kafka_script())
            .arg("down")
            .arg(&self.dir)
            .status();
    }
}

/// One input record of a [`fault_workload`]: JSON written here from SPEC section 1,
/// not by the engine, so a fault test's expectations do not come from the code under test.
#[derive(Debug, Clone)]
pub struct WorkloadEvent {
    /// Which input topic it goes to.
    pub source: cxpulse::event::Source,
    /// Record key and `customer_id`.
    pub customer: String,
    /// `event_id`, unique per event.
    pub event_id: String,
    /// The JSON value.
    pub value: Vec<u8>,
}

/// What every customer's profile must say once all of a [`fault_workload`] is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedProfile {
    /// Valid events applied.
    pub events: u64,
    /// `placed` purchases.
    pub orders_placed: u64,
    /// Placed value in EUR minor units.
    pub revenue_eur: i64,
    /// Tickets opened.
    pub tickets_opened: u64,
}

/// A simple deterministic workload for fault tests: `customers` customers with
/// `per_customer` events each, in event-time order, ending a few minutes before
/// now: every 4th event of a customer is an order placed (EUR), then an NPS
/// answer, a chat ticket opened and the agent's reply to it (so no SLA timer
/// fires while a test runs). `tag` keeps event ids of different runs apart.
pub fn fault_workload(
    customers: usize,
    per_customer: usize,
    tag: &str,
) -> (Vec<WorkloadEvent>, BTreeMap<String, ExpectedProfile>) {
    use cxpulse::event::Source;
    let now = chrono::Utc::now().timestamp_millis();
    let gap = 50; // ms between consecutive events of the whole workload
    let total = (customers * per_customer) as i64;
    let start = now - 10 * 60_000 - total * gap;
    let time = |index: i64| {
        chrono::DateTime::from_timestamp_millis(start + index * gap)
            .expect("a valid time")
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let mut events = Vec::with_capacity(customers * per_customer);
    let mut expected = BTreeMap::new();
    for j in 0..per_customer {
        for i in 0..customers {
            let customer = format!("c-{tag}-{i:06}");
            let event_id = format!("e-{tag}-{i}-{j}");
            let at = time((j * customers + i) as i64);
            let common = format!(
                r#""event_id":"{event_id}","customer_id":"{customer}","occurred_at":"{at}""#
            );
            let profile = expected.entry(customer.clone()).or_insert(ExpectedProfile {
                events: 0,
                orders_placed: 0,
                revenue_eur: 0,
                tickets_opened: 0,
            });
            profile.events += 1;
            let (source, value) = match j % 4 {
                0 => {
                    let amount = 1000 + (i % 7) as i64 * 100 + j as i64;
                    profile.orders_placed += 1;
                    profile.revenue_eur += amount;
                    (
                        Source::Purchases,
                        format!(
                            r#"{{{common},"order_id":"o-{i}-{j}","action":"placed","amount_minor":{amount},"currency":"EUR","items":1}}"#
                        ),
                    )
                }
                1 => (
                    Source::Surveys,
                    format!(
                        r#"{{{common},"survey_id":"s-{i}-{j}","kind":"nps","score":{}}}"#,
                        (i + j) % 11
                    ),
                ),
                2 => {
                    profile.tickets_opened += 1;
                    (
                        Source::Tickets,
                        format!(
                            r#"{{{common},"ticket_id":"t-{tag}-{i}-{j}","action":"opened","channel":"email"}}"#
                        ),
                    )
                }
                _ => (
                    Source::Tickets,
                    format!(
                        r#"{{{common},"ticket_id":"t-{tag}-{i}-{}","action":"agent_replied"}}"#,
                        j - 1
                    ),
                ),
            };
            events.push(WorkloadEvent {
                source,
                customer,
                event_id,
                value: value.into_bytes(),
            });
        }
    }
    (events, expected)
}

/// Produces workload events, in order, to their input topics (partitioned by key).
pub async fn produce_workload(
    producer: &FutureProducer,
    config: &Config,
    events: &[WorkloadEvent],
) {
    produce_events(producer, config, events, Format::Json).await;
}

impl TestInput for WorkloadEvent {
    fn key(&self) -> &str {
        &self.customer
    }
    fn topic<'a>(&self, config: &'a Config) -> &'a str {
        config.topics.input(self.source)
    }
    fn value(&self, _: Format) -> Vec<u8> {
        // Written as JSON only.
        self.value.clone()
    }
}

/// How often each source event id of `events` appears in `cx.enriched` (read
/// `read_committed`), once at least `events.len()` records are there or `timeout`
/// passed. Records of events not in `events` are not counted.
pub fn enriched_counts(
    broker: &Broker,
    config: &Config,
    events: &[WorkloadEvent],
    timeout: Duration,
) -> BTreeMap<String, usize> {
    let wanted: std::collections::HashSet<&str> =
        events.iter().map(|e| e.event_id.as_str()).collect();
    let mut counts = BTreeMap::new();
    let mut seen = 0;
    let records = read_until(broker, &config.topics.enriched, timeout, |records| {
        for record in &records[seen..] {
            let json = record.json();
            if let Some(id) = json["source_event_id"].as_str() {
                if wanted.contains(id) {
                    *counts.entry(id.to_string()).or_insert(0usize) += 1;
                }
            }
        }
        seen = records.len();
        counts.len() >= wanted.len()
    });
    // Whatever arrived after the last check (the settling read) counts too.
    for record in &records[seen..] {
        if let Some(id) = record.json()["source_event_id"].as_str() {
            if wanted.contains(id) {
                *counts.entry(id.to_string()).or_insert(0usize) += 1;
            }
        }
    }
    counts
}

/// Asserts `counts` has every event of `events` at least once (`exactly_once`:
/// exactly once); returns (distinct events found, records counted).
pub fn assert_enriched(
    counts: &BTreeMap<String, usize>,
    events: &[WorkloadEvent],
    exactly_once: bool,
) -> (usize, usize) {
    let missing: Vec<&str> = events
        .iter()
        .map(|e| e.event_id.as_str())
        .filter(|id| !counts.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} valid inputs have no enriched record, e.g. {:?}",
        missing.len(),
        events.len(),
        &missing[..missing.len().min(5)]
    );
    let records: usize = counts.values().sum();
    if exactly_once {
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
        assert!(
            twice.is_empty(),
            "{} enriched records repeat an event, e.g. {twice:?}",
            records - counts.len()
        );
    }
    (counts.len(), records)
}

/// The last `cx.profiles` record of every customer of `expected` (read once every
/// customer has one whose `events` reached the expected count, or `timeout`), checked
/// field by field against it; returns how many profiles were compared.
pub fn assert_profiles(
    broker: &Broker,
    config: &Config,
    expected: &BTreeMap<String, ExpectedProfile>,
    timeout: Duration,
) -> usize {
    let mut latest: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut seen = 0;
    let absorb = |records: &[ReadRecord], latest: &mut BTreeMap<String, serde_json::Value>| {
        for record in records {
            let key = String::from_utf8_lossy(&record.key).into_owned();
            if expected.contains_key(&key) {
                latest.insert(key, record.json());
            }
        }
    };
    let records = read_until(broker, &config.topics.profiles, timeout, |records| {
        absorb(&records[seen..], &mut latest);
        seen = records.len();
        expected.iter().all(|(customer, want)| {
            latest
                .get(customer)
                .is_some_and(|p| p["events"].as_u64() == Some(want.events))
        })
    });
    absorb(&records[seen..], &mut latest);
    for (customer, want) in expected {
        let profile = latest
            .get(customer)
            .unwrap_or_else(|| panic!("no profile of {customer} in cx.profiles"));
        assert_profile(customer, profile, want);
    }
    expected.len()
}

/// Asserts one profile (JSON of `cx.profiles` or `/v1/customers`) equals the expectation.
pub fn assert_profile(customer: &str, profile: &serde_json::Value, want: &ExpectedProfile) {
    let got = ExpectedProfile {
        events: profile["events"].as_u64().unwrap_or_default(),
        orders_placed: profile["orders_placed"].as_u64().unwrap_or_default(),
        revenue_eur: profile["revenue_minor"]["EUR"].as_i64().unwrap_or_default(),
        tickets_opened: profile["tickets_opened"].as_u64().unwrap_or_default(),
    };
    assert_eq!(&got, want, "profile of {customer}: {profile}");
}
