//! Benchmark: restoring 1,000,000 customers' task state from the changelog.
//!
//! Builds the state of one task holding N customers (profiles, tickets, panes,
//! de-duplication memory) by applying generated events, writes its changelog
//! to partition 0 of librdkafka's mock cluster (or of a broker given with
//! `--bootstrap`), then times the rebuild from the records in memory and
//! `restore::restore` (read from the broker + rebuild) and prints records/s.
//!
//! `cargo bench --bench restore` (`-- --customers N` to change the size).

mod support;

// The allocator of the cxpulse binary (src/main.rs), so the rebuild costs what it costs there.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cxpulse::config::Config;
use cxpulse::event::EventTime;
use cxpulse::generate::population::{Population, PopulationConfig};
use cxpulse::task::{Task, TaskSettings};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

fn main() {
    // About 86% of a population visits within the two simulated days: 1.16M gives 1M customers.
    let customers = support::argument("--customers", 1_160_000) as usize;
    let mut config = Config::default();
    let settings = Arc::new(TaskSettings::from_config(&config));
    let day = 86_400_000;
    let start = EventTime::now().plus_millis(-3 * day);
    let building = Instant::now();
    let mut task = Task::new(0, settings.clone(), EventTime::from_millis(0));
    let mut emitted = Vec::new();
    let mut events = 0u64;
    for event in Population::new(PopulationConfig {
        customers,
        visits_per_day: 1.0,
        start,
        max_disorder_millis: 120_000,
        seed: 1,
    })
    .take_while(|event| event.occurred_at.millis() < start.millis() + 2 * day)
    {
        task.apply(&event, EventTime::from_millis(0), &mut emitted);
        emitted.clear();
        events += 1;
    }
    let changelog = task.take_changelog();
    println!(
        "state of {} customers from {events} events built in {:.1}s: {} changelog records, {:.0} MiB",
        task.profile_count(),
        building.elapsed().as_secs_f64(),
        changelog.len(),
        changelog.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len)).sum::<usize>() as f64 / 1048576.0
    );

    // A standalone broker when given (`--bootstrap host:port`), else the in-process mock cluster.
    let broker = support::Broker::from_args();
    config.kafka.bootstrap_servers = broker.bootstrap().to_string();
    config.topics.changelog = format!("bench.changelog.{}", std::process::id());
    let spec = cxpulse::topics::TopicSpec {
        name: config.topics.changelog.clone(),
        partitions: 1,
        configs: vec![("cleanup.policy", "compact")],
    };
    broker.create_topics(&config, &[spec]);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.bootstrap_servers)
        .set("linger.ms", "50")
        .set("compression.type", "lz4")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000")
        .create()
        .expect("producer");
    let writing = Instant::now();
    for (key, value) in &changelog {
        let mut record = BaseRecord::<[u8], [u8]>::to(&config.topics.changelog)
            .partition(0)
            .key(key);
        if let Some(value) = value {
            record = record.payload(value);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    returned,
                )) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => panic!("producing the changelog: {error}"),
            }
        }
    }
    producer.flush(Duration::from_secs(600)).expect("flush");
    println!(
        "changelog written to the broker in {:.1}s",
        writing.elapsed().as_secs_f64()
    );
    drop(task);

    // The rebuild alone, from records in memory: what the broker read adds is the rest.
    let records = changelog.clone();
    let rebuilding = Instant::now();
    let rebuilt = Task::restore(0, settings.clone(), EventTime::now(), records).expect("rebuild");
    println!(
        "rebuilt {} customers from the records in memory in {:.2}s",
        rebuilt.profile_count(),
        rebuilding.elapsed().as_secs_f64()
    );
    drop(rebuilt);

    // The broker read alone, records counted and dropped.
    struct Count(u64);
    impl cxpulse::restore::ChangelogSink for Count {
        fn start(&mut self, _records: usize) {}
        fn record(&mut self, _key: &[u8], _value: Option<&[u8]>) -> anyhow::Result<()> {
            self.0 += 1;
            Ok(())
        }
    }
    let reading = Instant::now();
    let mut count = Count(0);
    let shared = cxpulse::pipeline::Shared::default();
    cxpulse::restore::read_changelog(&config, 0, Duration::from_secs(30), &mut count, &shared)
        .expect("read");
    println!(
        "read {} records from the broker alone in {:.2}s",
        count.0,
        reading.elapsed().as_secs_f64()
    );

    let restoring = Instant::now();
    let restored =
        cxpulse::restore::restore(&config, 0, settings, Duration::from_secs(30), &shared)
            .expect("restore");
    let seconds = restoring.elapsed().as_secs_f64();
    println!(
        "restored {} customers from {} changelog records in {seconds:.2}s: {:.0} records/s",
        restored.profile_count(),
        changelog.len(),
        changelog.len() as f64 / seconds
    );
}
