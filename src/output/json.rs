//! The JSON of the per-event records (`cx.enriched`, `cx.signals`), written
//! straight from the domain types.
//!
//! These are the same bytes serde_json makes of the Protobuf messages
//! (`proto::EnrichedEvent`, `proto::Signal`: the tests below hold them equal
//! on every kind of event and signal), without building those owned messages
//! first: a dozen string copies per record that the profile showed.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

use crate::event::{Currency, EventTime};

/// `cx.enriched`, field for field as `proto::EnrichedEvent`.
#[derive(Serialize)]
pub(super) struct Enriched<'a> {
    pub event_id: &'a str,
    pub source_event_id: &'a str,
    pub customer_id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(serialize_with = "rfc3339")]
    pub occurred_at: EventTime,
    pub source_topic: &'a str,
    pub source_partition: i32,
    pub source_offset: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub survey_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_minor: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_max: Option<i64>,
    pub context: Context,
}

/// `proto::ProfileContext`.
#[derive(Serialize)]
pub(super) struct Context {
    pub segment: &'static str,
    pub lifecycle: &'static str,
    /// Currency codes serialise as strings, in code order as the message's `BTreeMap<String, _>`.
    pub net_value_minor: BTreeMap<Currency, i64>,
    pub last_nps_category: Option<&'static str>,
    pub open_tickets: u64,
}

/// `cx.signals`, field for field as `proto::Signal`.
#[derive(Serialize)]
pub(super) struct Signal<'a> {
    pub event_id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub customer_id: &'a str,
    #[serde(serialize_with = "rfc3339")]
    pub occurred_at: EventTime,
    pub ticket_id: Option<&'a str>,
    pub segment: &'static str,
    pub previous_segment: Option<&'static str>,
    pub lifecycle: &'static str,
}

/// An instant as its RFC 3339 string, formatted into the output directly.
fn rfc3339<S: Serializer>(time: &EventTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(time)
}
