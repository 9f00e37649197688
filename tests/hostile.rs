//! No poison pill, on Apache Kafka: every kind of hostile input record
//! (oversize, near the producer's size limit, invalid UTF-8, deep nesting, a
//! null value, number overflow, NaN, cut-short schema-registry frames, huge
//! ids) lands in the dead-letter topic, written whole or without its value
//! when it would not fit, and the running binary stays alive and applies the
//! valid event that follows them.

mod common;

use std::time::Duration;

use common::instance::Instance;
use common::Broker;
use cxpulse::config::Guarantee;
use cxpulse::event::EventTime;
use cxpulse::topics::{self, TopicSpec};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_records_go_to_the_dlq_and_the_service_lives_on() {
    let broker = Broker::kafka();
    let config = common::test_config(&broker, "hostile");
    // Inputs that take records over 1 MiB, as a user's topics may.
    let inputs: Vec<TopicSpec> = topics::inputs(&config, 1)
        .into_iter()
        .map(|mut spec| {
            spec.configs = vec![("max.message.bytes", "4194304")];
            spec
        })
        .collect();
    topics::ensure(&config, &inputs).await.expect("inputs");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("message.max.bytes", "4000000")
        .create()
        .expect("producer");
    let address = common::free_address();
    let log = std::env::temp_dir().join(format!("cxpulse-hostile-{}.log", std::process::id()));
    let mut instance = Instance::start(&config, &address, &log);
    instance.wait_ready().await;

    let at = EventTime::now().plus_millis(-60_000).to_rfc3339();
    let fields = |id: &str| format!(r#""event_id":"{id}","customer_id":"c1","occurred_at":"{at}""#);
    let survey = |id: &str, rest: &str| {
        format!(r#"{{{},"survey_id":"s","kind":"nps"{rest}}}"#, fields(id)).into_bytes()
    };
    let (surveys, tickets, purchases) = (
        &config.topics.surveys,
        &config.topics.tickets,
        &config.topics.purchases,
    );
    let mut oversize = survey("big", r#","score":3,"comment":""#);
    oversize.extend(std::iter::repeat_n(b'x', 1_100_000));
    oversize.extend(br#""}"#);
    // Under max_record_bytes, so it is decoded (and rejected), but with cxpulse's
    // headers it no longer fits the producer's 1,000,000-byte limit.
    let mut near_limit = b"{\"event_id\": \"".to_vec();
    near_limit.extend(std::iter::repeat_n(b'y', 999_000));
    let mut invalid_utf8 = survey("utf8", r#","score":3,"comment":"ab"#);
    invalid_utf8.truncate(invalid_utf8.len() - 2);
    invalid_utf8.extend([0xff, 0xfe, b'"', b'}']);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let deep_field = survey(
        "deep",
        &format!(r#","score":{}3{}"#, "[".repeat(50_000), "]".repeat(50_000)),
    );
    let huge_id = format!(
        r#"{{"event_id":"{}","customer_id":"c1","occurred_at":"{at}","survey_id":"s","kind":"nps","score":3}}"#,
        "i".repeat(200_000)
    )
    .into_bytes();
    let json: &[u8] = b"application/json";
    let protobuf: &[u8] = b"application/x-protobuf";
    // (expected reason, topic, value or None for a null value, content-type)
    type Case<'a> = (&'a str, &'a String, Option<Vec<u8>>, &'a [u8]);
    let cases: Vec<Case<'_>> = vec![
        ("record_too_large", surveys, Some(oversize), json),
        ("malformed_json", surveys, Some(near_limit), json),
        ("malformed_json", surveys, Some(invalid_utf8), json),
        ("malformed_json", purchases, Some(deep), json),
        ("malformed_json", surveys, Some(deep_field), json),
        ("missing_value", tickets, None, json),
        (
            "malformed_json",
            surveys,
            Some(survey("overflow", r#","score":99999999999999999999999"#)),
            json,
        ),
        (
            "malformed_json",
            surveys,
            Some(survey("nan", r#","score":NaN"#)),
            json,
        ),
        ("malformed_protobuf", surveys, Some(vec![0, 0, 0]), protobuf),
        (
            "malformed_protobuf",
            surveys,
            Some(vec![0, 0, 0, 0, 7]),
            protobuf,
        ),
        (
            "malformed_protobuf",
            surveys,
            Some(vec![0, 0, 0, 0, 7, 3, 0xff]),
            protobuf,
        ),
        ("invalid_field", surveys, Some(huge_id), json),
    ];
    for (index, (_, topic, value, content_type)) in cases.iter().enumerate() {
        let case = index.to_string();
        let headers: &[(&str, &[u8])] = &[
            ("content-type", content_type),
            ("test-case", case.as_bytes()),
        ];
        match value {
            Some(value) => {
                common::produce_raw(&producer, topic, Some(0), Some(b"c1"), value, headers).await
            }
            None => common::produce_null(&producer, topic, Some(0), Some(b"c1"), headers).await,
        }
    }
    // A valid event after all of them must still be applied.
    let good = survey("good", r#","score":10"#);
    common::produce_raw(
        &producer,
        surveys,
        Some(0),
        Some(b"c1"),
        &good,
        &[("content-type", json)],
    )
    .await;

    let dead = common::read_until(
        &broker,
        &config.topics.dlq,
        Duration::from_secs(90),
        |records| records.len() >= cases.len(),
    );
    let mut summary = Vec::new();
    for (index, (reason, topic, value, _)) in cases.iter().enumerate() {
        let letter = dead
            .iter()
            .find(|record| record.header("test-case") == index.to_string())
            .unwrap_or_else(|| panic!("case {index} ({reason}) is not in the DLQ"));
        let actual = letter.header("cxpulse.error.reason");
        assert!(
            actual == *reason || (*reason == "invalid_field" && !actual.is_empty()),
            "case {index}: reason {actual}, expected {reason}"
        );
        assert_eq!(letter.header("cxpulse.source.topic"), topic.as_str());
        assert_eq!(letter.key, b"c1");
        let original = value.as_deref().unwrap_or_default();
        let omitted = letter.header("cxpulse.dlq.omitted");
        if omitted.is_empty() {
            assert_eq!(letter.value, original, "case {index}: original value kept");
        } else {
            assert_eq!(omitted, "value");
            assert!(letter.value.is_empty());
            assert_eq!(
                letter.header("cxpulse.source.value_bytes"),
                original.len().to_string()
            );
        }
        summary.push(format!(
            "{actual}{}",
            if omitted.is_empty() {
                ""
            } else {
                " (value omitted)"
            }
        ));
    }
    let profile = common::eventually(Duration::from_secs(30), || {
        common::http_get(&address, "/v1/customers/c1")
            .is_some_and(|(status, body)| status == 200 && body.contains("\"last_nps_score\":10"))
    })
    .await;
    assert!(
        profile,
        "the valid event after the hostile ones was applied"
    );
    assert!(
        instance.child.try_wait().expect("status").is_none(),
        "the service is alive"
    );
    eprintln!(
        "{} hostile records, each in the DLQ: {summary:?}; service alive, valid event applied",
        cases.len()
    );
    instance.terminate();
}

/// An output the broker refuses for good (its topic's limit lowered while cxpulse
/// runs, so the limits read at start-up no longer hold) becomes a dead letter saying
/// so, and the service goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_the_broker_refuses_become_dead_letters() {
    refused_outputs_become_dead_letters(Guarantee::AtLeastOnce).await;
}

/// The same under exactly-once: the refused record must not abort the
/// transaction on every restart (a poison pill); it becomes a dead letter in a
/// transaction that commits the cycle's other outputs, state and offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_the_broker_refuses_become_dead_letters_in_a_transaction() {
    refused_outputs_become_dead_letters(Guarantee::ExactlyOnce).await;
}

async fn refused_outputs_become_dead_letters(guarantee: Guarantee) {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;

    let broker = Broker::kafka();
    let name = match guarantee {
        Guarantee::AtLeastOnce => "refused",
        Guarantee::ExactlyOnce => "refused-eos",
    };
    let mut config = common::test_config(&broker, name);
    if guarantee == Guarantee::ExactlyOnce {
        config.processing.guarantee = guarantee;
        config.kafka.transactional_id = format!("cxpulse-{name}-{}", std::process::id());
    }
    broker.create_topics(&config, 1).await;
    let address = common::free_address();
    let log = std::env::temp_dir().join(format!("cxpulse-refused-{}.log", std::process::id()));
    let mut instance = Instance::start(&config, &address, &log);
    instance.wait_ready().await;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("admin");
    let lowered = AlterConfig::new(ResourceSpecifier::Topic(&config.topics.enriched))
        .set("max.message.bytes", "100");
    let results = admin
        .alter_configs([&lowered], &AdminOptions::new())
        .await
        .expect("alter configs");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    // Produce only once the broker reports the lowered limit.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let described = admin
            .describe_configs(
                [&ResourceSpecifier::Topic(&config.topics.enriched)],
                &AdminOptions::new(),
            )
            .await
            .expect("describe configs");
        let limit = described
            .first()
            .and_then(|resource| resource.as_ref().ok())
            .and_then(|resource| resource.get("max.message.bytes"))
            .and_then(|entry| entry.value.clone());
        if limit.as_deref() == Some("100") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the broker never reported max.message.bytes=100: {limit:?}"
        );
        // Polling interval of a condition, not a wait for it.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let producer = common::producer(&broker);
    let at = EventTime::now().plus_millis(-60_000).to_rfc3339();
    let json: &[(&str, &[u8])] = &[("content-type", b"application/json")];
    for id in ["r1", "r2"] {
        let survey = format!(
            r#"{{"event_id":"{id}","customer_id":"c1","occurred_at":"{at}","survey_id":"s","kind":"nps","score":9}}"#
        );
        common::produce_raw(
            &producer,
            &config.topics.surveys,
            Some(0),
            Some(b"c1"),
            survey.as_bytes(),
            json,
        )
        .await;
    }
    let dead = common::read_until(
        &broker,
        &config.topics.dlq,
        Duration::from_secs(60),
        |records| records.len() >= 2,
    );
    let refused: Vec<_> = dead
        .iter()
        .filter(|r| r.header("cxpulse.error.reason") == "output_refused")
        .collect();
    assert_eq!(
        refused.len(),
        2,
        "both enriched events are dead letters: {dead:?}"
    );
    for (letter, offset) in refused.iter().zip(0..) {
        assert_eq!(
            letter.header("ce_id"),
            format!("{}/0/{offset}/enriched", config.topics.surveys),
            "the dead letter names the refused record"
        );
        assert!(letter.value.is_empty());
        assert!(letter
            .header("cxpulse.error.message")
            .contains(&config.topics.enriched));
    }
    let applied = common::eventually(Duration::from_secs(30), || {
        common::http_get(&address, "/v1/customers/c1")
            .is_some_and(|(status, body)| status == 200 && body.contains("\"events\":2"))
    })
    .await;
    assert!(applied, "both events applied");
    // The cycles' other work committed: the profile with both events is out.
    let profiles = common::read_until(
        &broker,
        &config.topics.profiles,
        Duration::from_secs(30),
        |records| {
            records
                .iter()
                .any(|record| record.key == b"c1" && record.json()["events"] == 2)
        },
    );
    assert!(
        profiles
            .iter()
            .any(|record| record.key == b"c1" && record.json()["events"] == 2),
        "the profile of both events is committed: {profiles:?}"
    );
    assert!(
        instance.child.try_wait().expect("status").is_none(),
        "the service is alive"
    );
    eprintln!(
        "{guarantee:?}: {} enriched records refused by the broker became dead letters; \
         profile committed; service alive",
        refused.len()
    );
    instance.terminate();
}
