//! Task state: everything cxpulse knows about the customers of one input
//! partition number `i` (partition `i` of every input topic).
//!
//! A [`Task`] holds the profiles, tickets, window panes, SLA timers,
//! de-duplication memory and watermark of its customers. Only the pipeline's
//! processing loop mutates it, one event at a time, through [`Task::apply`]
//! and [`Task::tick`]; both take the wall clock as an argument and do no I/O,
//! so the same sequence of calls always gives the same profiles and windows.
//! Nothing here is durable yet: a restart rebuilds state from the inputs.

pub mod dedupe;
pub mod profile;
pub mod tickets;
pub mod watermark;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::event::{
    Channel, CustomerId, Event, EventBody, EventTime, NpsCategory, PurchaseAction, Source,
    SurveyResponse,
};
use crate::window::{millis, FinalWindow, Measure, WindowSpec, Windows};

pub use profile::{Lifecycle, Profile, ProfileRules, Segment};

use dedupe::Dedupe;
use profile::LastScore;
use tickets::TicketBook;
use watermark::Watermark;

/// The rules every task applies, derived once from config.
#[derive(Debug, Clone)]
pub struct TaskSettings {
    /// Configured windows.
    pub windows: Vec<WindowSpec>,
    /// Allowed lateness, ms.
    pub allowed_lateness_millis: i64,
    /// Partition idle timeout (wall clock), ms.
    pub idle_timeout_millis: i64,
    /// De-duplication window (event time), ms.
    pub dedupe_window_millis: i64,
    /// SLA threshold per channel, ms, in [`Channel::ALL`] order.
    pub sla_threshold_millis: [i64; 5],
    /// Lifecycle and segment rules.
    pub profile_rules: ProfileRules,
}

impl TaskSettings {
    /// Settings from a validated config.
    pub fn from_config(config: &Config) -> Self {
        let processing = &config.processing;
        TaskSettings {
            windows: config.windows.iter().map(WindowSpec::from_config).collect(),
            allowed_lateness_millis: millis(processing.allowed_lateness),
            idle_timeout_millis: millis(processing.idle_timeout),
            dedupe_window_millis: millis(processing.dedupe_window),
            sla_threshold_millis: Channel::ALL.map(|channel| millis(config.sla.threshold(channel))),
            profile_rules: ProfileRules::new(processing.activity_horizon, &config.segments),
        }
    }

    fn sla_threshold(&self, channel: Channel) -> i64 {
        let index = Channel::ALL.iter().position(|c| *c == channel).unwrap_or(0);
        self.sla_threshold_millis[index]
    }
}

/// What applying one event did.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// The event changed the profile (and possibly windows).
    Applied {
        /// The profile after the event.
        profile: &'a Profile,
        /// Window measures it contributed, with their times.
        measures: &'a [(EventTime, Measure)],
        /// Every window containing the event was already emitted.
        late: bool,
    },
    /// A redelivery within the de-duplication window: nothing changed.
    Duplicate,
}

/// The state of one task. See the module documentation.
#[derive(Debug)]
pub struct Task {
    id: u32,
    settings: Arc<TaskSettings>,
    profiles: HashMap<CustomerId, Profile>,
    tickets: TicketBook,
    windows: Windows,
    watermark: Watermark,
    dedupe: Dedupe,
    /// Measures of the event being applied (reused to avoid allocating per event).
    measures: Vec<(EventTime, Measure)>,
}

impl Task {
    /// An empty task for partition `id`, created at wall time `wall`.
    pub fn new(id: u32, settings: Arc<TaskSettings>, wall: EventTime) -> Self {
        Task {
            id,
            windows: Windows::new(
                &settings.windows,
                settings.allowed_lateness_millis,
                settings.profile_rules.activity_horizon_millis,
            ),
            watermark: Watermark::new(settings.idle_timeout_millis, wall),
            settings,
            profiles: HashMap::new(),
            tickets: TicketBook::default(),
            dedupe: Dedupe::default(),
            measures: Vec::new(),
        }
    }

    /// The partition number of this task.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The current watermark.
    pub fn watermark(&self) -> EventTime {
        self.watermark.current()
    }

    /// Profiles held.
    pub fn profile_count(&self) -> usize {
        self.profiles.len()
    }

    /// Tickets held.
    pub fn ticket_count(&self) -> usize {
        self.tickets.len()
    }

    /// The live profile of a customer this task owns.
    pub fn profile(&self, customer_id: &CustomerId) -> Option<&Profile> {
        self.profiles.get(customer_id)
    }

    /// Every profile held.
    pub fn profiles(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.values()
    }

    /// Notes a record of `source` that was not a valid event, so its partition is not idle.
    pub fn touch(&mut self, source: Source, wall: EventTime) {
        self.watermark.touch(source, wall);
    }

    /// Applies one valid event; final windows it closes are appended to `emitted`.
    pub fn apply(
        &mut self,
        event: &Event,
        wall: EventTime,
        emitted: &mut Vec<FinalWindow>,
    ) -> Outcome<'_> {
        let at = event.occurred_at;
        self.watermark.observe(event.source(), at, wall);
        if !self
            .dedupe
            .first_sighting(&event.customer_id, &event.event_id, at)
        {
            self.advance(wall, emitted);
            return Outcome::Duplicate;
        }
        let late = self.windows.is_late(at);
        self.measures.clear();
        let profile = self
            .profiles
            .entry(event.customer_id.clone())
            .or_insert_with(|| Profile::new(event.customer_id.clone(), at));
        profile.first_seen = profile.first_seen.min(at);
        profile.last_seen = profile.last_seen.max(at);
        profile.events += 1;
        profile.updated_at = wall;
        match &event.body {
            EventBody::Purchase(purchase) => {
                let horizon = self.settings.profile_rules.activity_horizon_millis;
                apply_purchase(profile, purchase.action, at, horizon, &mut self.measures)
            }
            EventBody::Ticket(ticket) => {
                let settings = &self.settings;
                let change = self.tickets.apply(
                    &ticket.ticket_id,
                    ticket.action,
                    at,
                    |channel| settings.sla_threshold(channel),
                    &mut self.measures,
                );
                profile.open_tickets = profile
                    .open_tickets
                    .saturating_add_signed(change.open_delta);
                profile.tickets_opened += u64::from(change.opened);
                profile.tickets_resolved += u64::from(change.resolved);
                if let Some(millis) = change.first_response_millis {
                    profile.first_responses += 1;
                    profile.first_response_millis_sum += millis;
                }
            }
            EventBody::Survey(survey) => {
                apply_survey(profile, survey.response, at, &mut self.measures)
            }
        }
        profile.refresh_classification(&self.settings.profile_rules);
        for (measure_at, measure) in &self.measures {
            self.windows.record(*measure_at, measure);
        }
        self.advance(wall, emitted);
        Outcome::Applied {
            profile: &self.profiles[&event.customer_id],
            measures: &self.measures,
            late,
        }
    }

    /// Moves the watermark with the wall clock (idle partitions) and emits what became final.
    pub fn tick(&mut self, wall: EventTime, emitted: &mut Vec<FinalWindow>) {
        self.advance(wall, emitted);
    }

    fn advance(&mut self, wall: EventTime, emitted: &mut Vec<FinalWindow>) {
        let watermark = self.watermark.update(wall);
        if watermark == EventTime::MIN {
            return;
        }
        // Timers first: a breach belongs to a window that closes after its timer fires.
        let mut fired = Vec::new();
        self.tickets
            .fire_sla_timers(watermark, self.settings.allowed_lateness_millis, &mut fired);
        for (at, measure) in &fired {
            self.windows.record(*at, measure);
        }
        self.windows.advance(watermark, emitted);
        self.dedupe
            .expire_before(watermark.plus_millis(-self.settings.dedupe_window_millis));
    }
}

fn apply_purchase(
    profile: &mut Profile,
    action: PurchaseAction,
    at: EventTime,
    activity_horizon_millis: i64,
    measures: &mut Vec<(EventTime, Measure)>,
) {
    match action {
        PurchaseAction::Placed { amount } => {
            let previous = profile.last_purchase_at;
            let gap_millis = previous.map(|previous| at.millis() - previous.millis());
            // Coming back after the horizon passed: the customer had churned.
            if previous.is_some_and(|previous| at >= previous.plus_millis(activity_horizon_millis))
            {
                profile.reactivated_at = Some(at);
            }
            if let Some(gap) = gap_millis {
                profile.purchase_gap_millis_sum += gap;
            }
            profile.orders_placed += 1;
            *profile.revenue_minor.entry(amount.currency).or_default() += amount.amount.0;
            profile.first_purchase_at =
                Some(profile.first_purchase_at.map_or(at, |first| first.min(at)));
            profile.last_purchase_at = Some(previous.map_or(at, |last| last.max(at)));
            measures.push((
                at,
                Measure::OrderPlaced {
                    amount,
                    first: previous.is_none(),
                    gap_millis,
                },
            ));
        }
        PurchaseAction::Fulfilled {
            complete_first_shipment,
        } => measures.push((
            at,
            Measure::OrderFulfilled {
                complete_first_shipment,
            },
        )),
        PurchaseAction::Returned { amount } => {
            *profile.returned_minor.entry(amount.currency).or_default() += amount.amount.0;
            measures.push((at, Measure::OrderReturned { amount }));
        }
    }
}

fn apply_survey(
    profile: &mut Profile,
    response: SurveyResponse,
    at: EventTime,
    measures: &mut Vec<(EventTime, Measure)>,
) {
    let newer = |last: Option<LastScore>| last.is_none_or(|last| last.at <= at);
    match response {
        SurveyResponse::Nps { score } => {
            if newer(profile.last_nps) {
                profile.last_nps = Some(LastScore {
                    score,
                    scale_max: 10,
                    at,
                });
            }
            measures.push((at, Measure::NpsResponse(NpsCategory::of(score))));
        }
        SurveyResponse::Csat { score, scale_max } => {
            if newer(profile.last_csat) {
                profile.last_csat = Some(LastScore {
                    score,
                    scale_max,
                    at,
                });
            }
            // score >= 0.8 × scale_max, in integers.
            let satisfied = u32::from(score) * 10 >= u32::from(scale_max) * 8;
            measures.push((at, Measure::CsatResponse { satisfied }));
        }
        SurveyResponse::Ces { score, scale_max } => {
            if newer(profile.last_ces) {
                profile.last_ces = Some(LastScore {
                    score,
                    scale_max,
                    at,
                });
            }
            measures.push((at, Measure::CesResponse { score }));
        }
    }
}
