//! Encodes typed events as producers would write them: JSON objects with the
//! SPEC's field names, or the Protobuf messages of `events.proto`.

use prost::Message;
use serde_json::{json, Map, Value};

use crate::decode::Format;
use crate::event::{Event, EventBody, PurchaseAction, SurveyResponse, TicketAction};
use crate::proto;

/// The value bytes of `event` in `format`.
pub fn encode(event: &Event, format: Format) -> Vec<u8> {
    match format {
        Format::Json => serde_json::to_vec(&to_json(event)).unwrap_or_default(),
        Format::Protobuf => to_protobuf(event),
    }
}

/// The JSON object of an event.
pub fn to_json(event: &Event) -> Value {
    let mut object = Map::new();
    object.insert("event_id".into(), json!(event.event_id.as_str()));
    object.insert("customer_id".into(), json!(event.customer_id.as_str()));
    object.insert("occurred_at".into(), json!(event.occurred_at.to_rfc3339()));
    let mut put = |key: &str, value: Value| {
        object.insert(key.into(), value);
    };
    match &event.body {
        EventBody::Purchase(purchase) => {
            put("order_id", json!(purchase.order_id.as_str()));
            match purchase.action {
                PurchaseAction::Placed { amount } | PurchaseAction::Returned { amount } => {
                    let action = if matches!(purchase.action, PurchaseAction::Placed { .. }) {
                        "placed"
                    } else {
                        "returned"
                    };
                    put("action", json!(action));
                    put("amount_minor", json!(amount.amount.0));
                    put("currency", json!(amount.currency.as_str()));
                }
                PurchaseAction::Fulfilled {
                    complete_first_shipment,
                } => {
                    put("action", json!("fulfilled"));
                    put("complete_first_shipment", json!(complete_first_shipment));
                }
            }
            if let Some(items) = purchase.items {
                put("items", json!(items));
            }
            if let Some(channel) = &purchase.channel {
                put("channel", json!(channel));
            }
        }
        EventBody::Ticket(ticket) => {
            put("ticket_id", json!(ticket.ticket_id.as_str()));
            let action = event.type_name().trim_start_matches("ticket.");
            put("action", json!(action));
            if let TicketAction::Opened { channel, .. } = ticket.action {
                put("channel", json!(channel.name()));
            }
        }
        EventBody::Survey(survey) => {
            put("survey_id", json!(survey.survey_id.as_str()));
            let (kind, score, scale_max) = survey_parts(survey.response);
            put("kind", json!(kind));
            put("score", json!(score));
            put("scale_max", json!(scale_max));
            if let Some(comment) = &survey.comment {
                put("comment", json!(comment));
            }
            if let Some(ticket_id) = &survey.ticket_id {
                put("ticket_id", json!(ticket_id.as_str()));
            }
        }
    }
    Value::Object(object)
}

fn survey_parts(response: SurveyResponse) -> (&'static str, u8, u8) {
    match response {
        SurveyResponse::Nps { score } => ("nps", score, 10),
        SurveyResponse::Csat { score, scale_max } => ("csat", score, scale_max),
        SurveyResponse::Ces { score, scale_max } => ("ces", score, scale_max),
    }
}

/// The Protobuf message of an event.
pub fn to_protobuf(event: &Event) -> Vec<u8> {
    let millis = event.occurred_at.millis();
    let occurred_at = Some(prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    });
    let event_id = event.event_id.to_string();
    let customer_id = event.customer_id.to_string();
    match &event.body {
        EventBody::Purchase(purchase) => {
            let (action, amount, complete) = match purchase.action {
                PurchaseAction::Placed { amount } => {
                    (proto::PurchaseAction::Placed, Some(amount), None)
                }
                PurchaseAction::Returned { amount } => {
                    (proto::PurchaseAction::Returned, Some(amount), None)
                }
                PurchaseAction::Fulfilled {
                    complete_first_shipment,
                } => (
                    proto::PurchaseAction::Fulfilled,
                    None,
                    Some(complete_first_shipment),
                ),
            };
            proto::PurchaseEvent {
                event_id,
                customer_id,
                occurred_at,
                order_id: purchase.order_id.to_string(),
                action: action as i32,
                amount_minor: amount.map(|money| money.amount.0),
                currency: amount.map(|money| money.currency.to_string()),
                items: purchase.items.map(i64::from),
                complete_first_shipment: complete,
                channel: purchase.channel.clone(),
            }
            .encode_to_vec()
        }
        EventBody::Ticket(ticket) => {
            let (action, channel) = match ticket.action {
                TicketAction::Opened { channel, .. } => {
                    (proto::TicketAction::Opened, Some(channel))
                }
                TicketAction::AgentReplied => (proto::TicketAction::AgentReplied, None),
                TicketAction::CustomerReplied => (proto::TicketAction::CustomerReplied, None),
                TicketAction::Resolved => (proto::TicketAction::Resolved, None),
                TicketAction::Reopened => (proto::TicketAction::Reopened, None),
            };
            let channel = channel.map_or(0, |channel| {
                proto::TicketChannel::from_str_name(&format!(
                    "TICKET_CHANNEL_{}",
                    channel.name().to_ascii_uppercase()
                ))
                .map_or(0, |value| value as i32)
            });
            proto::TicketEvent {
                event_id,
                customer_id,
                occurred_at,
                ticket_id: ticket.ticket_id.to_string(),
                action: action as i32,
                channel,
                priority: 0,
            }
            .encode_to_vec()
        }
        EventBody::Survey(survey) => {
            let (kind, score, scale_max) = survey_parts(survey.response);
            let kind = match kind {
                "nps" => proto::SurveyKind::Nps,
                "csat" => proto::SurveyKind::Csat,
                _ => proto::SurveyKind::Ces,
            };
            proto::SurveyEvent {
                event_id,
                customer_id,
                occurred_at,
                survey_id: survey.survey_id.to_string(),
                kind: kind as i32,
                score: Some(i64::from(score)),
                scale_max: Some(i64::from(scale_max)),
                comment: survey.comment.clone(),
                ticket_id: survey.ticket_id.as_ref().map(|id| id.to_string()),
                order_id: survey.order_id.as_ref().map(|id| id.to_string()),
            }
            .encode_to_vec()
        }
    }
}
