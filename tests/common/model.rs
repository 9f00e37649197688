//! An independent model of every cxpulse output, written from the SPEC's
//! definitions (and `docs/contract.md` where the SPEC leaves an order question
//! open) over the test generator's own events; it shares no code with the
//! engine. For one customer it replays the events in the order the engine
//! applied them and gives every state the profile goes through, with the
//! signals each change causes; for one task it computes every window by
//! scanning every fact.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::generator::{Body, Input, Topic};

/// The rules of a config, in ms, read from its plain values.
#[derive(Debug, Clone)]
pub struct Rules {
    pub windows: Vec<Spec>,
    pub lateness: i64,
    pub horizon: i64,
    pub new_period: i64,
    pub champion_recency: i64,
    pub champion_min_orders: u64,
    pub champion_min_value: i64,
    /// SLA threshold per channel name.
    pub sla: BTreeMap<&'static str, i64>,
}

/// Window spec: name, size and step in ms.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub size: i64,
    pub step: i64,
}

fn ms(duration: std::time::Duration) -> i64 {
    duration.as_millis() as i64
}

impl Rules {
    pub fn from_config(config: &cxpulse::config::Config) -> Rules {
        let sla = &config.sla;
        Rules {
            windows: config
                .windows
                .iter()
                .map(|w| Spec {
                    name: w.name.to_string(),
                    size: ms(w.size),
                    step: ms(w.step),
                })
                .collect(),
            lateness: ms(config.processing.allowed_lateness),
            horizon: ms(config.processing.activity_horizon),
            new_period: ms(config.segments.new_period),
            champion_recency: ms(config.segments.champion_recency),
            champion_min_orders: config.segments.champion_min_orders,
            champion_min_value: config.segments.champion_min_value,
            sla: BTreeMap::from([
                ("email", ms(sla.email)),
                ("chat", ms(sla.chat)),
                ("phone", ms(sla.phone)),
                ("social", ms(sla.social)),
                ("web", ms(sla.web)),
            ]),
        }
    }
}

// ---------------------------------------------------------------- profiles

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lifecycle {
    #[default]
    Prospect,
    New,
    Active,
    Churned,
    Reactivated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Segment {
    Champion,
    AtRisk,
    Lost,
    #[default]
    Regular,
}

impl Lifecycle {
    pub fn name(self) -> &'static str {
        match self {
            Lifecycle::Prospect => "prospect",
            Lifecycle::New => "new",
            Lifecycle::Active => "active",
            Lifecycle::Churned => "churned",
            Lifecycle::Reactivated => "reactivated",
        }
    }
}

impl Segment {
    pub fn name(self) -> &'static str {
        match self {
            Segment::Champion => "champion",
            Segment::AtRisk => "at_risk",
            Segment::Lost => "lost",
            Segment::Regular => "regular",
        }
    }
}

/// NPS category by the SPEC: promoter 9-10, passive 7-8, detractor 0-6.
pub fn nps_category(score: u8) -> &'static str {
    if score >= 9 {
        "promoter"
    } else if score >= 7 {
        "passive"
    } else {
        "detractor"
    }
}

/// A ticket as the model follows it.
#[derive(Debug, Clone)]
struct Ticket {
    opened_at: i64,
    deadline: i64,
    agent_replies: u32,
    first_reply: Option<i64>,
    reopened: bool,
    open: bool,
}

/// Everything the model knows of one customer after some of their events.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub first_seen: i64,
    pub last_seen: i64,
    pub events: u64,
    pub orders: u64,
    pub revenue: BTreeMap<String, i64>,
    pub returned: BTreeMap<String, i64>,
    pub first_purchase: Option<i64>,
    pub last_purchase: Option<i64>,
    pub reactivated_at: Option<i64>,
    pub open_tickets: u64,
    pub tickets_opened: u64,
    pub tickets_resolved: u64,
    pub first_responses: u64,
    pub first_response_sum: i64,
    /// (time, score), the latest by event time; a tie goes to the later applied.
    pub last_nps: Option<(i64, u8)>,
    pub last_csat: Option<(i64, u8, u8)>,
    pub last_ces: Option<(i64, u8, u8)>,
    /// The instant lifecycle and segment describe.
    pub as_of: i64,
    pub lifecycle: Lifecycle,
    pub segment: Segment,
}

impl State {
    pub fn net(&self) -> BTreeMap<String, i64> {
        let mut net = self.revenue.clone();
        for (currency, amount) in &self.returned {
            *net.entry(currency.clone()).or_default() -= amount;
        }
        net
    }

    /// Lifecycle and segment at `now` (SPEC section 3).
    fn classify(&self, now: i64, rules: &Rules) -> (Lifecycle, Segment) {
        let (Some(first), Some(last)) = (self.first_purchase, self.last_purchase) else {
            return (Lifecycle::Prospect, Segment::Regular);
        };
        let lifecycle = if now - last >= rules.horizon {
            Lifecycle::Churned
        } else if self
            .reactivated_at
            .is_some_and(|back| now - back < rules.new_period)
        {
            Lifecycle::Reactivated
        } else if now - first < rules.new_period {
            Lifecycle::New
        } else {
            Lifecycle::Active
        };
        let detractor = self
            .last_nps
            .is_some_and(|(_, score)| nps_category(score) == "detractor");
        let segment = if lifecycle == Lifecycle::Churned {
            Segment::Lost
        } else if detractor || 2 * (now - last) > rules.horizon {
            Segment::AtRisk
        } else if now - last < rules.champion_recency
            && self.orders >= rules.champion_min_orders
            && self
                .net()
                .values()
                .any(|net| *net >= rules.champion_min_value)
        {
            Segment::Champion
        } else {
            Segment::Regular
        };
        (lifecycle, segment)
    }

    /// Instants after which the classification may differ with no new event.
    fn transitions(&self, rules: &Rules) -> BTreeSet<i64> {
        let (Some(first), Some(last)) = (self.first_purchase, self.last_purchase) else {
            return BTreeSet::new();
        };
        let mut instants = BTreeSet::from([
            first + rules.new_period,
            last + rules.champion_recency,
            last + rules.horizon / 2 + 1,
            last + rules.horizon,
        ]);
        instants.extend(self.reactivated_at.map(|back| back + rules.new_period));
        instants
    }

    /// The published form.
    pub fn view(&self, customer: &str) -> ProfileView {
        ProfileView {
            customer_id: customer.to_string(),
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            events: self.events,
            orders_placed: self.orders,
            revenue_minor: self.revenue.clone(),
            returned_minor: self.returned.clone(),
            net_value_minor: self.net(),
            first_purchase_at: self.first_purchase,
            last_purchase_at: self.last_purchase,
            mean_days_between_purchases: Approx(match (self.first_purchase, self.last_purchase) {
                (Some(first), Some(last)) if self.orders > 1 => {
                    Some((last - first) as f64 / (self.orders - 1) as f64 / 86_400_000.0)
                }
                _ => None,
            }),
            open_tickets: self.open_tickets,
            tickets_opened: self.tickets_opened,
            tickets_resolved: self.tickets_resolved,
            mean_first_response_seconds: Approx((self.first_responses > 0).then(|| {
                (self.first_response_sum as f64 / self.first_responses as f64).round() / 1000.0
            })),
            last_nps_score: self.last_nps.map(|(_, score)| i64::from(score)),
            last_nps_category: self
                .last_nps
                .map(|(_, score)| nps_category(score).to_string()),
            last_nps_at: self.last_nps.map(|(at, _)| at),
            last_csat_score: self.last_csat.map(|(_, score, _)| i64::from(score)),
            last_csat_scale_max: self.last_csat.map(|(_, _, scale)| i64::from(scale)),
            last_ces_score: self.last_ces.map(|(_, score, _)| i64::from(score)),
            last_ces_scale_max: self.last_ces.map(|(_, _, scale)| i64::from(scale)),
            segment: self.segment.name().to_string(),
            lifecycle: self.lifecycle.name().to_string(),
        }
    }

    /// The profile context of an enriched event.
    pub fn context(&self) -> Context {
        Context {
            segment: self.segment.name().to_string(),
            lifecycle: self.lifecycle.name().to_string(),
            net_value_minor: self.net(),
            last_nps_category: self
                .last_nps
                .map(|(_, score)| nps_category(score).to_string()),
            open_tickets: self.open_tickets,
        }
    }
}

/// A float compared within a few ulps (null equals only null).
#[derive(Debug, Clone, Copy)]
pub struct Approx(pub Option<f64>);

impl PartialEq for Approx {
    fn eq(&self, other: &Approx) -> bool {
        match (self.0, other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => close(a, b),
            _ => false,
        }
    }
}

/// Equal within 4 ulps of the larger magnitude.
pub fn close(a: f64, b: f64) -> bool {
    let scale = a.abs().max(b.abs());
    (a - b).abs() <= 4.0 * f64::EPSILON * scale
}

/// A published profile, read into the test's own type.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileView {
    pub customer_id: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub events: u64,
    pub orders_placed: u64,
    pub revenue_minor: BTreeMap<String, i64>,
    pub returned_minor: BTreeMap<String, i64>,
    pub net_value_minor: BTreeMap<String, i64>,
    pub first_purchase_at: Option<i64>,
    pub last_purchase_at: Option<i64>,
    pub mean_days_between_purchases: Approx,
    pub open_tickets: u64,
    pub tickets_opened: u64,
    pub tickets_resolved: u64,
    pub mean_first_response_seconds: Approx,
    pub last_nps_score: Option<i64>,
    pub last_nps_category: Option<String>,
    pub last_nps_at: Option<i64>,
    pub last_csat_score: Option<i64>,
    pub last_csat_scale_max: Option<i64>,
    pub last_ces_score: Option<i64>,
    pub last_ces_scale_max: Option<i64>,
    pub segment: String,
    pub lifecycle: String,
}

/// The profile context of an enriched event.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    pub segment: String,
    pub lifecycle: String,
    pub net_value_minor: BTreeMap<String, i64>,
    pub last_nps_category: Option<String>,
    pub open_tickets: u64,
}

/// A signal the model expects (or reads back).
#[derive(Debug, Clone, PartialEq)]
pub struct SignalView {
    pub id: String,
    pub kind: String,
    pub customer: String,
    pub at: i64,
    pub ticket: Option<String>,
    pub segment: String,
    pub previous_segment: Option<String>,
    pub lifecycle: String,
}

/// Where an input record was read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl Position {
    fn id(&self, kind: &str) -> String {
        format!("{}/{}/{}/{kind}", self.topic, self.partition, self.offset)
    }
}

/// What made the profile change.
#[derive(Debug, Clone, PartialEq)]
pub enum StepCause {
    /// The event at this index of the applied order.
    Event(usize),
    /// A review at this instant (time passing).
    Review(i64),
}

/// One state of a customer's profile and what reaching it emitted.
#[derive(Debug, Clone)]
pub struct Step {
    pub cause: StepCause,
    pub state: State,
    /// Whether a profile record is due (always for an event; for a review, on a change).
    pub emits_profile: bool,
    pub signals: Vec<SignalView>,
}

/// An SLA breach: its signal's profile fields may be those of any state in
/// `steps` (it is seen either by the task's timer or by a late first reply).
#[derive(Debug, Clone)]
pub struct Breach {
    pub ticket: String,
    pub deadline: i64,
    pub steps: std::ops::RangeInclusive<usize>,
}

/// A fact some windows count, at an event time.
#[derive(Debug, Clone)]
pub enum Fact {
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

/// A customer's history as the model replays it.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    pub steps: Vec<Step>,
    pub breaches: Vec<Breach>,
    /// Window facts of the events that were not late, by time.
    pub facts: Vec<(i64, Fact)>,
    /// Placed times (for `A(t)`).
    pub placed: Vec<i64>,
}

/// Replays one customer's events in the order the engine applied them
/// (`order`, redeliveries included); reviews up to the next event's time happen
/// before it, and those before `review_until` after the last one. Late inputs
/// come after the task's timers fired up to `late_review_until` (its watermark
/// then, less the lateness).
pub fn replay(
    customer: &str,
    order: &[(&Input, Position)],
    rules: &Rules,
    review_until: i64,
    late_review_until: i64,
) -> Replay {
    let mut replay = Replay::default();
    let mut state: Option<State> = None;
    let mut seen = HashSet::new();
    let mut tickets: HashMap<String, Ticket> = HashMap::new();
    let signal =
        |state: &State, before: Segment, kind: &str, id: String, at: i64, ticket: Option<&str>| {
            SignalView {
                id,
                kind: kind.to_string(),
                customer: customer.to_string(),
                at,
                ticket: ticket.map(str::to_string),
                segment: state.segment.name().to_string(),
                previous_segment: (state.segment != before).then(|| before.name().to_string()),
                lifecycle: state.lifecycle.name().to_string(),
            }
        };
    let review = |state: &mut State, until: i64, inclusive: bool, steps: &mut Vec<Step>| {
        for instant in state.transitions(rules) {
            let due = if inclusive {
                instant <= until
            } else {
                instant < until
            };
            if instant <= state.as_of || !due {
                continue;
            }
            let before = (state.lifecycle, state.segment);
            state.as_of = instant;
            (state.lifecycle, state.segment) = state.classify(instant, rules);
            if (state.lifecycle, state.segment) == before {
                continue;
            }
            let key = format!("review/{instant}");
            let mut signals = Vec::new();
            if state.lifecycle == Lifecycle::Churned && before.0 != Lifecycle::Churned {
                signals.push(signal(
                    state,
                    before.1,
                    "customer_churned",
                    format!("{customer}/customer_churned/{key}"),
                    instant,
                    None,
                ));
            }
            if state.segment != before.1 {
                signals.push(signal(
                    state,
                    before.1,
                    "segment_changed",
                    format!("{customer}/segment_changed/{key}"),
                    instant,
                    None,
                ));
            }
            steps.push(Step {
                cause: StepCause::Review(instant),
                state: state.clone(),
                emits_profile: true,
                signals,
            });
        }
    };
    let mut breaches_pending: Vec<(String, i64)> = Vec::new();
    for (index, (input, position)) in order.iter().enumerate() {
        if !seen.insert(input.event_id.clone()) {
            continue;
        }
        let at = input.at;
        if let Some(state) = state.as_mut() {
            if input.late {
                review(state, late_review_until, false, &mut replay.steps);
            }
            review(state, at, true, &mut replay.steps);
        }
        let state = state.get_or_insert_with(|| State {
            first_seen: at,
            last_seen: at,
            as_of: at,
            ..State::default()
        });
        let before = (state.lifecycle, state.segment);
        state.first_seen = state.first_seen.min(at);
        state.last_seen = state.last_seen.max(at);
        state.as_of = state.as_of.max(at);
        state.events += 1;
        let mut facts: Vec<(i64, Fact)> = Vec::new();
        // (kind, id, time, ticket) of this event's signals.
        let mut signals: Vec<(&str, String, i64, Option<String>)> = Vec::new();
        match &input.body {
            Body::Placed {
                amount, currency, ..
            } => {
                let previous = state.last_purchase;
                if previous.is_some_and(|last| at - last >= rules.horizon) {
                    state.reactivated_at = Some(at);
                    signals.push((
                        "customer_reactivated",
                        position.id("customer_reactivated"),
                        at,
                        None,
                    ));
                }
                facts.push((
                    at,
                    Fact::Placed {
                        currency: currency.to_string(),
                        amount: *amount,
                        first: state.orders == 0,
                        gap: previous.map(|last| at - last),
                    },
                ));
                state.orders += 1;
                *state.revenue.entry(currency.to_string()).or_default() += amount;
                state.first_purchase = Some(state.first_purchase.map_or(at, |first| first.min(at)));
                state.last_purchase = Some(previous.map_or(at, |last| last.max(at)));
                replay.placed.push(at);
            }
            Body::Fulfilled { complete, .. } => facts.push((
                at,
                Fact::Fulfilled {
                    complete: *complete,
                },
            )),
            Body::Returned {
                amount, currency, ..
            } => {
                *state.returned.entry(currency.to_string()).or_default() += amount;
                facts.push((
                    at,
                    Fact::Returned {
                        currency: currency.to_string(),
                        amount: *amount,
                    },
                ));
            }
            Body::Opened { ticket, channel } => {
                let deadline = at + rules.sla[channel];
                let was_open = tickets
                    .insert(
                        ticket.clone(),
                        Ticket {
                            opened_at: at,
                            deadline,
                            agent_replies: 0,
                            first_reply: None,
                            reopened: false,
                            open: true,
                        },
                    )
                    .is_some_and(|previous| previous.open);
                state.tickets_opened += 1;
                state.open_tickets += u64::from(!was_open);
                facts.push((at, Fact::Opened));
                breaches_pending.push((ticket.clone(), deadline));
            }
            Body::AgentReplied { ticket } => {
                if let Some(known) = tickets.get_mut(ticket) {
                    known.agent_replies += 1;
                    if known.first_reply.is_none() {
                        known.first_reply = Some(at);
                        state.first_responses += 1;
                        state.first_response_sum += at - known.opened_at;
                        facts.push((at, Fact::FirstResponse(at - known.opened_at)));
                    }
                }
            }
            Body::CustomerReplied { .. } => {}
            Body::Resolved { ticket } => {
                if let Some(known) = tickets.get_mut(ticket) {
                    state.tickets_resolved += 1;
                    facts.push((
                        at,
                        Fact::Resolved {
                            millis: at - known.opened_at,
                            first_contact: known.agent_replies == 1 && !known.reopened,
                        },
                    ));
                    if known.open {
                        known.open = false;
                        state.open_tickets -= 1;
                    }
                }
            }
            Body::Reopened { ticket } => {
                if let Some(known) = tickets.get_mut(ticket) {
                    known.reopened = true;
                    facts.push((at, Fact::Reopened));
                    if !known.open {
                        known.open = true;
                        state.open_tickets += 1;
                    }
                }
                signals.push((
                    "ticket_reopened",
                    position.id("ticket_reopened"),
                    at,
                    Some(ticket.clone()),
                ));
            }
            Body::Nps { score } => {
                if state.last_nps.is_none_or(|(last, _)| last <= at) {
                    state.last_nps = Some((at, *score));
                }
                facts.push((at, Fact::Nps(*score)));
                if nps_category(*score) == "detractor" {
                    signals.push((
                        "detractor_response",
                        position.id("detractor_response"),
                        at,
                        None,
                    ));
                    if before.1 == Segment::Champion {
                        signals.push(("vip_at_risk", position.id("vip_at_risk"), at, None));
                    }
                }
            }
            Body::Csat { score, scale } => {
                if state.last_csat.is_none_or(|(last, ..)| last <= at) {
                    state.last_csat = Some((at, *score, *scale));
                }
                facts.push((
                    at,
                    Fact::Csat {
                        score: *score,
                        scale: *scale,
                    },
                ));
            }
            Body::Ces { score, scale } => {
                if state.last_ces.is_none_or(|(last, ..)| last <= at) {
                    state.last_ces = Some((at, *score, *scale));
                }
                facts.push((at, Fact::Ces(*score)));
            }
        }
        (state.lifecycle, state.segment) = state.classify(state.as_of, rules);
        if state.lifecycle == Lifecycle::Churned && before.0 != Lifecycle::Churned {
            signals.push((
                "customer_churned",
                position.id("customer_churned"),
                at,
                None,
            ));
        }
        if state.segment != before.1 {
            signals.push(("segment_changed", position.id("segment_changed"), at, None));
        }
        let signals = signals
            .into_iter()
            .map(|(kind, id, at, ticket)| signal(state, before.1, kind, id, at, ticket.as_deref()))
            .collect();
        replay.steps.push(Step {
            cause: StepCause::Event(index),
            state: state.clone(),
            emits_profile: true,
            signals,
        });
        if !input.late {
            replay.facts.extend(facts);
        }
    }
    if let Some(state) = state.as_mut() {
        review(state, review_until, false, &mut replay.steps);
    }
    // SLA breaches: a first reply after the deadline, or none while the deadline passed.
    for (ticket, deadline) in breaches_pending {
        let reply_step = replay.steps.iter().position(|step| match step.cause {
            StepCause::Event(index) => {
                let input = order[index].0;
                matches!(&input.body, Body::AgentReplied { ticket: t } if *t == ticket)
            }
            StepCause::Review(_) => false,
        });
        let reply_at = reply_step.and_then(|step| match replay.steps[step].cause {
            StepCause::Event(index) => Some(order[index].0.at),
            StepCause::Review(_) => None,
        });
        let breached = match reply_at {
            Some(reply) => reply > deadline,
            None => deadline < review_until,
        };
        if !breached {
            continue;
        }
        replay.facts.push((deadline, Fact::SlaBreach));
        // Seen once every event up to the deadline and every earlier review was applied.
        let first = replay
            .steps
            .iter()
            .rposition(|step| match step.cause {
                StepCause::Event(index) => !order[index].0.late && order[index].0.at <= deadline,
                StepCause::Review(instant) => instant < deadline,
            })
            .unwrap_or(0);
        let steps = match reply_step {
            // The reply came before some event up to the deadline: the timer cannot have
            // fired yet, so the reply saw the breach.
            Some(reply) if reply < first => reply..=reply,
            Some(reply) => first..=reply,
            None => first..=replay.steps.len() - 1,
        };
        replay.breaches.push(Breach {
            ticket,
            deadline,
            steps,
        });
    }
    replay
}

// ---------------------------------------------------------------- windows

/// First-response bucket bounds, seconds, and their labels.
pub const BOUNDS: [(i64, &str); 8] = [
    (60, "60"),
    (300, "300"),
    (900, "900"),
    (1800, "1800"),
    (3600, "3600"),
    (14_400, "14400"),
    (86_400, "86400"),
    (i64::MAX, "+Inf"),
];

/// Additive content of one window.
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
    pub customers_at_start: u64,
    pub customers_at_end: u64,
}

/// The ratios of one window (SPEC section 4).
#[derive(Debug, Clone, PartialEq)]
pub struct Ratios {
    pub nps_score: Approx,
    pub csat_percent: Approx,
    pub ces_mean: Approx,
    pub mean_first_response_seconds: Approx,
    pub mean_resolution_seconds: Approx,
    pub resolution_rate: Approx,
    pub first_contact_resolution_rate: Approx,
    pub return_rate: Approx,
    pub fill_rate: Approx,
    pub mean_days_between_purchases: Approx,
    pub retention_rate: Approx,
}

/// A window as the model computes it or as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub counts: Counts,
    pub ratios: Ratios,
}

fn per(numerator: f64, denominator: u64) -> Approx {
    Approx((denominator > 0).then(|| numerator / denominator as f64))
}

fn mean_millis_as_seconds(sum: i64, count: u64) -> Approx {
    Approx((count > 0).then(|| (sum as f64 / count as f64).round() / 1000.0))
}

impl Counts {
    /// The SPEC's ratios of these counts.
    pub fn ratios(&self) -> Ratios {
        let responses = self.nps_promoters + self.nps_passives + self.nps_detractors;
        Ratios {
            nps_score: per(
                (self.nps_promoters as f64 - self.nps_detractors as f64) * 100.0,
                responses,
            ),
            csat_percent: per(self.csat_satisfied as f64 * 100.0, self.csat_responses),
            ces_mean: per(self.ces_score_sum as f64, self.ces_responses),
            mean_first_response_seconds: mean_millis_as_seconds(
                self.first_response_millis_sum,
                self.first_responses,
            ),
            mean_resolution_seconds: mean_millis_as_seconds(
                self.resolution_millis_sum,
                self.resolved,
            ),
            resolution_rate: per(self.resolved as f64, self.opened),
            first_contact_resolution_rate: per(
                self.first_contact_resolutions as f64,
                self.resolved,
            ),
            return_rate: per(self.returned as f64, self.placed),
            fill_rate: per(self.complete_first_shipment as f64, self.fulfilled),
            mean_days_between_purchases: Approx((self.repeat_purchases > 0).then(|| {
                self.repeat_gap_millis_sum as f64 / 1000.0 / 86_400.0 / self.repeat_purchases as f64
            })),
            retention_rate: per(
                (self.customers_at_end as f64 - self.new_customers as f64) * 100.0,
                self.customers_at_start,
            ),
        }
    }

    fn add(&mut self, fact: &Fact) {
        match fact {
            Fact::Nps(score) => match nps_category(*score) {
                "promoter" => self.nps_promoters += 1,
                "passive" => self.nps_passives += 1,
                _ => self.nps_detractors += 1,
            },
            Fact::Csat { score, scale } => {
                self.csat_responses += 1;
                // score >= 0.8 × scale_max, exactly: 5 × score >= 4 × scale_max.
                if 5 * u32::from(*score) >= 4 * u32::from(*scale) {
                    self.csat_satisfied += 1;
                }
            }
            Fact::Ces(score) => {
                self.ces_responses += 1;
                self.ces_score_sum += u64::from(*score);
            }
            Fact::Opened => self.opened += 1,
            Fact::FirstResponse(millis) => {
                self.first_responses += 1;
                self.first_response_millis_sum += millis;
                for (bound, label) in BOUNDS {
                    if bound == i64::MAX || *millis <= bound * 1000 {
                        *self
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
                self.resolved += 1;
                self.resolution_millis_sum += millis;
                self.first_contact_resolutions += u64::from(*first_contact);
            }
            Fact::Reopened => self.reopened += 1,
            Fact::SlaBreach => self.sla_breaches += 1,
            Fact::Placed {
                currency,
                amount,
                first,
                gap,
            } => {
                self.placed += 1;
                *self.revenue_minor.entry(currency.clone()).or_default() += amount;
                self.new_customers += u64::from(*first);
                if let Some(gap) = gap {
                    self.repeat_purchases += 1;
                    self.repeat_gap_millis_sum += gap;
                }
            }
            Fact::Returned { currency, amount } => {
                self.returned += 1;
                *self.returned_minor.entry(currency.clone()).or_default() += amount;
            }
            Fact::Fulfilled { complete } => {
                self.fulfilled += 1;
                self.complete_first_shipment += u64::from(*complete);
            }
        }
    }
}

/// Every window one task emits by the time its watermark is `watermark`: for each
/// spec, from the first window containing a fact to the last one whose end plus the
/// lateness the watermark reached, empty ones included. `customers` are the task's
/// replays; every window is computed by scanning every fact.
pub fn task_windows(
    customers: &[&Replay],
    rules: &Rules,
    watermark: i64,
) -> BTreeMap<(String, i64), Window> {
    let facts: Vec<&(i64, Fact)> = customers.iter().flat_map(|replay| &replay.facts).collect();
    let placed: Vec<&Vec<i64>> = customers.iter().map(|replay| &replay.placed).collect();
    // A(t): customers with a placed in [t − horizon, t).
    let active = |t: i64| -> u64 {
        placed
            .iter()
            .filter(|times| times.iter().any(|p| t - rules.horizon <= *p && *p < t))
            .count() as u64
    };
    let mut result = BTreeMap::new();
    let Some(earliest) = facts.iter().map(|(at, _)| *at).min() else {
        return result;
    };
    for spec in &rules.windows {
        let mut end = earliest.div_euclid(spec.step) * spec.step + spec.step;
        while end + rules.lateness <= watermark {
            let mut counts = Counts::default();
            for (_, label) in BOUNDS {
                counts.first_response_buckets.insert(label.to_string(), 0);
            }
            for (at, fact) in &facts {
                if end - spec.size <= *at && *at < end {
                    counts.add(fact);
                }
            }
            counts.customers_at_start = active(end - spec.size);
            counts.customers_at_end = active(end);
            let ratios = counts.ratios();
            result.insert((spec.name.clone(), end), Window { counts, ratios });
            end += spec.step;
        }
    }
    result
}

/// The topic of an input, by its config's names.
pub fn topic_name(config: &cxpulse::config::Config, topic: Topic) -> String {
    match topic {
        Topic::Purchases => config.topics.purchases.clone(),
        Topic::Tickets => config.topics.tickets.clone(),
        Topic::Surveys => config.topics.surveys.clone(),
    }
}
