//! Each output record written per event or per flush, declared once: the
//! declaration drives both its JSON (written straight from the domain types)
//! and its Protobuf message (`proto/cxpulse/v1/outputs.proto`).
//!
//! **To add a field, add one line here**, in the place of the field in the
//! message (the JSON keeps the message's order):
//!
//! ```text
//! name: Type = expression of the arguments of `from`,
//! ```
//!
//! `name` is the message's field (`r#type` for `type`); `Type` says how it is
//! written and what Protobuf type it becomes ([`super::field`]): `&'a str`
//! (`string`), [`EventTime`] (an RFC 3339 `string`), `u64`, `i64`, `i32`,
//! `f64`, [`Money`] (`map<string, int64>`), `Option<_>` of those (`optional`,
//! `null` in JSON when absent), [`OmitNone<_>`] (`optional`, left out of the
//! JSON when absent), or another record declared here (a message field). The
//! expression is converted with `Into`, so `u32` counters go in as they are.
//! Values used by several fields are computed once in the `let`s of `from`.
//! The field must of course be added to the `.proto` too; the byte-equality
//! test in `output` (this JSON against serde_json's of the message) checks
//! the two agree.

use super::field::{output_record, Money, OmitNone};
use super::SourcePosition;
use crate::event::{Event, EventBody, EventTime, PurchaseAction, SurveyResponse, TicketAction};
use crate::proto;
use crate::task::signal;
use crate::task::Profile as CustomerProfile;
use crate::window::result::mean_seconds;

output_record! {
    /// `cx.profiles` and the HTTP API's profile.
    Profile<'a> => proto::Profile,
    from(profile: &'a CustomerProfile) {
        let last_nps = profile.last_nps();
        let last_csat = profile.last_csat();
        let last_ces = profile.last_ces();
    }
    fields {
        customer_id: &'a str = profile.customer_id.as_str(),
        first_seen: EventTime = profile.first_seen.get(),
        last_seen: EventTime = profile.last_seen.get(),
        events: u64 = profile.events,
        orders_placed: u64 = profile.orders_placed,
        revenue_minor: Money = profile.revenue_minor(),
        returned_minor: Money = profile.returned_minor(),
        net_value_minor: Money = profile.net_value_minor(),
        first_purchase_at: Option<EventTime> = profile.first_purchase_at.map(|at| at.get()),
        last_purchase_at: Option<EventTime> = profile.last_purchase_at.map(|at| at.get()),
        mean_days_between_purchases: Option<f64> = profile.mean_days_between_purchases(),
        open_tickets: u64 = profile.open_tickets,
        tickets_opened: u64 = profile.tickets_opened,
        tickets_resolved: u64 = profile.tickets_resolved,
        mean_first_response_seconds: Option<f64> = mean_seconds(
            profile.first_response_millis_sum,
            profile.first_responses.into(),
        ),
        last_nps_score: Option<i64> = last_nps.map(|last| i64::from(last.score)),
        last_nps_category: Option<&'a str> = profile.last_nps_category().map(|c| c.name()),
        last_nps_at: Option<EventTime> = last_nps.map(|last| last.at),
        last_csat_score: Option<i64> = last_csat.map(|last| i64::from(last.score)),
        last_csat_scale_max: Option<i64> = last_csat.map(|last| i64::from(last.scale_max)),
        last_ces_score: Option<i64> = last_ces.map(|last| i64::from(last.score)),
        last_ces_scale_max: Option<i64> = last_ces.map(|last| i64::from(last.scale_max)),
        segment: &'a str = profile.segment.name(),
        lifecycle: &'a str = profile.lifecycle.name(),
        updated_at: EventTime = profile.updated_at.get(),
    }
}

output_record! {
    /// The profile context of an enriched event.
    ProfileContext<'a> => proto::ProfileContext,
    from(profile: &'a CustomerProfile) {}
    fields {
        segment: &'a str = profile.segment.name(),
        lifecycle: &'a str = profile.lifecycle.name(),
        net_value_minor: Money = profile.net_value_minor(),
        last_nps_category: Option<&'a str> = profile.last_nps_category().map(|c| c.name()),
        open_tickets: u64 = profile.open_tickets,
    }
}

output_record! {
    /// `cx.enriched`: one valid event with the profile context after it was
    /// applied; the fields of other kinds of event are left out.
    Enriched<'a> => proto::EnrichedEvent,
    from(
        event: &'a Event,
        profile: &'a CustomerProfile,
        position: &'a SourcePosition,
        event_id: &'a str,
    ) {
        let kind = KindFields::of(event);
    }
    fields {
        event_id: &'a str = event_id,
        source_event_id: &'a str = event.event_id.as_str(),
        customer_id: &'a str = event.customer_id.as_str(),
        r#type: &'a str = event.type_name(),
        occurred_at: EventTime = event.occurred_at,
        source_topic: &'a str = &*position.topic,
        source_partition: i32 = position.partition,
        source_offset: i64 = position.offset,
        order_id: OmitNone<&'a str> = kind.order_id,
        ticket_id: OmitNone<&'a str> = kind.ticket_id,
        survey_id: OmitNone<&'a str> = kind.survey_id,
        amount_minor: OmitNone<i64> = kind.amount_minor,
        currency: OmitNone<&'a str> = kind.currency,
        channel: OmitNone<&'a str> = kind.channel,
        score: OmitNone<i64> = kind.score,
        scale_max: OmitNone<i64> = kind.scale_max,
        context: ProfileContext<'a> = ProfileContext::new(profile),
    }
}

output_record! {
    /// `cx.signals`.
    Signal<'a> => proto::Signal,
    from(signal: &'a signal::Signal, event_id: &'a str) {}
    fields {
        event_id: &'a str = event_id,
        r#type: &'a str = signal.kind.name(),
        customer_id: &'a str = signal.customer_id.as_str(),
        occurred_at: EventTime = signal.at,
        ticket_id: Option<&'a str> = signal.ticket_id.as_ref().map(|id| id.as_str()),
        segment: &'a str = signal.segment.name(),
        previous_segment: Option<&'a str> = signal.previous_segment.map(|s| s.name()),
        lifecycle: &'a str = signal.lifecycle.name(),
    }
}

/// The fields of an enriched event that only some kinds of event have.
#[derive(Default)]
struct KindFields<'a> {
    order_id: Option<&'a str>,
    ticket_id: Option<&'a str>,
    survey_id: Option<&'a str>,
    amount_minor: Option<i64>,
    currency: Option<&'a str>,
    channel: Option<&'a str>,
    score: Option<i64>,
    scale_max: Option<i64>,
}

impl<'a> KindFields<'a> {
    /// The fields `event`'s kind has.
    fn of(event: &'a Event) -> Self {
        match &event.body {
            EventBody::Purchase(purchase) => {
                let amount = match &purchase.action {
                    PurchaseAction::Placed { amount } | PurchaseAction::Returned { amount } => {
                        Some(amount)
                    }
                    PurchaseAction::Fulfilled { .. } => None,
                };
                KindFields {
                    order_id: Some(purchase.order_id.as_str()),
                    channel: purchase.channel.as_deref(),
                    amount_minor: amount.map(|amount| amount.amount.0),
                    currency: amount.map(|amount| amount.currency.as_str()),
                    ..KindFields::default()
                }
            }
            EventBody::Ticket(ticket) => KindFields {
                ticket_id: Some(ticket.ticket_id.as_str()),
                channel: match ticket.action {
                    TicketAction::Opened { channel, .. } => Some(channel.name()),
                    _ => None,
                },
                ..KindFields::default()
            },
            EventBody::Survey(survey) => {
                let (score, scale_max) = match survey.response {
                    SurveyResponse::Nps { score } => (score, 10),
                    SurveyResponse::Csat { score, scale_max }
                    | SurveyResponse::Ces { score, scale_max } => (score, scale_max),
                };
                KindFields {
                    survey_id: Some(survey.survey_id.as_str()),
                    ticket_id: survey.ticket_id.as_ref().map(|id| id.as_str()),
                    order_id: survey.order_id.as_ref().map(|id| id.as_str()),
                    score: Some(i64::from(score)),
                    scale_max: Some(i64::from(scale_max)),
                    ..KindFields::default()
                }
            }
        }
    }
}
