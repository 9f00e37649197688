//! The rules of SPEC section 1, applied to a [`RawEvent`] of a known source.

use std::time::Duration;

use super::{DecodeError, RawEvent, RawTime, Text};
use crate::event::{
    Channel, Currency, CustomerId, Event, EventBody, EventId, EventTime, MinorUnits, Money,
    OrderId, Priority, Purchase, PurchaseAction, Source, Survey, SurveyId, SurveyResponse,
    TicketAction, TicketEvent, TicketId,
};

/// Longest `event_id` / `customer_id`, in bytes.
const MAX_ID_BYTES: usize = 128;
/// Longest survey comment, in bytes.
const MAX_COMMENT_BYTES: usize = 4096;

/// Turns a raw event of `source` into a typed event, or says which rule it breaks.
pub(super) fn validate(
    source: Source,
    mut raw: RawEvent<'_>,
    now: EventTime,
    max_future_skew: Duration,
) -> Result<Event, DecodeError> {
    let event_id = EventId::new(bounded_id("event_id", raw.event_id.take())?);
    let customer_id = CustomerId::new(bounded_id("customer_id", raw.customer_id.take())?);
    let occurred_at = match &raw.occurred_at {
        None => return Err(DecodeError::MissingField("occurred_at")),
        Some(RawTime::Text(text)) => EventTime::parse_rfc3339(text)
            .ok_or_else(|| DecodeError::InvalidTimestamp(text.to_string()))?,
        Some(RawTime::Instant(instant)) => {
            instant.ok_or_else(|| DecodeError::InvalidTimestamp("out-of-range Timestamp".into()))?
        }
    };
    let skew_millis = i64::try_from(max_future_skew.as_millis()).unwrap_or(i64::MAX);
    if occurred_at > now.plus_millis(skew_millis) {
        return Err(DecodeError::FutureTimestamp {
            occurred_at,
            now,
            max_future_skew_seconds: max_future_skew.as_secs(),
        });
    }
    let body = match source {
        Source::Purchases => EventBody::Purchase(purchase(raw)?),
        Source::Tickets => EventBody::Ticket(ticket(raw)?),
        Source::Surveys => EventBody::Survey(survey(raw)?),
    };
    Ok(Event {
        event_id,
        customer_id,
        occurred_at,
        body,
    })
}

fn required<'a>(field: &'static str, value: Option<Text<'a>>) -> Result<Text<'a>, DecodeError> {
    value
        .filter(|text| !text.is_empty())
        .ok_or(DecodeError::MissingField(field))
}

fn bounded_id<'a>(field: &'static str, value: Option<Text<'a>>) -> Result<Text<'a>, DecodeError> {
    let id = required(field, value)?;
    if id.len() > MAX_ID_BYTES {
        return Err(DecodeError::InvalidField {
            field,
            problem: format!("is {} bytes long; at most {MAX_ID_BYTES} allowed", id.len()),
        });
    }
    Ok(id)
}

fn purchase(raw: RawEvent<'_>) -> Result<Purchase, DecodeError> {
    let order_id = OrderId::new(required("order_id", raw.order_id)?);
    let action_name = required("action", raw.action)?;
    let money = || -> Result<Money, DecodeError> {
        let amount = raw
            .amount_minor
            .ok_or(DecodeError::MissingField("amount_minor"))?;
        if amount < 0 {
            return Err(DecodeError::NegativeAmount(amount));
        }
        let code = required("currency", raw.currency.clone())?;
        let currency = Currency::parse(&code)
            .ok_or_else(|| DecodeError::InvalidCurrency(code.into_owned()))?;
        Ok(Money {
            amount: MinorUnits(amount),
            currency,
        })
    };
    let action = match &*action_name {
        "placed" => PurchaseAction::Placed { amount: money()? },
        "returned" => PurchaseAction::Returned { amount: money()? },
        "fulfilled" => {
            // Optional here, but an amount that is given must still be valid money.
            if raw.amount_minor.is_some() {
                money()?;
            }
            PurchaseAction::Fulfilled {
                complete_first_shipment: raw
                    .complete_first_shipment
                    .ok_or(DecodeError::MissingField("complete_first_shipment"))?,
            }
        }
        _ => return Err(DecodeError::UnknownAction(action_name.into_owned())),
    };
    let items = match raw.items {
        None => None,
        Some(items) => Some(u32::try_from(items).map_err(|_| DecodeError::InvalidField {
            field: "items",
            problem: format!("is {items}; must be between 0 and {}", u32::MAX),
        })?),
    };
    Ok(Purchase {
        order_id,
        action,
        items,
        channel: raw
            .channel
            .filter(|channel| !channel.is_empty())
            .map(Text::into_owned),
    })
}

fn ticket(raw: RawEvent<'_>) -> Result<TicketEvent, DecodeError> {
    let ticket_id = TicketId::new(required("ticket_id", raw.ticket_id)?);
    let action_name = required("action", raw.action)?;
    let channel = match raw.channel {
        None => None,
        Some(name) => Some(
            Channel::parse(&name).ok_or_else(|| DecodeError::UnknownChannel(name.into_owned()))?,
        ),
    };
    let priority = match raw.priority {
        None => None,
        Some(name) => Some(
            Priority::parse(&name)
                .ok_or_else(|| DecodeError::UnknownPriority(name.into_owned()))?,
        ),
    };
    let action = match &*action_name {
        "opened" => TicketAction::Opened {
            channel: channel.ok_or(DecodeError::MissingField("channel"))?,
            priority,
        },
        "agent_replied" => TicketAction::AgentReplied,
        "customer_replied" => TicketAction::CustomerReplied,
        "resolved" => TicketAction::Resolved,
        "reopened" => TicketAction::Reopened,
        _ => return Err(DecodeError::UnknownAction(action_name.into_owned())),
    };
    Ok(TicketEvent { ticket_id, action })
}

fn survey(raw: RawEvent<'_>) -> Result<Survey, DecodeError> {
    let survey_id = SurveyId::new(required("survey_id", raw.survey_id)?);
    let kind = required("kind", raw.kind)?;
    let score = raw.score.ok_or(DecodeError::MissingField("score"))?;
    let (kind, default_scale, allowed, allowed_text, min): (&'static str, i64, &[i64], _, i64) =
        match &*kind {
            "nps" => ("nps", 10, &[10], "10", 0),
            "csat" => ("csat", 5, &[3, 5, 7, 10], "3, 5, 7, 10", 1),
            "ces" => ("ces", 7, &[5, 7], "5, 7", 1),
            _ => return Err(DecodeError::UnknownKind(kind.into_owned())),
        };
    let scale_max = raw.scale_max.unwrap_or(default_scale);
    if !allowed.contains(&scale_max) {
        return Err(DecodeError::InvalidScale {
            scale_max,
            kind,
            allowed: allowed_text,
        });
    }
    if !(min..=scale_max).contains(&score) {
        return Err(DecodeError::ScoreOutOfRange {
            score,
            min,
            max: scale_max,
            kind,
        });
    }
    // Both fit in u8: scale_max <= 10 and score is within 0..=scale_max.
    let (score, scale_max) = (score as u8, scale_max as u8);
    let response = match kind {
        "nps" => SurveyResponse::Nps { score },
        "csat" => SurveyResponse::Csat { score, scale_max },
        _ => SurveyResponse::Ces { score, scale_max },
    };
    if let Some(comment) = &raw.comment {
        if comment.len() > MAX_COMMENT_BYTES {
            return Err(DecodeError::InvalidField {
                field: "comment",
                problem: format!(
                    "is {} bytes long; at most {MAX_COMMENT_BYTES} allowed",
                    comment.len()
                ),
            });
        }
    }
    Ok(Survey {
        survey_id,
        response,
        comment: raw.comment.map(Text::into_owned),
        ticket_id: raw.ticket_id.filter(|id| !id.is_empty()).map(TicketId::new),
        order_id: raw.order_id.filter(|id| !id.is_empty()).map(OrderId::new),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::json;

    const NOW: &str = "2026-06-01T12:00:00Z";

    fn check(source: Source, json: &str) -> Result<Event, DecodeError> {
        let now = EventTime::parse_rfc3339(NOW).unwrap();
        validate(
            source,
            json::parse(json.as_bytes())?,
            now,
            Duration::from_secs(3600),
        )
    }

    fn reason(source: Source, json: &str) -> &'static str {
        match check(source, json) {
            Ok(event) => panic!("accepted {json}: {event:?}"),
            Err(error) => error.reason(),
        }
    }

    const COMMON: &str =
        r#""event_id":"e1","customer_id":"c1","occurred_at":"2026-06-01T10:00:00Z""#;

    #[test]
    fn valid_events_of_every_kind_decode() {
        let placed = check(
            Source::Purchases,
            &format!(r#"{{{COMMON},"order_id":"o1","action":"placed","amount_minor":1999,"currency":"EUR","items":2}}"#),
        )
        .unwrap();
        assert_eq!(placed.type_name(), "purchase.placed");
        let opened = check(
            Source::Tickets,
            &format!(r#"{{{COMMON},"ticket_id":"t1","action":"opened","channel":"chat","priority":"high"}}"#),
        )
        .unwrap();
        assert_eq!(opened.type_name(), "ticket.opened");
        let csat = check(
            Source::Surveys,
            &format!(r#"{{{COMMON},"survey_id":"s1","kind":"csat","score":3,"scale_max":3}}"#),
        )
        .unwrap();
        assert_eq!(
            csat.body,
            EventBody::Survey(Survey {
                survey_id: SurveyId::new("s1"),
                response: SurveyResponse::Csat {
                    score: 3,
                    scale_max: 3
                },
                comment: None,
                ticket_id: None,
                order_id: None,
            })
        );
    }

    #[test]
    fn every_rule_has_its_reason() {
        let p = Source::Purchases;
        let t = Source::Tickets;
        let s = Source::Surveys;
        let cases: &[(Source, String, &str)] = &[
            (p, r#"{"customer_id":"c1","occurred_at":"2026-06-01T10:00:00Z","order_id":"o","action":"fulfilled","complete_first_shipment":true}"#.into(), "missing_field"),
            (p, format!(r#"{{"event_id":"{}","customer_id":"c1","occurred_at":"2026-06-01T10:00:00Z"}}"#, "x".repeat(129)), "invalid_field"),
            (p, r#"{"event_id":"e","customer_id":"c1","occurred_at":"yesterday"}"#.into(), "invalid_timestamp"),
            (p, r#"{"event_id":"e","customer_id":"c1","occurred_at":"2026-06-01T13:00:01Z","order_id":"o","action":"placed","amount_minor":1,"currency":"EUR"}"#.into(), "future_timestamp"),
            (p, format!(r#"{{{COMMON},"order_id":"o","action":"bought"}}"#), "unknown_action"),
            (p, format!(r#"{{{COMMON},"order_id":"o","action":"placed","amount_minor":-5,"currency":"EUR"}}"#), "negative_amount"),
            (p, format!(r#"{{{COMMON},"order_id":"o","action":"placed","amount_minor":5,"currency":"eur"}}"#), "invalid_currency"),
            (p, format!(r#"{{{COMMON},"order_id":"o","action":"placed","amount_minor":5}}"#), "missing_field"),
            (p, format!(r#"{{{COMMON},"order_id":"o","action":"returned"}}"#), "missing_field"),
            (p, format!(r#"{{{COMMON},"order_id":"o","action":"fulfilled"}}"#), "missing_field"),
            (p, format!(r#"{{{COMMON},"order_id":"o","action":"fulfilled","complete_first_shipment":true,"amount_minor":-1,"currency":"EUR"}}"#), "negative_amount"),
            (p, format!(r#"{{{COMMON},"order_id":"o","action":"placed","amount_minor":5,"currency":"EUR","items":-1}}"#), "invalid_field"),
            (t, format!(r#"{{{COMMON},"ticket_id":"t","action":"opened"}}"#), "missing_field"),
            (t, format!(r#"{{{COMMON},"ticket_id":"t","action":"opened","channel":"fax"}}"#), "unknown_channel"),
            (t, format!(r#"{{{COMMON},"ticket_id":"t","action":"opened","channel":"web","priority":"meh"}}"#), "unknown_priority"),
            (t, format!(r#"{{{COMMON},"ticket_id":"t","action":"closed"}}"#), "unknown_action"),
            (s, format!(r#"{{{COMMON},"survey_id":"s","kind":"nps","score":11}}"#), "score_out_of_range"),
            (s, format!(r#"{{{COMMON},"survey_id":"s","kind":"nps","score":-1}}"#), "score_out_of_range"),
            (s, format!(r#"{{{COMMON},"survey_id":"s","kind":"csat","score":0}}"#), "score_out_of_range"),
            (s, format!(r#"{{{COMMON},"survey_id":"s","kind":"csat","score":6}}"#), "score_out_of_range"),
            (s, format!(r#"{{{COMMON},"survey_id":"s","kind":"ces","score":8}}"#), "score_out_of_range"),
            (s, format!(r#"{{{COMMON},"survey_id":"s","kind":"nps","score":5,"scale_max":5}}"#), "invalid_scale"),
            (s, format!(r#"{{{COMMON},"survey_id":"s","kind":"csat","score":2,"scale_max":4}}"#), "invalid_scale"),
            (s, format!(r#"{{{COMMON},"survey_id":"s","kind":"ces","score":2,"scale_max":10}}"#), "invalid_scale"),
            (s, format!(r#"{{{COMMON},"survey_id":"s","kind":"ces"}}"#), "missing_field"),
            (s, format!(r#"{{{COMMON},"survey_id":"s","kind":"mood","score":1}}"#), "unknown_kind"),
            (s, format!(r#"{{{COMMON},"survey_id":"s","kind":"nps","score":1,"comment":"{}"}}"#, "x".repeat(4097)), "invalid_field"),
        ];
        for (source, json, expected) in cases {
            assert_eq!(reason(*source, json), *expected, "{json}");
        }
    }

    #[test]
    fn survey_scales_default_per_kind() {
        let ces = check(
            Source::Surveys,
            &format!(r#"{{{COMMON},"survey_id":"s","kind":"ces","score":7}}"#),
        )
        .unwrap();
        let EventBody::Survey(survey) = ces.body else {
            panic!()
        };
        assert_eq!(
            survey.response,
            SurveyResponse::Ces {
                score: 7,
                scale_max: 7
            }
        );
    }
}
