//! Every output through a real broker equals the independent model.
//!
//! A population from the test generator (multi-currency customers, tickets
//! answered in time, late or never, reopenings, purchases with fulfilments and
//! returns, pauses longer than the activity horizon so customers churn and
//! come back) is produced with disorder within the allowed lateness and
//! redeliveries; once it is applied, surveys later than the lateness follow;
//! then flush events close every window. Every `cx.metrics`, `cx.profiles`,
//! `cx.enriched` and `cx.signals` record is read back and compared with the
//! model, and anything it does not predict fails.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::scenario::{self, Scenario};
use common::Broker;
use cxpulse::config::Config;
use cxpulse::decode::Format;

/// Waits until `cx.enriched` holds `count` distinct events: everything produced so far was applied.
fn wait_applied(broker: &Broker, config: &Config, count: usize) {
    let records = common::read_until(
        broker,
        &config.topics.enriched,
        Duration::from_secs(180),
        |records| {
            records
                .iter()
                .map(|r| r.header("ce_id"))
                .collect::<HashSet<_>>()
                .len()
                >= count
        },
    );
    let distinct: HashSet<&str> = records.iter().map(|r| r.header("ce_id")).collect();
    assert!(
        distinct.len() >= count,
        "{} of {count} events applied",
        distinct.len()
    );
}

async fn check_against_model(
    broker: Broker,
    name: &str,
    format: Format,
    scenario: Scenario,
) -> String {
    let mut config = common::test_config(&broker, name);
    config.formats.purchases = format;
    config.formats.tickets = format;
    config.formats.surveys = format;
    let partitions = 3;
    broker.create_topics(&config, partitions).await;
    let running = common::start(&config).await;

    let generated = scenario::generate(&scenario, 11, 40);
    let distinct = |inputs: &[common::generator::Input]| {
        inputs
            .iter()
            .map(|input| &input.event_id)
            .collect::<HashSet<_>>()
            .len()
    };
    let producer = common::producer(&broker);
    common::produce_events(&producer, &config, &generated.arrivals, format).await;
    wait_applied(&broker, &config, distinct(&generated.arrivals));
    // Every window containing these is final by now: they are late.
    common::produce_events(&producer, &config, &generated.late, format).await;
    wait_applied(
        &broker,
        &config,
        distinct(&generated.arrivals) + generated.late.len(),
    );
    let flush_time = scenario::produce_flush(&producer, &config, partitions).await;
    let summary = scenario::verify_with_late(
        &broker,
        &config,
        partitions,
        &generated.arrivals,
        &generated.late,
        flush_time,
        false,
    );
    // The recorder is the process's: count this test's surveys topic only.
    let metrics = cxpulse::telemetry::install_recorder()
        .expect("recorder")
        .render();
    let late: f64 = common::instance::metric_samples(&metrics, "cxpulse_events_late_total")
        .filter(|(labels, _)| labels.contains(&format!("\"{}\"", config.topics.surveys)))
        .map(|(_, value)| value)
        .sum();
    running.stop();
    tokio::task::spawn_blocking(move || running.join())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        late,
        generated.late.len() as f64,
        "every late survey counted late"
    );
    summary
}

/// A small population: 150 customers, two days.
fn small() -> Scenario {
    Scenario {
        customers: 150,
        days: 2,
        visits_per_day: 4.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_output_equals_the_model_on_the_mock_cluster() {
    check_against_model(Broker::mock(), "mock-json", Format::Json, small()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_output_equals_the_model_with_protobuf_inputs() {
    check_against_model(Broker::mock(), "mock-proto", Format::Protobuf, small()).await;
}

/// Hundreds of customers over a week of event time through Apache Kafka: every
/// signal type happens, churn and reactivation included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_of_a_population_equals_the_model_on_apache_kafka() {
    let scenario = Scenario {
        customers: 600,
        days: 7,
        visits_per_day: 1.5,
    };
    let summary = check_against_model(Broker::kafka(), "kafka", Format::Json, scenario).await;
    for kind in [
        "detractor_response",
        "sla_breached",
        "ticket_reopened",
        "customer_churned",
        "customer_reactivated",
        "segment_changed",
        "vip_at_risk",
    ] {
        assert!(
            summary.contains(&format!("{kind} ")),
            "no {kind} signal was compared: {summary}"
        );
    }
}
