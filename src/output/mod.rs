//! Output: turns what a task produced into Kafka records for `cx.profiles`,
//! `cx.enriched`, `cx.signals`, `cx.metrics` and `cx.dlq`, in JSON or
//! Protobuf, with a deterministic `event_id` and CloudEvents binary-mode
//! headers.
//!
//! Ids are derived from the source position (`topic/partition/offset`) or
//! the window identity, so a record produced again after a crash carries
//! the same id and consumers can de-duplicate.
//!
//! The records written per event and per flush (profiles, enriched events,
//! signals) are each declared once, in `record.rs`: that one declaration
//! writes their JSON and builds their Protobuf message, so adding a field is
//! one line there (and one in the `.proto`). Window results are built as
//! Protobuf messages and serialised with serde for JSON.

mod field;
mod json;
mod record;

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};

use prost::Message;
use rdkafka::message::OwnedHeaders;

use field::Record;

use crate::config::TopicsConfig;
use crate::decode::{DecodeError, Format};
use crate::event::{CustomerId, Event};
use crate::proto;
use crate::task::signal::{Cause, Signal};
use crate::task::Profile;
use crate::window::result::window_result;
use crate::window::FinalWindow;

/// Where an input record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePosition {
    /// Topic name (shared by every record of the topic).
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

impl SourcePosition {
    /// The deterministic id of the record of `kind` derived from this position.
    pub fn id(&self, kind: &str) -> String {
        use std::fmt::Write as _;
        // Sized at once: `format!` grew the string two or three times per record.
        let mut id = String::with_capacity(self.topic.len() + kind.len() + 24);
        let _ = write!(
            id,
            "{}/{}/{}/{kind}",
            self.topic, self.partition, self.offset
        );
        id
    }
}

/// A record header: name and value, borrowed from static data where the
/// encoder knows them up front (most CloudEvents headers), so that encoding a
/// record allocates only what differs per record.
pub type Header = (Cow<'static, str>, Cow<'static, [u8]>);

/// A header with a fixed name.
fn header(name: &'static str, value: impl Into<Cow<'static, [u8]>>) -> Header {
    (Cow::Borrowed(name), value.into())
}

/// The id of the `cx.profiles` record of a profile changed by a timer named `cause`.
pub fn timer_profile_id(customer_id: &CustomerId, cause: &str) -> String {
    format!("{customer_id}/profile/{cause}")
}

/// A record ready for the producer.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRecord {
    /// Destination topic.
    pub topic: Arc<str>,
    /// Record key.
    pub key: Vec<u8>,
    /// Record value.
    pub value: Vec<u8>,
    /// Headers, in order.
    pub headers: Vec<Header>,
}

impl OutputRecord {
    /// Bytes of key, value and headers, as producer and broker count them (framing aside).
    pub fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len() + 8)
            .sum();
        self.key.len() + self.value.len() + headers
    }

    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_ref())
    }

    /// The headers as librdkafka takes them.
    pub fn kafka_headers(&self) -> OwnedHeaders {
        self.headers.iter().fold(
            OwnedHeaders::new_with_capacity(self.headers.len()),
            |headers, (key, value)| {
                headers.insert(rdkafka::message::Header {
                    key,
                    value: Some(value.as_ref()),
                })
            },
        )
    }
}

/// A record that goes to the dead-letter topic instead of being processed or
/// published, with everything the DLQ keeps.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// The input record it came from, if any.
    pub position: Option<&'a SourcePosition>,
    /// Original key.
    pub key: Option<&'a [u8]>,
    /// Original value.
    pub value: Option<&'a [u8]>,
    /// Original headers.
    pub headers: &'a [Header],
    /// Stable snake_case reason (`cxpulse.error.reason`).
    pub reason: &'static str,
    /// Human text (`cxpulse.error.message`).
    pub message: String,
}

impl<'a> DeadLetter<'a> {
    /// The dead letter of an input record that failed decoding or validation.
    pub fn rejected(
        position: &'a SourcePosition,
        key: Option<&'a [u8]>,
        value: Option<&'a [u8]>,
        headers: &'a [Header],
        error: &DecodeError,
    ) -> Self {
        DeadLetter {
            position: Some(position),
            key,
            value,
            headers,
            reason: error.reason(),
            message: error.to_string(),
        }
    }
}

/// Bytes a record needs beyond its key, value and headers (record and batch
/// framing), so that a record within the limit is accepted by producer and broker.
const FRAMING_BYTES: usize = 1024;

/// Initial capacity of a JSON record value: most profiles, enriched events and
/// signals fit.
const JSON_RECORD_CAPACITY: usize = 768;

/// librdkafka's default `message.max.bytes`.
pub const PRODUCER_MAX_RECORD_BYTES: usize = 1_000_000;

/// The output topics, shared by every record written to them.
#[derive(Debug, Clone)]
struct OutputTopics {
    profiles: Arc<str>,
    enriched: Arc<str>,
    signals: Arc<str>,
    metrics: Arc<str>,
    dlq: Arc<str>,
}

/// Builds output records in the configured format.
#[derive(Debug, Clone)]
pub struct Encoder {
    topics: OutputTopics,
    format: Format,
    /// CloudEvents `ce_source`, shared by every record (see [`interned`]).
    source: &'static [u8],
    /// The largest record the producer sends (`message.max.bytes`).
    producer_max_bytes: usize,
    /// The largest record each topic accepts (`max.message.bytes`), where known.
    topic_max_bytes: std::collections::HashMap<String, usize>,
}

impl Encoder {
    /// An encoder writing `format` to the topics of `topics`.
    pub fn new(topics: TopicsConfig, format: Format, source: &str) -> Self {
        Encoder {
            topics: OutputTopics {
                profiles: Arc::from(topics.profiles.as_str()),
                enriched: Arc::from(topics.enriched.as_str()),
                signals: Arc::from(topics.signals.as_str()),
                metrics: Arc::from(topics.metrics.as_str()),
                dlq: Arc::from(topics.dlq.as_str()),
            },
            format,
            source: interned(format!("/cxpulse/{source}")),
            producer_max_bytes: PRODUCER_MAX_RECORD_BYTES,
            topic_max_bytes: Default::default(),
        }
    }

    /// Bounds records by the producer's `message.max.bytes` and each topic's `max.message.bytes`.
    pub fn with_limits(
        mut self,
        producer_max_bytes: usize,
        topic_max_bytes: std::collections::HashMap<String, usize>,
    ) -> Self {
        self.producer_max_bytes = producer_max_bytes;
        self.topic_max_bytes = topic_max_bytes;
        self
    }

    /// The largest record (key, value and headers) that `topic` takes.
    pub fn max_record_bytes(&self, topic: &str) -> usize {
        let broker = self.topic_max_bytes.get(topic).copied();
        broker
            .map_or(self.producer_max_bytes, |broker| {
                broker.min(self.producer_max_bytes)
            })
            .saturating_sub(FRAMING_BYTES)
    }

    /// `record` itself when its topic takes it, else a dead letter saying why,
    /// with the refused record's key and headers but not its value.
    pub fn within_limits(
        &self,
        record: OutputRecord,
        position: Option<&SourcePosition>,
    ) -> OutputRecord {
        let size = record.size();
        let limit = self.max_record_bytes(&record.topic);
        if size <= limit {
            return record;
        }
        self.dead_letter(&DeadLetter {
            position,
            key: Some(&record.key),
            value: Some(&record.value),
            headers: &record.headers,
            reason: "output_too_large",
            message: format!(
                "the {} record of {size} bytes exceeds the {limit} bytes that topic takes",
                record.topic
            ),
        })
    }

    /// `message` in the configured format.
    fn value<M: Message + serde::Serialize>(&self, message: &M) -> Vec<u8> {
        match self.format {
            Format::Json => json_value(message),
            Format::Protobuf => message.encode_to_vec(),
        }
    }

    /// A record declared in [`record`], in the configured format.
    fn record_value(&self, record: &impl Record<Message: Message>) -> Vec<u8> {
        match self.format {
            Format::Json => view_json(record),
            Format::Protobuf => record.to_message().encode_to_vec(),
        }
    }

    fn record(
        &self,
        topic: &Arc<str>,
        key: Vec<u8>,
        value: Vec<u8>,
        event_id: String,
        ce_type: &'static str,
        ce_time: String,
    ) -> OutputRecord {
        let headers = vec![
            header("ce_specversion", b"1.0".as_slice()),
            header("ce_id", event_id.into_bytes()),
            header("ce_type", ce_type.as_bytes()),
            header("ce_source", self.source),
            header("ce_time", ce_time.into_bytes()),
            header("content-type", self.format.content_type().as_bytes()),
        ];
        OutputRecord {
            topic: topic.clone(),
            key,
            value,
            headers,
        }
    }

    /// The `cx.profiles` record of a profile changed by the record at `position`.
    pub fn profile(&self, profile: &Profile, position: &SourcePosition) -> OutputRecord {
        self.profile_with_id(profile, position.id("profile"))
    }

    /// The `cx.profiles` record of a profile whose last change has the record id `event_id`
    /// (see [`SourcePosition::id`] and [`timer_profile_id`]).
    pub fn profile_with_id(&self, profile: &Profile, event_id: String) -> OutputRecord {
        self.record(
            &self.topics.profiles,
            profile.customer_id.as_str().as_bytes().to_vec(),
            self.record_value(&record::Profile::new(profile)),
            event_id,
            "io.cxpulse.profile.v1",
            profile.as_of.get().to_rfc3339(),
        )
    }

    /// The `cx.signals` record of a signal; `position` is the record being applied, if any.
    pub fn signal(&self, signal: &Signal, position: Option<&SourcePosition>) -> OutputRecord {
        let kind = signal.kind.name();
        let event_id = match (&signal.cause, position) {
            (Cause::Record, Some(position)) => position.id(kind),
            (Cause::Key(key), _) => format!("{}/{kind}/{key}", signal.customer_id),
            (Cause::Record, None) => {
                format!("{}/{kind}/{}", signal.customer_id, signal.at.millis())
            }
        };
        let value = self.record_value(&record::Signal::new(signal, &event_id));
        self.record(
            &self.topics.signals,
            signal.customer_id.as_str().as_bytes().to_vec(),
            value,
            event_id,
            signal.kind.ce_type(),
            signal.at.to_rfc3339(),
        )
    }

    /// The `cx.enriched` record of a valid event after it was applied.
    pub fn enriched(
        &self,
        event: &Event,
        profile: &Profile,
        position: &SourcePosition,
    ) -> OutputRecord {
        let event_id = position.id("enriched");
        let value = self.record_value(&record::Enriched::new(event, profile, position, &event_id));
        self.record(
            &self.topics.enriched,
            event.customer_id.as_str().as_bytes().to_vec(),
            value,
            event_id,
            event.enriched_ce_type(),
            event.occurred_at.to_rfc3339(),
        )
    }

    /// The `cx.metrics` record of a final window of `task`.
    pub fn window(&self, window: &FinalWindow, task: u32) -> OutputRecord {
        let end = window.end.to_rfc3339();
        let key = format!("{}/{end}/{task}", window.name);
        self.record(
            &self.topics.metrics,
            key.clone().into_bytes(),
            self.value(&window_result(window, task)),
            key,
            "io.cxpulse.window.v1",
            end,
        )
    }

    /// Whether `record` is a dead letter (it goes to the dead-letter topic).
    pub fn is_dead_letter(&self, record: &OutputRecord) -> bool {
        record.topic == self.topics.dlq
    }

    /// The `cx.dlq` record of a rejected input: original key, value and headers plus the reason.
    ///
    /// A dead letter larger than the DLQ takes is written without its value (then
    /// without the original key and headers too): `cxpulse.dlq.omitted` names what
    /// was left out and `cxpulse.source.value_bytes` the original value's size; the
    /// source headers say where the original is.
    pub fn dead_letter(&self, letter: &DeadLetter<'_>) -> OutputRecord {
        let mut ours = vec![
            header("cxpulse.error.reason", letter.reason.as_bytes()),
            header("cxpulse.error.message", letter.message.as_bytes().to_vec()),
        ];
        if let Some(position) = letter.position {
            for (name, value) in [
                ("cxpulse.source.topic", position.topic.to_string()),
                ("cxpulse.source.partition", position.partition.to_string()),
                ("cxpulse.source.offset", position.offset.to_string()),
            ] {
                ours.push(header(name, value.into_bytes()));
            }
        }
        let value = letter.value.unwrap_or_default();
        let limit = self.max_record_bytes(&self.topics.dlq);
        let whole = OutputRecord {
            topic: self.topics.dlq.clone(),
            key: letter.key.unwrap_or_default().to_vec(),
            value: value.to_vec(),
            headers: letter
                .headers
                .iter()
                .cloned()
                .chain(ours.iter().cloned())
                .collect(),
        };
        if whole.size() <= limit {
            return whole;
        }
        let omitted = |what: &'static str| {
            ours.iter().cloned().chain([
                header("cxpulse.dlq.omitted", what.as_bytes()),
                header(
                    "cxpulse.source.value_bytes",
                    value.len().to_string().into_bytes(),
                ),
            ])
        };
        let without_value = OutputRecord {
            value: Vec::new(),
            headers: letter
                .headers
                .iter()
                .cloned()
                .chain(omitted("value"))
                .collect(),
            ..whole
        };
        if without_value.size() <= limit {
            return without_value;
        }
        OutputRecord {
            key: Vec::new(),
            headers: omitted("value,key,headers").collect(),
            ..without_value
        }
    }
}

/// `message` (a window result) as JSON.
fn json_value<T: serde::Serialize>(message: &T) -> Vec<u8> {
    // Sized for a typical record at once: growing from serde_json's default 128
    // bytes copied every record two or three times.
    let mut value = Vec::with_capacity(JSON_RECORD_CAPACITY);
    // Serialising structs of strings, numbers and maps cannot fail.
    let _ = serde_json::to_writer(&mut value, message);
    value
}

/// A per-event or per-flush record's JSON, from its view.
fn view_json(view: &impl Record) -> Vec<u8> {
    let mut value = Vec::with_capacity(JSON_RECORD_CAPACITY);
    view.write_json(&mut value);
    value
}

/// A `ce_source` value that lives as long as the process: leaked once per
/// distinct value (one per configuration), so that records borrow it instead
/// of copying it.
fn interned(source: String) -> &'static [u8] {
    static SOURCES: Mutex<Vec<&'static [u8]>> = Mutex::new(Vec::new());
    let mut sources = SOURCES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = sources.iter().find(|known| **known == source.as_bytes()) {
        return known;
    }
    let leaked: &'static [u8] = Box::leak(source.into_bytes().into_boxed_slice());
    sources.push(leaked);
    leaked
}

/// The published JSON of a profile (`cx.profiles` and the HTTP API): the bytes
/// serde_json makes of [`profile_message`].
pub fn profile_json(profile: &Profile) -> Vec<u8> {
    view_json(&record::Profile::new(profile))
}

/// The Protobuf message of a profile (its JSON is [`profile_json`]).
pub fn profile_message(profile: &Profile) -> proto::Profile {
    record::Profile::new(profile).to_message()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;

    fn signal_message(signal: &Signal, event_id: &str) -> proto::Signal {
        record::Signal::new(signal, event_id).to_message()
    }

    fn enriched_message(
        event: &Event,
        profile: &Profile,
        position: &SourcePosition,
        event_id: &str,
    ) -> proto::EnrichedEvent {
        record::Enriched::new(event, profile, position, event_id).to_message()
    }

    #[test]
    fn dead_letters_keep_the_original_and_add_the_reason() {
        let encoder = Encoder::new(TopicsConfig::default(), Format::Json, "test");
        let position = SourcePosition {
            topic: "cx.surveys".into(),
            partition: 2,
            offset: 41,
        };
        let headers = vec![(Cow::Borrowed("trace"), Cow::Borrowed(b"abc".as_slice()))];
        let record = encoder.dead_letter(&DeadLetter::rejected(
            &position,
            Some(b"c1"),
            Some(b"{oops"),
            &headers,
            &DecodeError::MalformedJson("eof".into()),
        ));
        assert_eq!(&*record.topic, "cx.dlq");
        assert_eq!(record.value, b"{oops");
        let header = |name: &str| {
            record
                .header(name)
                .map(|value| String::from_utf8_lossy(value).into_owned())
        };
        assert_eq!(header("trace").as_deref(), Some("abc"));
        assert_eq!(
            header("cxpulse.error.reason").as_deref(),
            Some("malformed_json")
        );
        assert_eq!(header("cxpulse.source.offset").as_deref(), Some("41"));
    }

    fn header(record: &OutputRecord, name: &str) -> Option<String> {
        record
            .header(name)
            .map(|value| String::from_utf8_lossy(value).into_owned())
    }

    /// A dead letter larger than the producer or the DLQ topic takes goes without its
    /// value (then without key and headers), saying so; it always fits.
    #[test]
    fn dead_letters_too_large_for_the_dlq_are_written_without_their_value() {
        let mut limits = std::collections::HashMap::new();
        limits.insert("cx.dlq".to_string(), 64 * 1024);
        let encoder = Encoder::new(TopicsConfig::default(), Format::Json, "test")
            .with_limits(PRODUCER_MAX_RECORD_BYTES, limits);
        let position = SourcePosition {
            topic: "cx.surveys".into(),
            partition: 0,
            offset: 3,
        };
        let value = vec![b'x'; 100 * 1024];
        let error = DecodeError::MalformedJson("eof".into());
        let record = encoder.dead_letter(&DeadLetter::rejected(
            &position,
            Some(b"c1"),
            Some(&value),
            &[],
            &error,
        ));
        assert!(record.value.is_empty());
        assert_eq!(record.key, b"c1");
        assert_eq!(
            header(&record, "cxpulse.dlq.omitted").as_deref(),
            Some("value")
        );
        assert_eq!(
            header(&record, "cxpulse.source.value_bytes").as_deref(),
            Some("102400")
        );
        assert_eq!(
            header(&record, "cxpulse.source.offset").as_deref(),
            Some("3")
        );
        assert!(record.size() <= encoder.max_record_bytes("cx.dlq"));

        // Huge original headers too: only cxpulse's own headers remain.
        let headers = vec![(Cow::Borrowed("blob"), Cow::Owned(vec![b'y'; 200 * 1024]))];
        let record = encoder.dead_letter(&DeadLetter::rejected(
            &position,
            Some(b"c1"),
            Some(&value),
            &headers,
            &error,
        ));
        assert!(record.key.is_empty() && record.value.is_empty());
        assert_eq!(
            header(&record, "cxpulse.dlq.omitted").as_deref(),
            Some("value,key,headers")
        );
        assert!(header(&record, "blob").is_none());
        assert!(record.size() <= encoder.max_record_bytes("cx.dlq"));

        // A small one stays whole.
        let record = encoder.dead_letter(&DeadLetter::rejected(
            &position,
            Some(b"c1"),
            Some(b"{"),
            &[],
            &error,
        ));
        assert_eq!(record.value, b"{");
        assert!(header(&record, "cxpulse.dlq.omitted").is_none());
    }

    /// An output larger than its topic takes becomes a dead letter, never a crash.
    #[test]
    fn outputs_over_the_topic_limit_become_dead_letters() {
        let mut limits = std::collections::HashMap::new();
        limits.insert("cx.profiles".to_string(), 1100);
        let encoder = Encoder::new(TopicsConfig::default(), Format::Json, "test")
            .with_limits(PRODUCER_MAX_RECORD_BYTES, limits);
        let position = SourcePosition {
            topic: "cx.tickets".into(),
            partition: 1,
            offset: 9,
        };
        let profile = Profile::new(CustomerId::new("c9"), EventTime::from_millis(0));
        let record = encoder.within_limits(encoder.profile(&profile, &position), Some(&position));
        assert_eq!(&*record.topic, "cx.dlq");
        assert_eq!(
            header(&record, "cxpulse.error.reason").as_deref(),
            Some("output_too_large")
        );
        assert_eq!(
            header(&record, "cxpulse.source.offset").as_deref(),
            Some("9")
        );
        assert_eq!(
            header(&record, "ce_id").as_deref(),
            Some("cx.tickets/1/9/profile"),
            "the refused record's own headers say what it was"
        );
        let fits = encoder.profile(&profile, &position);
        let unbounded = Encoder::new(TopicsConfig::default(), Format::Json, "test");
        assert_eq!(unbounded.within_limits(fits.clone(), None), fits);
    }

    /// The JSON written straight from the domain types is byte for byte what
    /// serde_json makes of the Protobuf messages, for every profile after every
    /// event and every kind of event and signal a generated population produces, and both formats carry the same
    /// headers.
    #[test]
    fn profile_enriched_and_signal_json_equal_the_protobuf_messages_json() {
        use crate::generate::population::{Population, PopulationConfig};
        use crate::task::{Emitted, Outcome, Task, TaskSettings};
        use std::collections::BTreeSet;

        let json = Encoder::new(TopicsConfig::default(), Format::Json, "test");
        let protobuf = Encoder::new(TopicsConfig::default(), Format::Protobuf, "test");
        let settings = Arc::new(TaskSettings::from_config(&crate::config::Config::default()));
        let wall = EventTime::from_millis(0);
        let mut task = Task::new(0, settings, wall);
        let mut emitted = Vec::new();
        let (mut types, mut kinds) = (BTreeSet::new(), BTreeSet::new());
        let mut check_signals = |emitted: &mut Vec<Emitted>, position: Option<&SourcePosition>| {
            for item in emitted.drain(..) {
                let Emitted::Signal(signal) = item else {
                    continue;
                };
                let record = json.signal(&signal, position);
                let event_id =
                    String::from_utf8_lossy(record.header("ce_id").unwrap()).into_owned();
                let expected = serde_json::to_vec(&signal_message(&signal, &event_id)).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&record.value),
                    String::from_utf8_lossy(&expected)
                );
                assert_eq!(
                    record.header("ce_type"),
                    Some(format!("io.cxpulse.signal.{}.v1", signal.kind.name()).as_bytes())
                );
                let other = protobuf.signal(&signal, position);
                assert_eq!(
                    proto::Signal::decode(other.value.as_slice()).unwrap(),
                    signal_message(&signal, &event_id)
                );
                assert_eq!(record.headers[..5], other.headers[..5]);
                kinds.insert(signal.kind.name());
            }
        };
        let population = Population::new(PopulationConfig {
            customers: 200,
            visits_per_day: 4.0,
            start: EventTime::from_millis(1_780_000_000_000),
            max_disorder_millis: 60_000,
            seed: 11,
        });
        for (offset, event) in population.take(20_000).enumerate() {
            let position = SourcePosition {
                topic: "cx.\"odd\" topic é".into(),
                partition: 3,
                offset: offset as i64,
            };
            if let Outcome::Applied { profile, .. } = task.apply(&event, wall, &mut emitted) {
                assert_eq!(
                    String::from_utf8_lossy(&profile_json(profile)),
                    String::from_utf8_lossy(
                        &serde_json::to_vec(&profile_message(profile)).unwrap()
                    )
                );
                let record = json.enriched(&event, profile, &position);
                let message =
                    enriched_message(&event, profile, &position, &position.id("enriched"));
                assert_eq!(
                    String::from_utf8_lossy(&record.value),
                    String::from_utf8_lossy(&serde_json::to_vec(&message).unwrap())
                );
                assert_eq!(
                    record.header("ce_type"),
                    Some(format!("io.cxpulse.enriched.{}.v1", event.type_name()).as_bytes())
                );
                let other = protobuf.enriched(&event, profile, &position);
                assert_eq!(
                    proto::EnrichedEvent::decode(other.value.as_slice()).unwrap(),
                    message
                );
                assert_eq!(record.headers[..5], other.headers[..5]);
                types.insert(event.type_name());
            }
            check_signals(&mut emitted, Some(&position));
        }
        task.tick(EventTime::from_millis(1_900_000_000_000), &mut emitted);
        check_signals(&mut emitted, None);
        assert_eq!(types.len(), 11, "every event type: {types:?}");
        assert!(kinds.len() >= 6, "most signal kinds: {kinds:?}");
    }

    #[test]
    fn profile_records_are_keyed_by_customer_with_cloudevents_headers() {
        let encoder = Encoder::new(TopicsConfig::default(), Format::Protobuf, "test");
        let profile = Profile::new(CustomerId::new("c9"), EventTime::from_millis(0));
        let position = SourcePosition {
            topic: "cx.tickets".into(),
            partition: 0,
            offset: 7,
        };
        let record = encoder.profile(&profile, &position);
        assert_eq!(record.key, b"c9");
        let decoded = proto::Profile::decode(record.value.as_slice()).unwrap();
        assert_eq!(decoded.customer_id, "c9");
        assert_eq!(decoded.lifecycle, "prospect");
        assert_eq!(
            record.header("ce_id"),
            Some(b"cx.tickets/0/7/profile".as_slice())
        );
    }
}
