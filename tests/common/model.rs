//! A brute-force model of SPEC section 4, written straight from the
//! definitions and sharing no code with the engine: for every window boundary
//! it scans the whole event list.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use cxpulse::event::{Event, EventBody, PurchaseAction, SurveyResponse, TicketAction};
use serde_json::Value;

/// Additive content of one window, as the model and as summed outputs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub nps_promoters: u64,
    pub nps_passives: u64,
    pub nps_detractors: u64,
    pub csat_responses: u64,
    pub csat_satisfied: u64,
    pub ces_responses: u64,
    pub ces_score_sum: u64,
    pub opened: u64,
    pub first_responses: u64,
    pub first_response_millis_sum: i64,
    /// Cumulative, by bound label.
    pub first_response_buckets: BTreeMap<String, u64>,
    pub resolved: u64,
    pub resolution_millis_sum: i64,
    pub first_contact_resolutions: u64,
    pub reopened: u64,
    pub sla_breaches: u64,
    pub placed: u64,
    pub revenue_minor: BTreeMap<String, i64>,
    pub returned: u64,
    pub returned_minor: BTreeMap<String, i64>,
    pub fulfilled: u64,
    pub complete_first_shipment: u64,
    pub new_customers: u64,
    pub repeat_purchases: u64,
    pub repeat_gap_millis_sum: i64,
    /// A(e − size) and A(e).
    pub customers_at_start: u64,
    pub customers_at_end: u64,
}

impl Rules {
    /// The window rules of a cxpulse config, in ms.
    pub fn from_config(config: &cxpulse::config::Config) -> Rules {
        let millis = cxpulse::window::millis;
        Rules {
            specs: config
                .windows
                .iter()
                .map(|w| Spec {
                    name: w.name.clone(),
                    size: millis(w.size),
                    step: millis(w.step),
                })
                .collect(),
            sla: cxpulse::event::Channel::ALL
                .iter()
                .map(|channel| (channel.name(), millis(config.sla.threshold(*channel))))
                .collect(),
            horizon: millis(config.processing.activity_horizon),
        }
    }
}

/// Window spec: name, size and step in ms.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub size: i64,
    pub step: i64,
}

/// Rules the model needs.
#[derive(Debug, Clone)]
pub struct Rules {
    pub specs: Vec<Spec>,
    /// SLA threshold per channel name, ms.
    pub sla: HashMap<&'static str, i64>,
    /// Activity horizon, ms.
    pub horizon: i64,
}

const BOUNDS: [(i64, &str); 8] = [
    (60, "60"),
    (300, "300"),
    (900, "900"),
    (1800, "1800"),
    (3600, "3600"),
    (14_400, "14400"),
    (86_400, "86400"),
    (i64::MAX, "+Inf"),
];

/// A fact at a time that some window may contain.
#[derive(Debug, Clone)]
enum Fact {
    Nps(u8),
    Csat {
        score: u8,
        scale: u8,
    },
    Ces(u8),
    Opened,
    FirstResponse(i64),
    Resolved {
        millis: i64,
        first_contact: bool,
    },
    Reopened,
    SlaBreach,
    Placed {
        currency: String,
        amount: i64,
        first: bool,
        gap: Option<i64>,
    },
    Returned {
        currency: String,
        amount: i64,
    },
    Fulfilled {
        complete: bool,
    },
}

/// Derives every fact from the de-duplicated event list, by definition.
fn facts(events: &[Event], rules: &Rules) -> Vec<(i64, Fact)> {
    let mut seen = HashSet::new();
    let unique: Vec<&Event> = events
        .iter()
        .filter(|e| seen.insert((e.customer_id.clone(), e.event_id.clone())))
        .collect();
    let mut facts = Vec::new();
    // Tickets: group their events, in event-time order.
    let mut tickets: BTreeMap<String, Vec<(i64, TicketAction)>> = BTreeMap::new();
    // Purchases: every placed time per customer.
    let mut placed_by_customer: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for event in &unique {
        let at = event.occurred_at.millis();
        match &event.body {
            EventBody::Survey(survey) => facts.push((
                at,
                match survey.response {
                    SurveyResponse::Nps { score } => Fact::Nps(score),
                    SurveyResponse::Csat { score, scale_max } => Fact::Csat {
                        score,
                        scale: scale_max,
                    },
                    SurveyResponse::Ces { score, .. } => Fact::Ces(score),
                },
            )),
            EventBody::Ticket(ticket) => tickets
                .entry(ticket.ticket_id.to_string())
                .or_default()
                .push((at, ticket.action)),
            EventBody::Purchase(purchase) => match purchase.action {
                PurchaseAction::Placed { .. } => placed_by_customer
                    .entry(event.customer_id.to_string())
                    .or_default()
                    .push(at),
                PurchaseAction::Returned { amount } => facts.push((
                    at,
                    Fact::Returned {
                        currency: amount.currency.to_string(),
                        amount: amount.amount.0,
                    },
                )),
                PurchaseAction::Fulfilled {
                    complete_first_shipment,
                } => facts.push((
                    at,
                    Fact::Fulfilled {
                        complete: complete_first_shipment,
                    },
                )),
            },
        }
    }
    for event in &unique {
        if let EventBody::Purchase(purchase) = &event.body {
            if let PurchaseAction::Placed { amount } = purchase.action {
                let at = event.occurred_at.millis();
                let mut times = placed_by_customer[event.customer_id.as_str()].clone();
                times.sort();
                let first = times[0] == at;
                let previous = times.iter().filter(|t| **t < at).max().copied();
                facts.push((
                    at,
                    Fact::Placed {
                        currency: amount.currency.to_string(),
                        amount: amount.amount.0,
                        first,
                        gap: previous.map(|p| at - p),
                    },
                ));
            }
        }
    }
    for history in tickets.values_mut() {
        history.sort_by_key(|(at, _)| *at);
        let Some(&(opened_at, TicketAction::Opened { channel, .. })) = history.first() else {
            continue;
        };
        facts.push((opened_at, Fact::Opened));
        let deadline = opened_at + rules.sla[channel.name()];
        let first_reply = history
            .iter()
            .find(|(_, a)| *a == TicketAction::AgentReplied)
            .map(|(t, _)| *t);
        if let Some(reply) = first_reply {
            facts.push((reply, Fact::FirstResponse(reply - opened_at)));
        }
        if first_reply.is_none_or(|reply| reply > deadline) {
            facts.push((deadline, Fact::SlaBreach));
        }
        let mut replies = 0;
        let mut reopened = false;
        for (at, action) in history.iter().skip(1) {
            match action {
                TicketAction::AgentReplied => replies += 1,
                TicketAction::Reopened => {
                    reopened = true;
                    facts.push((*at, Fact::Reopened));
                }
                TicketAction::Resolved => facts.push((
                    *at,
                    Fact::Resolved {
                        millis: at - opened_at,
                        first_contact: replies == 1 && !reopened,
                    },
                )),
                _ => {}
            }
        }
    }
    facts
}

/// Every window (by name and end) whose end lies in `[first_end, last_end]`, empty or not.
pub fn windows(
    events: &[Event],
    rules: &Rules,
    first_end: i64,
    last_end: i64,
) -> BTreeMap<(String, i64), Counts> {
    let facts = facts(events, rules);
    let placed: Vec<(String, i64)> = {
        let mut seen = HashSet::new();
        events
            .iter()
            .filter(|e| seen.insert((e.customer_id.clone(), e.event_id.clone())))
            .filter_map(|e| match &e.body {
                EventBody::Purchase(p) if matches!(p.action, PurchaseAction::Placed { .. }) => {
                    Some((e.customer_id.to_string(), e.occurred_at.millis()))
                }
                _ => None,
            })
            .collect()
    };
    // A(t): customers with at least one placed in [t − horizon, t).
    let mut placed_by_customer: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (customer, at) in &placed {
        placed_by_customer
            .entry(customer.as_str())
            .or_default()
            .push(*at);
    }
    for times in placed_by_customer.values_mut() {
        times.sort();
    }
    let active = |t: i64| -> u64 {
        placed_by_customer
            .values()
            .filter(|times| {
                // The first purchase at or after t − horizon is before t.
                let index = times.partition_point(|p| *p < t - rules.horizon);
                times.get(index).is_some_and(|p| *p < t)
            })
            .count() as u64
    };
    let mut facts = facts;
    facts.sort_by_key(|(at, _)| *at);
    let mut result = BTreeMap::new();
    for spec in &rules.specs {
        let first = first_end.div_euclid(spec.step) * spec.step;
        let ends: BTreeSet<i64> = (0..)
            .map(|k| first + k * spec.step)
            .skip_while(|end| *end < first_end)
            .take_while(|end| *end <= last_end)
            .collect();
        for end in ends {
            let mut counts = Counts::default();
            for (_, label) in BOUNDS {
                counts.first_response_buckets.insert(label.to_string(), 0);
            }
            // Facts with end - size <= at < end.
            let from = facts.partition_point(|(at, _)| *at < end - spec.size);
            let to = facts.partition_point(|(at, _)| *at < end);
            for (_, fact) in &facts[from..to] {
                add(&mut counts, fact);
            }
            counts.customers_at_start = active(end - spec.size);
            counts.customers_at_end = active(end);
            result.insert((spec.name.clone(), end), counts);
        }
    }
    result
}

fn add(counts: &mut Counts, fact: &Fact) {
    match fact {
        Fact::Nps(score) => match score {
            9..=10 => counts.nps_promoters += 1,
            7..=8 => counts.nps_passives += 1,
            _ => counts.nps_detractors += 1,
        },
        Fact::Csat { score, scale } => {
            counts.csat_responses += 1;
            if f64::from(*score) >= 0.8 * f64::from(*scale) {
                counts.csat_satisfied += 1;
            }
        }
        Fact::Ces(score) => {
            counts.ces_responses += 1;
            counts.ces_score_sum += u64::from(*score);
        }
        Fact::Opened => counts.opened += 1,
        Fact::FirstResponse(millis) => {
            counts.first_responses += 1;
            counts.first_response_millis_sum += millis;
            for (bound, label) in BOUNDS {
                if bound == i64::MAX || *millis <= bound * 1000 {
                    *counts
                        .first_response_buckets
                        .entry(label.to_string())
                        .or_default() += 1;
                }
            }
        }
        Fact::Resolved {
            millis,
            first_contact,
        } => {
            counts.resolved += 1;
            counts.resolution_millis_sum += millis;
            counts.first_contact_resolutions += u64::from(*first_contact);
        }
        Fact::Reopened => counts.reopened += 1,
        Fact::SlaBreach => counts.sla_breaches += 1,
        Fact::Placed {
            currency,
            amount,
            first,
            gap,
        } => {
            counts.placed += 1;
            *counts.revenue_minor.entry(currency.clone()).or_default() += amount;
            counts.new_customers += u64::from(*first);
            if let Some(gap) = gap {
                counts.repeat_purchases += 1;
                counts.repeat_gap_millis_sum += gap;
            }
        }
        Fact::Returned { currency, amount } => {
            counts.returned += 1;
            *counts.returned_minor.entry(currency.clone()).or_default() += amount;
        }
        Fact::Fulfilled { complete } => {
            counts.fulfilled += 1;
            counts.complete_first_shipment += u64::from(*complete);
        }
    }
}

fn u(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not an unsigned integer: {value}"))
}

fn millis(value: &Value) -> i64 {
    (value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
        * 1000.0)
        .round() as i64
}

fn money(totals: &mut BTreeMap<String, i64>, value: &Value) {
    for (currency, amount) in value.as_object().expect("money object") {
        *totals.entry(currency.clone()).or_default() +=
            amount.as_i64().expect("integer minor units");
    }
}

/// Adds one `cx.metrics` record to `counts`, and checks its ratios against its own counts.
pub fn add_result(counts: &mut Counts, result: &Value) {
    let nps = &result["nps"];
    counts.nps_promoters += u(&nps["promoters"]);
    counts.nps_passives += u(&nps["passives"]);
    counts.nps_detractors += u(&nps["detractors"]);
    let responses = u(&nps["responses"]);
    assert_eq!(
        responses,
        u(&nps["promoters"]) + u(&nps["passives"]) + u(&nps["detractors"])
    );
    let expected_score = (responses > 0).then(|| {
        100.0 * (u(&nps["promoters"]) as f64 - u(&nps["detractors"]) as f64) / responses as f64
    });
    assert_eq!(
        nps["score"].as_f64(),
        expected_score,
        "nps.score of {result}"
    );
    let csat = &result["csat"];
    counts.csat_responses += u(&csat["responses"]);
    counts.csat_satisfied += u(&csat["satisfied"]);
    let ces = &result["ces"];
    counts.ces_responses += u(&ces["responses"]);
    counts.ces_score_sum += u(&ces["score_sum"]);
    let tickets = &result["tickets"];
    counts.opened += u(&tickets["opened"]);
    counts.first_responses += u(&tickets["first_responses"]);
    counts.first_response_millis_sum += millis(&tickets["first_response_seconds_sum"]);
    for (label, value) in tickets["first_response_buckets"]
        .as_object()
        .expect("buckets")
    {
        *counts
            .first_response_buckets
            .entry(label.clone())
            .or_default() += u(value);
    }
    let first_responses = u(&tickets["first_responses"]);
    let expected_mean = (first_responses > 0).then(|| {
        (millis(&tickets["first_response_seconds_sum"]) as f64 / first_responses as f64).round()
            / 1000.0
    });
    assert_eq!(
        tickets["mean_first_response_seconds"].as_f64(),
        expected_mean,
        "{result}"
    );
    assert_eq!(
        u(&tickets["first_response_buckets"]["+Inf"]),
        first_responses
    );
    counts.resolved += u(&tickets["resolved"]);
    counts.resolution_millis_sum += millis(&tickets["resolution_seconds_sum"]);
    counts.first_contact_resolutions += u(&tickets["first_contact_resolutions"]);
    counts.reopened += u(&tickets["reopened"]);
    counts.sla_breaches += u(&tickets["sla_breaches"]);
    let opened = u(&tickets["opened"]);
    let expected_rate = (opened > 0).then(|| u(&tickets["resolved"]) as f64 / opened as f64);
    assert_eq!(
        tickets["resolution_rate"].as_f64(),
        expected_rate,
        "{result}"
    );
    let orders = &result["orders"];
    counts.placed += u(&orders["placed"]);
    money(&mut counts.revenue_minor, &orders["revenue_minor"]);
    counts.returned += u(&orders["returned"]);
    money(&mut counts.returned_minor, &orders["returned_minor"]);
    counts.fulfilled += u(&orders["fulfilled"]);
    counts.complete_first_shipment += u(&orders["complete_first_shipment"]);
    counts.new_customers += u(&orders["new_customers"]);
    counts.repeat_purchases += u(&orders["repeat_purchases"]);
    counts.repeat_gap_millis_sum += millis(&orders["repeat_gap_seconds_sum"]);
    let retention = &result["retention"];
    let (start, end) = (
        u(&retention["customers_at_start"]),
        u(&retention["customers_at_end"]),
    );
    counts.customers_at_start += start;
    counts.customers_at_end += end;
    assert_eq!(u(&retention["new_customers"]), u(&orders["new_customers"]));
    let expected_rate = (start > 0)
        .then(|| 100.0 * (end as f64 - u(&orders["new_customers"]) as f64) / start as f64);
    assert_eq!(
        retention["rate"].as_f64(),
        expected_rate,
        "retention.rate of {result}"
    );
}

/// Lifecycle and segment thresholds, ms.
#[derive(Debug, Clone)]
pub struct ProfileRules {
    pub horizon: i64,
    pub new_period: i64,
    pub champion_recency: i64,
    pub champion_min_orders: u64,
    pub champion_min_value: i64,
}

impl ProfileRules {
    /// The lifecycle and segment rules of a cxpulse config, in ms.
    pub fn from_config(config: &cxpulse::config::Config) -> ProfileRules {
        let millis = cxpulse::window::millis;
        let segments = &config.segments;
        ProfileRules {
            horizon: millis(config.processing.activity_horizon),
            new_period: millis(segments.new_period),
            champion_recency: millis(segments.champion_recency),
            champion_min_orders: segments.champion_min_orders,
            champion_min_value: segments.champion_min_value,
        }
    }
}

fn rfc3339(millis: i64) -> String {
    cxpulse::event::EventTime::from_millis(millis).to_rfc3339()
}

/// Every customer's profile by definition, with lifecycle and segment as of
/// `max(last_seen, as_of)`; `updated_at` is left empty (wall clock).
pub fn profiles(
    events: &[Event],
    rules: &ProfileRules,
    as_of: i64,
) -> BTreeMap<String, cxpulse::proto::Profile> {
    let mut seen = HashSet::new();
    let mut by_customer: BTreeMap<String, Vec<&Event>> = BTreeMap::new();
    for event in events {
        if seen.insert((event.customer_id.clone(), event.event_id.clone())) {
            by_customer
                .entry(event.customer_id.to_string())
                .or_default()
                .push(event);
        }
    }
    let mut result = BTreeMap::new();
    for (customer, events) in by_customer {
        let times: Vec<i64> = events.iter().map(|e| e.occurred_at.millis()).collect();
        let (first_seen, last_seen) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
        let mut placed = Vec::new();
        let mut revenue: BTreeMap<String, i64> = BTreeMap::new();
        let mut returned: BTreeMap<String, i64> = BTreeMap::new();
        // Latest answer per kind: by event time, the later arrival winning ties.
        let mut last_nps: Option<(i64, u8)> = None;
        let mut last_csat: Option<(i64, u8, u8)> = None;
        let mut last_ces: Option<(i64, u8, u8)> = None;
        let mut tickets: BTreeMap<String, Vec<(i64, TicketAction)>> = BTreeMap::new();
        for event in &events {
            let at = event.occurred_at.millis();
            match &event.body {
                EventBody::Purchase(purchase) => match purchase.action {
                    PurchaseAction::Placed { amount } => {
                        placed.push(at);
                        *revenue.entry(amount.currency.to_string()).or_default() += amount.amount.0;
                    }
                    PurchaseAction::Returned { amount } => {
                        *returned.entry(amount.currency.to_string()).or_default() +=
                            amount.amount.0;
                    }
                    PurchaseAction::Fulfilled { .. } => {}
                },
                EventBody::Survey(survey) => match survey.response {
                    SurveyResponse::Nps { score } if last_nps.is_none_or(|(t, _)| t <= at) => {
                        last_nps = Some((at, score))
                    }
                    SurveyResponse::Csat { score, scale_max }
                        if last_csat.is_none_or(|(t, ..)| t <= at) =>
                    {
                        last_csat = Some((at, score, scale_max))
                    }
                    SurveyResponse::Ces { score, scale_max }
                        if last_ces.is_none_or(|(t, ..)| t <= at) =>
                    {
                        last_ces = Some((at, score, scale_max))
                    }
                    _ => {}
                },
                EventBody::Ticket(ticket) => tickets
                    .entry(ticket.ticket_id.to_string())
                    .or_default()
                    .push((at, ticket.action)),
            }
        }
        let (mut open, mut opened, mut resolved, mut responses, mut response_sum) =
            (0u64, 0u64, 0u64, 0u64, 0i64);
        for history in tickets.values() {
            // A ticket's events are in order already (arrival order); find its opening.
            let Some(start) = history
                .iter()
                .position(|(_, a)| matches!(a, TicketAction::Opened { .. }))
            else {
                continue;
            };
            let mut is_open = false;
            let mut opened_at = 0;
            let mut responded = false;
            for (at, action) in &history[start..] {
                match action {
                    TicketAction::Opened { .. } => {
                        opened += 1;
                        is_open = true;
                        opened_at = *at;
                        responded = false;
                    }
                    TicketAction::AgentReplied if !responded => {
                        responded = true;
                        responses += 1;
                        response_sum += at - opened_at;
                    }
                    TicketAction::Resolved => {
                        resolved += 1;
                        is_open = false;
                    }
                    TicketAction::Reopened => is_open = true,
                    _ => {}
                }
            }
            open += u64::from(is_open);
        }
        placed.sort();
        let net: BTreeMap<String, i64> = {
            let mut net = revenue.clone();
            for (currency, amount) in &returned {
                *net.entry(currency.clone()).or_default() -= amount;
            }
            net
        };
        let now = last_seen.max(as_of);
        let detractor = last_nps.is_some_and(|(_, score)| score <= 6);
        let (lifecycle, segment) = match (placed.first(), placed.last()) {
            (Some(&first), Some(&last)) => {
                let came_back = placed
                    .windows(2)
                    .filter(|pair| pair[1] - pair[0] >= rules.horizon)
                    .map(|pair| pair[1])
                    .next_back();
                let lifecycle = if now >= last + rules.horizon {
                    "churned"
                } else if came_back.is_some_and(|back| now < back + rules.new_period) {
                    "reactivated"
                } else if now < first + rules.new_period {
                    "new"
                } else {
                    "active"
                };
                let segment = if lifecycle == "churned" {
                    "lost"
                } else if detractor || now > last + rules.horizon / 2 {
                    "at_risk"
                } else if now < last + rules.champion_recency
                    && placed.len() as u64 >= rules.champion_min_orders
                    && net.values().any(|value| *value >= rules.champion_min_value)
                {
                    "champion"
                } else {
                    "regular"
                };
                (lifecycle, segment)
            }
            _ => ("prospect", "regular"),
        };
        let gaps = placed.len().saturating_sub(1);
        let profile = cxpulse::proto::Profile {
            customer_id: customer.clone(),
            first_seen: rfc3339(first_seen),
            last_seen: rfc3339(last_seen),
            events: events.len() as u64,
            orders_placed: placed.len() as u64,
            revenue_minor: revenue,
            returned_minor: returned,
            net_value_minor: net,
            first_purchase_at: placed.first().map(|t| rfc3339(*t)),
            last_purchase_at: placed.last().map(|t| rfc3339(*t)),
            mean_days_between_purchases: (gaps > 0).then(|| {
                (placed[placed.len() - 1] - placed[0]) as f64 / 86_400_000.0 / gaps as f64
            }),
            open_tickets: open,
            tickets_opened: opened,
            tickets_resolved: resolved,
            mean_first_response_seconds: (responses > 0)
                .then(|| (response_sum as f64 / responses as f64).round() / 1000.0),
            last_nps_score: last_nps.map(|(_, score)| i64::from(score)),
            last_nps_category: last_nps.map(|(_, score)| {
                match score {
                    9..=10 => "promoter",
                    7..=8 => "passive",
                    _ => "detractor",
                }
                .to_string()
            }),
            last_nps_at: last_nps.map(|(at, _)| rfc3339(at)),
            last_csat_score: last_csat.map(|(_, score, _)| i64::from(score)),
            last_csat_scale_max: last_csat.map(|(_, _, scale)| i64::from(scale)),
            last_ces_score: last_ces.map(|(_, score, _)| i64::from(score)),
            last_ces_scale_max: last_ces.map(|(_, _, scale)| i64::from(scale)),
            segment: segment.to_string(),
            lifecycle: lifecycle.to_string(),
            updated_at: String::new(),
        };
        result.insert(customer, profile);
    }
    result
}
