//! Producer delivery failures injected by librdkafka's mock cluster while the
//! pipeline runs in-process: Produce requests refused with retriable errors
//! (leader moves, timeouts, too few replicas, dropped connections) and the
//! broker leading every output partition down for a while. The service must
//! neither stop nor lose anything: afterwards every valid input has exactly one
//! enriched event (no crash means no replay, and the idempotent producer's
//! retries must not duplicate) and every customer's profile has all its events.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::Broker;
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::ClientConfig;

/// Retriable errors a real cluster answers Produce with during leader elections,
/// slow disks and broker restarts; `__TRANSPORT` makes the mock drop the connection.
const RETRIABLE: [RDKafkaRespErr; 6] = [
    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
    RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
    RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
];

fn mock(broker: &Broker) -> &MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    match broker {
        Broker::Mock(cluster) => cluster,
        Broker::Kafka(_) => unreachable!("these tests inject faults through the mock cluster"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_produce_errors_lose_and_repeat_nothing() {
    let broker = Broker::mock();
    let config = common::test_config(&broker, "produce-errors");
    let partitions = 2;
    broker.create_topics(&config, partitions).await;
    let (events, expected) = common::fault_workload(150, 8, "pe");
    let producer = common::producer(&broker);
    // Inputs first: from here on the only Produce requests are the service's.
    common::produce_workload(&producer, &config, &events).await;
    let injected: Vec<RDKafkaRespErr> = RETRIABLE.iter().copied().cycle().take(36).collect();
    mock(&broker).request_errors(RDKafkaApiKey::Produce, &injected);

    let started = Instant::now();
    let running = common::start(&config).await;
    let applied = common::eventually(Duration::from_secs(120), || {
        running.shared().events_applied.load(Ordering::Relaxed) >= events.len() as u64
    })
    .await;
    assert!(
        applied,
        "only {} of {} events applied",
        running.shared().events_applied.load(Ordering::Relaxed),
        events.len()
    );
    let counts = common::enriched_counts(&broker, &config, &events, Duration::from_secs(120));
    let took = started.elapsed();
    let (distinct, records) = common::assert_enriched(&counts, &events, true);
    let profiles = common::assert_profiles(&broker, &config, &expected, Duration::from_secs(60));
    assert!(!running.is_finished(), "the service kept running");

    // Every injected error was spent on the service's producer: a producer that
    // never retries now gets its first request through.
    let probe: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("enable.idempotence", "false")
        .set("message.send.max.retries", "0")
        .create()
        .expect("probe producer");
    let probed = probe
        .send(
            FutureRecord::<[u8], [u8]>::to(&config.topics.dlq).payload(b"probe"),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        probed.is_ok(),
        "injected errors were left unused, so the service never met them: {probed:?}"
    );
    eprintln!(
        "{} Produce errors injected ({:?}...): {distinct} of {} inputs enriched in {records} records (none twice), {profiles} profiles equal, {:.1} s from start to all enriched",
        injected.len(),
        &RETRIABLE[..2],
        events.len(),
        took.as_secs_f64()
    );
    running.stop();
    tokio::task::spawn_blocking(move || running.join())
        .await
        .expect("join")
        .expect("a clean stop after the errors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_leader_down_for_seconds_loses_and_repeats_nothing() {
    // Broker 1 leads the inputs, the changelog and the group; broker 2 every output.
    let cluster = MockCluster::new(2).expect("mock cluster");
    let broker = Broker::Mock(cluster);
    let config = common::test_config(&broker, "output-outage");
    let partitions = 2;
    broker.create_topics(&config, partitions).await;
    let cluster = mock(&broker);
    let topics = &config.topics;
    let inputs = [
        &topics.purchases,
        &topics.tickets,
        &topics.surveys,
        &topics.changelog,
    ];
    let outputs = [
        &topics.profiles,
        &topics.enriched,
        &topics.signals,
        &topics.metrics,
        &topics.dlq,
    ];
    for partition in 0..partitions {
        for topic in inputs {
            cluster
                .partition_leader(topic, partition, Some(1))
                .expect("leader");
        }
        for topic in outputs {
            cluster
                .partition_leader(topic, partition, Some(2))
                .expect("leader");
        }
    }
    cluster
        .coordinator(MockCoordinator::Group(config.kafka.group_id.clone()), 1)
        .expect("coordinator");
    let (events, expected) = common::fault_workload(150, 8, "oo");
    let (first, second) = events.split_at(events.len() / 2);
    let producer = common::producer(&broker);
    let running = common::start(&config).await;
    common::produce_workload(&producer, &config, first).await;
    let applied = |n: usize| running.shared().events_applied.load(Ordering::Relaxed) >= n as u64;
    assert!(
        common::eventually(Duration::from_secs(60), || applied(first.len())).await,
        "the first half was never applied"
    );

    // The outage: outputs cannot be delivered while the second half streams in.
    cluster.broker_down(2).expect("broker down");
    let outage = Instant::now();
    common::produce_workload(&producer, &config, second).await;
    // Processing goes on (outputs queue up in the producer): every input is applied
    // while nothing can be delivered.
    assert!(
        common::eventually(Duration::from_secs(60), || applied(events.len())).await,
        "the second half was not applied during the outage"
    );
    let applied_during_outage = running.shared().events_applied.load(Ordering::Relaxed);
    // The fault itself: the outage goes on a while with every output undelivered,
    // long enough for several produce retries and reconnection attempts.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!running.is_finished(), "the service survived the outage");
    cluster.broker_up(2).expect("broker up");
    let down_for = outage.elapsed();

    let counts = common::enriched_counts(&broker, &config, &events, Duration::from_secs(120));
    let recovered = outage.elapsed();
    let (distinct, records) = common::assert_enriched(&counts, &events, true);
    let profiles = common::assert_profiles(&broker, &config, &expected, Duration::from_secs(60));
    assert!(!running.is_finished(), "the service kept running");
    eprintln!(
        "output leader down {:.1} s while {} events streamed in ({applied_during_outage} of {} applied by then): {distinct} of {} inputs enriched in {records} records (none twice) {:.1} s after the outage began, {profiles} profiles equal",
        down_for.as_secs_f64(),
        second.len(),
        events.len(),
        events.len(),
        recovered.as_secs_f64()
    );
    running.stop();
    tokio::task::spawn_blocking(move || running.join())
        .await
        .expect("join")
        .expect("a clean stop after the outage");
}
