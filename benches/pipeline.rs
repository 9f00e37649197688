//! End-to-end benchmark: the real pipeline, on Apache Kafka with
//! `-- --bootstrap host:port` (the figures that count), else on librdkafka's
//! mock cluster.
//!
//! 1. Backlog: a generated population is produced first, then the pipeline
//!    consumes it from the start; prints events/s.
//! 2. Live: events are produced at a fixed rate while the pipeline runs;
//!    prints latency percentiles from input append to output creation
//!    (timestamps of `cx.enriched` records), and resident memory.
//!
//! `cargo bench --bench pipeline` (`-- --events N --rate R --seconds S
//! --customers C` to change sizes, `--exactly-once` for the transactional mode).

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cxpulse::config::Config;
use cxpulse::event::{EventTime, Source};
use cxpulse::generate::population::{Population, PopulationConfig};
use cxpulse::generate::wire;
use cxpulse::pipeline::{self, Shared};
use cxpulse::topics;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Produces `count` events of `population`, at `rate` per second (0: at once).
/// The records are rendered first, and sent in 1 ms bursts, so that the bench's
/// own producer costs little of the machine the pipeline is measured on.
fn produce(
    producer: &ThreadedProducer<DefaultProducerContext>,
    config: &Config,
    population: &mut Population,
    count: u64,
    rate: u64,
) {
    let records: Vec<(Source, String, String)> = population
        .take(count as usize)
        .map(|event| {
            let value = wire::to_json(&event).to_string();
            (event.source(), event.customer_id.to_string(), value)
        })
        .collect();
    let started = Instant::now();
    let mut sent = 0;
    while sent < records.len() {
        let due = if rate == 0 {
            records.len()
        } else {
            ((started.elapsed().as_secs_f64() * rate as f64) as usize).min(records.len())
        };
        for (source, key, value) in &records[sent..due] {
            let mut record = BaseRecord::to(config.topics.input(*source))
                .key(key.as_str())
                .payload(value.as_str());
            while let Err((_, returned)) = producer.send(record) {
                record = returned;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        sent = due;
        std::thread::sleep(Duration::from_millis(1));
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

/// Every record of `topic` created at or after `since`: (timestamp, value).
fn read_records(
    broker: &support::Broker,
    topic: &str,
    partitions: i32,
    since: i64,
) -> Vec<(i64, Vec<u8>)> {
    read(broker, &[topic.to_string()], partitions, since)
        .into_iter()
        .map(|(_, time, value)| (time, value))
        .collect()
}

/// (topic, partition, offset) → timestamp of every record of `topics` created at or after `since`.
fn read_timestamps(
    broker: &support::Broker,
    topics: &[String],
    partitions: i32,
    since: i64,
) -> HashMap<(String, i32, i64), i64> {
    read(broker, topics, partitions, since)
        .into_iter()
        .map(|(position, time, _)| (position, time))
        .collect()
}

#[allow(clippy::type_complexity)]
fn read(
    broker: &support::Broker,
    topics: &[String],
    partitions: i32,
    since: i64,
) -> Vec<((String, i32, i64), i64, Vec<u8>)> {
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "bench-reader")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        for partition in 0..partitions {
            tpl.add_partition_offset(topic, partition, Offset::Beginning)
                .expect("tpl");
        }
    }
    reader.assign(&tpl).expect("assign");
    let mut records = Vec::new();
    let mut quiet = 0;
    while quiet < 20 {
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                quiet = 0;
                let Some(time) = message.timestamp().to_millis() else {
                    continue;
                };
                if time >= since {
                    let position = (
                        message.topic().to_string(),
                        message.partition(),
                        message.offset(),
                    );
                    records.push((
                        position,
                        time,
                        message.payload().unwrap_or_default().to_vec(),
                    ));
                }
            }
            _ => quiet += 1,
        }
    }
    records
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let backlog = support::argument("--events", 200_000);
    let rate = support::argument("--rate", 5_000);
    let live_seconds = support::argument("--seconds", 20);
    let customers = support::argument("--customers", 50_000) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let broker = support::Broker::from_args();
    let mut config = Config::default();
    config.kafka.group_id = "cxpulse-bench".into();
    broker.configure(&mut config);
    if let Some(millis) = support::optional_argument("--commit-interval-ms") {
        config.kafka.commit_interval = Duration::from_millis(millis);
    }
    println!(
        "commit interval (state flush): {:?}",
        config.kafka.commit_interval
    );
    println!("broker: {}", broker.describe());
    config.processing.idle_timeout = Duration::from_secs(5);
    // `-- --exactly-once` measures the transactional mode.
    if std::env::args().any(|arg| arg == "--exactly-once") {
        config.processing.guarantee = cxpulse::config::Guarantee::ExactlyOnce;
        config.kafka.transactional_id = "cxpulse-bench".into();
    }
    println!("guarantee: {:?}", config.processing.guarantee);
    let partitions = 4;
    let mut specs = topics::inputs(&config, partitions);
    specs.extend(topics::outputs(&config, partitions));
    broker.create_topics(&config, &specs);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let mut population = Population::new(PopulationConfig {
        customers,
        visits_per_day: 2.0,
        start: EventTime::now().plus_millis(-60 * 86_400_000),
        max_disorder_millis: 120_000,
        seed: 9,
    });
    let rss_before = resident_bytes();
    produce(&producer, &config, &mut population, backlog, 0);
    println!("backlog: {backlog} events produced; starting the pipeline");

    let _ = cxpulse::telemetry::install_recorder();
    let shared = Arc::new(Shared::default());
    let running = pipeline::start(config.clone(), runtime.handle().clone(), shared.clone())
        .expect("pipeline");
    let started = Instant::now();
    let mut first_event = None;
    while shared.events_applied.load(Ordering::Relaxed) < backlog {
        if first_event.is_none() && shared.events_applied.load(Ordering::Relaxed) > 0 {
            first_event = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(10));
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "backlog not consumed in 10 minutes"
        );
    }
    let busy = first_event.map_or(started.elapsed(), |first| first.elapsed());
    let profiles: usize = shared
        .tasks()
        .values()
        .map(|task| task.profile_count())
        .sum();
    let rss_after = resident_bytes();
    println!(
        "backlog: {backlog} events in {:.2}s = {:.0} events/s (from the first applied event; group join excluded)",
        busy.as_secs_f64(),
        backlog as f64 / busy.as_secs_f64()
    );
    println!(
        "memory: {profiles} profiles, resident {:.1} MiB (+{:.1} MiB since start, {:.0} bytes per profile including librdkafka buffers)",
        rss_after as f64 / 1048576.0,
        (rss_after.saturating_sub(rss_before)) as f64 / 1048576.0,
        rss_after.saturating_sub(rss_before) as f64 / profiles.max(1) as f64
    );

    let live_count = rate * live_seconds;
    let live_start = EventTime::now().millis();
    println!("live: producing {live_count} events at {rate}/s");
    produce(&producer, &config, &mut population, live_count, rate);
    let target = backlog + live_count;
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared.events_applied.load(Ordering::Relaxed) < target && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    // Latency of each live record: creation of its `cx.enriched` output minus its own
    // creation time, both stamped by librdkafka on this machine's clock.
    let input_times = read_timestamps(
        &broker,
        &Source::ALL.map(|s| config.topics.input(s).to_string()),
        partitions,
        live_start,
    );
    let mut latencies: Vec<i64> = Vec::new();
    let enriched = read_records(&broker, &config.topics.enriched, partitions, live_start);
    for (output_time, value) in enriched {
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&value) else {
            continue;
        };
        let position = (
            json["source_topic"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            json["source_partition"].as_i64().unwrap_or(-1) as i32,
            json["source_offset"].as_i64().unwrap_or(-1),
        );
        if let Some(input_time) = input_times.get(&position) {
            latencies.push(output_time - input_time);
        }
    }
    latencies.sort();
    println!(
        "live: {} records at {rate}/s; latency input created -> output created: p50 {} ms, p95 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0)
    );
    running.stop();
    running.join().expect("clean stop");
}
