//! Protobuf values: the messages of `proto/cxpulse/v1/events.proto`, plain or
//! framed in the schema-registry wire format (magic byte 0, 4-byte schema id,
//! message indexes, then the message).

use prost::Message;

use super::{DecodeError, RawEvent, RawTime, Text};
use crate::event::{EventTime, Source};
use crate::proto;

/// Parses a Protobuf value of the message type of `source`.
pub(super) fn parse(source: Source, value: &[u8]) -> Result<RawEvent<'static>, DecodeError> {
    let message = strip_schema_registry_frame(value)?;
    let malformed = |error: prost::DecodeError| DecodeError::MalformedProtobuf(error.to_string());
    Ok(match source {
        Source::Purchases => {
            let event = proto::PurchaseEvent::decode(message).map_err(malformed)?;
            RawEvent {
                event_id: non_empty(event.event_id),
                customer_id: non_empty(event.customer_id),
                occurred_at: event.occurred_at.map(instant),
                order_id: non_empty(event.order_id),
                action: enum_name(event.action, "PURCHASE_ACTION_", |value| {
                    proto::PurchaseAction::try_from(value)
                        .ok()
                        .map(|v| v.as_str_name())
                }),
                amount_minor: event.amount_minor,
                currency: event.currency.map(Text::from),
                items: event.items,
                complete_first_shipment: event.complete_first_shipment,
                channel: event.channel.map(Text::from),
                ..RawEvent::default()
            }
        }
        Source::Tickets => {
            let event = proto::TicketEvent::decode(message).map_err(malformed)?;
            RawEvent {
                event_id: non_empty(event.event_id),
                customer_id: non_empty(event.customer_id),
                occurred_at: event.occurred_at.map(instant),
                ticket_id: non_empty(event.ticket_id),
                action: enum_name(event.action, "TICKET_ACTION_", |value| {
                    proto::TicketAction::try_from(value)
                        .ok()
                        .map(|v| v.as_str_name())
                }),
                channel: enum_name(event.channel, "TICKET_CHANNEL_", |value| {
                    proto::TicketChannel::try_from(value)
                        .ok()
                        .map(|v| v.as_str_name())
                }),
                priority: enum_name(event.priority, "TICKET_PRIORITY_", |value| {
                    proto::TicketPriority::try_from(value)
                        .ok()
                        .map(|v| v.as_str_name())
                }),
                ..RawEvent::default()
            }
        }
        Source::Surveys => {
            let event = proto::SurveyEvent::decode(message).map_err(malformed)?;
            RawEvent {
                event_id: non_empty(event.event_id),
                customer_id: non_empty(event.customer_id),
                occurred_at: event.occurred_at.map(instant),
                survey_id: non_empty(event.survey_id),
                kind: enum_name(event.kind, "SURVEY_KIND_", |value| {
                    proto::SurveyKind::try_from(value)
                        .ok()
                        .map(|v| v.as_str_name())
                }),
                score: event.score,
                scale_max: event.scale_max,
                comment: event.comment.map(Text::from),
                ticket_id: event.ticket_id.map(Text::from),
                order_id: event.order_id.map(Text::from),
                ..RawEvent::default()
            }
        }
    })
}

/// Removes a schema-registry frame when present.
///
/// A plain Protobuf message never starts with byte 0 (field number 0 is
/// invalid), so a leading 0 always means a frame.
pub fn strip_schema_registry_frame(value: &[u8]) -> Result<&[u8], DecodeError> {
    let Some((&0, rest)) = value.split_first() else {
        return Ok(value);
    };
    let truncated = || DecodeError::MalformedProtobuf("truncated schema-registry frame".into());
    let mut rest = rest.get(4..).ok_or_else(truncated)?;
    // Message indexes: a zig-zag varint count, then that many zig-zag varints;
    // the common [0] is written as the single count 0.
    let count = read_zigzag_varint(&mut rest).ok_or_else(truncated)?;
    if !(0..=64).contains(&count) {
        return Err(DecodeError::MalformedProtobuf(format!(
            "schema-registry frame has {count} message indexes"
        )));
    }
    for _ in 0..count {
        read_zigzag_varint(&mut rest).ok_or_else(truncated)?;
    }
    Ok(rest)
}

fn read_zigzag_varint(input: &mut &[u8]) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    None
}

/// Proto3 strings are "" when unset; the SPEC calls that missing.
fn non_empty(text: String) -> Option<Text<'static>> {
    (!text.is_empty()).then(|| Text::from(text))
}

/// Maps an enum number to the SPEC's lower-case name: 0 is unset, and an
/// unknown number keeps its number so the error can show it.
fn enum_name(
    value: i32,
    prefix: &str,
    name_of: impl Fn(i32) -> Option<&'static str>,
) -> Option<Text<'static>> {
    if value == 0 {
        return None;
    }
    Some(Text::from(match name_of(value) {
        Some(name) => name.trim_start_matches(prefix).to_ascii_lowercase(),
        None => format!("enum value {value}"),
    }))
}

fn instant(timestamp: prost_types::Timestamp) -> RawTime<'static> {
    let in_range = (0..1_000_000_000).contains(&timestamp.nanos);
    let millis = timestamp
        .seconds
        .checked_mul(1000)
        .and_then(|millis| millis.checked_add(i64::from(timestamp.nanos / 1_000_000)));
    RawTime::Instant(millis.filter(|_| in_range).map(EventTime::from_millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_registry_frames_are_stripped() {
        let message = proto::SurveyEvent {
            event_id: "e1".into(),
            ..Default::default()
        }
        .encode_to_vec();
        // Single 0 index.
        let mut framed = vec![0, 0, 0, 0, 42, 0];
        framed.extend_from_slice(&message);
        assert_eq!(strip_schema_registry_frame(&framed).unwrap(), &message[..]);
        // Explicit list [1, 2]: count 2 -> zigzag 4, then 2 -> 2... zigzag(1)=2, zigzag(2)=4.
        let mut framed = vec![0, 0, 0, 0, 42, 4, 2, 4];
        framed.extend_from_slice(&message);
        assert_eq!(strip_schema_registry_frame(&framed).unwrap(), &message[..]);
        // Plain message untouched.
        assert_eq!(strip_schema_registry_frame(&message).unwrap(), &message[..]);
        // Truncated.
        assert_eq!(
            strip_schema_registry_frame(&[0, 0, 1])
                .unwrap_err()
                .reason(),
            "malformed_protobuf"
        );
    }

    #[test]
    fn enum_numbers_map_to_spec_names() {
        let raw = parse(
            Source::Tickets,
            &proto::TicketEvent {
                action: proto::TicketAction::AgentReplied as i32,
                channel: 77,
                ..Default::default()
            }
            .encode_to_vec(),
        )
        .unwrap();
        assert_eq!(raw.action.as_deref(), Some("agent_replied"));
        assert_eq!(raw.channel.as_deref(), Some("enum value 77"));
        assert_eq!(raw.priority, None);
    }

    #[test]
    fn garbage_is_malformed_protobuf() {
        let error = parse(Source::Purchases, &[0x0a, 0xff, 0xff]).unwrap_err();
        assert_eq!(error.reason(), "malformed_protobuf");
    }
}
