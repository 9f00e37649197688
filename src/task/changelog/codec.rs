//! The changelog's values: task state to Protobuf (`proto/cxpulse/state/v1/state.proto`)
//! and back. Decoding checks what the message cannot (counts in range, known
//! enums and currencies) and names the record's key in every error.

use std::collections::BTreeMap;

use prost::Message;

use super::{bad_value, invalid, RestoreError};
use crate::event::{Channel, Currency, CustomerId, EventTime, TicketId};
use crate::proto::state as proto;
use crate::task::dedupe::{SeenEvent, SeenEvents};
use crate::task::profile::{CurrencyTotals, LastScore, MoneyTotals, Survey};
use crate::task::tickets::{TicketFlags, TicketState};
use crate::task::timers::CustomerSlot;
use crate::task::{CustomerEntry, Lifecycle, Profile, Segment, Task};
use crate::window::retention::CursorState;
use crate::window::{Aggregate, SpecProgress};

/// The instant of `millis`, as every time field holds it.
fn time(millis: i64) -> EventTime {
    EventTime::from_millis(millis)
}

fn lifecycle_to_proto(lifecycle: Lifecycle) -> proto::Lifecycle {
    match lifecycle {
        Lifecycle::Prospect => proto::Lifecycle::Prospect,
        Lifecycle::New => proto::Lifecycle::New,
        Lifecycle::Active => proto::Lifecycle::Active,
        Lifecycle::Churned => proto::Lifecycle::Churned,
        Lifecycle::Reactivated => proto::Lifecycle::Reactivated,
    }
}

fn lifecycle_from_proto(value: i32) -> Option<Lifecycle> {
    Some(match proto::Lifecycle::try_from(value).ok()? {
        proto::Lifecycle::Prospect => Lifecycle::Prospect,
        proto::Lifecycle::New => Lifecycle::New,
        proto::Lifecycle::Active => Lifecycle::Active,
        proto::Lifecycle::Churned => Lifecycle::Churned,
        proto::Lifecycle::Reactivated => Lifecycle::Reactivated,
    })
}

fn segment_to_proto(segment: Segment) -> proto::Segment {
    match segment {
        Segment::Regular => proto::Segment::Regular,
        Segment::Champion => proto::Segment::Champion,
        Segment::AtRisk => proto::Segment::AtRisk,
        Segment::Lost => proto::Segment::Lost,
    }
}

fn segment_from_proto(value: i32) -> Option<Segment> {
    Some(match proto::Segment::try_from(value).ok()? {
        proto::Segment::Regular => Segment::Regular,
        proto::Segment::Champion => Segment::Champion,
        proto::Segment::AtRisk => Segment::AtRisk,
        proto::Segment::Lost => Segment::Lost,
    })
}

fn score_to_proto(score: Option<LastScore>) -> Option<proto::LastScore> {
    score.map(|score| proto::LastScore {
        score: u32::from(score.score),
        scale_max: u32::from(score.scale_max),
        at: score.at.millis(),
    })
}

fn score_from_proto(score: Option<proto::LastScore>) -> Option<Option<LastScore>> {
    match score {
        None => Some(None),
        Some(score) => Some(Some(LastScore {
            score: u8::try_from(score.score).ok()?,
            scale_max: u8::try_from(score.scale_max).ok()?,
            at: time(score.at),
        })),
    }
}

/// The `Customer` value of a customer: profile and de-duplication memory.
pub(super) fn customer_value(entry: &CustomerEntry) -> Vec<u8> {
    let profile = &entry.profile;
    let seen = entry.seen.entries();
    proto::Customer {
        first_seen: profile.first_seen.get().millis(),
        last_seen: profile.last_seen.get().millis(),
        as_of: profile.as_of.get().millis(),
        updated_at: profile.updated_at.get().millis(),
        events: profile.events.into(),
        orders_placed: profile.orders_placed.into(),
        money: profile
            .money
            .iter()
            .map(|totals| proto::CurrencyTotals {
                currency: totals.currency.as_str().to_owned(),
                placed: totals.placed,
                returned: totals.returned,
                revenue_minor: totals.revenue_minor,
                returned_minor: totals.returned_minor,
            })
            .collect(),
        first_purchase_at: profile.first_purchase_at.map(|at| at.get().millis()),
        last_purchase_at: profile.last_purchase_at.map(|at| at.get().millis()),
        purchase_gap_millis_sum: profile.purchase_gap_millis_sum,
        reactivated_at: profile.reactivated_at.map(|at| at.get().millis()),
        open_tickets: profile.open_tickets.into(),
        tickets_opened: profile.tickets_opened.into(),
        tickets_resolved: profile.tickets_resolved.into(),
        first_responses: profile.first_responses.into(),
        first_response_millis_sum: profile.first_response_millis_sum,
        last_nps: score_to_proto(profile.last_nps()),
        last_csat: score_to_proto(profile.last_csat()),
        last_ces: score_to_proto(profile.last_ces()),
        lifecycle: lifecycle_to_proto(profile.lifecycle).into(),
        segment: segment_to_proto(profile.segment).into(),
        review_at: profile.review_at.map(|at| at.get().millis()),
        seen_fingerprints: seen.iter().map(SeenEvent::fingerprint).collect(),
        seen_at: seen.iter().map(|seen| seen.at().millis()).collect(),
    }
    .encode_to_vec()
}

/// The profile and de-duplication memory of `customer_id` in a `Customer` value.
pub(super) fn customer_from_value(
    key: &[u8],
    customer_id: CustomerId,
    value: &[u8],
) -> Result<(Profile, SeenEvents), RestoreError> {
    let message = proto::Customer::decode(value).map_err(bad_value(key))?;
    let mut money = Vec::with_capacity(message.money.len());
    for totals in message.money {
        money.push(CurrencyTotals {
            currency: Currency::parse(&totals.currency)
                .ok_or_else(|| invalid(key, "bad currency"))?,
            placed: totals.placed,
            returned: totals.returned,
            revenue_minor: totals.revenue_minor,
            returned_minor: totals.returned_minor,
        });
    }
    if message.seen_fingerprints.len() != message.seen_at.len() {
        return Err(invalid(
            key,
            "de-duplication fingerprints and times differ in number",
        ));
    }
    let seen = message
        .seen_fingerprints
        .iter()
        .zip(&message.seen_at)
        .map(|(fingerprint, at)| SeenEvent::new(*fingerprint, time(*at)))
        .collect();
    let scores = (
        score_from_proto(message.last_nps),
        score_from_proto(message.last_csat),
        score_from_proto(message.last_ces),
    );
    let (Some(last_nps), Some(last_csat), Some(last_ces)) = scores else {
        return Err(invalid(key, "survey score out of range"));
    };
    let count = |value: u64| u32::try_from(value).map_err(|_| invalid(key, "count out of range"));
    let mut profile = Profile {
        customer_id,
        first_seen: time(message.first_seen).into(),
        last_seen: time(message.last_seen).into(),
        events: count(message.events)?,
        orders_placed: count(message.orders_placed)?,
        money: MoneyTotals::from_totals(money),
        first_purchase_at: message.first_purchase_at.map(|at| time(at).into()),
        last_purchase_at: message.last_purchase_at.map(|at| time(at).into()),
        purchase_gap_millis_sum: message.purchase_gap_millis_sum,
        reactivated_at: message.reactivated_at.map(|at| time(at).into()),
        open_tickets: count(message.open_tickets)?,
        tickets_opened: count(message.tickets_opened)?,
        tickets_resolved: count(message.tickets_resolved)?,
        first_responses: count(message.first_responses)?,
        first_response_millis_sum: message.first_response_millis_sum,
        last_answer_at: [None; 3],
        last_answer_score: [0; 3],
        last_answer_scale_max: [0; 3],
        lifecycle: lifecycle_from_proto(message.lifecycle)
            .ok_or_else(|| invalid(key, "unknown lifecycle"))?,
        segment: segment_from_proto(message.segment)
            .ok_or_else(|| invalid(key, "unknown segment"))?,
        as_of: time(message.as_of).into(),
        review_at: message.review_at.map(|at| time(at).into()),
        updated_at: time(message.updated_at).into(),
    };
    for (survey, answer) in [
        (Survey::Nps, last_nps),
        (Survey::Csat, last_csat),
        (Survey::Ces, last_ces),
    ] {
        if let Some(answer) = answer {
            profile.set_last_answer(survey, answer);
        }
    }
    Ok((profile, SeenEvents::from_entries(seen)))
}

/// The `Ticket` value of a ticket of customer `customer_id`.
pub(super) fn ticket_value(ticket: &TicketState, customer_id: &str) -> Vec<u8> {
    proto::Ticket {
        customer_id: customer_id.to_owned(),
        opened_at: ticket.opened_at.millis(),
        sla_deadline: ticket.sla_deadline.millis(),
        resolved_at: ticket.resolved_at.map(EventTime::millis),
        agent_replies: ticket.agent_replies(),
        channel: ticket.channel().name().to_owned(),
        responded: ticket.responded(),
        reopened: ticket.reopened(),
        open: ticket.open(),
        sla_breached: ticket.sla_breached(),
    }
    .encode_to_vec()
}

fn amounts_to_proto(totals: &BTreeMap<Currency, i64>) -> Vec<proto::Amount> {
    totals
        .iter()
        .map(|(currency, minor)| proto::Amount {
            currency: currency.as_str().to_owned(),
            minor: *minor,
        })
        .collect()
}

fn amounts_from_proto(
    key: &[u8],
    amounts: Vec<proto::Amount>,
) -> Result<BTreeMap<Currency, i64>, RestoreError> {
    amounts
        .into_iter()
        .map(|amount| {
            Currency::parse(&amount.currency)
                .map(|currency| (currency, amount.minor))
                .ok_or_else(|| invalid(key, "bad currency"))
        })
        .collect()
}

/// The `Pane` value of a pane's counts.
pub(super) fn pane_value(aggregate: &Aggregate) -> Vec<u8> {
    let Aggregate {
        nps,
        csat,
        ces,
        tickets,
        orders,
    } = aggregate;
    proto::Pane {
        nps_promoters: nps.promoters,
        nps_passives: nps.passives,
        nps_detractors: nps.detractors,
        csat_responses: csat.responses,
        csat_satisfied: csat.satisfied,
        ces_responses: ces.responses,
        ces_score_sum: ces.score_sum,
        tickets_opened: tickets.opened,
        first_responses: tickets.first_responses,
        first_response_millis_sum: tickets.first_response_millis_sum,
        first_response_buckets: tickets.first_response_buckets.to_vec(),
        resolved: tickets.resolved,
        resolution_millis_sum: tickets.resolution_millis_sum,
        first_contact_resolutions: tickets.first_contact_resolutions,
        reopened: tickets.reopened,
        sla_breaches: tickets.sla_breaches,
        placed: orders.placed,
        revenue_minor: amounts_to_proto(&orders.revenue_minor),
        returned: orders.returned,
        returned_minor: amounts_to_proto(&orders.returned_minor),
        fulfilled: orders.fulfilled,
        complete_first_shipment: orders.complete_first_shipment,
        new_customers: orders.new_customers,
        repeat_purchases: orders.repeat_purchases,
        repeat_gap_millis_sum: orders.repeat_gap_millis_sum,
    }
    .encode_to_vec()
}

/// The counts in a `Pane` value.
pub(super) fn pane_from_value(key: &[u8], value: &[u8]) -> Result<Aggregate, RestoreError> {
    let pane = proto::Pane::decode(value).map_err(bad_value(key))?;
    let mut aggregate = Aggregate::default();
    aggregate.nps.promoters = pane.nps_promoters;
    aggregate.nps.passives = pane.nps_passives;
    aggregate.nps.detractors = pane.nps_detractors;
    aggregate.csat.responses = pane.csat_responses;
    aggregate.csat.satisfied = pane.csat_satisfied;
    aggregate.ces.responses = pane.ces_responses;
    aggregate.ces.score_sum = pane.ces_score_sum;
    let tickets = &mut aggregate.tickets;
    tickets.opened = pane.tickets_opened;
    tickets.first_responses = pane.first_responses;
    tickets.first_response_millis_sum = pane.first_response_millis_sum;
    tickets.first_response_buckets = pane
        .first_response_buckets
        .try_into()
        .map_err(|_| invalid(key, "wrong number of first-response buckets"))?;
    tickets.resolved = pane.resolved;
    tickets.resolution_millis_sum = pane.resolution_millis_sum;
    tickets.first_contact_resolutions = pane.first_contact_resolutions;
    tickets.reopened = pane.reopened;
    tickets.sla_breaches = pane.sla_breaches;
    let orders = &mut aggregate.orders;
    orders.placed = pane.placed;
    orders.revenue_minor = amounts_from_proto(key, pane.revenue_minor)?;
    orders.returned = pane.returned;
    orders.returned_minor = amounts_from_proto(key, pane.returned_minor)?;
    orders.fulfilled = pane.fulfilled;
    orders.complete_first_shipment = pane.complete_first_shipment;
    orders.new_customers = pane.new_customers;
    orders.repeat_purchases = pane.repeat_purchases;
    orders.repeat_gap_millis_sum = pane.repeat_gap_millis_sum;
    Ok(aggregate)
}

fn cursor_to_proto(cursor: CursorState) -> proto::Cursor {
    proto::Cursor {
        position: cursor.position,
        active: cursor.active,
    }
}

fn cursor_from_proto(cursor: Option<proto::Cursor>) -> CursorState {
    cursor.map_or(CursorState::default(), |cursor| CursorState {
        position: cursor.position,
        active: cursor.active,
    })
}

/// The ticket `ticket_id` in a `Ticket` value: its customer's id, and the
/// ticket itself once that customer has a slot.
pub(super) fn ticket_from_value(
    key: &[u8],
    ticket_id: TicketId,
    value: &[u8],
) -> Result<(CustomerId, impl FnOnce(CustomerSlot) -> TicketState), RestoreError> {
    let ticket = proto::Ticket::decode(value).map_err(bad_value(key))?;
    let channel = Channel::parse(&ticket.channel).ok_or_else(|| invalid(key, "unknown channel"))?;
    let customer_id = CustomerId::new(ticket.customer_id);
    let restored = move |customer| {
        TicketState::restored(
            ticket_id,
            customer,
            time(ticket.opened_at),
            time(ticket.sla_deadline),
            ticket.resolved_at.map(time),
            ticket.agent_replies,
            channel,
            TicketFlags {
                responded: ticket.responded,
                reopened: ticket.reopened,
                open: ticket.open,
                sla_breached: ticket.sla_breached,
            },
        )
    };
    Ok((customer_id, restored))
}

/// The `ActiveDelta` value of an active-customer delta.
pub(super) fn active_delta_value(delta: i64) -> Vec<u8> {
    proto::ActiveDelta { delta }.encode_to_vec()
}

/// The delta in an `ActiveDelta` value.
pub(super) fn active_delta_from_value(key: &[u8], value: &[u8]) -> Result<i64, RestoreError> {
    proto::ActiveDelta::decode(value)
        .map(|delta| delta.delta)
        .map_err(bad_value(key))
}

/// The `Meta` value of `task`: the input offsets its state includes, its flush
/// number, watermark and window progress.
pub(super) fn meta_value(task: &Task) -> Vec<u8> {
    proto::Meta {
        included: task.included.to_vec(),
        cycle: task.changelog_cycle,
        watermark: Some(task.watermark.to_proto()),
        windows: task
            .windows
            .progress()
            .into_iter()
            .map(|(name, progress)| proto::SpecProgress {
                name,
                last_emitted: progress.last_emitted,
                start_cursor: Some(cursor_to_proto(progress.cursors.0)),
                end_cursor: Some(cursor_to_proto(progress.cursors.1)),
            })
            .collect(),
        windows_skipped: task.windows.skipped(),
    }
    .encode_to_vec()
}

/// The `Meta` message of the meta record's value, if there is one.
pub(super) fn meta_from_value(value: Option<&[u8]>) -> Result<Option<proto::Meta>, RestoreError> {
    value
        .map(|value| proto::Meta::decode(value).map_err(bad_value(super::META_KEY)))
        .transpose()
}

/// The progress of each window spec (by name) in a `Meta` message.
pub(super) fn progress_from_proto(
    windows: Vec<proto::SpecProgress>,
) -> BTreeMap<String, SpecProgress> {
    windows
        .into_iter()
        .map(|spec| {
            let progress = SpecProgress {
                last_emitted: spec.last_emitted,
                cursors: (
                    cursor_from_proto(spec.start_cursor),
                    cursor_from_proto(spec.end_cursor),
                ),
            };
            (spec.name, progress)
        })
        .collect()
}
