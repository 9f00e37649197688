//! One end-to-end scenario: a population from the test generator through a
//! real broker, and the check of every output read back against the model.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cxpulse::config::Config;
use cxpulse::event::EventTime;
use rdkafka::producer::FutureProducer;

use super::check::{self, Delivered, Delivery, Outputs, Record};
use super::generator::{self, Input, Plan, DAY};
use super::model::{Position, Rules};
use super::{Broker, ReadRecord};

/// What to generate.
pub struct Scenario {
    pub customers: usize,
    pub days: i64,
    pub visits_per_day: f64,
}

/// A population over `days` of event time ending eight days ago, with
/// redeliveries and disorder within the test config's lateness; also returns
/// where the data starts and ends.
pub fn events(scenario: &Scenario, seed: u64) -> (Vec<Input>, i64, i64) {
    let generated = generate(scenario, seed, 0);
    (generated.arrivals, generated.start, generated.end)
}

/// [`events`] with `late_surveys` to deliver after the data.
pub fn generate(scenario: &Scenario, seed: u64, late_surveys: usize) -> generator::Generated {
    let start = (EventTime::now().millis() - (scenario.days + 8) * DAY) / DAY * DAY;
    generator::generate(&Plan {
        customers: scenario.customers,
        partitions: 1,
        start,
        days: scenario.days,
        visits_per_day: scenario.visits_per_day,
        // Below the test config's allowed lateness (5 minutes).
        disorder: 4 * generator::MINUTE,
        redeliver_one_in: 50,
        late_surveys,
        activity_horizon: super::TEST_ACTIVITY_HORIZON.as_millis() as i64,
        seed,
    })
}

/// One flush event per topic and input partition, long after the data: it makes
/// every data window final while its own windows stay open. Returns its event time.
pub async fn produce_flush(
    producer: &FutureProducer,
    config: &Config,
    partitions: i32,
) -> EventTime {
    let flush_time = EventTime::now().plus_millis(-3_600_000);
    for partition in 0..partitions {
        for input in generator::flush(partition, flush_time.millis()) {
            super::produce_input(producer, config, &input, Some(partition)).await;
        }
    }
    flush_time
}

/// Reads every input topic back: where each generated input (flush events
/// included) landed, in delivery order; bad records are left out.
fn delivered(
    broker: &Broker,
    config: &Config,
    events: &[Input],
    flush: &[Input],
) -> Vec<Delivered> {
    let known: HashMap<(&str, &str), &Input> = events
        .iter()
        .chain(flush)
        .map(|input| ((input.customer.as_str(), input.event_id.as_str()), input))
        .collect();
    let expected = events.len() + flush.len();
    let mut delivered = Vec::new();
    for topic in generator::Topic::ALL {
        let name = super::model::topic_name(config, topic);
        let wanted = events
            .iter()
            .chain(flush)
            .filter(|input| input.topic() == topic)
            .count();
        let mut records = super::read_with_isolation(
            broker,
            &name,
            "read_uncommitted",
            Duration::from_secs(120),
            |records| records.len() >= wanted,
        );
        records.sort_by_key(|record| (record.partition, record.offset));
        for record in records {
            let Some((customer, event_id)) = ids(topic, &record) else {
                continue;
            };
            if let Some(input) = known.get(&(customer.as_str(), event_id.as_str())) {
                delivered.push(Delivered {
                    input: (*input).clone(),
                    position: Position {
                        topic: name.clone(),
                        partition: record.partition,
                        offset: record.offset,
                    },
                });
            }
        }
    }
    assert_eq!(
        delivered.len(),
        expected,
        "every generated input read back from the input topics"
    );
    delivered
}

/// `customer_id` and `event_id` of an input record, JSON or Protobuf (by its `content-type`).
fn ids(topic: generator::Topic, record: &ReadRecord) -> Option<(String, String)> {
    use cxpulse::proto;
    use prost::Message;
    if record.header("content-type") == "application/x-protobuf" {
        let value = record.value.as_slice();
        return match topic {
            generator::Topic::Purchases => proto::PurchaseEvent::decode(value)
                .ok()
                .map(|event| (event.customer_id, event.event_id)),
            generator::Topic::Tickets => proto::TicketEvent::decode(value)
                .ok()
                .map(|event| (event.customer_id, event.event_id)),
            generator::Topic::Surveys => proto::SurveyEvent::decode(value)
                .ok()
                .map(|event| (event.customer_id, event.event_id)),
        };
    }
    let json: serde_json::Value = serde_json::from_slice(&record.value).ok()?;
    Some((
        json["customer_id"].as_str()?.to_string(),
        json["event_id"].as_str()?.to_string(),
    ))
}

fn records(read: Vec<ReadRecord>) -> Vec<Record> {
    let mut read = read;
    read.sort_by_key(|record| (record.partition, record.offset));
    read.into_iter()
        .map(|record| Record {
            partition: record.partition,
            offset: record.offset,
            key: String::from_utf8_lossy(&record.key).into_owned(),
            value: record.json(),
        })
        .collect()
}

/// Reads every output and checks it against the model of `events` (plus the
/// flush events at `flush_time`). With `crashes` (at-least-once), outputs may
/// repeat, always the same; without, every output is there exactly once.
#[allow(clippy::too_many_arguments)]
pub fn verify(
    broker: &Broker,
    config: &Config,
    partitions: i32,
    events: &[Input],
    _data_start: i64,
    _data_end: i64,
    flush_time: EventTime,
    crashes: bool,
) -> String {
    verify_with_late(broker, config, partitions, events, &[], flush_time, crashes)
}

/// [`verify`] where `late` inputs were delivered after the data, later than the lateness.
pub fn verify_with_late(
    broker: &Broker,
    config: &Config,
    partitions: i32,
    events: &[Input],
    late: &[Input],
    flush_time: EventTime,
    crashes: bool,
) -> String {
    let rules = Rules::from_config(config);
    let flush: Vec<Input> = (0..partitions)
        .flat_map(|partition| generator::flush(partition, flush_time.millis()))
        .collect();
    let all: Vec<Input> = events.iter().chain(late).cloned().collect();
    let delivered = delivered(broker, config, &all, &flush);
    let distinct: HashSet<(&str, &str)> = delivered
        .iter()
        .map(|d| (d.input.customer.as_str(), d.input.event_id.as_str()))
        .collect();
    let timeout = Duration::from_secs(120);
    let enriched = super::read_until(broker, &config.topics.enriched, timeout, |records| {
        let ids: HashSet<&str> = records.iter().map(|r| r.header("ce_id")).collect();
        ids.len() >= distinct.len()
    });
    // Every task reports the last window of every spec the flush makes final.
    let closing = flush_time.millis() - rules.lateness;
    let last_windows: Vec<String> = rules
        .windows
        .iter()
        .flat_map(|spec| {
            let end =
                EventTime::from_millis(closing.div_euclid(spec.step) * spec.step).to_rfc3339();
            (0..partitions).map(move |task| format!("{}/{end}/{task}", spec.name))
        })
        .collect();
    let windows = super::read_until(broker, &config.topics.metrics, timeout, |records| {
        let keys: HashSet<String> = records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.key).into_owned())
            .collect();
        last_windows.iter().all(|key| keys.contains(key))
    });
    let customers: HashSet<&str> = delivered
        .iter()
        .map(|d| d.input.customer.as_str())
        .collect();
    // Profile records go out at a flush, after the cycle's own outputs: the last
    // windows can be visible before the profiles their flush events changed
    // (churn timers) are. Input offsets are committed only once that flush is
    // written, so a caught-up group means every profile record is delivered.
    // (Bounded: if it never catches up, the comparison below says what differs.)
    let caught_up_by = std::time::Instant::now() + timeout / 2;
    while !super::instance::group_caught_up(config, partitions)
        && std::time::Instant::now() < caught_up_by
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let profiles = super::read_until(broker, &config.topics.profiles, timeout, |records| {
        let keys: HashSet<&[u8]> = records.iter().map(|r| r.key.as_slice()).collect();
        customers
            .iter()
            .all(|customer| keys.contains(customer.as_bytes()))
    });
    let enriched = records(enriched);
    let minimum_signals =
        check::minimum_signals(&delivered, &enriched, &rules, flush_time.millis());
    let signals = super::read_until(broker, &config.topics.signals, timeout, |records| {
        records.len() >= minimum_signals
    });
    let outputs = Outputs {
        enriched,
        profiles: records(profiles),
        signals: records(signals),
        windows: records(windows),
    };
    let delivery = if crashes {
        Delivery::AtLeastOnce
    } else {
        Delivery::Once
    };
    let compared = check::check(&delivered, &outputs, &rules, flush_time.millis(), delivery);
    let summary = compared.summary();
    eprintln!(
        "{} inputs ({} distinct): {summary}",
        delivered.len(),
        distinct.len()
    );
    summary
}
