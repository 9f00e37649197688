//! Compares every output record with the model: windows field by field (ratios
//! within a few ulps), every profile record, every enriched event's context,
//! every signal; anything the model does not predict fails. Outputs are read
//! as JSON into the test's own types.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use serde_json::Value;

use super::generator::{parse_rfc3339, Body, Input, Topic};
use super::model::{
    self, Approx, Context, Counts, Position, ProfileView, Ratios, Replay, Rules, SignalView,
    StepCause, Window,
};

/// An input as it was delivered: where it landed.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub input: Input,
    pub position: Position,
}

/// A record read from an output topic, in its partition's order.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub value: Value,
}

/// Everything the engine wrote, per output topic, in partition order.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    pub enriched: Vec<Record>,
    pub profiles: Vec<Record>,
    pub signals: Vec<Record>,
    pub windows: Vec<Record>,
}

/// What the run promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// No crash, or exactly-once read with `read_committed`: every output once,
    /// each customer's records in the order of the events applied.
    Once,
    /// Crashes under at-least-once: outputs may repeat (with the same ids); windows
    /// and the last profiles must still be exact.
    AtLeastOnce,
}

/// How many records of each output were compared.
#[derive(Debug, Default)]
pub struct Compared {
    pub windows: usize,
    pub window_records: usize,
    pub profiles: usize,
    pub profile_records: usize,
    pub enriched: usize,
    pub signals: BTreeMap<String, usize>,
    pub late_inputs: usize,
}

impl Compared {
    pub fn summary(&self) -> String {
        let signals: usize = self.signals.values().sum();
        let mut text = format!(
            "{} windows ({} records), {} profiles ({} records), {} enriched events, {} signals",
            self.windows,
            self.window_records,
            self.profiles,
            self.profile_records,
            self.enriched,
            signals
        );
        if !self.signals.is_empty() {
            let kinds: Vec<String> = self
                .signals
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            let _ = write!(text, " ({})", kinds.join(", "));
        }
        let _ = write!(text, " equal the model; {} late inputs", self.late_inputs);
        text
    }
}

fn u(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not an unsigned integer: {value}"))
}

fn opt_i(value: &Value) -> Option<i64> {
    value.as_i64()
}

fn opt_s(value: &Value) -> Option<String> {
    value.as_str().map(str::to_string)
}

fn s(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
        .to_string()
}

fn time(value: &Value) -> i64 {
    parse_rfc3339(
        value
            .as_str()
            .unwrap_or_else(|| panic!("not a time: {value}")),
    )
}

fn opt_time(value: &Value) -> Option<i64> {
    value.as_str().map(parse_rfc3339)
}

fn seconds_as_millis(value: &Value) -> i64 {
    (value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
        * 1000.0)
        .round() as i64
}

fn money(value: &Value) -> BTreeMap<String, i64> {
    match value {
        Value::Null => BTreeMap::new(),
        Value::Object(map) => map
            .iter()
            .map(|(currency, amount)| {
                (
                    currency.clone(),
                    amount.as_i64().expect("integer minor units"),
                )
            })
            .collect(),
        other => panic!("not an amount per currency: {other}"),
    }
}

/// A `cx.profiles` value in the test's own type.
pub fn profile_view(json: &Value) -> ProfileView {
    ProfileView {
        customer_id: s(&json["customer_id"]),
        first_seen: time(&json["first_seen"]),
        last_seen: time(&json["last_seen"]),
        events: u(&json["events"]),
        orders_placed: u(&json["orders_placed"]),
        revenue_minor: money(&json["revenue_minor"]),
        returned_minor: money(&json["returned_minor"]),
        net_value_minor: money(&json["net_value_minor"]),
        first_purchase_at: opt_time(&json["first_purchase_at"]),
        last_purchase_at: opt_time(&json["last_purchase_at"]),
        mean_days_between_purchases: Approx(json["mean_days_between_purchases"].as_f64()),
        open_tickets: u(&json["open_tickets"]),
        tickets_opened: u(&json["tickets_opened"]),
        tickets_resolved: u(&json["tickets_resolved"]),
        mean_first_response_seconds: Approx(json["mean_first_response_seconds"].as_f64()),
        last_nps_score: opt_i(&json["last_nps_score"]),
        last_nps_category: opt_s(&json["last_nps_category"]),
        last_nps_at: opt_time(&json["last_nps_at"]),
        last_csat_score: opt_i(&json["last_csat_score"]),
        last_csat_scale_max: opt_i(&json["last_csat_scale_max"]),
        last_ces_score: opt_i(&json["last_ces_score"]),
        last_ces_scale_max: opt_i(&json["last_ces_scale_max"]),
        segment: s(&json["segment"]),
        lifecycle: s(&json["lifecycle"]),
    }
}

fn signal_view(json: &Value) -> SignalView {
    SignalView {
        id: s(&json["event_id"]),
        kind: s(&json["type"]),
        customer: s(&json["customer_id"]),
        at: time(&json["occurred_at"]),
        ticket: opt_s(&json["ticket_id"]),
        segment: s(&json["segment"]),
        previous_segment: opt_s(&json["previous_segment"]),
        lifecycle: s(&json["lifecycle"]),
    }
}

fn context(json: &Value) -> Context {
    Context {
        segment: s(&json["segment"]),
        lifecycle: s(&json["lifecycle"]),
        net_value_minor: money(&json["net_value_minor"]),
        last_nps_category: opt_s(&json["last_nps_category"]),
        open_tickets: u(&json["open_tickets"]),
    }
}

/// A `cx.metrics` value: its counts and the ratios it carries.
pub fn window_view(json: &Value) -> Window {
    let (nps, csat, ces, tickets, orders, retention) = (
        &json["nps"],
        &json["csat"],
        &json["ces"],
        &json["tickets"],
        &json["orders"],
        &json["retention"],
    );
    assert_eq!(
        u(&nps["responses"]),
        u(&nps["promoters"]) + u(&nps["passives"]) + u(&nps["detractors"]),
        "nps.responses of {json}"
    );
    assert_eq!(
        u(&retention["new_customers"]),
        u(&orders["new_customers"]),
        "retention.new_customers of {json}"
    );
    let counts = Counts {
        nps_promoters: u(&nps["promoters"]),
        nps_passives: u(&nps["passives"]),
        nps_detractors: u(&nps["detractors"]),
        csat_responses: u(&csat["responses"]),
        csat_satisfied: u(&csat["satisfied"]),
        ces_responses: u(&ces["responses"]),
        ces_score_sum: u(&ces["score_sum"]),
        opened: u(&tickets["opened"]),
        first_responses: u(&tickets["first_responses"]),
        first_response_millis_sum: seconds_as_millis(&tickets["first_response_seconds_sum"]),
        first_response_buckets: tickets["first_response_buckets"]
            .as_object()
            .expect("first_response_buckets")
            .iter()
            .map(|(bound, count)| (bound.clone(), u(count)))
            .collect(),
        resolved: u(&tickets["resolved"]),
        resolution_millis_sum: seconds_as_millis(&tickets["resolution_seconds_sum"]),
        first_contact_resolutions: u(&tickets["first_contact_resolutions"]),
        reopened: u(&tickets["reopened"]),
        sla_breaches: u(&tickets["sla_breaches"]),
        placed: u(&orders["placed"]),
        revenue_minor: money(&orders["revenue_minor"]),
        returned: u(&orders["returned"]),
        returned_minor: money(&orders["returned_minor"]),
        fulfilled: u(&orders["fulfilled"]),
        complete_first_shipment: u(&orders["complete_first_shipment"]),
        new_customers: u(&orders["new_customers"]),
        repeat_purchases: u(&orders["repeat_purchases"]),
        repeat_gap_millis_sum: seconds_as_millis(&orders["repeat_gap_seconds_sum"]),
        customers_at_start: u(&retention["customers_at_start"]),
        customers_at_end: u(&retention["customers_at_end"]),
    };
    let ratio = |value: &Value| Approx(value.as_f64());
    Window {
        counts,
        ratios: Ratios {
            nps_score: ratio(&nps["score"]),
            csat_percent: ratio(&csat["percent"]),
            ces_mean: ratio(&ces["mean"]),
            mean_first_response_seconds: ratio(&tickets["mean_first_response_seconds"]),
            mean_resolution_seconds: ratio(&tickets["mean_resolution_seconds"]),
            resolution_rate: ratio(&tickets["resolution_rate"]),
            first_contact_resolution_rate: ratio(&tickets["first_contact_resolution_rate"]),
            return_rate: ratio(&orders["return_rate"]),
            fill_rate: ratio(&orders["fill_rate"]),
            mean_days_between_purchases: ratio(&orders["mean_days_between_purchases"]),
            retention_rate: ratio(&retention["rate"]),
        },
    }
}

fn type_name(body: &Body) -> &'static str {
    match body {
        Body::Placed { .. } => "purchase.placed",
        Body::Fulfilled { .. } => "purchase.fulfilled",
        Body::Returned { .. } => "purchase.returned",
        Body::Opened { .. } => "ticket.opened",
        Body::AgentReplied { .. } => "ticket.agent_replied",
        Body::CustomerReplied { .. } => "ticket.customer_replied",
        Body::Resolved { .. } => "ticket.resolved",
        Body::Reopened { .. } => "ticket.reopened",
        Body::Nps { .. } => "survey.nps",
        Body::Csat { .. } => "survey.csat",
        Body::Ces { .. } => "survey.ces",
    }
}

/// The event fields an enriched record repeats from its input.
fn check_enriched_event(json: &Value, input: &Input) -> Result<(), String> {
    let mut wrong = Vec::new();
    if s(&json["source_event_id"]) != input.event_id {
        wrong.push("source_event_id");
    }
    if s(&json["customer_id"]) != input.customer {
        wrong.push("customer_id");
    }
    if s(&json["type"]) != type_name(&input.body) {
        wrong.push("type");
    }
    if time(&json["occurred_at"]) != input.at {
        wrong.push("occurred_at");
    }
    let (amount, currency, score, scale, ticket) = match &input.body {
        Body::Placed {
            amount, currency, ..
        }
        | Body::Returned {
            amount, currency, ..
        } => (Some(*amount), Some(*currency), None, None, None),
        Body::Nps { score } => (None, None, Some(*score), Some(10), None),
        Body::Csat { score, scale } | Body::Ces { score, scale } => {
            (None, None, Some(*score), Some(*scale), None)
        }
        body => (None, None, None, None, body.ticket()),
    };
    if json["amount_minor"].as_i64() != amount {
        wrong.push("amount_minor");
    }
    if json["currency"].as_str() != currency {
        wrong.push("currency");
    }
    if json["score"].as_i64() != score.map(i64::from)
        || json["scale_max"].as_i64() != scale.map(i64::from)
    {
        wrong.push("score/scale_max");
    }
    if ticket.is_some() && json["ticket_id"].as_str() != ticket {
        wrong.push("ticket_id");
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "enriched record of {} has wrong {wrong:?}: {json}",
            input.event_id
        ))
    }
}

/// Compares `outputs` with the model of `delivered` (every input record, in
/// delivery order per partition) for tasks whose watermark ended at `watermark`.
pub fn check(
    delivered: &[Delivered],
    outputs: &Outputs,
    rules: &Rules,
    watermark: i64,
    delivery: Delivery,
) -> Compared {
    let mut compared = Compared {
        late_inputs: delivered.iter().filter(|d| d.input.late).count(),
        ..Compared::default()
    };
    let by_position: HashMap<&Position, &Delivered> =
        delivered.iter().map(|d| (&d.position, d)).collect();
    let mut failures: Vec<String> = Vec::new();

    // Each customer's applied order, from their enriched records.
    let mut order: BTreeMap<String, Vec<(&Input, Position)>> = BTreeMap::new();
    let mut enriched_of: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    let mut enriched_ids: HashMap<String, &Value> = HashMap::new();
    for record in &outputs.enriched {
        let json = &record.value;
        let id = s(&json["event_id"]);
        if let Some(first) = enriched_ids.get(&id) {
            // At-least-once, a replay may repeat it; its context may differ when the
            // replay merged the topics of one customer in another order.
            if delivery == Delivery::Once {
                failures.push(format!("enriched {id} written twice"));
            } else if first["source_event_id"] != json["source_event_id"] {
                failures.push(format!("enriched {id} repeated for another event"));
            }
            continue;
        }
        enriched_ids.insert(id, json);
        let position = source_position(json);
        let Some(source) = by_position.get(&position) else {
            failures.push(format!("enriched record of no input: {json}"));
            continue;
        };
        if let Err(wrong) = check_enriched_event(json, &source.input) {
            failures.push(wrong);
        }
        order
            .entry(source.input.customer.clone())
            .or_default()
            .push((&source.input, position));
        enriched_of
            .entry(source.input.customer.clone())
            .or_default()
            .push(record);
    }
    // Every input has an enriched record, written for the first copy delivered.
    let mut first_copy: HashMap<(&str, &str), &Position> = HashMap::new();
    for d in delivered {
        first_copy
            .entry((d.input.customer.as_str(), d.input.event_id.as_str()))
            .and_modify(|position| {
                if (
                    d.position.topic.as_str(),
                    d.position.partition,
                    d.position.offset,
                ) < (position.topic.as_str(), position.partition, position.offset)
                {
                    *position = &d.position;
                }
            })
            .or_insert(&d.position);
    }
    let enriched_positions: HashSet<Position> = order
        .values()
        .flat_map(|events| events.iter().map(|(_, position)| position.clone()))
        .collect();
    let missing: Vec<&&Position> = first_copy
        .values()
        .filter(|position| !enriched_positions.contains(**position))
        .collect();
    if !missing.is_empty() {
        failures.push(format!(
            "{} of {} inputs have no enriched record of their first delivery, e.g. {:?}",
            missing.len(),
            first_copy.len(),
            &missing[..missing.len().min(3)]
        ));
    }
    if enriched_positions.len() != first_copy.len() {
        failures.push(format!(
            "{} enriched events for {} distinct inputs",
            enriched_positions.len(),
            first_copy.len()
        ));
    }
    compared.enriched = enriched_positions.len();
    // The applied order keeps each input partition's order.
    for (customer, events) in &order {
        let mut last: HashMap<&str, i64> = HashMap::new();
        for (_, position) in events {
            let previous = last.insert(position.topic.as_str(), position.offset);
            if previous.is_some_and(|previous| previous > position.offset)
                && delivery == Delivery::Once
            {
                failures.push(format!(
                    "{customer}: {} applied out of its partition's order",
                    position.topic
                ));
            }
        }
    }
    for failure in &failures {
        eprintln!("{failure}");
    }
    assert!(
        failures.is_empty(),
        "{} enriched-event failures, first: {}",
        failures.len(),
        failures[0]
    );

    // The model of every customer, in that order.
    let replays = replays(delivered, &order, rules, watermark);

    // Windows, task by task: exactly the model's, nothing more.
    let mut observed: BTreeMap<(String, i64, i64), (Window, Value)> = BTreeMap::new();
    for record in &outputs.windows {
        let json = &record.value;
        let (name, end, task) = (
            s(&json["window"]),
            time(&json["end"]),
            json["task"].as_i64().expect("task"),
        );
        compared.window_records += 1;
        let Some(spec) = rules.windows.iter().find(|spec| spec.name == name) else {
            panic!("window of no configured spec: {json}");
        };
        assert_eq!(end - time(&json["start"]), spec.size, "start of {json}");
        let key_end = record.key.split('/').nth(1).map(parse_rfc3339);
        assert_eq!(
            (
                record.key.split('/').next(),
                key_end,
                record.key.rsplit('/').next()
            ),
            (
                Some(name.as_str()),
                Some(end),
                Some(task.to_string().as_str())
            ),
            "key {} of {json}",
            record.key
        );
        let window = window_view(json);
        if let Some((first, _)) = observed.get(&(name.clone(), end, task)) {
            assert!(
                delivery == Delivery::AtLeastOnce,
                "window {} written twice",
                record.key
            );
            assert_eq!(
                first, &window,
                "window {} repeated with different content",
                record.key
            );
            continue;
        }
        observed.insert((name, end, task), (window, json.clone()));
    }
    let tasks: std::collections::BTreeSet<i32> =
        delivered.iter().map(|d| d.position.partition).collect();
    let mut differing = Vec::new();
    let mut expected_count = 0;
    for task in &tasks {
        let customers: Vec<&Replay> = replays
            .iter()
            .filter(|(customer, _)| order[**customer][0].1.partition == *task)
            .map(|(_, replay)| replay)
            .collect();
        let expected = model::task_windows(&customers, rules, watermark);
        expected_count += expected.len();
        for ((name, end), window) in &expected {
            match observed.remove(&(name.clone(), *end, i64::from(*task))) {
                None => differing.push(format!("{name}/{end}/{task}: missing")),
                Some((actual, json)) if actual != *window => differing.push(format!(
                    "{name}/{end}/{task}:\n  expected {window:?}\n  actual   {actual:?}\n  record {json}"
                )),
                Some(_) => {}
            }
        }
    }
    for ((name, end, task), _) in observed.iter().take(5) {
        differing.push(format!("{name}/{end}/{task}: not predicted by the model"));
    }
    assert!(
        differing.is_empty() && observed.is_empty(),
        "{} windows differ from the model ({} unexpected) of {expected_count}:\n{}",
        differing.len(),
        observed.len(),
        differing
            .iter()
            .take(4)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        expected_count > 0,
        "the model predicts no window: nothing was compared"
    );
    compared.windows = expected_count;

    // Profiles: each record equals a state the customer went through, in order; the last one the final state.
    let mut profiles_of: BTreeMap<String, Vec<ProfileView>> = BTreeMap::new();
    for record in &outputs.profiles {
        profiles_of
            .entry(record.key.clone())
            .or_default()
            .push(profile_view(&record.value));
        compared.profile_records += 1;
    }
    let mut wrong_profiles = Vec::new();
    for (customer, replay) in &replays {
        let views: Vec<ProfileView> = replay
            .steps
            .iter()
            .map(|step| step.state.view(customer))
            .collect();
        let records = profiles_of.remove(*customer).unwrap_or_default();
        let Some(last_record) = records.last() else {
            wrong_profiles.push(format!("{customer}: no profile record"));
            continue;
        };
        let last_state = views.last().expect("a replay has a state");
        if last_record != last_state {
            wrong_profiles.push(format!(
                "{customer}: last record\n  {last_record:?}\n  final state\n  {last_state:?}"
            ));
            continue;
        }
        if delivery == Delivery::Once {
            let mut from = 0;
            for record in &records {
                match views[from..].iter().position(|view| view == record) {
                    Some(index) => from += index,
                    None => {
                        wrong_profiles.push(format!(
                            "{customer}: record {record:?} is no later state of the model (from step {from} of {})",
                            views.len()
                        ));
                        break;
                    }
                }
            }
        }
    }
    for (customer, _) in profiles_of.iter().take(3) {
        wrong_profiles.push(format!(
            "{customer}: profile records of a customer with no event"
        ));
    }
    assert!(
        wrong_profiles.is_empty(),
        "{} profiles differ from the model:\n{}",
        wrong_profiles.len(),
        wrong_profiles
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    compared.profiles = replays.len();

    if delivery == Delivery::AtLeastOnce {
        return compared;
    }

    // Enriched contexts: the state right after the event.
    let mut wrong_contexts = Vec::new();
    for (customer, replay) in &replays {
        let records = &enriched_of[*customer];
        let mut records = records.iter();
        for step in &replay.steps {
            if let StepCause::Event(_) = step.cause {
                let record = records
                    .next()
                    .expect("one enriched record per applied event");
                let actual = context(&record.value["context"]);
                if actual != step.state.context() {
                    wrong_contexts.push(format!(
                        "{customer}: {} has context\n  {actual:?}\n  model\n  {:?}",
                        record.value["event_id"],
                        step.state.context()
                    ));
                }
            }
        }
    }
    assert!(
        wrong_contexts.is_empty(),
        "{} enriched contexts differ from the model:\n{}",
        wrong_contexts.len(),
        wrong_contexts
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Signals: every one the model expects, once, and nothing else.
    let mut observed_signals: BTreeMap<String, SignalView> = BTreeMap::new();
    for record in &outputs.signals {
        let signal = signal_view(&record.value);
        assert_eq!(record.key, signal.customer, "signal key");
        if observed_signals
            .insert(signal.id.clone(), signal.clone())
            .is_some()
        {
            panic!("signal {} written twice", signal.id);
        }
    }
    let mut wrong_signals = Vec::new();
    for (customer, replay) in &replays {
        for step in &replay.steps {
            for expected in &step.signals {
                match observed_signals.remove(&expected.id) {
                    Some(actual) if actual == *expected => {
                        *compared.signals.entry(expected.kind.clone()).or_default() += 1
                    }
                    Some(actual) => wrong_signals.push(format!("{actual:?}\n  model {expected:?}")),
                    None => wrong_signals.push(format!("missing {expected:?}")),
                }
            }
        }
        for breach in &replay.breaches {
            let key = format!("ticket/{}", breach.ticket);
            let Some(actual) = observed_signals.remove(&format!("{customer}/sla_breached/{key}"))
            else {
                wrong_signals.push(format!("{customer}: no sla_breached for {breach:?}"));
                continue;
            };
            // The profile when the breach was seen: some state between the deadline and the reply.
            let seen_in = replay.steps[breach.steps.clone()].iter().any(|step| {
                step.state.segment.name() == actual.segment
                    && step.state.lifecycle.name() == actual.lifecycle
            });
            let fields_ok = actual.kind == "sla_breached"
                && actual.at == breach.deadline
                && actual.ticket.as_deref() == Some(breach.ticket.as_str())
                && actual.previous_segment.is_none();
            if !seen_in || !fields_ok {
                let history: Vec<String> = order[*customer]
                    .iter()
                    .filter(|(input, _)| input.body.ticket() == Some(breach.ticket.as_str()))
                    .map(|(input, _)| format!("{} {:?}", input.at, input.body))
                    .collect();
                wrong_signals.push(format!(
                    "{actual:?}\n  model {breach:?}\n  ticket {history:?}"
                ));
            }
            *compared.signals.entry("sla_breached".into()).or_default() += 1;
            let vip = observed_signals.remove(&format!("{customer}/vip_at_risk/{key}"));
            match (actual.segment == "champion", vip) {
                (false, None) => {}
                (true, Some(vip))
                    if vip.at == actual.at
                        && vip.segment == actual.segment
                        && vip.lifecycle == actual.lifecycle =>
                {
                    *compared.signals.entry("vip_at_risk".into()).or_default() += 1
                }
                (champion, vip) => wrong_signals.push(format!(
                    "{customer}: SLA breach of {} seen as {} but vip_at_risk {vip:?}",
                    breach.ticket,
                    if champion { "champion" } else { "not champion" }
                )),
            }
        }
    }
    for (id, signal) in observed_signals.iter().take(5) {
        wrong_signals.push(format!("{id}: not predicted by the model: {signal:?}"));
    }
    assert!(
        wrong_signals.is_empty(),
        "{} signals differ from the model ({} unexpected):\n{}",
        wrong_signals.len(),
        observed_signals.len(),
        wrong_signals
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    compared
}

/// Which input topic a topic name is, by the config's names.
pub fn topic_of(config: &cxpulse::config::Config, name: &str) -> Option<Topic> {
    Topic::ALL
        .into_iter()
        .find(|topic| model::topic_name(config, *topic) == name)
}

/// How many signals the model expects at least (an SLA breach may bring a
/// `vip_at_risk` too), to know when a reader has seen them all.
pub fn minimum_signals(
    delivered: &[Delivered],
    enriched: &[Record],
    rules: &Rules,
    watermark: i64,
) -> usize {
    let by_position: HashMap<&Position, &Delivered> =
        delivered.iter().map(|d| (&d.position, d)).collect();
    let mut seen = HashSet::new();
    let mut order: BTreeMap<String, Vec<(&Input, Position)>> = BTreeMap::new();
    for record in enriched {
        let json = &record.value;
        if !seen.insert(s(&json["event_id"])) {
            continue;
        }
        let position = source_position(json);
        if let Some(source) = by_position.get(&position) {
            order
                .entry(source.input.customer.clone())
                .or_default()
                .push((&source.input, position));
        }
    }
    replays(delivered, &order, rules, watermark)
        .values()
        .map(|replay| {
            replay
                .steps
                .iter()
                .map(|step| step.signals.len())
                .sum::<usize>()
                + replay.breaches.len()
        })
        .sum()
}

/// Where the input of an enriched record was read from.
fn source_position(json: &Value) -> Position {
    Position {
        topic: s(&json["source_topic"]),
        partition: json["source_partition"].as_i64().expect("source_partition") as i32,
        offset: json["source_offset"].as_i64().expect("source_offset"),
    }
}

/// The model of every customer, replayed in the order the engine applied their
/// events, for tasks whose watermark ended at `watermark`.
fn replays<'a>(
    delivered: &[Delivered],
    order: &'a BTreeMap<String, Vec<(&Input, Position)>>,
    rules: &Rules,
    watermark: i64,
) -> BTreeMap<&'a String, Replay> {
    let before_late = watermarks_before_late(delivered);
    order
        .iter()
        .map(|(customer, events)| {
            let late_until = before_late[&events[0].1.partition] - rules.lateness;
            let until = watermark - rules.lateness;
            (
                customer,
                model::replay(customer, events, rules, until, late_until),
            )
        })
        .collect()
}

/// Each task's watermark once every input but the late ones was applied: the
/// smallest over its three partitions of the latest event time (nothing is idle).
fn watermarks_before_late(delivered: &[Delivered]) -> BTreeMap<i32, i64> {
    let mut latest: BTreeMap<(i32, &str), i64> = BTreeMap::new();
    for d in delivered.iter().filter(|d| !d.input.late && !d.input.flush) {
        let high = latest
            .entry((d.position.partition, d.position.topic.as_str()))
            .or_insert(i64::MIN);
        *high = (*high).max(d.input.at);
    }
    let mut watermarks = BTreeMap::new();
    for d in delivered {
        let task = d.position.partition;
        let highs: Vec<i64> = latest
            .iter()
            .filter(|((partition, _), _)| *partition == task)
            .map(|(_, at)| *at)
            .collect();
        let watermark = match highs.iter().min() {
            Some(lowest) if highs.len() == 3 => *lowest,
            _ => i64::MIN / 2,
        };
        watermarks.insert(task, watermark);
    }
    watermarks
}
