//! Telemetry: every metric name cxpulse exports, the Prometheus recorder, the
//! gauges of final windows, and log set-up. Metric names live only here.
//!
//! Window gauges carry additive counts of the latest final window of each
//! name, labelled by task, so `sum()` across tasks and pods is exact;
//! ratios are left to PromQL (see `docs/metrics.md`).
//!
//! Every series whose label values are known in advance is registered before
//! its first event (at zero), so that a query never sees "no data" where the
//! truth is "none yet"; a task's series are registered when it is assigned. The
//! task is labelled [`PARTITION`] everywhere: it is the input partition number.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::{LogConfig, LogFormat};
use crate::decode::DecodeError;
use crate::event::{Currency, NpsCategory};
use crate::task::signal::SignalKind;
use crate::window::measure::FIRST_RESPONSE_BOUNDS_SECONDS;
use crate::window::result::{bucket_label, seconds};
use crate::window::FinalWindow;

/// The label naming a task, in every metric: the input partition number.
pub const PARTITION: &str = "partition";
/// Always 1; labelled with the `version` and the `revision` this binary was built from.
pub const BUILD_INFO: &str = "cxpulse_build_info";
/// Records fetched, per input topic.
pub const RECORDS_CONSUMED: &str = "cxpulse_records_consumed_total";
/// Valid events applied, per input topic.
pub const EVENTS_PROCESSED: &str = "cxpulse_events_processed_total";
/// Rejected records, per input topic and reason.
pub const EVENTS_INVALID: &str = "cxpulse_events_invalid_total";
/// Events after every window containing them was emitted.
pub const EVENTS_LATE: &str = "cxpulse_events_late_total";
/// Redeliveries recognised by de-duplication.
pub const EVENTS_DUPLICATE: &str = "cxpulse_events_duplicate_total";
/// Output records acknowledged by the brokers, per topic (the DLQ included).
pub const RECORDS_PRODUCED: &str = "cxpulse_records_produced_total";
/// Output records the brokers refused after retries.
pub const PRODUCE_ERRORS: &str = "cxpulse_produce_errors_total";
/// Records between the committed offset and the end of a partition.
pub const CONSUMER_LAG: &str = "cxpulse_consumer_lag_records";
/// Last time a record was fetched from a partition (Unix seconds).
pub const LAST_RECORD: &str = "cxpulse_partition_last_record_timestamp_seconds";
/// Task watermark (Unix seconds).
pub const WATERMARK: &str = "cxpulse_watermark_timestamp_seconds";
/// Profiles held, per task.
pub const PROFILES: &str = "cxpulse_profiles";
/// Tickets held, per task.
pub const TICKETS_TRACKED: &str = "cxpulse_tickets_tracked";
/// Tasks this instance owns.
pub const TASKS_ASSIGNED: &str = "cxpulse_tasks_assigned";
/// From a record's append time to the delivery of what it produced.
pub const PROCESSING_LATENCY: &str = "cxpulse_processing_latency_seconds";
/// Offset commits, by result.
pub const COMMITS: &str = "cxpulse_commits_total";
/// Survey answers, per kind.
pub const SURVEY_RESPONSES: &str = "cxpulse_survey_responses_total";
/// First-response times (live, not windowed).
pub const FIRST_RESPONSE_SECONDS: &str = "cxpulse_first_response_seconds";
/// Purchase events, per action.
pub const ORDERS: &str = "cxpulse_orders_total";
/// Placed value, per currency.
pub const REVENUE_MINOR: &str = "cxpulse_revenue_minor_total";
/// Returned value, per currency.
pub const RETURNED_MINOR: &str = "cxpulse_returned_minor_total";
/// Signals published, per type.
pub const SIGNALS: &str = "cxpulse_signals_total";
/// Windows skipped after a huge watermark jump.
pub const WINDOWS_SKIPPED: &str = "cxpulse_windows_skipped";
/// Timers pending, per task.
pub const TIMERS_PENDING: &str = "cxpulse_timers_pending";
/// Restores of task state from the changelog, per task.
pub const RESTORES: &str = "cxpulse_state_restores_total";
/// Changelog records read while restoring, per task.
pub const RESTORE_RECORDS: &str = "cxpulse_state_restore_records_total";
/// Changelog records still to read, per task.
pub const RESTORE_REMAINING: &str = "cxpulse_state_restore_remaining_records";
/// Records per second of the latest restore, per task.
pub const RESTORE_RATE: &str = "cxpulse_state_restore_records_per_second";
/// Changelog records written, per task.
pub const CHANGELOG_RECORDS: &str = "cxpulse_state_changelog_records_total";
/// Input records skipped because the restored state already included them.
pub const RECORDS_REPLAYED: &str = "cxpulse_records_already_included_total";
/// Ticket events, per action.
pub const TICKET_EVENTS: &str = "cxpulse_ticket_events_total";
/// NPS answers of the latest final window, per category.
pub const WINDOW_NPS_RESPONSES: &str = "cxpulse_window_nps_responses";
/// CSAT counts of the latest final window (`measure` = responses | satisfied).
pub const WINDOW_CSAT: &str = "cxpulse_window_csat_responses";
/// CES counts of the latest final window (`measure` = responses | score_sum).
pub const WINDOW_CES: &str = "cxpulse_window_ces";
/// Ticket counts of the latest final window, per `measure`.
pub const WINDOW_TICKETS: &str = "cxpulse_window_tickets";
/// First responses of the latest final window within `seconds` (cumulative,
/// `"60"` ... `"86400"`, `"+Inf"`). Not named `_bucket` with `le`: these are
/// gauges of one window, not a Prometheus histogram (promtool rejects that).
pub const WINDOW_FIRST_RESPONSES_WITHIN: &str = "cxpulse_window_first_responses_within";
/// Sums of ticket durations of the latest final window (`measure` =
/// first_response | resolution).
pub const WINDOW_TICKET_SECONDS: &str = "cxpulse_window_ticket_seconds";
/// Order counts of the latest final window, per `measure`.
pub const WINDOW_ORDERS: &str = "cxpulse_window_orders";
/// Placed value of the latest final window, per currency.
pub const WINDOW_REVENUE_MINOR: &str = "cxpulse_window_revenue_minor";
/// Returned value of the latest final window, per currency.
pub const WINDOW_RETURNED_MINOR: &str = "cxpulse_window_returned_minor";
/// Sum of gaps before repeat purchases in the latest final window.
pub const WINDOW_REPEAT_GAP: &str = "cxpulse_window_repeat_gap_seconds";
/// Retention inputs of the latest final window (`measure` = start | end | new).
pub const WINDOW_RETENTION_CUSTOMERS: &str = "cxpulse_window_retention_customers";
/// End of the latest final window (Unix seconds).
pub const WINDOW_END: &str = "cxpulse_window_end_timestamp_seconds";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let first_response_buckets: Vec<f64> = FIRST_RESPONSE_BOUNDS_SECONDS
        .iter()
        .map(|b| *b as f64)
        .collect();
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(FIRST_RESPONSE_SECONDS.into()),
            &first_response_buckets,
        )?
        .set_buckets_for_metric(
            Matcher::Full(PROCESSING_LATENCY.into()),
            &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ],
        )?
        .build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        anyhow::bail!("another metrics recorder is already installed");
    }
    describe();
    register_process_series();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// The `result` values of [`COMMITS`]: `ok` and `error` (at-least-once, from the
/// consumer's commit callback), `transaction` (exactly-once, a committed transaction).
pub const COMMIT_RESULTS: [&str; 3] = ["ok", "error", "transaction"];

/// The git revision this binary was built from: the `CXPULSE_REVISION`
/// environment variable at build time (a release build sets it; reading git in
/// `build.rs` would rerun it, and rebuild the crate, on every commit).
fn revision() -> &'static str {
    option_env!("CXPULSE_REVISION")
        .filter(|revision| !revision.is_empty())
        .unwrap_or("unknown")
}

/// Series of the process whose labels do not depend on the configuration:
/// [`BUILD_INFO`], and the counters and gauges that must read zero (not "no
/// data") before their first event.
fn register_process_series() {
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "revision" => revision()).set(1.0);
    counter!(PRODUCE_ERRORS).increment(0);
    for result in COMMIT_RESULTS {
        counter!(COMMITS, "result" => result).increment(0);
    }
    counter!(RECORDS_REPLAYED).increment(0);
    gauge!(TASKS_ASSIGNED).set(0.0);
}

/// Registers the series of a task this instance was just assigned, at zero
/// until their first event (its state gauges follow at the next cycle).
pub fn register_task(task: u32) {
    let label = task.to_string();
    counter!(CHANGELOG_RECORDS, PARTITION => label.clone()).increment(0);
    counter!(RESTORE_RECORDS, PARTITION => label.clone()).increment(0);
    gauge!(RESTORE_REMAINING, PARTITION => label.clone()).set(0.0);
    gauge!(RESTORE_RATE, PARTITION => label).set(0.0);
}

fn describe() {
    describe_counter!(RECORDS_CONSUMED, "Records fetched from input topics.");
    describe_counter!(
        EVENTS_PROCESSED,
        "Valid events applied to profiles and windows."
    );
    describe_counter!(
        EVENTS_INVALID,
        "Records sent to the dead-letter topic, by reason."
    );
    describe_counter!(
        EVENTS_LATE,
        "Events that arrived after every window containing them was emitted."
    );
    describe_counter!(
        EVENTS_DUPLICATE,
        "Redelivered events ignored by de-duplication."
    );
    describe_counter!(
        RECORDS_PRODUCED,
        "Output records acknowledged by the brokers, by topic."
    );
    describe_counter!(
        PRODUCE_ERRORS,
        "Output records that could not be delivered."
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Records between the consumer position and the partition end."
    );
    describe_gauge!(
        LAST_RECORD,
        Unit::Seconds,
        "Wall time of the last record fetched from a partition."
    );
    describe_gauge!(WATERMARK, Unit::Seconds, "Event-time watermark of a task.");
    describe_gauge!(PROFILES, "Customer profiles held by a task.");
    describe_gauge!(TICKETS_TRACKED, "Tickets held by a task.");
    describe_gauge!(
        TASKS_ASSIGNED,
        "Tasks (input partition numbers) owned by this instance."
    );
    describe_histogram!(
        PROCESSING_LATENCY,
        Unit::Seconds,
        "From input append time to delivery of its outputs."
    );
    describe_counter!(COMMITS, "Consumer offset commits, by result.");
    describe_counter!(SURVEY_RESPONSES, "Survey answers, by kind.");
    describe_histogram!(
        FIRST_RESPONSE_SECONDS,
        Unit::Seconds,
        "Ticket first-response times."
    );
    describe_counter!(ORDERS, "Purchase events, by action.");
    describe_counter!(
        REVENUE_MINOR,
        "Placed order value in minor units, by currency."
    );
    describe_counter!(
        RETURNED_MINOR,
        "Returned value in minor units, by currency."
    );
    describe_counter!(TICKET_EVENTS, "Ticket events, by action.");
    describe_counter!(
        RESTORES,
        "Restores of task state from the changelog (one per assignment of a task this instance did not hold)."
    );
    describe_counter!(
        RESTORE_RECORDS,
        "Changelog records read while restoring task state."
    );
    describe_gauge!(
        RESTORE_REMAINING,
        "Changelog records still to read before the task consumes."
    );
    describe_gauge!(
        RESTORE_RATE,
        "Records per second of the latest restore of a task."
    );
    describe_counter!(
        CHANGELOG_RECORDS,
        "Task state records written to the changelog."
    );
    describe_counter!(
        RECORDS_REPLAYED,
        "Input records skipped because the restored state already included them."
    );
    describe_counter!(SIGNALS, "Signals published to the signals topic, by type.");
    describe_gauge!(
        WINDOWS_SKIPPED,
        "Windows not emitted because the watermark jumped too far at once, per task."
    );
    describe_gauge!(
        TIMERS_PENDING,
        "Event-time timers (SLA deadlines, profile reviews) pending, per task."
    );
    describe_gauge!(
        WINDOW_NPS_RESPONSES,
        "NPS answers in the latest final window, by category."
    );
    describe_gauge!(
        WINDOW_CSAT,
        "CSAT responses and satisfied answers in the latest final window."
    );
    describe_gauge!(
        WINDOW_CES,
        "CES responses and score sum in the latest final window."
    );
    describe_gauge!(
        WINDOW_TICKETS,
        "Ticket counts in the latest final window, by measure."
    );
    describe_gauge!(
        WINDOW_FIRST_RESPONSES_WITHIN,
        "First responses in the latest final window that came within `seconds` of the opening (cumulative)."
    );
    describe_gauge!(
        WINDOW_TICKET_SECONDS,
        Unit::Seconds,
        "Sum of first-response or resolution seconds in the latest final window, by measure."
    );
    describe_gauge!(
        WINDOW_ORDERS,
        "Order counts in the latest final window, by measure."
    );
    describe_gauge!(
        WINDOW_REVENUE_MINOR,
        "Placed value in minor units in the latest final window."
    );
    describe_gauge!(
        WINDOW_RETURNED_MINOR,
        "Returned value in minor units in the latest final window."
    );
    describe_gauge!(
        WINDOW_REPEAT_GAP,
        Unit::Seconds,
        "Sum of gaps before repeat purchases in the latest final window."
    );
    describe_gauge!(
        WINDOW_RETENTION_CUSTOMERS,
        "Active customers at the start (S) and end (E) of the latest final window, and new customers (N)."
    );
    describe_gauge!(WINDOW_END, Unit::Seconds, "End of the latest final window.");
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels say which version and git revision is running."
    );
}

/// Per-input-topic counters, registered once so the hot path does not build labels.
#[derive(Clone)]
pub struct TopicCounters {
    /// The topic name, for dynamically labelled metrics and record positions.
    pub topic: std::sync::Arc<str>,
    /// [`RECORDS_CONSUMED`].
    pub consumed: Counter,
    /// [`EVENTS_PROCESSED`].
    pub processed: Counter,
    /// [`EVENTS_LATE`].
    pub late: Counter,
    /// [`EVENTS_DUPLICATE`].
    pub duplicate: Counter,
    /// [`EVENTS_INVALID`], one per reason, in [`DecodeError::REASONS`] order.
    invalid: [Counter; DecodeError::REASONS.len()],
}

impl TopicCounters {
    /// Registers the counters of one input topic.
    pub fn new(topic: &str) -> Self {
        let label = topic.to_string();
        TopicCounters {
            topic: std::sync::Arc::from(topic),
            consumed: counter!(RECORDS_CONSUMED, "topic" => label.clone()),
            processed: counter!(EVENTS_PROCESSED, "topic" => label.clone()),
            late: counter!(EVENTS_LATE, "topic" => label.clone()),
            duplicate: counter!(EVENTS_DUPLICATE, "topic" => label.clone()),
            invalid: DecodeError::REASONS.map(
                |reason| counter!(EVENTS_INVALID, "topic" => label.clone(), "reason" => reason),
            ),
        }
    }

    /// Counts a rejected record.
    pub fn invalid(&self, error: &DecodeError) {
        let reason = error.reason();
        match DecodeError::REASONS
            .iter()
            .position(|known| *known == reason)
        {
            Some(index) => self.invalid[index].increment(1),
            None => counter!(EVENTS_INVALID, "topic" => self.topic.clone(), "reason" => reason)
                .increment(1),
        }
    }
}

/// Publishes final windows as gauges and zeroes a task's window gauges when it is revoked.
#[derive(Default)]
pub struct WindowGauges {
    /// Currencies published per (task, window), so revocation can zero them.
    currencies: HashMap<(u32, String), BTreeSet<Currency>>,
}

impl WindowGauges {
    /// Sets the gauges of `window`, the newest final window of its name in `task`.
    pub fn publish(&mut self, task: u32, window: &FinalWindow) {
        let labels = [
            ("window", window.name.to_string()),
            (PARTITION, task.to_string()),
        ];
        let with = |name: &'static str, value: &'static str| {
            let mut all = labels.to_vec();
            all.push((name, value.to_string()));
            all
        };
        let aggregate = &window.aggregate;
        for category in NpsCategory::ALL {
            gauge!(WINDOW_NPS_RESPONSES, &with("category", category.name()))
                .set(aggregate.nps.count(category) as f64);
        }
        gauge!(WINDOW_CSAT, &with("measure", "responses")).set(aggregate.csat.responses as f64);
        gauge!(WINDOW_CSAT, &with("measure", "satisfied")).set(aggregate.csat.satisfied as f64);
        gauge!(WINDOW_CES, &with("measure", "responses")).set(aggregate.ces.responses as f64);
        gauge!(WINDOW_CES, &with("measure", "score_sum")).set(aggregate.ces.score_sum as f64);
        let tickets = &aggregate.tickets;
        for (measure, value) in [
            ("opened", tickets.opened),
            ("first_responses", tickets.first_responses),
            ("resolved", tickets.resolved),
            (
                "first_contact_resolutions",
                tickets.first_contact_resolutions,
            ),
            ("reopened", tickets.reopened),
            ("sla_breaches", tickets.sla_breaches),
        ] {
            gauge!(WINDOW_TICKETS, &with("measure", measure)).set(value as f64);
        }
        let mut cumulative = 0;
        for (index, count) in tickets.first_response_buckets.iter().enumerate() {
            cumulative += count;
            let mut all = labels.to_vec();
            all.push(("seconds", bucket_label(index)));
            gauge!(WINDOW_FIRST_RESPONSES_WITHIN, &all).set(cumulative as f64);
        }
        gauge!(WINDOW_TICKET_SECONDS, &with("measure", "first_response"))
            .set(seconds(tickets.first_response_millis_sum));
        gauge!(WINDOW_TICKET_SECONDS, &with("measure", "resolution"))
            .set(seconds(tickets.resolution_millis_sum));
        let orders = &aggregate.orders;
        for (measure, value) in [
            ("placed", orders.placed),
            ("returned", orders.returned),
            ("fulfilled", orders.fulfilled),
            ("complete_first_shipment", orders.complete_first_shipment),
            ("new_customers", orders.new_customers),
            ("repeat_purchases", orders.repeat_purchases),
        ] {
            gauge!(WINDOW_ORDERS, &with("measure", measure)).set(value as f64);
        }
        gauge!(WINDOW_REPEAT_GAP, &labels).set(seconds(orders.repeat_gap_millis_sum));
        let known = self
            .currencies
            .entry((task, window.name.to_string()))
            .or_default();
        known.extend(
            orders
                .revenue_minor
                .keys()
                .chain(orders.returned_minor.keys()),
        );
        for currency in known.iter() {
            let mut all = labels.to_vec();
            all.push(("currency", currency.to_string()));
            let revenue = orders.revenue_minor.get(currency).copied().unwrap_or(0);
            let returned = orders.returned_minor.get(currency).copied().unwrap_or(0);
            gauge!(WINDOW_REVENUE_MINOR, &all).set(revenue as f64);
            gauge!(WINDOW_RETURNED_MINOR, &all).set(returned as f64);
        }
        for (measure, value) in [
            ("start", window.retention.at_start),
            ("end", window.retention.at_end),
            ("new", orders.new_customers),
        ] {
            gauge!(WINDOW_RETENTION_CUSTOMERS, &with("measure", measure)).set(value as f64);
        }
        gauge!(WINDOW_END, &labels).set(seconds(window.end.millis()));
    }

    /// Zeroes every window gauge of a task this instance no longer owns.
    pub fn zero_task(&mut self, task: u32, window_names: &[std::sync::Arc<str>]) {
        for name in window_names {
            let empty = FinalWindow {
                name: name.clone(),
                start: crate::event::EventTime::from_millis(0),
                end: crate::event::EventTime::from_millis(0),
                aggregate: Default::default(),
                retention: Default::default(),
            };
            self.publish(task, &empty);
        }
        self.currencies.retain(|(owner, _), _| *owner != task);
    }
}

/// Starts `tracing` output as configured; `RUST_LOG` overrides the level.
pub fn init_logging(config: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests, demo) keeps the first subscriber.
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The live business counters of applied events and published signals,
/// registered once: every known label value is then exported from start-up (at
/// zero until its first event), and the hot path increments handles instead of
/// looking labels up in the registry per event.
pub struct EventCounters {
    /// [`ORDERS`] by action: placed, fulfilled, returned.
    orders: [Counter; 3],
    /// [`TICKET_EVENTS`] by action, in [`TICKET_ACTIONS`] order.
    ticket_events: [Counter; 5],
    /// [`SURVEY_RESPONSES`] by kind: nps, csat, ces.
    survey_responses: [Counter; 3],
    /// [`SIGNALS`] by type, in [`SignalKind::ALL`] order.
    signals: [Counter; 7],
    /// [`REVENUE_MINOR`] by currency, registered at a currency's first order.
    revenue: HashMap<Currency, Counter>,
    /// [`RETURNED_MINOR`] by currency, registered at a currency's first return.
    returned: HashMap<Currency, Counter>,
    /// [`FIRST_RESPONSE_SECONDS`].
    first_response: Histogram,
}

/// The `action` label values of [`TICKET_EVENTS`].
const TICKET_ACTIONS: [&str; 5] = [
    "opened",
    "agent_replied",
    "customer_replied",
    "resolved",
    "reopened",
];

impl Default for EventCounters {
    fn default() -> Self {
        EventCounters {
            orders: ["placed", "fulfilled", "returned"]
                .map(|action| counter!(ORDERS, "action" => action)),
            ticket_events: TICKET_ACTIONS.map(|action| counter!(TICKET_EVENTS, "action" => action)),
            survey_responses: ["nps", "csat", "ces"]
                .map(|kind| counter!(SURVEY_RESPONSES, "kind" => kind)),
            signals: SignalKind::ALL.map(|kind| counter!(SIGNALS, "type" => kind.name())),
            revenue: HashMap::new(),
            returned: HashMap::new(),
            first_response: histogram!(FIRST_RESPONSE_SECONDS),
        }
    }
}

impl EventCounters {
    /// Counts an applied event and the window measures it contributed.
    pub fn count_event(
        &mut self,
        event: &crate::event::Event,
        measures: &[(crate::event::EventTime, crate::window::Measure)],
    ) {
        use crate::event::{EventBody, PurchaseAction, SurveyResponse, TicketAction};
        match &event.body {
            EventBody::Purchase(purchase) => match purchase.action {
                PurchaseAction::Placed { amount } => {
                    self.orders[0].increment(1);
                    per_currency(&mut self.revenue, REVENUE_MINOR, amount.currency)
                        .increment(amount.amount.0.unsigned_abs());
                }
                PurchaseAction::Fulfilled { .. } => self.orders[1].increment(1),
                PurchaseAction::Returned { amount } => {
                    self.orders[2].increment(1);
                    per_currency(&mut self.returned, RETURNED_MINOR, amount.currency)
                        .increment(amount.amount.0.unsigned_abs());
                }
            },
            EventBody::Ticket(ticket) => {
                let action = match ticket.action {
                    TicketAction::Opened { .. } => 0,
                    TicketAction::AgentReplied => 1,
                    TicketAction::CustomerReplied => 2,
                    TicketAction::Resolved => 3,
                    TicketAction::Reopened => 4,
                };
                self.ticket_events[action].increment(1);
            }
            EventBody::Survey(survey) => {
                let kind = match survey.response {
                    SurveyResponse::Nps { .. } => 0,
                    SurveyResponse::Csat { .. } => 1,
                    SurveyResponse::Ces { .. } => 2,
                };
                self.survey_responses[kind].increment(1);
            }
        }
        for (_, measure) in measures {
            if let crate::window::Measure::FirstResponse { millis } = measure {
                self.first_response.record(seconds(*millis));
            }
        }
    }

    /// Counts a published signal.
    pub fn count_signal(&self, kind: SignalKind) {
        self.signals[kind as usize].increment(1);
    }
}

/// The counter of `name` labelled with `currency`, registered at its first use.
fn per_currency<'a>(
    counters: &'a mut HashMap<Currency, Counter>,
    name: &'static str,
    currency: Currency,
) -> &'a Counter {
    counters
        .entry(currency)
        .or_insert_with(|| counter!(name, "currency" => currency.to_string()))
}
