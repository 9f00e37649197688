//! Every kind of bad record of SPEC section 2 lands in the dead-letter topic
//! with its reason and original bytes, is counted, and the service keeps
//! running and applying valid events.

mod common;

use std::time::Duration;

use common::Broker;
use cxpulse::event::EventTime;
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_record_goes_to_the_dlq_with_its_reason() {
    let broker = Broker::mock();
    let mut config = common::test_config(&broker, "dlq");
    config.processing.max_record_bytes = 2048;
    broker.create_topics(&config, 2).await;
    let running = common::start(&config).await;
    let producer = common::producer(&broker);

    let now = EventTime::now();
    let recent = now.plus_millis(-60_000).to_rfc3339();
    let future = now.plus_millis(2 * 3_600_000).to_rfc3339();
    let common_fields = format!(r#""event_id":"e","customer_id":"c1","occurred_at":"{recent}""#);
    let (purchases, tickets, surveys) = (
        &config.topics.purchases,
        &config.topics.tickets,
        &config.topics.surveys,
    );
    let json: &[u8] = b"application/json";
    let garbage_protobuf = vec![0x0a, 0xff, 0xff, 0xff];
    // (expected reason, topic, key, value, content-type)
    type Case<'a> = (&'a str, &'a String, Option<&'a [u8]>, Vec<u8>, &'a [u8]);
    let cases: Vec<Case<'_>> = vec![
        ("malformed_json", surveys, Some(b"c1"), b"{\"event_id\": ".to_vec(), json),
        ("malformed_protobuf", purchases, Some(b"c1"), garbage_protobuf, b"application/x-protobuf"),
        ("unsupported_content_type", tickets, Some(b"c1"), b"<xml/>".to_vec(), b"application/xml"),
        ("empty_key", surveys, None, format!(r#"{{{common_fields},"survey_id":"s","kind":"nps","score":3}}"#).into_bytes(), json),
        ("record_too_large", surveys, Some(b"c1"), vec![b' '; 4096], json),
        ("missing_field", tickets, Some(b"c1"), format!(r#"{{{common_fields},"action":"opened","channel":"chat"}}"#).into_bytes(), json),
        ("unknown_action", purchases, Some(b"c1"), format!(r#"{{{common_fields},"order_id":"o","action":"stolen"}}"#).into_bytes(), json),
        ("unknown_kind", surveys, Some(b"c1"), format!(r#"{{{common_fields},"survey_id":"s","kind":"mood","score":3}}"#).into_bytes(), json),
        ("unknown_channel", tickets, Some(b"c1"), format!(r#"{{{common_fields},"ticket_id":"t","action":"opened","channel":"fax"}}"#).into_bytes(), json),
        ("score_out_of_range", surveys, Some(b"c1"), format!(r#"{{{common_fields},"survey_id":"s","kind":"nps","score":11}}"#).into_bytes(), json),
        ("invalid_scale", surveys, Some(b"c1"), format!(r#"{{{common_fields},"survey_id":"s","kind":"csat","score":2,"scale_max":4}}"#).into_bytes(), json),
        ("negative_amount", purchases, Some(b"c1"), format!(r#"{{{common_fields},"order_id":"o","action":"placed","amount_minor":-1,"currency":"EUR"}}"#).into_bytes(), json),
        ("invalid_currency", purchases, Some(b"c1"), format!(r#"{{{common_fields},"order_id":"o","action":"placed","amount_minor":1,"currency":"euro"}}"#).into_bytes(), json),
        ("invalid_timestamp", surveys, Some(b"c1"), br#"{"event_id":"e","customer_id":"c1","occurred_at":"last tuesday","survey_id":"s","kind":"nps","score":3}"#.to_vec(), json),
        ("future_timestamp", surveys, Some(b"c1"), format!(r#"{{"event_id":"e","customer_id":"c1","occurred_at":"{future}","survey_id":"s","kind":"nps","score":3}}"#).into_bytes(), json),
        ("key_mismatch", surveys, Some(b"someone-else"), format!(r#"{{{common_fields},"survey_id":"s","kind":"nps","score":3}}"#).into_bytes(), json),
    ];
    for (reason, topic, key, value, content_type) in &cases {
        let headers: &[(&str, &[u8])] = &[
            ("content-type", content_type),
            ("test-case", reason.as_bytes()),
        ];
        common::produce_raw(&producer, topic, Some(0), *key, value, headers).await;
    }
    // A valid Protobuf event after all of them: the service must still apply it.
    let valid = cxpulse::proto::SurveyEvent {
        event_id: "good-1".into(),
        customer_id: "c-good".into(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: now.millis() / 1000 - 30,
            nanos: 0,
        }),
        survey_id: "s-good".into(),
        kind: cxpulse::proto::SurveyKind::Nps as i32,
        score: Some(10),
        ..Default::default()
    };
    // Schema-registry framed: magic 0, schema id 7, message index [0].
    let mut framed = vec![0, 0, 0, 0, 7, 0];
    framed.extend(valid.encode_to_vec());
    common::produce_raw(
        &producer,
        surveys,
        Some(0),
        Some(b"c-good"),
        &framed,
        &[("content-type", b"application/x-protobuf")],
    )
    .await;

    let dead = common::read_until(
        &broker,
        &config.topics.dlq,
        Duration::from_secs(60),
        |records| records.len() >= cases.len(),
    );
    assert_eq!(dead.len(), cases.len(), "every bad record, once: {dead:#?}");
    for (reason, topic, key, value, _) in &cases {
        let letter = dead
            .iter()
            .find(|record| record.header("test-case") == *reason)
            .unwrap_or_else(|| panic!("{reason} is not in the DLQ"));
        assert_eq!(
            letter.header("cxpulse.error.reason"),
            *reason,
            "{:?}",
            letter.headers
        );
        assert!(!letter.header("cxpulse.error.message").is_empty());
        assert_eq!(letter.header("cxpulse.source.topic"), topic.as_str());
        assert_eq!(letter.header("cxpulse.source.partition"), "0");
        assert!(letter
            .header("cxpulse.source.offset")
            .parse::<i64>()
            .is_ok());
        assert_eq!(&letter.value, value, "original value kept for {reason}");
        assert_eq!(
            letter.key,
            key.unwrap_or_default(),
            "original key kept for {reason}"
        );
    }

    let profiles = common::read_until(
        &broker,
        &config.topics.profiles,
        Duration::from_secs(30),
        |records| records.iter().any(|r| r.key == b"c-good"),
    );
    let profile = profiles
        .iter()
        .find(|r| r.key == b"c-good")
        .expect("valid event applied after bad ones")
        .json();
    assert_eq!(profile["last_nps_score"], 10);
    assert_eq!(profile["last_nps_category"], "promoter");
    assert!(!running.is_finished(), "the service is still running");

    let metrics = cxpulse::telemetry::install_recorder().unwrap().render();
    for (reason, topic, ..) in &cases {
        let line =
            format!("cxpulse_events_invalid_total{{topic=\"{topic}\",reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&line), "missing metric line {line}");
    }
    running.stop();
    tokio::task::spawn_blocking(move || running.join())
        .await
        .unwrap()
        .unwrap();
}
