//! The JSON of the records written per event and per flush (`cx.enriched`,
//! `cx.signals`, `cx.profiles` and the HTTP API's profile), written straight
//! from the domain types by a small writer.
//!
//! These are the same bytes serde_json makes of the Protobuf messages
//! (`proto::EnrichedEvent`, `proto::Signal`, `proto::Profile`: the tests in
//! `output` hold them equal on every kind of event, signal and profile),
//! without building those owned messages first (a dozen string copies per
//! record) and without serde's per-field work: field names are written as
//! they are, and a string is copied whole when it needs no escape (serde_json
//! tests every byte of every name and value against its escape table).

use std::collections::BTreeMap;

use serde_json::ser::{CompactFormatter, Formatter};

use crate::event::{Currency, EventTime};

/// A view that writes itself as one JSON object.
pub(super) trait WriteJson {
    /// Appends the object to `out`.
    fn write_json(&self, out: &mut Vec<u8>);
}

/// A JSON object being written field by field, as serde_json writes a struct.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Object<'a> {
    fn begin(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, empty: true }
    }

    /// A field name: a Rust identifier, which JSON never escapes.
    fn name(&mut self, name: &'static str) -> &mut Vec<u8> {
        debug_assert!(name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_'));
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    fn str(&mut self, name: &'static str, value: &str) {
        string(self.name(name), value);
    }

    fn optional_str(&mut self, name: &'static str, value: Option<&str>) {
        match value {
            Some(value) => self.str(name, value),
            None => self.null(name),
        }
    }

    fn null(&mut self, name: &'static str) {
        self.name(name).extend_from_slice(b"null");
    }

    fn int(&mut self, name: &'static str, value: i64) {
        let out = self.name(name);
        // Writing to a Vec cannot fail.
        let _ = CompactFormatter.write_i64(out, value);
    }

    fn optional_int(&mut self, name: &'static str, value: Option<i64>) {
        match value {
            Some(value) => self.int(name, value),
            None => self.null(name),
        }
    }

    fn unsigned(&mut self, name: &'static str, value: u64) {
        let out = self.name(name);
        let _ = CompactFormatter.write_u64(out, value);
    }

    fn optional_float(&mut self, name: &'static str, value: Option<f64>) {
        match value {
            // As serde_json: a NaN or an infinity is null.
            Some(value) if value.is_finite() => {
                let out = self.name(name);
                let _ = CompactFormatter.write_f64(out, value);
            }
            _ => self.null(name),
        }
    }

    fn time(&mut self, name: &'static str, value: EventTime) {
        let out = self.name(name);
        // Digits, '-', ':', 'T', '.' and 'Z': nothing to escape.
        out.push(b'"');
        value.write_rfc3339(out);
        out.push(b'"');
    }

    fn optional_time(&mut self, name: &'static str, value: Option<EventTime>) {
        match value {
            Some(value) => self.time(name, value),
            None => self.null(name),
        }
    }

    fn money(&mut self, name: &'static str, totals: &BTreeMap<Currency, i64>) {
        let mut object = Object::begin(self.name(name));
        for (currency, amount) in totals {
            // Three upper-case letters: a name that needs no escape either.
            let out = &mut *object.out;
            if !object.empty {
                out.push(b',');
            }
            object.empty = false;
            string(out, currency.as_str());
            out.push(b':');
            let _ = CompactFormatter.write_i64(out, *amount);
        }
        object.end();
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// `value` as a JSON string, escaped exactly as serde_json escapes it.
fn string(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    let bytes = value.as_bytes();
    // One pass without branches per byte (it vectorises); escapes are rare.
    let plain = bytes.iter().fold(true, |plain, &byte| {
        plain & (byte >= 0x20 && byte != b'"' && byte != b'\\')
    });
    if plain {
        out.extend_from_slice(bytes);
    } else {
        let mut start = 0;
        for (at, &byte) in bytes.iter().enumerate() {
            let escape: &[u8] = match byte {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                0x08 => b"\\b",
                0x0c => b"\\f",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x00..=0x1f => {
                    out.extend_from_slice(&bytes[start..at]);
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[usize::from(byte >> 4)]);
                    out.push(HEX[usize::from(byte & 0xf)]);
                    start = at + 1;
                    continue;
                }
                _ => continue,
            };
            out.extend_from_slice(&bytes[start..at]);
            out.extend_from_slice(escape);
            start = at + 1;
        }
        out.extend_from_slice(&bytes[start..]);
    }
    out.push(b'"');
}

/// `cx.enriched`, field for field as `proto::EnrichedEvent`.
pub(super) struct Enriched<'a> {
    pub event_id: &'a str,
    pub source_event_id: &'a str,
    pub customer_id: &'a str,
    pub kind: &'static str,
    pub occurred_at: EventTime,
    pub source_topic: &'a str,
    pub source_partition: i32,
    pub source_offset: i64,
    pub order_id: Option<&'a str>,
    pub ticket_id: Option<&'a str>,
    pub survey_id: Option<&'a str>,
    pub amount_minor: Option<i64>,
    pub currency: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub score: Option<i64>,
    pub scale_max: Option<i64>,
    pub context: Context,
}

/// `proto::ProfileContext`.
pub(super) struct Context {
    pub segment: &'static str,
    pub lifecycle: &'static str,
    /// Currency codes serialise as strings, in code order as the message's `BTreeMap<String, _>`.
    pub net_value_minor: BTreeMap<Currency, i64>,
    pub last_nps_category: Option<&'static str>,
    pub open_tickets: u64,
}

/// `cx.signals`, field for field as `proto::Signal`.
pub(super) struct Signal<'a> {
    pub event_id: &'a str,
    pub kind: &'static str,
    pub customer_id: &'a str,
    pub occurred_at: EventTime,
    pub ticket_id: Option<&'a str>,
    pub segment: &'static str,
    pub previous_segment: Option<&'static str>,
    pub lifecycle: &'static str,
}

/// `cx.profiles` and the HTTP API, field for field as `proto::Profile`.
pub(super) struct Profile<'a> {
    pub customer_id: &'a str,
    pub first_seen: EventTime,
    pub last_seen: EventTime,
    pub events: u64,
    pub orders_placed: u64,
    pub revenue_minor: BTreeMap<Currency, i64>,
    pub returned_minor: BTreeMap<Currency, i64>,
    pub net_value_minor: BTreeMap<Currency, i64>,
    pub first_purchase_at: Option<EventTime>,
    pub last_purchase_at: Option<EventTime>,
    pub mean_days_between_purchases: Option<f64>,
    pub open_tickets: u64,
    pub tickets_opened: u64,
    pub tickets_resolved: u64,
    pub mean_first_response_seconds: Option<f64>,
    pub last_nps_score: Option<i64>,
    pub last_nps_category: Option<&'static str>,
    pub last_nps_at: Option<EventTime>,
    pub last_csat_score: Option<i64>,
    pub last_csat_scale_max: Option<i64>,
    pub last_ces_score: Option<i64>,
    pub last_ces_scale_max: Option<i64>,
    pub segment: &'static str,
    pub lifecycle: &'static str,
    pub updated_at: EventTime,
}

impl WriteJson for Enriched<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut object = Object::begin(out);
        object.str("event_id", self.event_id);
        object.str("source_event_id", self.source_event_id);
        object.str("customer_id", self.customer_id);
        object.str("type", self.kind);
        object.time("occurred_at", self.occurred_at);
        object.str("source_topic", self.source_topic);
        object.int("source_partition", self.source_partition.into());
        object.int("source_offset", self.source_offset);
        // The kind's own fields: absent, not null, when the kind has none.
        let strings = [
            ("order_id", self.order_id),
            ("ticket_id", self.ticket_id),
            ("survey_id", self.survey_id),
        ];
        for (name, value) in strings {
            if let Some(value) = value {
                object.str(name, value);
            }
        }
        if let Some(amount) = self.amount_minor {
            object.int("amount_minor", amount);
        }
        if let Some(currency) = self.currency {
            object.str("currency", currency);
        }
        if let Some(channel) = self.channel {
            object.str("channel", channel);
        }
        if let Some(score) = self.score {
            object.int("score", score);
        }
        if let Some(scale_max) = self.scale_max {
            object.int("scale_max", scale_max);
        }
        let context = &self.context;
        let mut inner = Object::begin(object.name("context"));
        inner.str("segment", context.segment);
        inner.str("lifecycle", context.lifecycle);
        inner.money("net_value_minor", &context.net_value_minor);
        inner.optional_str("last_nps_category", context.last_nps_category);
        inner.unsigned("open_tickets", context.open_tickets);
        inner.end();
        object.end();
    }
}

impl WriteJson for Signal<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut object = Object::begin(out);
        object.str("event_id", self.event_id);
        object.str("type", self.kind);
        object.str("customer_id", self.customer_id);
        object.time("occurred_at", self.occurred_at);
        object.optional_str("ticket_id", self.ticket_id);
        object.str("segment", self.segment);
        object.optional_str("previous_segment", self.previous_segment);
        object.str("lifecycle", self.lifecycle);
        object.end();
    }
}

impl WriteJson for Profile<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut object = Object::begin(out);
        object.str("customer_id", self.customer_id);
        object.time("first_seen", self.first_seen);
        object.time("last_seen", self.last_seen);
        object.unsigned("events", self.events);
        object.unsigned("orders_placed", self.orders_placed);
        object.money("revenue_minor", &self.revenue_minor);
        object.money("returned_minor", &self.returned_minor);
        object.money("net_value_minor", &self.net_value_minor);
        object.optional_time("first_purchase_at", self.first_purchase_at);
        object.optional_time("last_purchase_at", self.last_purchase_at);
        object.optional_float(
            "mean_days_between_purchases",
            self.mean_days_between_purchases,
        );
        object.unsigned("open_tickets", self.open_tickets);
        object.unsigned("tickets_opened", self.tickets_opened);
        object.unsigned("tickets_resolved", self.tickets_resolved);
        object.optional_float(
            "mean_first_response_seconds",
            self.mean_first_response_seconds,
        );
        object.optional_int("last_nps_score", self.last_nps_score);
        object.optional_str("last_nps_category", self.last_nps_category);
        object.optional_time("last_nps_at", self.last_nps_at);
        object.optional_int("last_csat_score", self.last_csat_score);
        object.optional_int("last_csat_scale_max", self.last_csat_scale_max);
        object.optional_int("last_ces_score", self.last_ces_score);
        object.optional_int("last_ces_scale_max", self.last_ces_scale_max);
        object.str("segment", self.segment);
        object.str("lifecycle", self.lifecycle);
        object.time("updated_at", self.updated_at);
        object.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte value, alone and inside text, escapes as serde_json escapes it.
    #[test]
    fn strings_escape_as_serde_json_does() {
        let mut texts: Vec<String> = (0u8..=127)
            .map(|byte| char::from(byte).to_string())
            .collect();
        texts.extend(
            [
                "",
                "plain",
                "a\"b\\c\nd\u{1}e\u{7f}",
                "caf\u{e9} \u{1F600}",
                "\t\r\u{8}\u{c}",
            ]
            .map(String::from),
        );
        for text in texts {
            let mut ours = Vec::new();
            string(&mut ours, &text);
            assert_eq!(ours, serde_json::to_vec(&text).unwrap(), "{text:?}");
        }
    }
}
