//! SIGTERM while outputs are in flight, on Apache Kafka with the real binary: a
//! large batch is produced, and the moment the instance's consumed-records
//! metric starts moving (outputs of the first cycles queued, most input not
//! yet fetched) it gets SIGTERM. It must stop gracefully (exit 0); a restarted
//! instance finishes the rest. Afterwards every valid input has its enriched
//! event exactly once (read_committed with `exactly_once`; with `at_least_once`
//! too, since a graceful stop commits all it did and nothing is replayed), and
//! every customer's last profile has all its events.

mod common;

use std::time::{Duration, Instant};

use common::instance::Instance;
use common::Broker;
use cxpulse::config::{Config, Guarantee};

/// What was on `/metrics` at the moment of SIGTERM.
struct AtSigterm {
    consumed: f64,
    produced: f64,
}

/// Polls `/metrics` tightly until records are being consumed, then sends SIGTERM.
async fn sigterm_once_consuming(instance: &Instance, total: usize) -> AtSigterm {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let consumed = instance
            .metric("cxpulse_records_consumed_total")
            .unwrap_or(0.0);
        if consumed > 0.0 {
            instance.signal("TERM");
            let produced = instance
                .metric("cxpulse_records_produced_total")
                .unwrap_or(0.0);
            assert!(
                consumed < total as f64,
                "the whole batch ({total}) was consumed before SIGTERM"
            );
            // Each applied input makes a profile and an enriched record.
            assert!(
                produced < 2.0 * consumed,
                "every output of the {consumed} consumed records was acknowledged before SIGTERM: none in flight"
            );
            return AtSigterm { consumed, produced };
        }
        assert!(Instant::now() < deadline, "the instance never consumed");
        // Polling interval of a condition, not a wait for it.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn sigterm_with_outputs_in_flight(guarantee: Guarantee, name: &str) {
    let broker = Broker::kafka();
    let mut config: Config = common::test_config(&broker, name);
    config.processing.guarantee = guarantee;
    if guarantee == Guarantee::ExactlyOnce {
        config.kafka.transactional_id = format!("cxpulse-{name}-{}", std::process::id());
    }
    // Outputs wait three seconds in the producer before they are sent: at SIGTERM,
    // right after consumption starts, they are certainly still in flight, and the
    // at-least-once drain (outputs, then changelog, per queued cycle) outlasts
    // max.poll.interval.ms (6 s here, the least librdkafka allows beside a 6 s session
    // timeout), which must not cost the final commit.
    config.kafka.producer.insert(
        "linger.ms".into(),
        cxpulse::config::PropertyValue::Text("3000".into()),
    );
    config.kafka.consumer.insert(
        "max.poll.interval.ms".into(),
        cxpulse::config::PropertyValue::Text("6000".into()),
    );
    let partitions = 3;
    broker.create_topics(&config, partitions).await;
    let (events, expected) = common::fault_workload(1000, 20, name);
    let log = std::env::temp_dir().join(format!("cxpulse-{name}-{}.log", std::process::id()));
    let address = common::free_address();
    let producer = common::producer(&broker);

    // Small cycles for the instance that is stopped: consuming the batch then
    // spans many of them (in exactly-once, as many transactions), so SIGTERM
    // lands in the middle; with 5,000-record cycles a fast instance consumed
    // everything before the first look. Its successor reads at full size.
    let mut stopped_config = config.clone();
    stopped_config.processing.batch_max_records = 100;
    let mut first = Instance::start(&stopped_config, &address, &log);
    first.wait_ready().await;
    let produced_at = Instant::now();
    // Watched while it is produced: waiting for the whole batch first left the
    // instance time to consume all of it before the first look.
    let ((), at) = tokio::join!(
        common::produce_workload(&producer, &config, &events),
        sigterm_once_consuming(&first, events.len())
    );
    let signalled = Instant::now();
    let status = first
        .wait_exit(config.processing.shutdown_timeout + Duration::from_secs(30))
        .await;
    let stop_took = signalled.elapsed();
    assert!(
        status.is_some_and(|status| status.success()),
        "graceful stop exits 0 within shutdown_timeout: {status:?}"
    );
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.contains("\"message\":\"pipeline stopped\""),
        "the pipeline drained and stopped cleanly"
    );

    let mut second = Instance::start(&config, &address, &log);
    second.wait_ready().await;
    let counts = common::enriched_counts(&broker, &config, &events, Duration::from_secs(180));
    let finished = produced_at.elapsed();
    // A graceful stop finishes and commits its work, so even at-least-once nothing
    // is redone after it: no enriched event twice, no input replayed.
    let (distinct, records) = common::assert_enriched(&counts, &events, true);
    let profiles = common::assert_profiles(&broker, &config, &expected, Duration::from_secs(120));
    let replayed = second
        .metric("cxpulse_records_already_included_total")
        .unwrap_or(0.0);
    assert_eq!(
        replayed, 0.0,
        "input records replayed after a graceful stop"
    );
    eprintln!(
        "{name}: SIGTERM after {} of {} input records consumed and {} outputs acknowledged; exit 0 after {:.1} s; after the restart {distinct} inputs enriched in {records} records ({} repeated), {replayed} input records skipped as already included, {profiles} profiles equal; {:.1} s from first produce to all enriched",
        at.consumed,
        events.len(),
        at.produced,
        stop_took.as_secs_f64(),
        records - distinct,
        finished.as_secs_f64(),
    );
    second.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_outputs_in_flight_loses_nothing_at_least_once() {
    sigterm_with_outputs_in_flight(Guarantee::AtLeastOnce, "sigterm-alo").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_outputs_in_flight_repeats_and_loses_nothing_exactly_once() {
    sigterm_with_outputs_in_flight(Guarantee::ExactlyOnce, "sigterm-eos").await;
}
