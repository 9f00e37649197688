//! Fault tests on Apache Kafka: `kill -9` of the real binary at random points
//! while a population streams in, scaling the group out and in, and a broker
//! killed and restarted mid-run; afterwards every window and profile equals
//! the model (the uninterrupted result), field for field, and every bad record
//! is in the dead-letter topic.

mod common;

use std::time::Duration;

use common::instance::{metric, Instance};
use common::scenario::{self, Scenario};
use common::streaming::{self, Crash};
use common::Broker;
use cxpulse::decode::Format;

fn tasks_assigned(address: &str) -> Option<f64> {
    metric(address, "cxpulse_tasks_assigned")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_changes_no_result() {
    let broker = Broker::kafka();
    let config = common::test_config(&broker, "kill9");
    let partitions = 3;
    broker.create_topics(&config, partitions).await;
    let plan = [
        Crash::None,
        Crash::Kill,
        Crash::None,
        Crash::None,
        Crash::None,
        Crash::Kill,
        Crash::None,
        Crash::None,
        Crash::None,
        Crash::Kill,
    ];
    let mut run = streaming::stream_with_crashes(&broker, &config, partitions, 21, &plan).await;
    // At-least-once: a window may repeat across a crash, always with the same content.
    let compared = scenario::verify(
        &broker,
        &config,
        partitions,
        &run.events,
        run.data_start,
        run.data_end,
        run.flush_time,
        true,
    );
    let dlq = streaming::dead_letters(&broker, &config, run.bad);
    assert_eq!(
        dlq.len(),
        run.bad,
        "every bad record is in the DLQ, none lost"
    );
    eprintln!(
        "{} kill -9 during {} events and {} bad records: {compared}; every bad record is in the DLQ",
        run.crashes.len(),
        run.events.len(),
        dlq.len()
    );
    run.instance.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_from_1_to_3_to_1_instances_changes_no_result() {
    let broker = Broker::kafka();
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

    let mut first = Instance::start(&config, &addresses[0], &log);
    first.wait_ready().await;
    common::produce_events(&producer, &config, chunks[0], Format::Json).await;

    // Scale out: three members share six tasks.
    let mut others: Vec<Instance> = addresses[1..]
        .iter()
        .map(|address| Instance::start(&config, address, &log))
        .collect();
    let split = common::eventually(Duration::from_secs(90), || {
        let counts: Vec<Option<f64>> = addresses.iter().map(|a| tasks_assigned(a)).collect();
        counts.iter().all(|c| c.is_some_and(|c| c >= 1.0))
            && counts.iter().flatten().sum::<f64>() == partitions as f64
    })
    .await;
    assert!(split, "three instances never split the six tasks");
    common::produce_events(&producer, &config, chunks[1], Format::Json).await;
    // Scale in only once the three members took in the second chunk.
    common::instance::wait_consumed(
        &addresses,
        chunks[0].len() + chunks[1].len(),
        Duration::from_secs(90),
    )
    .await;

    // Scale in: two members leave gracefully; the first takes every task back.
    for instance in &mut others {
        instance.terminate();
    }
    let back = common::eventually(Duration::from_secs(90), || {
        tasks_assigned(&addresses[0]) == Some(partitions as f64)
    })
    .await;
    assert!(back, "the remaining instance never took all tasks back");
    common::produce_events(&producer, &config, chunks[2], Format::Json).await;
    let flush_time = scenario::produce_flush(&producer, &config, partitions).await;
    let compared = scenario::verify(
        &broker, &config, partitions, &events, data_start, data_end, flush_time, true,
    );
    eprintln!(
        "1 → 3 → 1 instances (2 rebalances) over {} events: {compared}",
        events.len()
    );
    first.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_run_changes_no_result() {
    let http = common::free_address();
    let mut kafka = common::OwnKafka::up("broker-restart", &[]);
    let broker = kafka.broker();
    let config = common::test_config(&broker, "broker-restart");
    let partitions = 2;
    broker.create_topics(&config, partitions).await;
    let scenario = Scenario {
        customers: 150,
        days: 2,
        visits_per_day: 3.0,
    };
    let (events, data_start, data_end) = scenario::events(&scenario, 44);
    let log = kafka.dir.join("cxpulse.log");
    let mut instance = Instance::start(&config, &http, &log);
    instance.wait_ready().await;
    let (first, second) = events.split_at(events.len() / 2);
    let producer = common::producer(&broker);
    common::produce_events(&producer, &config, first, Format::Json).await;
    // The broker dies once the instance is at work on the first half.
    common::instance::wait_consumed(&[&http], first.len(), Duration::from_secs(90)).await;
    // No clean shutdown: the broker recovers its logs from disk.
    kafka.kill();
    // The fault itself: the broker stays dead a while (librdkafka retries meanwhile).
    tokio::time::sleep(Duration::from_secs(3)).await;
    kafka.restart();
    common::produce_events(&producer, &config, second, Format::Json).await;
    let flush_time = scenario::produce_flush(&producer, &config, partitions).await;
    let compared = scenario::verify(
        &broker, &config, partitions, &events, data_start, data_end, flush_time, true,
    );
    eprintln!(
        "broker killed and restarted once during {} events: {compared}",
        events.len()
    );
    instance.terminate();
}
