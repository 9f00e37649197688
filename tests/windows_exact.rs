//! Window results and profiles through a real broker equal the brute-force model.
//!
//! A generated population (surveys, tickets with replies, resolutions,
//! reopenings and unanswered tickets, purchases with fulfilments and returns)
//! is produced with disorder within the allowed lateness and some
//! redeliveries; the pipeline consumes it; every `cx.metrics` record is read
//! back, summed over tasks per window and compared field by field with the
//! model, and so is the latest `cx.profiles` record of every customer.

mod common;

use common::scenario::{self, Scenario};
use common::Broker;
use cxpulse::decode::Format;

async fn check_against_model(broker: Broker, name: &str, format: Format, scenario: Scenario) {
    let mut config = common::test_config(&broker, name);
    config.formats.purchases = format;
    config.formats.tickets = format;
    config.formats.surveys = format;
    let partitions = 3;
    broker.create_topics(&config, partitions).await;
    let running = common::start(&config).await;

    let (events, data_start, data_end) = scenario::events(&scenario, 11);
    let producer = common::producer(&broker);
    common::produce_events(&producer, &config, &events, format).await;
    let flush_time = scenario::produce_flush(&producer, &config, partitions).await;
    scenario::verify(
        &broker, &config, partitions, &events, data_start, data_end, flush_time, false,
    );
    running.stop();
    tokio::task::spawn_blocking(move || running.join())
        .await
        .unwrap()
        .unwrap();
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
async fn windows_and_profiles_equal_the_model_on_the_mock_cluster() {
    check_against_model(Broker::mock(), "mock-json", Format::Json, small()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_and_profiles_equal_the_model_with_protobuf_inputs() {
    check_against_model(Broker::mock(), "mock-proto", Format::Protobuf, small()).await;
}

/// A few thousand customers over several weeks of event time, end to end through Apache Kafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weeks_of_a_population_equal_the_model_on_apache_kafka() {
    let scenario = Scenario {
        customers: 3000,
        days: 21,
        visits_per_day: 0.4,
    };
    check_against_model(Broker::kafka(), "kafka", Format::Json, scenario).await;
}
