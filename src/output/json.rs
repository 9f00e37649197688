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

/// `cx.profiles` and the HTTP API, field for field as `proto::Profile`.
#[derive(Serialize)]
pub(super) struct Profile<'a> {
    pub customer_id: &'a str,
    #[serde(serialize_with = "rfc3339")]
    pub first_seen: EventTime,
    #[serde(serialize_with = "rfc3339")]
    pub last_seen: EventTime,
    pub events: u64,
    pub orders_placed: u64,
    pub revenue_minor: BTreeMap<Currency, i64>,
    pub returned_minor: BTreeMap<Currency, i64>,
    pub net_value_minor: BTreeMap<Currency, i64>,
    #[serde(serialize_with = "optional_rfc3339")]
    pub first_purchase_at: Option<EventTime>,
    #[serde(serialize_with = "optional_rfc3339")]
    pub last_purchase_at: Option<EventTime>,
    pub mean_days_between_purchases: Option<f64>,
    pub open_tickets: u64,
    pub tickets_opened: u64,
    pub tickets_resolved: u64,
    pub mean_first_response_seconds: Option<f64>,
    pub last_nps_score: Option<i64>,
    pub last_nps_category: Option<&'static str>,
    #[serde(serialize_with = "optional_rfc3339")]
    pub last_nps_at: Option<EventTime>,
    pub last_csat_score: Option<i64>,
    pub last_csat_scale_max: Option<i64>,
    pub last_ces_score: Option<i64>,
    pub last_ces_scale_max: Option<i64>,
    pub segment: &'static str,
    pub lifecycle: &'static str,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: EventTime,
}

/// An optional instant as its RFC 3339 string or `null`.
fn optional_rfc3339<S: Serializer>(
    time: &Option<EventTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => serializer.collect_str(time),
        None => serializer.serialize_none(),
    }
}
