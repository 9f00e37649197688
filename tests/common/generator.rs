//! Test inputs the engine did not write: customers simulated here, written as
//! JSON here, sharing no code with `src/` (the product's `cxpulse generate`
//! stays for users). It produces what the engine must survive: customers who
//! pay in two currencies, arrival order disordered by up to the allowed
//! lateness across topics and customers (each ticket's events and each
//! customer's purchases in order, as producers guarantee), redeliveries,
//! surveys later than the lateness, RFC 3339 times with offsets and without
//! fractions, and pauses longer than the activity horizon (churn, then
//! reactivation) inside the data.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

pub const MINUTE: i64 = 60_000;
pub const HOUR: i64 = 60 * MINUTE;
pub const DAY: i64 = 24 * HOUR;

/// The input topic an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    Purchases,
    Tickets,
    Surveys,
}

impl Topic {
    pub const ALL: [Topic; 3] = [Topic::Purchases, Topic::Tickets, Topic::Surveys];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// What happened, in the SPEC's words.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Placed {
        order: String,
        amount: i64,
        currency: &'static str,
    },
    Fulfilled {
        order: String,
        complete: bool,
    },
    Returned {
        order: String,
        amount: i64,
        currency: &'static str,
    },
    Opened {
        ticket: String,
        channel: &'static str,
    },
    AgentReplied {
        ticket: String,
    },
    CustomerReplied {
        ticket: String,
    },
    Resolved {
        ticket: String,
    },
    Reopened {
        ticket: String,
    },
    Nps {
        score: u8,
    },
    Csat {
        score: u8,
        scale: u8,
    },
    Ces {
        score: u8,
        scale: u8,
    },
}

impl Body {
    pub fn topic(&self) -> Topic {
        match self {
            Body::Placed { .. } | Body::Fulfilled { .. } | Body::Returned { .. } => {
                Topic::Purchases
            }
            Body::Opened { .. }
            | Body::AgentReplied { .. }
            | Body::CustomerReplied { .. }
            | Body::Resolved { .. }
            | Body::Reopened { .. } => Topic::Tickets,
            _ => Topic::Surveys,
        }
    }

    /// The ticket an event belongs to.
    pub fn ticket(&self) -> Option<&str> {
        match self {
            Body::Opened { ticket, .. }
            | Body::AgentReplied { ticket }
            | Body::CustomerReplied { ticket }
            | Body::Resolved { ticket }
            | Body::Reopened { ticket } => Some(ticket),
            _ => None,
        }
    }
}

/// One input event as delivered (a redelivery is a second `Input` with the same id and JSON).
#[derive(Debug, Clone)]
pub struct Input {
    pub customer: String,
    pub event_id: String,
    /// Event time, ms since the epoch.
    pub at: i64,
    pub body: Body,
    /// The input partition (the same on every topic for one customer).
    pub partition: i32,
    /// Deliberately later than the allowed lateness (delivered after a synchronisation).
    pub late: bool,
    /// A flush event, delivered after everything else.
    pub flush: bool,
    /// The record value.
    pub json: String,
}

impl Input {
    pub fn topic(&self) -> Topic {
        self.body.topic()
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Plan {
    pub customers: usize,
    pub partitions: i32,
    /// Start of the data (ms); the data covers `[start, start + days)`.
    pub start: i64,
    pub days: i64,
    /// Mean visits (a purchase, a ticket or a survey) per customer and day.
    pub visits_per_day: f64,
    /// Arrival order differs from event time by strictly less than this (ms).
    pub disorder: i64,
    /// About one event in this many is delivered twice (0: none).
    pub redeliver_one_in: usize,
    /// Surveys delivered after the data, older than every window still open.
    pub late_surveys: usize,
    /// Some customers pause for longer than this (ms): churn and reactivation.
    pub activity_horizon: i64,
    pub seed: u64,
}

/// A generated data set.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Arrival order, redeliveries included.
    pub arrivals: Vec<Input>,
    /// Late surveys, to deliver once every window containing them is final.
    pub late: Vec<Input>,
    pub start: i64,
    pub end: i64,
}

const CURRENCIES: [&str; 5] = ["EUR", "USD", "GBP", "JPY", "SEK"];
const CHANNELS: [&str; 5] = ["email", "chat", "phone", "social", "web"];

/// Generates `plan`'s customers.
pub fn generate(plan: &Plan) -> Generated {
    let mut rng = SmallRng::seed_from_u64(plan.seed);
    let end = plan.start + plan.days * DAY;
    let mut events: Vec<Input> = Vec::new();
    for index in 0..plan.customers {
        let customer = format!("cust-{index:05}");
        let partition = (index as i32) % plan.partitions.max(1);
        customer_events(plan, &mut rng, &customer, partition, end, &mut events);
    }
    let arrivals = arrival_order(plan, &mut rng, events);
    let late = late_surveys(plan, &mut rng, &arrivals);
    Generated {
        arrivals,
        late,
        start: plan.start,
        end,
    }
}

/// One customer's story: visits at random times, with an optional long pause.
fn customer_events(
    plan: &Plan,
    rng: &mut SmallRng,
    customer: &str,
    partition: i32,
    end: i64,
    out: &mut Vec<Input>,
) {
    let primary = CURRENCIES[rng.random_range(0..CURRENCIES.len())];
    let secondary = rng
        .random_bool(0.3)
        .then(|| CURRENCIES[rng.random_range(0..CURRENCIES.len())]);
    let pause = rng.random_bool(0.35).then(|| {
        let from = plan.start + rng.random_range(0..(plan.days * DAY).max(1));
        (
            from,
            from + plan.activity_horizon + rng.random_range(0..DAY),
        )
    });
    let mut serial = 0u32;
    let mut next_id = |kind: &str| {
        serial += 1;
        format!("{customer}-{kind}{serial}")
    };
    let mut events: Vec<(i64, Body)> = Vec::new();
    let mut at = plan.start + rng.random_range(0..DAY);
    let mean_gap = (DAY as f64 / plan.visits_per_day.max(0.01)) as i64;
    while at < end {
        if pause.is_some_and(|(from, until)| at >= from && at < until) {
            at = pause.map_or(at, |(_, until)| until);
            continue;
        }
        match rng.random_range(0..100) {
            0..45 => {
                let order = next_id("o");
                let currency = match secondary {
                    Some(second) if rng.random_bool(0.4) => second,
                    _ => primary,
                };
                let amount = rng.random_range(0..30_000);
                events.push((
                    at,
                    Body::Placed {
                        order: order.clone(),
                        amount,
                        currency,
                    },
                ));
                let shipped = at + rng.random_range(10 * MINUTE..2 * DAY);
                if rng.random_bool(0.85) {
                    events.push((
                        shipped,
                        Body::Fulfilled {
                            order: order.clone(),
                            complete: rng.random_bool(0.8),
                        },
                    ));
                    if rng.random_bool(0.12) {
                        events.push((
                            shipped + rng.random_range(HOUR..3 * DAY),
                            Body::Returned {
                                order,
                                amount: rng.random_range(0..=amount),
                                currency,
                            },
                        ));
                    }
                }
            }
            45..75 => ticket_story(rng, &next_id("t"), at, &mut events),
            _ => {
                let body = match rng.random_range(0..4) {
                    0 | 1 => Body::Nps {
                        score: rng.random_range(0..=10),
                    },
                    2 => {
                        let scale = [5, 3, 5, 7, 10][rng.random_range(0..5)];
                        Body::Csat {
                            score: rng.random_range(1..=scale),
                            scale,
                        }
                    }
                    _ => {
                        let scale = [7, 5, 7][rng.random_range(0..3)];
                        Body::Ces {
                            score: rng.random_range(1..=scale),
                            scale,
                        }
                    }
                };
                events.push((at, body));
            }
        }
        // Exponential gaps: a Poisson stream of visits.
        let uniform: f64 = rng.random_range(f64::EPSILON..1.0);
        at += ((-uniform.ln()) * mean_gap as f64) as i64 + 1;
    }
    for (at, body) in events {
        if at >= end {
            continue;
        }
        let event_id = next_id("e");
        let json = to_json(rng, customer, &event_id, at, &body);
        out.push(Input {
            customer: customer.to_string(),
            event_id,
            at,
            body,
            partition,
            late: false,
            flush: false,
            json,
        });
    }
}

/// A ticket: opened, replies (some after the SLA, some never), maybe resolved and reopened.
fn ticket_story(rng: &mut SmallRng, ticket: &str, opened: i64, events: &mut Vec<(i64, Body)>) {
    let ticket = ticket.to_string();
    let channel = CHANNELS[rng.random_range(0..CHANNELS.len())];
    events.push((
        opened,
        Body::Opened {
            ticket: ticket.clone(),
            channel,
        },
    ));
    let first_reply = match rng.random_range(0..100) {
        0..45 => opened + rng.random_range(0..50 * MINUTE),
        45..75 => opened + rng.random_range(50 * MINUTE..3 * HOUR),
        75..93 => opened + rng.random_range(3 * HOUR..30 * HOUR),
        _ => return,
    };
    events.push((
        first_reply,
        Body::AgentReplied {
            ticket: ticket.clone(),
        },
    ));
    let mut at = first_reply;
    if rng.random_bool(0.3) {
        at += rng.random_range(MINUTE..2 * HOUR);
        events.push((
            at,
            Body::CustomerReplied {
                ticket: ticket.clone(),
            },
        ));
    }
    if rng.random_bool(0.35) {
        at += rng.random_range(MINUTE..2 * HOUR);
        events.push((
            at,
            Body::AgentReplied {
                ticket: ticket.clone(),
            },
        ));
    }
    if rng.random_bool(0.75) {
        at += rng.random_range(MINUTE..DAY);
        events.push((
            at,
            Body::Resolved {
                ticket: ticket.clone(),
            },
        ));
        if rng.random_bool(0.2) {
            at += rng.random_range(HOUR..2 * DAY);
            events.push((
                at,
                Body::Reopened {
                    ticket: ticket.clone(),
                },
            ));
            if rng.random_bool(0.6) {
                at += rng.random_range(MINUTE..DAY);
                events.push((at, Body::Resolved { ticket }));
            }
        }
    }
}

/// The JSON value of an event, with times in varied RFC 3339 forms.
fn to_json(rng: &mut SmallRng, customer: &str, event_id: &str, at: i64, body: &Body) -> String {
    let offset_minutes = [0, 0, 120, -330, 60, 0][rng.random_range(0..6)];
    let mut value = Map::new();
    value.insert("event_id".into(), json!(event_id));
    value.insert("customer_id".into(), json!(customer));
    value.insert("occurred_at".into(), json!(rfc3339(at, offset_minutes)));
    let fields = match body {
        Body::Placed {
            order,
            amount,
            currency,
        } => json!({"order_id": order, "action": "placed", "amount_minor": amount,
                    "currency": currency, "items": rng.random_range(1..5), "channel": "web"}),
        Body::Fulfilled { order, complete } => {
            json!({"order_id": order, "action": "fulfilled", "complete_first_shipment": complete})
        }
        Body::Returned {
            order,
            amount,
            currency,
        } => json!({"order_id": order, "action": "returned", "amount_minor": amount,
                    "currency": currency}),
        Body::Opened { ticket, channel } => {
            let mut opened = json!({"ticket_id": ticket, "action": "opened", "channel": channel});
            if rng.random_bool(0.5) {
                opened["priority"] =
                    json!(["low", "normal", "high", "urgent"][rng.random_range(0..4)]);
            }
            opened
        }
        Body::AgentReplied { ticket } => json!({"ticket_id": ticket, "action": "agent_replied"}),
        Body::CustomerReplied { ticket } => {
            json!({"ticket_id": ticket, "action": "customer_replied"})
        }
        Body::Resolved { ticket } => json!({"ticket_id": ticket, "action": "resolved"}),
        Body::Reopened { ticket } => json!({"ticket_id": ticket, "action": "reopened"}),
        Body::Nps { score } => {
            json!({"survey_id": format!("s-{event_id}"), "kind": "nps", "score": score, "scale_max": 10,
                   "comment": "délai \"trop\" long\nmerci"})
        }
        // The default scales are left out half the time: the SPEC's defaults apply.
        Body::Csat { score, scale } => {
            let mut survey =
                json!({"survey_id": format!("s-{event_id}"), "kind": "csat", "score": score});
            if *scale != 5 || rng.random_bool(0.5) {
                survey["scale_max"] = json!(scale);
            }
            survey
        }
        Body::Ces { score, scale } => {
            let mut survey =
                json!({"survey_id": format!("s-{event_id}"), "kind": "ces", "score": score});
            if *scale != 7 || rng.random_bool(0.5) {
                survey["scale_max"] = json!(scale);
            }
            survey
        }
    };
    if let Value::Object(fields) = fields {
        value.extend(fields);
    }
    Value::Object(value).to_string()
}

/// Arrival order: each event arrives at its time plus a delay below the disorder
/// bound, then each ticket's events and each customer's purchases are put back in
/// event-time order within the slots they occupy (which keeps the bound), and some
/// events are delivered twice a little later.
fn arrival_order(plan: &Plan, rng: &mut SmallRng, events: Vec<Input>) -> Vec<Input> {
    let mut keyed: Vec<(i64, Input)> = events
        .into_iter()
        .map(|event| (event.at + rng.random_range(0..plan.disorder.max(1)), event))
        .collect();
    keyed.sort_by_key(|(arrival, _)| *arrival);
    let mut order: Vec<Input> = keyed.into_iter().map(|(_, event)| event).collect();
    let mut groups: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (slot, event) in order.iter().enumerate() {
        let group = match (&event.body, event.topic()) {
            (body, Topic::Tickets) => format!("t/{}", body.ticket().unwrap_or_default()),
            (_, Topic::Purchases) => format!("p/{}", event.customer),
            _ => continue,
        };
        groups.entry(group).or_default().push(slot);
    }
    for slots in groups.values() {
        let mut members: Vec<Input> = slots.iter().map(|slot| order[*slot].clone()).collect();
        members.sort_by_key(|event| event.at);
        for (slot, member) in slots.iter().zip(members) {
            order[*slot] = member;
        }
    }
    if plan.redeliver_one_in == 0 {
        return order;
    }
    let mut arrivals = Vec::with_capacity(order.len() + order.len() / plan.redeliver_one_in);
    let mut pending: Vec<(usize, Input)> = Vec::new();
    for (index, event) in order.into_iter().enumerate() {
        if rng.random_range(0..plan.redeliver_one_in) == 0 {
            pending.push((index + rng.random_range(0..4), event.clone()));
        }
        arrivals.push(event);
        while let Some(position) = pending.iter().position(|(due, _)| *due <= index) {
            arrivals.push(pending.remove(position).1);
        }
    }
    arrivals.extend(pending.into_iter().map(|(_, event)| event));
    arrivals
}

/// NPS answers of known customers dated in the first third of the data, to deliver after it.
fn late_surveys(plan: &Plan, rng: &mut SmallRng, arrivals: &[Input]) -> Vec<Input> {
    let mut late = Vec::new();
    if arrivals.is_empty() {
        return late;
    }
    for serial in 0..plan.late_surveys {
        let known = &arrivals[rng.random_range(0..arrivals.len())];
        let at = plan.start + rng.random_range(0..(plan.days * DAY / 3).max(1));
        let event_id = format!("{}-late{serial}", known.customer);
        let body = Body::Nps {
            score: rng.random_range(0..=10),
        };
        let json = to_json(rng, &known.customer, &event_id, at, &body);
        late.push(Input {
            customer: known.customer.clone(),
            event_id,
            at,
            body,
            partition: known.partition,
            late: true,
            flush: false,
            json,
        });
    }
    late
}

/// One flush event per topic for partition `partition` at `at`: it moves every
/// partition's high mark far past the data, so every data window becomes final.
pub fn flush(partition: i32, at: i64) -> Vec<Input> {
    let customer = format!("flush-{partition}");
    let bodies = [
        Body::Nps { score: 9 },
        Body::CustomerReplied {
            ticket: "flush".into(),
        },
        Body::Fulfilled {
            order: "flush".into(),
            complete: true,
        },
    ];
    let mut rng = SmallRng::seed_from_u64(partition as u64);
    bodies
        .into_iter()
        .enumerate()
        .map(|(index, body)| {
            let event_id = format!("flush-{partition}-{index}");
            let json = to_json(&mut rng, &customer, &event_id, at, &body);
            Input {
                customer: customer.clone(),
                event_id,
                at,
                body,
                partition,
                late: false,
                flush: true,
                json,
            }
        })
        .collect()
}

/// `millis` as RFC 3339 in the given UTC offset, without a fraction when it is zero.
pub fn rfc3339(millis: i64, offset_minutes: i64) -> String {
    let local = millis + offset_minutes * MINUTE;
    let (days, in_day) = (local.div_euclid(DAY), local.rem_euclid(DAY));
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second, fraction) = (
        in_day / HOUR,
        in_day / MINUTE % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    let fraction = if fraction == 0 {
        String::new()
    } else {
        format!(".{fraction:03}")
    };
    let zone = match offset_minutes {
        0 => "Z".to_string(),
        _ => format!(
            "{}{:02}:{:02}",
            if offset_minutes < 0 { '-' } else { '+' },
            offset_minutes.abs() / 60,
            offset_minutes.abs() % 60
        ),
    };
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}{zone}")
}

/// Parses an RFC 3339 time (any offset, optional fraction) to ms since the epoch.
pub fn parse_rfc3339(text: &str) -> i64 {
    let bytes = text.as_bytes();
    let number = |from: usize, to: usize| -> i64 {
        text.get(from..to)
            .and_then(|digits| digits.parse().ok())
            .unwrap_or_else(|| panic!("not RFC 3339: {text}"))
    };
    let (year, month, day) = (number(0, 4), number(5, 7), number(8, 10));
    let (hour, minute, second) = (number(11, 13), number(14, 16), number(17, 19));
    let mut index = 19;
    let mut millis = 0;
    if bytes.get(index) == Some(&b'.') {
        let digits_end = text[index + 1..]
            .find(|c: char| !c.is_ascii_digit())
            .map_or(text.len(), |at| index + 1 + at);
        let digits = &text[index + 1..digits_end];
        millis = format!("{digits:0<3}")[..3]
            .parse::<i64>()
            .expect("fraction");
        index = digits_end;
    }
    let offset = match &text[index..] {
        "Z" | "z" => 0,
        zone => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            sign * (number(index + 1, index + 3) * 60 + number(index + 4, index + 6))
        }
    };
    let days = days_from_civil(year, month as u32, day as u32);
    days * DAY + hour * HOUR + minute * MINUTE + second * 1000 + millis - offset * MINUTE
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day number since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The Protobuf value of an input (`events.proto`), for the Protobuf input path.
pub fn to_protobuf(input: &Input) -> Vec<u8> {
    use cxpulse::proto;
    use prost::Message;
    let occurred_at = Some(prost_types::Timestamp {
        seconds: input.at.div_euclid(1000),
        nanos: (input.at.rem_euclid(1000) * 1_000_000) as i32,
    });
    let (event_id, customer_id) = (input.event_id.clone(), input.customer.clone());
    let purchase = |order: &str,
                    action: proto::PurchaseAction,
                    money: Option<(i64, &str)>,
                    complete: Option<bool>| {
        proto::PurchaseEvent {
            event_id: event_id.clone(),
            customer_id: customer_id.clone(),
            occurred_at,
            order_id: order.to_string(),
            action: action as i32,
            amount_minor: money.map(|(amount, _)| amount),
            currency: money.map(|(_, currency)| currency.to_string()),
            items: None,
            complete_first_shipment: complete,
            channel: None,
        }
        .encode_to_vec()
    };
    let ticket = |ticket: &str, action: proto::TicketAction, channel: proto::TicketChannel| {
        proto::TicketEvent {
            event_id: event_id.clone(),
            customer_id: customer_id.clone(),
            occurred_at,
            ticket_id: ticket.to_string(),
            action: action as i32,
            channel: channel as i32,
            priority: 0,
        }
        .encode_to_vec()
    };
    let survey = |kind: proto::SurveyKind, score: u8, scale: u8| {
        proto::SurveyEvent {
            event_id: event_id.clone(),
            customer_id: customer_id.clone(),
            occurred_at,
            survey_id: format!("s-{event_id}"),
            kind: kind as i32,
            score: Some(i64::from(score)),
            scale_max: Some(i64::from(scale)),
            comment: None,
            ticket_id: None,
            order_id: None,
        }
        .encode_to_vec()
    };
    use proto::{PurchaseAction as P, SurveyKind as S, TicketAction as T, TicketChannel as C};
    match &input.body {
        Body::Placed {
            order,
            amount,
            currency,
        } => purchase(order, P::Placed, Some((*amount, currency)), None),
        Body::Fulfilled { order, complete } => purchase(order, P::Fulfilled, None, Some(*complete)),
        Body::Returned {
            order,
            amount,
            currency,
        } => purchase(order, P::Returned, Some((*amount, currency)), None),
        Body::Opened {
            ticket: id,
            channel,
        } => {
            let channel = match *channel {
                "email" => C::Email,
                "chat" => C::Chat,
                "phone" => C::Phone,
                "social" => C::Social,
                _ => C::Web,
            };
            ticket(id, T::Opened, channel)
        }
        Body::AgentReplied { ticket: id } => ticket(id, T::AgentReplied, C::Unspecified),
        Body::CustomerReplied { ticket: id } => ticket(id, T::CustomerReplied, C::Unspecified),
        Body::Resolved { ticket: id } => ticket(id, T::Resolved, C::Unspecified),
        Body::Reopened { ticket: id } => ticket(id, T::Reopened, C::Unspecified),
        Body::Nps { score } => survey(S::Nps, *score, 10),
        Body::Csat { score, scale } => survey(S::Csat, *score, *scale),
        Body::Ces { score, scale } => survey(S::Ces, *score, *scale),
    }
}
