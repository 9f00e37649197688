//! What real producers get wrong, mixed into the demo's stream so that every
//! part of the product shows: records that fail validation (dead letters of
//! several reasons), redeliveries (de-duplicated) and events older than every
//! window (late). The population itself stays clean: tests and benchmarks
//! replay it and expect every event to be valid.

use serde_json::json;

use crate::config::Config;
use crate::decode::Format;
use crate::event::{Event, EventBody, EventId, EventTime, Source};

/// A record to produce besides the population's events.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtraRecord {
    /// Its input topic.
    pub source: Source,
    /// Record key (the customer id).
    pub key: String,
    /// Record value.
    pub value: Vec<u8>,
    /// The `content-type` header.
    pub format: Format,
}

/// Decides, event by event, which bad, repeated or late records to add.
#[derive(Debug, Clone)]
pub struct Imperfections {
    /// One invalid record and one redelivery per this many events.
    every: u64,
    /// Events seen.
    seen: u64,
    /// Invalid records produced (picks the next recipe).
    invalid: u64,
    /// Surveys seen since the stream caught up with the wall clock.
    live_surveys: u64,
    /// How far before its copy a late event is: beyond the longest window and
    /// the allowed lateness, so every window containing it was emitted.
    late_age_millis: i64,
}

/// The stream counts as caught up with the wall clock within this much (the
/// population's emission delays stay below half the allowed lateness).
const CAUGHT_UP_MILLIS: i64 = 15 * 60_000;

impl Imperfections {
    /// One invalid record and one redelivery per `every` events, and one late
    /// survey per `every / 10` live surveys, for the windows of `config`.
    pub fn new(config: &Config, every: u64) -> Self {
        let longest = config
            .windows
            .iter()
            .map(|window| crate::window::millis(window.size) + crate::window::millis(window.step))
            .max()
            .unwrap_or(0);
        let day = 86_400_000;
        Imperfections {
            every: every.max(10),
            seen: 0,
            invalid: 0,
            live_surveys: 0,
            late_age_millis: longest
                + crate::window::millis(config.processing.allowed_lateness)
                + day,
        }
    }

    /// The extra records to produce after `event` (encoded as `value` in `format`),
    /// when the wall clock reads `now`.
    pub fn after(
        &mut self,
        event: &Event,
        value: &[u8],
        format: Format,
        now: EventTime,
    ) -> Vec<ExtraRecord> {
        self.seen += 1;
        let mut extra = Vec::new();
        let key = event.customer_id.as_str().to_string();
        if self.seen % self.every == 0 {
            extra.push(self.invalid_record(event, now));
        }
        if self.seen % self.every == self.every / 2 {
            // A redelivery: the same record again.
            extra.push(ExtraRecord {
                source: event.source(),
                key: key.clone(),
                value: value.to_vec(),
                format,
            });
        }
        let live = now.millis() - event.occurred_at.millis() < CAUGHT_UP_MILLIS;
        // Only surveys go late: a late purchase would still count as activity
        // (retention) and a late ticket event would reorder its ticket.
        if live && matches!(event.body, EventBody::Survey(_)) {
            self.live_surveys += 1;
            if (self.live_surveys - 1) % (self.every / 10) == 0 {
                let mut late = event.clone();
                late.event_id = EventId::new(format!("{}-late", event.event_id.as_str()));
                late.occurred_at = event.occurred_at.plus_millis(-self.late_age_millis);
                extra.push(ExtraRecord {
                    source: Source::Surveys,
                    key,
                    value: super::wire::encode(&late, format),
                    format,
                });
            }
        }
        extra
    }

    /// The next of a few invalid records, each failing for its own reason.
    fn invalid_record(&mut self, event: &Event, now: EventTime) -> ExtraRecord {
        self.invalid += 1;
        let customer = event.customer_id.as_str();
        let id = format!("{}-invalid", event.event_id.as_str());
        let at = event.occurred_at.to_rfc3339();
        let (source, value) = match self.invalid % 6 {
            // negative_amount
            0 => (
                Source::Purchases,
                json!({"event_id": id, "customer_id": customer, "occurred_at": at,
                       "order_id": id, "action": "placed", "amount_minor": -100, "currency": "EUR"}),
            ),
            // unknown_action
            1 => (
                Source::Tickets,
                json!({"event_id": id, "customer_id": customer, "occurred_at": at,
                       "ticket_id": id, "action": "escalated"}),
            ),
            // score_out_of_range
            2 => (
                Source::Surveys,
                json!({"event_id": id, "customer_id": customer, "occurred_at": at,
                       "survey_id": id, "kind": "nps", "score": 11, "scale_max": 10}),
            ),
            // future_timestamp: a producer whose clock is two hours fast
            3 => (
                Source::Purchases,
                json!({"event_id": id, "customer_id": customer,
                       "occurred_at": now.plus_millis(2 * 3_600_000).to_rfc3339(),
                       "order_id": id, "action": "fulfilled", "complete_first_shipment": true}),
            ),
            // missing_field
            4 => (
                Source::Tickets,
                json!({"event_id": id, "customer_id": customer, "occurred_at": at,
                       "action": "opened", "channel": "email"}),
            ),
            // malformed_json: a truncated value
            _ => {
                return ExtraRecord {
                    source: Source::Surveys,
                    key: customer.to_string(),
                    value: format!("{{\"event_id\":\"{id}\",\"customer_id\":").into_bytes(),
                    format: Format::Json,
                }
            }
        };
        ExtraRecord {
            source,
            key: customer.to_string(),
            value: value.to_string().into_bytes(),
            format: Format::Json,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Decoder;
    use crate::generate::population::{Population, PopulationConfig};

    /// Every extra record is what it claims: invalid ones fail with six different
    /// reasons, redeliveries repeat an event, late copies are older than any window.
    #[test]
    fn extras_are_invalid_repeated_or_late() {
        let config = Config::default();
        let decoder = Decoder {
            max_record_bytes: config.processing.max_record_bytes,
            max_future_skew: config.processing.max_future_skew,
            formats: [Format::Json; 3],
        };
        let mut imperfections = Imperfections::new(&config, 100);
        let population = Population::new(PopulationConfig {
            customers: 50,
            visits_per_day: 50.0,
            start: EventTime::now().plus_millis(-86_400_000),
            max_disorder_millis: 1000,
            seed: 7,
        });
        let mut reasons = std::collections::BTreeSet::new();
        let (mut repeated, mut late) = (0, 0);
        for event in population.take(3000) {
            // A wall clock just after each event: the stream is live.
            let now = event.occurred_at.plus_millis(60_000);
            let value = crate::generate::wire::encode(&event, Format::Json);
            for extra in imperfections.after(&event, &value, Format::Json, now) {
                let decoded = decoder.decode(
                    extra.source,
                    Some(extra.key.as_bytes()),
                    Some(&extra.value),
                    Some(extra.format.content_type().as_bytes()),
                    now,
                );
                match decoded {
                    Err(error) => {
                        reasons.insert(error.reason());
                    }
                    Ok(decoded) if decoded == event => repeated += 1,
                    Ok(decoded) => {
                        assert!(decoded.occurred_at.millis() < now.millis() - 31 * 86_400_000);
                        late += 1;
                    }
                }
            }
        }
        assert_eq!(reasons.len(), 6, "{reasons:?}");
        assert!(
            repeated >= 10 && late >= 2,
            "{repeated} repeated, {late} late"
        );
    }
}
