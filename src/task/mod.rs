//! Task state: everything cxpulse knows about the customers of one input
//! partition number `i` (partition `i` of every input topic).
//!
//! A [`Task`] holds the profiles, tickets, window panes, SLA timers,
//! de-duplication memory and watermark of its customers. Only the pipeline's
//! processing loop mutates it, one event at a time, through [`Task::apply`]
//! and [`Task::tick`]; both take the wall clock as an argument and do no I/O,
//! so the same sequence of calls always gives the same profiles and windows.
//! [`changelog`] makes it durable.
//!
//! Memory is what bounds how many customers a pod holds, so the state is laid
//! out compactly: profiles in a chunked [`slab::Slab`] found through an index
//! of slots (each customer id stored once, inside its profile), de-duplication
//! memory next to each profile, tickets likewise, and timers referring to
//! profiles and tickets by 4-byte slots. `benches/state_size.rs` prints what
//! each kind of state costs.

pub mod changelog;
pub mod dedupe;
pub mod profile;
pub mod signal;
pub mod slab;
pub mod tickets;
pub mod timers;
pub mod watermark;

use std::sync::Arc;

use crate::compact::CompactTime;
use crate::config::Config;
use crate::event::{
    Channel, CustomerId, Event, EventBody, EventTime, NpsCategory, PurchaseAction, Source,
    SurveyResponse,
};
use crate::window::{millis, FinalWindow, Measure, WindowSpec, Windows};

pub use profile::{Lifecycle, Profile, ProfileRules, Segment};

use dedupe::SeenEvents;
use profile::{LastScore, Survey};
use signal::{Cause, Signal, SignalKind};
use slab::{IdIndex, Slab};
use tickets::TicketBook;
pub use timers::CustomerSlot;
use timers::{TicketSlot, Timer, Timers};
use watermark::Watermark;

/// Customers whose expired de-duplication entries one watermark advance reclaims:
/// a pass over a million customers every 500,000 events, for two reads per event
/// (each a cache miss: the entries live behind a pointer).
const SEEN_SWEEP_PER_ADVANCE: usize = 2;

/// Ticket slots one watermark advance checks for eviction (reads in the slab).
const TICKET_SWEEP_PER_ADVANCE: usize = 4;

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
    /// How long resolved tickets are kept for reopenings (event time), ms.
    pub ticket_retention_millis: i64,
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
            ticket_retention_millis: millis(processing.ticket_retention),
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
        /// The customer's slot in this task (see [`Task::profile_at`]).
        customer: CustomerSlot,
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

/// Something a task produced besides the direct result of an event.
#[derive(Debug, Clone)]
pub enum Emitted {
    /// A final window.
    Window(Box<FinalWindow>),
    /// A signal.
    Signal(Signal),
    /// A profile changed by a timer (an event's own profile change comes with its [`Outcome`]).
    Profile {
        /// The customer whose profile changed (see [`Task::profile_at`]).
        customer: CustomerSlot,
        /// The timer's key, for the record id.
        cause: String,
    },
}

/// What a task holds per customer.
#[derive(Debug, Clone)]
struct CustomerEntry {
    profile: Profile,
    /// Events the customer sent since the de-duplication horizon.
    seen: SeenEvents,
}

// The bulk of a task's memory (one per customer): keep it from growing unnoticed.
const _: () = assert!(std::mem::size_of::<CustomerEntry>() == 184);

/// Every customer of a task: entries by slot, and slots by customer id.
#[derive(Debug, Clone, Default)]
struct Customers {
    slab: Slab<CustomerEntry>,
    index: IdIndex,
}

impl Customers {
    fn id_of(slab: &Slab<CustomerEntry>, slot: u32) -> &str {
        slab.get(slot)
            .map_or("", |entry| entry.profile.customer_id.as_str())
    }

    fn find(&self, customer_id: &CustomerId) -> Option<CustomerSlot> {
        let slab = &self.slab;
        self.index
            .find(customer_id.as_str(), |slot| Self::id_of(slab, slot))
            .map(CustomerSlot)
    }

    /// The slot of the entry's customer, or the entry stored when the customer is
    /// new; the entry comes back when the customer was already there.
    fn find_or_insert(&mut self, entry: CustomerEntry) -> (CustomerSlot, Option<CustomerEntry>) {
        // Two probes, but the second finds the first's cache lines.
        match self.find(&entry.profile.customer_id) {
            Some(slot) => (slot, Some(entry)),
            None => (self.insert(entry), None),
        }
    }

    fn reserve(&mut self, additional: usize) {
        let slab = &self.slab;
        self.index
            .reserve(additional, |slot| Self::id_of(slab, slot));
    }

    fn insert(&mut self, entry: CustomerEntry) -> CustomerSlot {
        let id = entry.profile.customer_id.clone();
        let slot = self.slab.push(entry);
        let slab = &self.slab;
        self.index
            .insert(id.as_str(), slot, |slot| Self::id_of(slab, slot));
        CustomerSlot(slot)
    }

    fn get(&self, slot: CustomerSlot) -> Option<&CustomerEntry> {
        self.slab.get(slot.0)
    }

    fn get_mut(&mut self, slot: CustomerSlot) -> Option<&mut CustomerEntry> {
        self.slab.get_mut(slot.0)
    }

    fn len(&self) -> usize {
        self.slab.len()
    }
}

/// The state of one task. See the module documentation.
#[derive(Debug)]
pub struct Task {
    id: u32,
    settings: Arc<TaskSettings>,
    customers: Customers,
    tickets: TicketBook,
    windows: Windows,
    watermark: Watermark,
    /// Events before this time no longer count as seen (watermark − dedupe window).
    dedupe_horizon: EventTime,
    /// Next customer whose expired de-duplication entries are dropped.
    seen_sweep: u32,
    timers: Timers,
    /// Next input offset included in the state, per source (see `changelog`).
    included: [i64; 3],
    /// Customers changed since the last changelog flush.
    changed_customers: Vec<CustomerSlot>,
    /// One bit per customer slot: in `changed_customers` already (a bit rather
    /// than a flag in each entry, where it would cost 8 bytes of padding).
    changed_bits: Vec<u64>,
    /// Measures of the event being applied (reused to avoid allocating per event).
    measures: Vec<(EventTime, Measure)>,
    /// Number of the last changelog flush (see `changelog`).
    changelog_cycle: u64,
    /// Keys of write-ahead batches found at restore, to delete with the next flush.
    stale_batches: Vec<Vec<u8>>,
    /// Records of a write-ahead batch applied at restore, to write per key with the
    /// next flush (before its chunks are deleted).
    batch_to_rewrite: Vec<changelog::ChangeRecord>,
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
            customers: Customers::default(),
            tickets: TicketBook::default(),
            dedupe_horizon: EventTime::MIN,
            seen_sweep: 0,
            timers: Timers::default(),
            included: [0; 3],
            changed_customers: Vec::new(),
            changed_bits: Vec::new(),
            measures: Vec::new(),
            changelog_cycle: 0,
            stale_batches: Vec::new(),
            batch_to_rewrite: Vec::new(),
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
        self.customers.len()
    }

    /// Tickets held.
    pub fn ticket_count(&self) -> usize {
        self.tickets.len()
    }

    /// The live profile of a customer this task owns.
    pub fn profile(&self, customer_id: &CustomerId) -> Option<&Profile> {
        let slot = self.customers.find(customer_id)?;
        self.customers.get(slot).map(|entry| &entry.profile)
    }

    /// The profile of the customer at `slot`, as [`Outcome::Applied`] and
    /// [`Emitted::Profile`] name it (slots are never reused within a task).
    pub fn profile_at(&self, slot: CustomerSlot) -> Option<&Profile> {
        self.customers.get(slot).map(|entry| &entry.profile)
    }

    /// Every profile held.
    pub fn profiles(&self) -> impl Iterator<Item = &Profile> {
        self.customers.slab.iter().map(|(_, entry)| &entry.profile)
    }

    /// Notes that the customer at `slot` changed, for the next changelog flush.
    fn mark_changed(&mut self, slot: CustomerSlot) {
        let (word, bit) = (slot.0 as usize / 64, 1u64 << (slot.0 % 64));
        if word >= self.changed_bits.len() {
            self.changed_bits.resize(word + 1, 0);
        }
        if self.changed_bits[word] & bit == 0 {
            self.changed_bits[word] |= bit;
            self.changed_customers.push(slot);
        }
    }

    /// Says whether the broker holds unread records of this task's partition of `source`.
    pub fn set_backlog(&mut self, source: Source, backlog: bool) {
        self.watermark.set_backlog(source, backlog);
    }

    /// Notes a record of `source` that was not a valid event, so its partition is not idle.
    pub fn touch(&mut self, source: Source, wall: EventTime) {
        self.watermark.touch(source, wall);
    }

    /// Timers pending.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Windows skipped after huge watermark jumps.
    pub fn windows_skipped(&self) -> u64 {
        self.windows.skipped()
    }

    /// Applies one valid event; signals and what it makes final go to `out`.
    pub fn apply(&mut self, event: &Event, wall: EventTime, out: &mut Vec<Emitted>) -> Outcome<'_> {
        let at = event.occurred_at;
        self.watermark.observe(event.source(), at, wall);
        let slot = match self.customers.find(&event.customer_id) {
            Some(slot) => slot,
            None => self.customers.insert(CustomerEntry {
                profile: Profile::new(event.customer_id.clone(), at),
                seen: SeenEvents::default(),
            }),
        };
        let horizon = self.dedupe_horizon;
        let first = self
            .customers
            .get_mut(slot)
            .is_some_and(|entry| entry.seen.first_sighting(&event.event_id, at, horizon));
        if !first {
            self.advance(wall, out);
            return Outcome::Duplicate;
        }
        self.review_due(slot, at, wall, out);
        let late = self.windows.is_late(at);
        self.measures.clear();
        self.mark_changed(slot);
        let rules = &self.settings.profile_rules;
        let Some(entry) = self.customers.get_mut(slot) else {
            unreachable!("the slot was just found or inserted")
        };
        let profile = &mut entry.profile;
        let (lifecycle_before, segment_before) = (profile.lifecycle, profile.segment);
        profile.first_seen = profile.first_seen.get().min(at).into();
        profile.last_seen = profile.last_seen.get().max(at).into();
        profile.as_of = profile.as_of.get().max(at).into();
        profile.events = profile.events.saturating_add(1);
        profile.updated_at = wall.into();
        let mut signals: Vec<PendingSignal> = Vec::new();
        match &event.body {
            EventBody::Purchase(purchase) => {
                let reactivated = apply_purchase(
                    profile,
                    purchase.action,
                    at,
                    rules.activity_horizon_millis,
                    &mut self.measures,
                );
                if reactivated {
                    signals.push((SignalKind::CustomerReactivated, Cause::Record, None, at));
                }
            }
            EventBody::Ticket(ticket) => {
                let settings = &self.settings;
                let change = self.tickets.apply(
                    slot,
                    &ticket.ticket_id,
                    ticket.action,
                    at,
                    |channel| settings.sla_threshold(channel),
                    &mut self.measures,
                );
                profile.open_tickets = profile
                    .open_tickets
                    .saturating_add_signed(change.open_delta);
                profile.tickets_opened = profile
                    .tickets_opened
                    .saturating_add(u32::from(change.opened));
                profile.tickets_resolved = profile
                    .tickets_resolved
                    .saturating_add(u32::from(change.resolved));
                if let Some(millis) = change.first_response_millis {
                    profile.first_responses = profile.first_responses.saturating_add(1);
                    profile.first_response_millis_sum += millis;
                }
                if let Some(ticket_slot) = change.slot {
                    let timer = Timer::Sla(ticket_slot);
                    // Cancel before scheduling: a replaced deadline may equal the new one.
                    if let Some(deadline) = change.sla_deadline_replaced {
                        self.timers.cancel(deadline, timer);
                    }
                    if let Some(deadline) = change.sla_deadline_opened {
                        self.timers.schedule(deadline, timer);
                    }
                    if let Some(deadline) = change.sla_deadline_settled {
                        self.timers.cancel(deadline, timer);
                    }
                }
                let once_per_ticket = || Cause::Key(format!("ticket/{}", ticket.ticket_id));
                // A breach happens at its deadline, however it is detected.
                if let Some(deadline) = change.breached_deadline {
                    signals.push((
                        SignalKind::SlaBreached,
                        once_per_ticket(),
                        Some(ticket.ticket_id.clone()),
                        deadline,
                    ));
                    if segment_before == Segment::Champion {
                        signals.push((
                            SignalKind::VipAtRisk,
                            once_per_ticket(),
                            Some(ticket.ticket_id.clone()),
                            deadline,
                        ));
                    }
                }
                if ticket.action == crate::event::TicketAction::Reopened {
                    signals.push((
                        SignalKind::TicketReopened,
                        Cause::Record,
                        Some(ticket.ticket_id.clone()),
                        at,
                    ));
                }
            }
            EventBody::Survey(survey) => {
                apply_survey(profile, survey.response, at, &mut self.measures);
                if let crate::event::SurveyResponse::Nps { score } = survey.response {
                    if NpsCategory::of(score) == NpsCategory::Detractor {
                        signals.push((SignalKind::DetractorResponse, Cause::Record, None, at));
                        if segment_before == Segment::Champion {
                            signals.push((SignalKind::VipAtRisk, Cause::Record, None, at));
                        }
                    }
                }
            }
        }
        profile.refresh_classification(rules);
        classification_signals(
            profile,
            lifecycle_before,
            segment_before,
            || Cause::Record,
            at,
            &mut signals,
        );
        push_signals(profile, segment_before, signals, out);
        reschedule_review(profile, slot, rules, &mut self.timers);
        for (measure_at, measure) in &self.measures {
            self.windows.record(*measure_at, measure);
        }
        self.advance(wall, out);
        let Some(entry) = self.customers.get(slot) else {
            unreachable!("profiles are never removed")
        };
        Outcome::Applied {
            customer: slot,
            profile: &entry.profile,
            measures: &self.measures,
            late,
        }
    }

    /// Moves the watermark with the wall clock (idle partitions) and emits what became final.
    pub fn tick(&mut self, wall: EventTime, out: &mut Vec<Emitted>) {
        self.advance(wall, out);
    }

    fn advance(&mut self, wall: EventTime, out: &mut Vec<Emitted>) {
        let watermark = self.watermark.update(wall);
        if watermark == EventTime::MIN {
            return;
        }
        // Timers first: what they count belongs to windows that close after they fire.
        let lateness = self.settings.allowed_lateness_millis;
        while let Some((at, timer)) = self.timers.pop_due(watermark, lateness) {
            match timer {
                Timer::Sla(ticket) => self.sla_overdue(ticket, at, out),
                Timer::Review(customer) => self.review(customer, at, wall, true, out),
            }
        }
        let mut finals = Vec::new();
        self.windows.advance(watermark, &mut finals);
        out.extend(
            finals
                .into_iter()
                .map(|window| Emitted::Window(Box::new(window))),
        );
        self.dedupe_horizon = watermark.plus_millis(-self.settings.dedupe_window_millis);
        self.sweep_seen();
        let timers = &mut self.timers;
        self.tickets.evict_resolved_before(
            watermark.plus_millis(-self.settings.ticket_retention_millis),
            TICKET_SWEEP_PER_ADVANCE,
            |slot, ticket| {
                // Its slot may be reused: a timer still pending must not fire on another ticket.
                if ticket.sla_pending() {
                    timers.cancel(ticket.sla_deadline, Timer::Sla(slot));
                }
            },
        );
    }

    /// Drops expired de-duplication entries of a few customers, round the slab: a
    /// customer's list is otherwise only trimmed when it sends an event.
    fn sweep_seen(&mut self) {
        let customers = self.customers.len() as u32;
        for _ in 0..SEEN_SWEEP_PER_ADVANCE.min(customers as usize) {
            let slot = CustomerSlot(self.seen_sweep % customers);
            self.seen_sweep = slot.0 + 1;
            if let Some(entry) = self.customers.get_mut(slot) {
                entry.seen.forget_before(self.dedupe_horizon);
            }
        }
    }

    fn sla_overdue(&mut self, ticket: TicketSlot, deadline: EventTime, out: &mut Vec<Emitted>) {
        let Some(ticket) = self.tickets.breach_overdue(ticket, deadline) else {
            return;
        };
        let (customer, ticket_id) = (ticket.customer, ticket.ticket_id.clone());
        self.windows.record(deadline, &Measure::SlaBreach);
        let Some(profile) = self.customers.get(customer).map(|entry| &entry.profile) else {
            return;
        };
        let cause = || Cause::Key(format!("ticket/{ticket_id}"));
        let mut kinds = vec![SignalKind::SlaBreached];
        if profile.segment == Segment::Champion {
            kinds.push(SignalKind::VipAtRisk);
        }
        for kind in kinds {
            out.push(Emitted::Signal(signal(
                profile,
                kind,
                deadline,
                cause(),
                Some(ticket_id.clone()),
                profile.segment,
            )));
        }
    }

    /// Re-evaluates a customer at `at`; `emit_profile`: publish the profile if it changed
    /// (not when an event of the customer follows at once and publishes it anyway: a
    /// record of the older state after the newer one would win on the compacted topic).
    fn review(
        &mut self,
        slot: CustomerSlot,
        at: EventTime,
        wall: EventTime,
        emit_profile: bool,
        out: &mut Vec<Emitted>,
    ) {
        if self
            .customers
            .get(slot)
            .is_none_or(|entry| entry.profile.as_of.get() >= at)
        {
            return;
        }
        self.mark_changed(slot);
        let rules = &self.settings.profile_rules;
        let Some(profile) = self.customers.get_mut(slot).map(|entry| &mut entry.profile) else {
            return;
        };
        let (lifecycle_before, segment_before) = (profile.lifecycle, profile.segment);
        profile.as_of = at.into();
        profile.refresh_classification(rules);
        let key = format!("review/{}", at.millis());
        let mut signals = Vec::new();
        classification_signals(
            profile,
            lifecycle_before,
            segment_before,
            || Cause::Key(key.clone()),
            at,
            &mut signals,
        );
        if (profile.lifecycle, profile.segment) != (lifecycle_before, segment_before) {
            profile.updated_at = wall.into();
        }
        if emit_profile
            && (profile.lifecycle, profile.segment) != (lifecycle_before, segment_before)
        {
            out.push(Emitted::Profile {
                customer: slot,
                cause: key.clone(),
            });
        }
        push_signals(profile, segment_before, signals, out);
        reschedule_review(profile, slot, rules, &mut self.timers);
    }

    /// Fires the customer's reviews due at or before `at`, each at its own instant,
    /// before an event at `at` is applied: lifecycle and segment changes (and their
    /// signals and ids) then depend only on the customer's own events, never on how
    /// far other customers' traffic moved the watermark, so replays repeat them.
    fn review_due(
        &mut self,
        slot: CustomerSlot,
        at: EventTime,
        wall: EventTime,
        out: &mut Vec<Emitted>,
    ) {
        let review_at = |task: &Self| {
            task.customers
                .get(slot)
                .and_then(|entry| entry.profile.review_at)
                .map(CompactTime::get)
        };
        while let Some(due) = review_at(self).filter(|due| *due <= at) {
            self.timers.cancel(due, Timer::Review(slot));
            self.review(slot, due, wall, false, out);
            if review_at(self) == Some(due) {
                // Not rescheduled (nothing left to review): never loop on it.
                if let Some(entry) = self.customers.get_mut(slot) {
                    entry.profile.review_at = None;
                }
                break;
            }
        }
    }
}

/// A signal before it is attached to its profile: kind, cause, ticket and event time.
type PendingSignal = (SignalKind, Cause, Option<crate::event::TicketId>, EventTime);

/// Signals of a lifecycle or segment change.
fn classification_signals(
    profile: &Profile,
    lifecycle_before: Lifecycle,
    segment_before: Segment,
    cause: impl Fn() -> Cause,
    at: EventTime,
    signals: &mut Vec<PendingSignal>,
) {
    if profile.lifecycle == Lifecycle::Churned && lifecycle_before != Lifecycle::Churned {
        signals.push((SignalKind::CustomerChurned, cause(), None, at));
    }
    if profile.segment != segment_before {
        signals.push((SignalKind::SegmentChanged, cause(), None, at));
    }
}

/// Turns pending signals into signals of `profile`.
fn push_signals(
    profile: &Profile,
    segment_before: Segment,
    signals: Vec<PendingSignal>,
    out: &mut Vec<Emitted>,
) {
    for (kind, cause, ticket_id, at) in signals {
        out.push(Emitted::Signal(signal(
            profile,
            kind,
            at,
            cause,
            ticket_id,
            segment_before,
        )));
    }
}

fn signal(
    profile: &Profile,
    kind: SignalKind,
    at: EventTime,
    cause: Cause,
    ticket_id: Option<crate::event::TicketId>,
    segment_before: Segment,
) -> Signal {
    Signal {
        kind,
        customer_id: profile.customer_id.clone(),
        at,
        cause,
        ticket_id,
        segment: profile.segment,
        previous_segment: (segment_before != profile.segment).then_some(segment_before),
        lifecycle: profile.lifecycle,
    }
}

/// Keeps exactly one review timer per customer, at their next possible transition.
fn reschedule_review(
    profile: &mut Profile,
    slot: CustomerSlot,
    rules: &ProfileRules,
    timers: &mut Timers,
) {
    // Scheduled at the instant the profile holds, so that cancelling finds it.
    let next = profile.next_review(rules).map(CompactTime::new);
    if next == profile.review_at {
        return;
    }
    let timer = Timer::Review(slot);
    if let Some(previous) = profile.review_at {
        timers.cancel(previous.get(), timer);
    }
    if let Some(next) = next {
        timers.schedule(next.get(), timer);
    }
    profile.review_at = next;
}

fn apply_purchase(
    profile: &mut Profile,
    action: PurchaseAction,
    at: EventTime,
    activity_horizon_millis: i64,
    measures: &mut Vec<(EventTime, Measure)>,
) -> bool {
    let mut reactivated = false;
    match action {
        PurchaseAction::Placed { amount } => {
            let previous = profile.last_purchase_at.map(CompactTime::get);
            let gap_millis = previous.map(|previous| at.millis() - previous.millis());
            // Coming back after the horizon passed: the customer had churned.
            if previous.is_some_and(|previous| at >= previous.plus_millis(activity_horizon_millis))
            {
                profile.reactivated_at = Some(at.into());
                reactivated = true;
            }
            if let Some(gap) = gap_millis {
                profile.purchase_gap_millis_sum += gap;
            }
            profile.orders_placed = profile.orders_placed.saturating_add(1);
            profile.money.add_revenue(amount.currency, amount.amount.0);
            let first = profile
                .first_purchase_at
                .map_or(at, |first| first.get().min(at));
            profile.first_purchase_at = Some(first.into());
            profile.last_purchase_at = Some(previous.map_or(at, |last| last.max(at)).into());
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
            profile.money.add_returned(amount.currency, amount.amount.0);
            measures.push((at, Measure::OrderReturned { amount }));
        }
    }
    reactivated
}

fn apply_survey(
    profile: &mut Profile,
    response: SurveyResponse,
    at: EventTime,
    measures: &mut Vec<(EventTime, Measure)>,
) {
    let (survey, score, scale_max, measure) = match response {
        SurveyResponse::Nps { score } => (
            Survey::Nps,
            score,
            10,
            Measure::NpsResponse(NpsCategory::of(score)),
        ),
        SurveyResponse::Csat { score, scale_max } => {
            // score >= 0.8 × scale_max, in integers.
            let satisfied = u32::from(score) * 10 >= u32::from(scale_max) * 8;
            (
                Survey::Csat,
                score,
                scale_max,
                Measure::CsatResponse { satisfied },
            )
        }
        SurveyResponse::Ces { score, scale_max } => (
            Survey::Ces,
            score,
            scale_max,
            Measure::CesResponse { score },
        ),
    };
    if profile.last_answer(survey).is_none_or(|last| last.at <= at) {
        profile.set_last_answer(
            survey,
            LastScore {
                score,
                scale_max,
                at,
            },
        );
    }
    measures.push((at, measure));
}

/// How much state a task holds, by kind, for sizing and the state-size test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Profiles.
    pub profiles: usize,
    /// Tickets (open, or resolved within `ticket_retention`).
    pub tickets: usize,
    /// Pending timers.
    pub timers: usize,
    /// De-duplication entries (some may be past the horizon until their customer's next event).
    pub dedupe_entries: usize,
    /// Window panes over all specs.
    pub panes: usize,
    /// Entries of the active-customer index.
    pub active_index_entries: usize,
}

/// A kind of task state, to attribute heap memory to it (see [`Task::discard`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatePart {
    /// Changes not yet taken by [`Task::take_changelog`].
    PendingChanges,
    /// Pending timers.
    Timers,
    /// De-duplication memory.
    Dedupe,
    /// Tickets.
    Tickets,
    /// Window panes.
    Panes,
    /// The active-customer index of the retention group.
    ActiveIndex,
    /// Profiles and their index.
    Profiles,
}

impl StatePart {
    /// Every part, in the order [`Task::discard`] can drop them one after another.
    pub const ALL: [StatePart; 7] = [
        StatePart::PendingChanges,
        StatePart::Timers,
        StatePart::Dedupe,
        StatePart::Tickets,
        StatePart::Panes,
        StatePart::ActiveIndex,
        StatePart::Profiles,
    ];
}

impl Task {
    /// Drops one kind of state so that a counting allocator sees how much heap it
    /// held (state-size test and bench); the task must not process anything after.
    pub fn discard(&mut self, part: StatePart) {
        match part {
            StatePart::PendingChanges => {
                self.changed_customers = Vec::new();
                self.changed_bits = Vec::new();
                self.measures = Vec::new();
                self.stale_batches = Vec::new();
                self.batch_to_rewrite = Vec::new();
                self.tickets.discard_changes();
                self.windows.discard_changes();
            }
            StatePart::Timers => self.timers = Timers::default(),
            StatePart::Dedupe => {
                for slot in 0..self.customers.len() as u32 {
                    if let Some(entry) = self.customers.get_mut(CustomerSlot(slot)) {
                        entry.seen = SeenEvents::default();
                    }
                }
            }
            StatePart::Tickets => self.tickets = TicketBook::default(),
            StatePart::Panes => self.windows.discard_panes(),
            StatePart::ActiveIndex => self.windows.discard_active(),
            StatePart::Profiles => self.customers = Customers::default(),
        }
    }

    /// Counts of everything the task holds.
    pub fn state_counts(&self) -> StateCounts {
        StateCounts {
            profiles: self.customers.len(),
            tickets: self.tickets.len(),
            timers: self.timers.len(),
            dedupe_entries: self
                .customers
                .slab
                .iter()
                .map(|(_, entry)| entry.seen.len())
                .sum(),
            panes: self.windows.pane_count(),
            active_index_entries: self.windows.active_index_len(),
        }
    }
}
