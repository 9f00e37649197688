//! Decode: raw Kafka record bytes into typed, validated [`Event`]s.
//!
//! First stage of the data's path. A record is checked for size and key,
//! its format is chosen (the `content-type` header wins over the topic's
//! configured format), the value is parsed by [`json`] or [`protobuf`] into
//! one loose [`RawEvent`] shape, and [`validate`] applies every rule of SPEC
//! section 1. Any failure is a [`DecodeError`] whose [`DecodeError::reason`]
//! is the stable code used for the dead-letter header and metric label.

mod json;
pub mod protobuf;
mod validate;

use std::borrow::Cow;
use std::time::Duration;

use serde::Deserialize;

use crate::event::{Event, EventTime, Source};

/// Value encoding of an input record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// UTF-8 JSON object.
    Json,
    /// Protobuf message of `proto/cxpulse/v1/events.proto`, optionally schema-registry framed.
    Protobuf,
}

impl Format {
    /// The MIME type written in `content-type` headers.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Protobuf => "application/x-protobuf",
        }
    }

    /// Parses a `content-type` header value, ignoring parameters such as `charset`.
    pub fn from_content_type(value: &str) -> Option<Self> {
        let mime = value.split(';').next().unwrap_or("").trim();
        match mime.to_ascii_lowercase().as_str() {
            "application/json" => Some(Format::Json),
            "application/x-protobuf"
            | "application/protobuf"
            | "application/vnd.google.protobuf" => Some(Format::Protobuf),
            _ => None,
        }
    }
}

/// Why a record was rejected. `reason()` codes are part of the contract.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The value exceeds `max_record_bytes`.
    #[error("record value of {size} bytes exceeds max_record_bytes ({limit})")]
    RecordTooLarge {
        /// Value size in bytes.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The record has no key or an empty one.
    #[error("record key is empty; the key must be the customer id")]
    EmptyKey,
    /// The record has a null value (a tombstone), which carries no event.
    #[error("record value is null; every input record must carry an event")]
    MissingValue,
    /// The key differs from the event's `customer_id`, which would split the customer across tasks.
    #[error("record key differs from the event's customer_id")]
    KeyMismatch,
    /// The `content-type` header names a format cxpulse does not read.
    #[error("unsupported content-type {0:?}; expected application/json or application/x-protobuf")]
    UnsupportedContentType(String),
    /// The value is not a JSON object of the expected shape.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The value is not a Protobuf message of the expected type.
    #[error("malformed Protobuf: {0}")]
    MalformedProtobuf(String),
    /// A required field is absent, null or empty.
    #[error("missing required field `{0}`")]
    MissingField(&'static str),
    /// A field is present but breaks a rule (length, sign).
    #[error("field `{field}` {problem}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// `action` is not one of the topic's actions.
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    /// `kind` is not `nps`, `csat` or `ces`.
    #[error("unknown survey kind {0:?}")]
    UnknownKind(String),
    /// `channel` is not one of the ticket channels.
    #[error("unknown ticket channel {0:?}")]
    UnknownChannel(String),
    /// `priority` is not one of the ticket priorities.
    #[error("unknown ticket priority {0:?}")]
    UnknownPriority(String),
    /// `score` is outside the range of its kind and scale.
    #[error("score {score} is out of range {min}..={max} for {kind}")]
    ScoreOutOfRange {
        /// The score given.
        score: i64,
        /// Lowest allowed.
        min: i64,
        /// Highest allowed.
        max: i64,
        /// Survey kind.
        kind: &'static str,
    },
    /// `scale_max` is not allowed for the survey kind.
    #[error("scale_max {scale_max} is not allowed for {kind} (allowed: {allowed})")]
    InvalidScale {
        /// The scale given.
        scale_max: i64,
        /// Survey kind.
        kind: &'static str,
        /// Allowed scales.
        allowed: &'static str,
    },
    /// `amount_minor` is below zero.
    #[error("amount_minor {0} is negative")]
    NegativeAmount(i64),
    /// `currency` is not three upper-case letters.
    #[error("currency {0:?} is not an ISO 4217 code (three upper-case letters)")]
    InvalidCurrency(String),
    /// `occurred_at` cannot be parsed.
    #[error("occurred_at {0:?} is not an RFC 3339 timestamp")]
    InvalidTimestamp(String),
    /// `occurred_at` is too far after the wall clock.
    #[error("occurred_at {occurred_at} is more than {max_future_skew_seconds}s after the wall clock ({now})")]
    FutureTimestamp {
        /// The event time.
        occurred_at: EventTime,
        /// Wall clock at decode.
        now: EventTime,
        /// Configured skew.
        max_future_skew_seconds: u64,
    },
}

impl DecodeError {
    /// Every [`DecodeError::reason`], so that each `reason` series of
    /// `cxpulse_events_invalid_total` exists (at zero) before its first record.
    pub const REASONS: [&'static str; 19] = [
        "record_too_large",
        "empty_key",
        "missing_value",
        "key_mismatch",
        "unsupported_content_type",
        "malformed_json",
        "malformed_protobuf",
        "missing_field",
        "invalid_field",
        "unknown_action",
        "unknown_kind",
        "unknown_channel",
        "unknown_priority",
        "score_out_of_range",
        "invalid_scale",
        "negative_amount",
        "invalid_currency",
        "invalid_timestamp",
        "future_timestamp",
    ];

    /// Stable snake_case code: the `cxpulse.error.reason` header and the `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::RecordTooLarge { .. } => "record_too_large",
            DecodeError::EmptyKey => "empty_key",
            DecodeError::MissingValue => "missing_value",
            DecodeError::KeyMismatch => "key_mismatch",
            DecodeError::UnsupportedContentType(_) => "unsupported_content_type",
            DecodeError::MalformedJson(_) => "malformed_json",
            DecodeError::MalformedProtobuf(_) => "malformed_protobuf",
            DecodeError::MissingField(_) => "missing_field",
            DecodeError::InvalidField { .. } => "invalid_field",
            DecodeError::UnknownAction(_) => "unknown_action",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::UnknownChannel(_) => "unknown_channel",
            DecodeError::UnknownPriority(_) => "unknown_priority",
            DecodeError::ScoreOutOfRange { .. } => "score_out_of_range",
            DecodeError::InvalidScale { .. } => "invalid_scale",
            DecodeError::NegativeAmount(_) => "negative_amount",
            DecodeError::InvalidCurrency(_) => "invalid_currency",
            DecodeError::InvalidTimestamp(_) => "invalid_timestamp",
            DecodeError::FutureTimestamp { .. } => "future_timestamp",
        }
    }
}

/// Every field any input event may carry, before validation.
///
/// JSON and Protobuf both decode into this one shape so that the rules of
/// SPEC section 1 are written once, in [`validate`].
#[derive(Debug, Default, Deserialize)]
pub struct RawEvent<'a> {
    #[serde(borrow)]
    event_id: Option<Text<'a>>,
    #[serde(borrow)]
    customer_id: Option<Text<'a>>,
    #[serde(borrow)]
    occurred_at: Option<RawTime<'a>>,
    #[serde(borrow)]
    order_id: Option<Text<'a>>,
    #[serde(borrow)]
    action: Option<Text<'a>>,
    amount_minor: Option<i64>,
    #[serde(borrow)]
    currency: Option<Text<'a>>,
    items: Option<i64>,
    complete_first_shipment: Option<bool>,
    #[serde(borrow)]
    channel: Option<Text<'a>>,
    #[serde(borrow)]
    ticket_id: Option<Text<'a>>,
    #[serde(borrow)]
    priority: Option<Text<'a>>,
    #[serde(borrow)]
    survey_id: Option<Text<'a>>,
    #[serde(borrow)]
    kind: Option<Text<'a>>,
    score: Option<i64>,
    scale_max: Option<i64>,
    #[serde(borrow)]
    comment: Option<Text<'a>>,
}

/// A text field as the wire gave it: borrowed from the record's value when
/// the JSON string has no escapes, so decoding copies only what an event keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a>(Cow<'a, str>);

impl Text<'_> {
    /// The text, owned.
    pub fn into_owned(self) -> String {
        self.0.into_owned()
    }
}

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Text<'_>> for Box<str> {
    fn from(text: Text<'_>) -> Self {
        text.0.into()
    }
}

impl From<String> for Text<'_> {
    fn from(text: String) -> Self {
        Text(Cow::Owned(text))
    }
}

// By hand: serde's own `Cow<str>` (and `Option<Cow<str>>` even with
// `#[serde(borrow)]`) always copies.
impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> serde::de::Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                text: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }

            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// An event time as the wire gave it.
#[derive(Debug)]
enum RawTime<'a> {
    /// RFC 3339 text (JSON).
    Text(Text<'a>),
    /// Already an instant (Protobuf `Timestamp`), or `None` when out of range.
    Instant(Option<EventTime>),
}

impl<'de: 'a, 'a> Deserialize<'de> for RawTime<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Text::deserialize(deserializer).map(RawTime::Text)
    }
}

/// Limits and defaults that decoding applies.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Largest accepted value.
    pub max_record_bytes: usize,
    /// How far after the wall clock `occurred_at` may be.
    pub max_future_skew: Duration,
    /// Format per input source when no `content-type` header is present.
    pub formats: [Format; 3],
}

impl Decoder {
    /// Decodes and validates one record of `source` against the wall clock `now`.
    pub fn decode(
        &self,
        source: Source,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        content_type: Option<&[u8]>,
        now: EventTime,
    ) -> Result<Event, DecodeError> {
        let value = value.ok_or(DecodeError::MissingValue)?;
        if value.len() > self.max_record_bytes {
            return Err(DecodeError::RecordTooLarge {
                size: value.len(),
                limit: self.max_record_bytes,
            });
        }
        let key = key
            .filter(|key| !key.is_empty())
            .ok_or(DecodeError::EmptyKey)?;
        let format = match content_type {
            None => self.formats[source.index()],
            Some(header) => {
                let text = String::from_utf8_lossy(header);
                Format::from_content_type(&text)
                    .ok_or_else(|| DecodeError::UnsupportedContentType(text.into_owned()))?
            }
        };
        let raw = match format {
            Format::Json => json::parse(value)?,
            Format::Protobuf => protobuf::parse(source, value)?,
        };
        let event = validate::validate(source, raw, now, self.max_future_skew)?;
        if event.customer_id.as_str().as_bytes() != key {
            return Err(DecodeError::KeyMismatch);
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_parameters_are_ignored() {
        assert_eq!(
            Format::from_content_type("application/json; charset=utf-8"),
            Some(Format::Json)
        );
        assert_eq!(
            Format::from_content_type("Application/X-Protobuf"),
            Some(Format::Protobuf)
        );
        assert_eq!(Format::from_content_type("text/plain"), None);
    }

    #[test]
    fn reasons_lists_every_reason_once() {
        let text = || "x".to_string();
        let every = [
            DecodeError::RecordTooLarge { size: 2, limit: 1 },
            DecodeError::EmptyKey,
            DecodeError::MissingValue,
            DecodeError::KeyMismatch,
            DecodeError::UnsupportedContentType(text()),
            DecodeError::MalformedJson(text()),
            DecodeError::MalformedProtobuf(text()),
            DecodeError::MissingField("x"),
            DecodeError::InvalidField {
                field: "x",
                problem: text(),
            },
            DecodeError::UnknownAction(text()),
            DecodeError::UnknownKind(text()),
            DecodeError::UnknownChannel(text()),
            DecodeError::UnknownPriority(text()),
            DecodeError::ScoreOutOfRange {
                score: 11,
                min: 0,
                max: 10,
                kind: "nps",
            },
            DecodeError::InvalidScale {
                scale_max: 4,
                kind: "csat",
                allowed: "3, 5, 7, 10",
            },
            DecodeError::NegativeAmount(-1),
            DecodeError::InvalidCurrency(text()),
            DecodeError::InvalidTimestamp(text()),
            DecodeError::FutureTimestamp {
                occurred_at: EventTime::from_millis(1),
                now: EventTime::from_millis(0),
                max_future_skew_seconds: 0,
            },
        ];
        // No wildcard: a new variant does not compile until it is listed above too.
        for error in &every {
            match error {
                DecodeError::RecordTooLarge { .. }
                | DecodeError::EmptyKey
                | DecodeError::MissingValue
                | DecodeError::KeyMismatch
                | DecodeError::UnsupportedContentType(_)
                | DecodeError::MalformedJson(_)
                | DecodeError::MalformedProtobuf(_)
                | DecodeError::MissingField(_)
                | DecodeError::InvalidField { .. }
                | DecodeError::UnknownAction(_)
                | DecodeError::UnknownKind(_)
                | DecodeError::UnknownChannel(_)
                | DecodeError::UnknownPriority(_)
                | DecodeError::ScoreOutOfRange { .. }
                | DecodeError::InvalidScale { .. }
                | DecodeError::NegativeAmount(_)
                | DecodeError::InvalidCurrency(_)
                | DecodeError::InvalidTimestamp(_)
                | DecodeError::FutureTimestamp { .. } => {}
            }
        }
        let reasons: Vec<&str> = every.iter().map(DecodeError::reason).collect();
        assert_eq!(reasons, DecodeError::REASONS);
    }
}
