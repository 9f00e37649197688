//! The task's changelog: its state as records of a compacted topic,
//! partition = task id, one key per piece of state.
//!
//! | key | value (`proto/cxpulse/state/v1/state.proto`) |
//! |---|---|
//! | `p/{customer_id}` | `Customer`: profile and de-duplication memory |
//! | `t/{ticket_id}` | `Ticket` (tombstone when forgotten) |
//! | `w/{window}/{pane_start}` | `Pane` counts (tombstone when dropped) |
//! | `a/{time}` | `ActiveDelta` (tombstone when gone) |
//! | `m` | `Meta`: input offsets included, flush number, watermark, window progress |
//! | `c/{flush}/{index}/{count}` | write-ahead batch: chunk `index` of a flush's records |
//!
//! Values are Protobuf rather than JSON: a restore reads every record of the
//! partition before the task may consume, and binary values are several times
//! smaller and faster to parse.
//!
//! [`Task::take_changelog`] returns what changed since the previous call
//! (never a full snapshot), meta last. The meta record names the input
//! offsets the state includes, so inputs replayed after a crash are skipped.
//! Timers are not stored: a restore rebuilds them from profiles and tickets.
//!
//! A flush is several records. Inside a Kafka transaction (exactly-once) they
//! become visible together; otherwise a crash can cut them short, and some keys
//! would hold the new state while the meta still names the old offsets, so the
//! replay would count those records twice. [`write_ahead`] frames a flush so
//! that any prefix of it restores to the state before or after the flush: the
//! whole flush first as write-ahead chunks, then the per-key records (which
//! compaction keeps), then tombstones of the chunks. A restore applies a
//! complete batch newer than the meta record, and ignores an incomplete one
//! (none of its per-key records can have been written yet).
//!
//! [`Restorer`] applies records as they are read, oldest first: each record
//! holds the whole value of its key, so applying them in order leaves the
//! latest of each key (what compaction keeps) without first collecting them;
//! only write-ahead chunks and the meta record wait for the end.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use prost::Message;

use super::dedupe::{SeenEvent, SeenEvents};
use super::profile::{CurrencyTotals, LastScore, MoneyTotals, Survey};
use super::tickets::{TicketFlags, TicketState};
use super::timers::{CustomerSlot, Timer};
use super::watermark::Watermark;
use super::{CustomerEntry, Lifecycle, Profile, Segment, Task, TaskSettings};
use crate::event::{Channel, Currency, CustomerId, EventTime, Source, TicketId};
use crate::proto::state as proto;
use crate::window::retention::CursorState;
use crate::window::{Aggregate, SpecProgress};

/// A changelog record: key, and value or `None` for a tombstone.
pub type ChangeRecord = (Vec<u8>, Option<Vec<u8>>);

/// Why a changelog record could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The key is not one cxpulse writes.
    #[error("unknown changelog key {0:?}")]
    UnknownKey(String),
    /// The value is not Protobuf of the key's message.
    #[error("changelog record {key:?}: {source}")]
    BadValue {
        /// The key.
        key: String,
        /// The decode error.
        source: prost::DecodeError,
    },
    /// The value decodes but holds something cxpulse never writes.
    #[error("changelog record {key:?}: {reason}")]
    Invalid {
        /// The key.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
}

fn bad_value(key: &[u8]) -> impl FnOnce(prost::DecodeError) -> RestoreError + '_ {
    move |source| RestoreError::BadValue {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    }
}

fn invalid(key: &[u8], reason: &'static str) -> RestoreError {
    RestoreError::Invalid {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    }
}

fn unknown_key(key: &[u8]) -> RestoreError {
    RestoreError::UnknownKey(String::from_utf8_lossy(key).into_owned())
}

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

fn customer_value(entry: &CustomerEntry) -> Vec<u8> {
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

fn customer_from_value(
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

fn ticket_value(ticket: &TicketState, customer_id: &str) -> Vec<u8> {
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

fn pane_value(aggregate: &Aggregate) -> Vec<u8> {
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

fn pane_from_value(key: &[u8], value: &[u8]) -> Result<Aggregate, RestoreError> {
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

impl Task {
    /// True when the state already includes the input record at `offset` of `source`.
    pub fn includes(&self, source: Source, offset: i64) -> bool {
        offset < self.included[source.index()]
    }

    /// The first input offset of `source` the state does not include (-1: it includes none).
    pub fn next_offset(&self, source: Source) -> i64 {
        self.included[source.index()]
    }

    /// Records that the state now includes the input record at `offset` of `source`.
    pub fn mark_included(&mut self, source: Source, offset: i64) {
        let next = &mut self.included[source.index()];
        *next = (*next).max(offset + 1);
    }

    /// Number of the last changelog flush, the one [`write_ahead`] frames.
    pub fn changelog_cycle(&self) -> u64 {
        self.changelog_cycle
    }

    /// The changelog records of everything changed since the previous call, meta last.
    pub fn take_changelog(&mut self) -> Vec<ChangeRecord> {
        self.changelog_cycle += 1;
        // A batch applied at restore never reached its per-key records: write them
        // now (later changes of the same keys follow and win), then delete the chunks.
        let mut records: Vec<ChangeRecord> = std::mem::take(&mut self.batch_to_rewrite);
        records.extend(
            std::mem::take(&mut self.stale_batches)
                .into_iter()
                .map(|key| (key, None)),
        );
        // Customers before tickets: a restore finds a ticket's customer by then.
        for slot in std::mem::take(&mut self.changed_customers) {
            if let Some(word) = self.changed_bits.get_mut(slot.0 as usize / 64) {
                *word &= !(1u64 << (slot.0 % 64));
            }
            if let Some(entry) = self.customers.get(slot) {
                let mut key = Vec::with_capacity(2 + entry.profile.customer_id.as_str().len());
                key.extend_from_slice(b"p/");
                key.extend_from_slice(entry.profile.customer_id.as_str().as_bytes());
                records.push((key, Some(customer_value(entry))));
            }
        }
        let customers = &self.customers;
        for (ticket_id, state) in self.tickets.take_changes() {
            let value = state.map(|ticket| {
                let customer_id = customers
                    .get(ticket.customer)
                    .map_or("", |entry| entry.profile.customer_id.as_str());
                ticket_value(ticket, customer_id)
            });
            records.push((format!("t/{ticket_id}").into_bytes(), value));
        }
        for (spec, pane, aggregate) in self.windows.take_pane_changes() {
            records.push((
                format!("w/{spec}/{pane}").into_bytes(),
                aggregate.map(pane_value),
            ));
        }
        for (key, delta) in self.windows.active_mut().take_changes() {
            records.push((
                format!("a/{key}").into_bytes(),
                delta.map(|delta| proto::ActiveDelta { delta }.encode_to_vec()),
            ));
        }
        let meta = proto::Meta {
            included: self.included.to_vec(),
            cycle: self.changelog_cycle,
            watermark: Some(self.watermark.to_proto()),
            windows: self
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
            windows_skipped: self.windows.skipped(),
        };
        records.push((b"m".to_vec(), Some(meta.encode_to_vec())));
        records
    }

    /// Rebuilds a task from its changelog records, oldest first (the latest record of a key wins).
    pub fn restore(
        id: u32,
        settings: Arc<TaskSettings>,
        wall: EventTime,
        records: impl IntoIterator<Item = ChangeRecord>,
    ) -> Result<Task, RestoreError> {
        let mut restorer = Restorer::new(id, settings, wall);
        for (key, value) in records {
            restorer.apply(&key, value.as_deref())?;
        }
        restorer.finish()
    }
}

/// Rebuilds a task from its changelog records, applied one by one as they are
/// read (borrowed: nothing is copied first), oldest first.
#[derive(Debug)]
pub struct Restorer {
    task: Task,
    wall: EventTime,
    /// Latest value of each write-ahead chunk key (`None`: deleted).
    chunks: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Latest meta value.
    meta: Option<Vec<u8>>,
    /// Customers created for a ticket read before its customer's record.
    placeholders: HashSet<CustomerSlot>,
}

impl Restorer {
    /// Starts the restore of task `id`, at wall time `wall`.
    pub fn new(id: u32, settings: Arc<TaskSettings>, wall: EventTime) -> Self {
        Restorer {
            task: Task::new(id, settings, wall),
            wall,
            chunks: BTreeMap::new(),
            meta: None,
            placeholders: HashSet::new(),
        }
    }

    /// Starts the restore of task `id` from a changelog of about `records` records.
    pub fn with_capacity(
        id: u32,
        settings: Arc<TaskSettings>,
        wall: EventTime,
        records: usize,
    ) -> Self {
        let mut restorer = Restorer::new(id, settings, wall);
        // Most records of a large changelog are customers; tickets come second.
        restorer.task.customers.reserve(records);
        restorer
    }

    /// Customers restored so far.
    pub fn profile_count(&self) -> usize {
        self.task.profile_count()
    }

    /// Applies the next record of the changelog.
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), RestoreError> {
        match key {
            b"m" => self.meta = value.map(<[u8]>::to_vec),
            [b'c', b'/', ..] => {
                self.chunks.insert(key.to_vec(), value.map(<[u8]>::to_vec));
            }
            _ => self.apply_state(key, value)?,
        }
        Ok(())
    }

    /// Applies a record of a piece of state (anything but meta and write-ahead chunks).
    fn apply_state(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), RestoreError> {
        let task = &mut self.task;
        let (kind, rest) = match key {
            [kind, b'/', rest @ ..] => (*kind, rest),
            _ => return Err(unknown_key(key)),
        };
        let text = || std::str::from_utf8(rest).map_err(|_| unknown_key(key));
        match kind {
            b'p' => {
                let customer_id = CustomerId::new(text()?);
                let Some(value) = value else {
                    // Profiles are never deleted.
                    return Err(invalid(key, "tombstone of a profile"));
                };
                let (profile, seen) = customer_from_value(key, customer_id, value)?;
                let entry = CustomerEntry { profile, seen };
                let (slot, entry) = task.customers.find_or_insert(entry);
                if let Some(entry) = entry {
                    // A later record of a customer already restored (or a placeholder).
                    if !self.placeholders.is_empty() {
                        self.placeholders.remove(&slot);
                    }
                    if let Some(existing) = task.customers.get_mut(slot) {
                        *existing = entry;
                    }
                }
            }
            b't' => {
                let ticket_id = TicketId::new(text()?);
                let Some(value) = value else {
                    task.tickets.forget(&ticket_id);
                    return Ok(());
                };
                let ticket = proto::Ticket::decode(value).map_err(bad_value(key))?;
                let channel = Channel::parse(&ticket.channel)
                    .ok_or_else(|| invalid(key, "unknown channel"))?;
                let customer_id = CustomerId::new(ticket.customer_id);
                // Compaction may keep a customer's latest record after its ticket's.
                let (customer, absent) = task.customers.find_or_insert(CustomerEntry {
                    profile: Profile::new(customer_id, EventTime::MIN),
                    seen: SeenEvents::default(),
                });
                if absent.is_none() {
                    self.placeholders.insert(customer);
                }
                task.tickets.restore(TicketState::restored(
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
                ));
            }
            b'w' => {
                let (spec, pane) = text()?.rsplit_once('/').ok_or_else(|| unknown_key(key))?;
                let pane: i64 = pane.parse().map_err(|_| unknown_key(key))?;
                let aggregate = value.map(|value| pane_from_value(key, value)).transpose()?;
                task.windows.restore_pane(spec, pane, aggregate);
            }
            b'a' => {
                let at: i64 = text()?.parse().map_err(|_| unknown_key(key))?;
                let delta = value
                    .map(|value| proto::ActiveDelta::decode(value).map_err(bad_value(key)))
                    .transpose()?;
                task.windows
                    .active_mut()
                    .restore_delta(at, delta.map(|delta| delta.delta));
            }
            _ => return Err(unknown_key(key)),
        }
        Ok(())
    }

    /// Applies the write-ahead batch the log ends with, if complete, and the meta
    /// record, rebuilds the timers, and returns the task.
    pub fn finish(mut self) -> Result<Task, RestoreError> {
        let decode_meta = |value: Option<&[u8]>| {
            value
                .map(|value| proto::Meta::decode(value).map_err(bad_value(b"m")))
                .transpose()
        };
        let committed = decode_meta(self.meta.as_deref())?.map_or(0, |meta| meta.cycle);
        let applied = find_write_ahead(std::mem::take(&mut self.chunks), committed)?;
        // The batch's records come after everything in the log, its meta included;
        // chunk deletions inside it are about older batches, already accounted for.
        for (key, value) in &applied.records {
            match key.as_slice() {
                b"m" => self.meta = value.clone(),
                [b'c', b'/', ..] => {}
                _ => self.apply_state(key, value.as_deref())?,
            }
        }
        let meta = decode_meta(self.meta.as_deref())?;
        if let Some(slot) = self.placeholders.iter().next() {
            let id = self
                .task
                .customers
                .get(*slot)
                .map_or(String::new(), |entry| entry.profile.customer_id.to_string());
            return Err(RestoreError::Invalid {
                key: format!("p/{id}"),
                reason: "a ticket of this customer was restored, the customer was not",
            });
        }
        let wall = self.wall;
        let mut task = self.task;
        task.stale_batches = applied.keys;
        let newest_batch = applied.newest;
        if let Some(meta) = meta {
            task.included = meta
                .included
                .as_slice()
                .try_into()
                .map_err(|_| invalid(b"m", "not one input offset per source"))?;
            task.changelog_cycle = meta.cycle;
            task.watermark = meta
                .watermark
                .as_ref()
                .and_then(Watermark::from_proto)
                .ok_or_else(|| invalid(b"m", "bad watermark"))?;
            task.watermark.resume(wall);
            let progress: BTreeMap<String, SpecProgress> = meta
                .windows
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
                .collect();
            task.windows
                .restore_progress(&progress, meta.windows_skipped);
        }
        // As the last advance before the flush left it (nothing before it counts as seen).
        let watermark = task.watermark.current();
        if watermark != EventTime::MIN {
            task.dedupe_horizon = watermark.plus_millis(-task.settings.dedupe_window_millis);
            let retention = task.settings.ticket_retention_millis;
            task.tickets
                .evict_resolved_before(watermark.plus_millis(-retention), 0, |_, _| {});
        }
        // Timers are derived state.
        let mut timers: Vec<(EventTime, Timer)> = task
            .customers
            .slab
            .iter()
            .filter_map(|(slot, entry)| {
                let at = entry.profile.review_at?;
                Some((at.get(), Timer::Review(CustomerSlot(slot))))
            })
            .collect();
        timers.extend(
            task.tickets
                .pending_sla_deadlines()
                .map(|(at, ticket)| (at, Timer::Sla(ticket))),
        );
        task.timers.schedule_all(timers);
        // A restore is not a change (but leftover write-ahead batches are deleted).
        let stale = std::mem::take(&mut task.stale_batches);
        task.take_changelog();
        task.batch_to_rewrite = applied.records;
        // Flush numbers are never reused: a new batch must not mix with, or be
        // deleted as, a leftover one of the same number.
        task.changelog_cycle = task.changelog_cycle.saturating_sub(1).max(newest_batch);
        task.stale_batches = stale;
        Ok(task)
    }
}

/// Largest write-ahead chunk value: well inside any broker's record size limit.
const CHUNK_BYTES: usize = 256 * 1024;

/// Frames the records of flush number `cycle` (from [`Task::take_changelog`]) so that
/// a crash after any prefix of the result restores to the state before or after the
/// flush: write-ahead chunks of all records, then the records, then chunk tombstones.
pub fn write_ahead(cycle: u64, records: Vec<ChangeRecord>) -> Vec<ChangeRecord> {
    frame(cycle, records, CHUNK_BYTES)
}

fn frame(cycle: u64, records: Vec<ChangeRecord>, chunk_bytes: usize) -> Vec<ChangeRecord> {
    let mut chunks: Vec<Vec<u8>> = vec![Vec::new()];
    for (key, value) in &records {
        let size = 9 + key.len() + value.as_ref().map_or(0, Vec::len);
        let current = chunks.last_mut().expect("one chunk at least");
        if !current.is_empty() && current.len() + size > chunk_bytes {
            chunks.push(Vec::new());
        }
        encode_change(
            chunks.last_mut().expect("one chunk at least"),
            key,
            value.as_deref(),
        );
    }
    let count = chunks.len();
    let key = |index: usize| format!("c/{cycle}/{index}/{count}").into_bytes();
    let mut framed = Vec::with_capacity(records.len() + 2 * count);
    framed.extend(
        chunks
            .into_iter()
            .enumerate()
            .map(|(index, chunk)| (key(index), Some(chunk))),
    );
    framed.extend(records);
    framed.extend((0..count).map(|index| (key(index), None)));
    framed
}

fn encode_change(out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    match value {
        None => out.push(0),
        Some(value) => {
            out.push(1);
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value);
        }
    }
}

fn decode_changes(mut bytes: &[u8]) -> Option<Vec<ChangeRecord>> {
    fn take<'a>(bytes: &mut &'a [u8], count: usize) -> Option<&'a [u8]> {
        if bytes.len() < count {
            return None;
        }
        let (head, rest) = bytes.split_at(count);
        *bytes = rest;
        Some(head)
    }
    fn length(bytes: &mut &[u8]) -> Option<usize> {
        let raw: [u8; 4] = take(bytes, 4)?.try_into().ok()?;
        Some(u32::from_be_bytes(raw) as usize)
    }
    let mut changes = Vec::new();
    while !bytes.is_empty() {
        let key_length = length(&mut bytes)?;
        let key = take(&mut bytes, key_length)?.to_vec();
        let value = match take(&mut bytes, 1)?[0] {
            0 => None,
            1 => {
                let value_length = length(&mut bytes)?;
                Some(take(&mut bytes, value_length)?.to_vec())
            }
            _ => return None,
        };
        changes.push((key, value));
    }
    Some(changes)
}

/// Write-ahead batches found at restore.
struct FoundBatches {
    /// Keys of every batch chunk still present (to delete).
    keys: Vec<Vec<u8>>,
    /// The newest flush number among them.
    newest: u64,
    /// Records of the batch that was applied (to write per key), if one was.
    records: Vec<ChangeRecord>,
}

/// Finds the one complete write-ahead batch newer than the meta record's flush
/// `committed`, if any, among the latest values of the chunk keys.
fn find_write_ahead(
    chunk_values: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    committed: u64,
) -> Result<FoundBatches, RestoreError> {
    // cycle → (count, chunks by index)
    let mut batches: BTreeMap<u64, (usize, BTreeMap<usize, Vec<u8>>)> = BTreeMap::new();
    let mut keys = Vec::new();
    for (key, value) in chunk_values {
        let text = String::from_utf8_lossy(&key).into_owned();
        let parts: Vec<&str> = text.split('/').collect();
        let [_, cycle, index, count] = parts[..] else {
            return Err(RestoreError::UnknownKey(text));
        };
        let (Ok(cycle), Ok(index), Ok(count)) = (
            cycle.parse::<u64>(),
            index.parse::<usize>(),
            count.parse::<usize>(),
        ) else {
            return Err(RestoreError::UnknownKey(text));
        };
        if let Some(value) = value {
            let batch = batches
                .entry(cycle)
                .or_insert_with(|| (count, BTreeMap::new()));
            batch.1.insert(index, value);
            keys.push(key);
        }
    }
    let newest = batches.keys().next_back().copied().unwrap_or(0);
    let mut applied = Vec::new();
    for (cycle, (count, chunks)) in batches {
        if cycle <= committed || chunks.len() != count {
            // Its records are all written (meta is newer), or none of them are.
            continue;
        }
        for chunk in chunks.values() {
            let changes = decode_changes(chunk)
                .ok_or_else(|| RestoreError::UnknownKey(format!("c/{cycle}: malformed batch")))?;
            applied.extend(changes);
        }
    }
    Ok(FoundBatches {
        keys,
        newest,
        records: applied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::event::Event;
    use crate::generate::population::{Population, PopulationConfig};
    use crate::task::Emitted;
    use crate::window::FinalWindow;

    fn windows(emitted: &[Emitted]) -> Vec<FinalWindow> {
        emitted
            .iter()
            .filter_map(|item| match item {
                Emitted::Window(window) => Some((**window).clone()),
                _ => None,
            })
            .collect()
    }

    /// A value that does not parse, or holds what cxpulse never writes, is a typed
    /// error naming its key, never a panic; so is an old JSON value.
    #[test]
    fn unparseable_values_are_restore_errors() {
        let settings = Arc::new(TaskSettings::from_config(&Config::default()));
        let wall = EventTime::from_millis(0);
        let json = br#"{"customer_id":"c","events":1}"#.to_vec();
        let bad_currency = proto::Customer {
            money: vec![proto::CurrencyTotals {
                currency: "eur".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec();
        let cases: Vec<ChangeRecord> = vec![
            (b"p/c".to_vec(), Some(json.clone())),
            (b"p/c".to_vec(), Some(vec![0xff; 7])),
            (b"p/c".to_vec(), Some(bad_currency)),
            (b"p/c".to_vec(), None),
            (b"t/x".to_vec(), Some(vec![0x0a, 0x80])),
            (b"w/1h/0".to_vec(), Some(json.clone())),
            (b"a/0".to_vec(), Some(vec![0x08])),
            (b"m".to_vec(), Some(json)),
            (b"z/1".to_vec(), Some(Vec::new())),
        ];
        for (key, value) in cases {
            let label = String::from_utf8_lossy(&key).into_owned();
            let result = Task::restore(0, settings.clone(), wall, vec![(key, value)]);
            assert!(result.is_err(), "{label} restored");
        }
    }

    /// Applying a stream with a restore from the changelog in the middle gives the same
    /// windows and profiles as applying it in one go.
    #[test]
    fn restoring_mid_stream_changes_nothing() {
        let settings = Arc::new(TaskSettings::from_config(&Config::default()));
        let day = 86_400_000;
        let events: Vec<_> = Population::new(PopulationConfig {
            customers: 300,
            visits_per_day: 3.0,
            start: EventTime::from_millis(1_780_000_000_000),
            max_disorder_millis: 60_000,
            seed: 4,
        })
        .take(20_000)
        .collect();
        let wall = EventTime::from_millis(0);
        let mut straight = Task::new(0, settings.clone(), wall);
        let mut straight_out = Vec::new();
        for event in &events {
            straight.apply(event, wall, &mut straight_out);
        }
        straight.tick(EventTime::from_millis(400 * day), &mut straight_out);

        // One input "partition" per source: offsets count per source, as in Kafka.
        let mut offsets = [0i64; 3];
        let positioned: Vec<(i64, &Event)> = events
            .iter()
            .map(|event| {
                let offset = offsets[event.source().index()];
                offsets[event.source().index()] += 1;
                (offset, event)
            })
            .collect();
        let mut changelog: Vec<ChangeRecord> = Vec::new();
        let mut first = Task::new(0, settings.clone(), wall);
        let mut out = Vec::new();
        let mut committed = Vec::new();
        for (index, (offset, event)) in positioned.iter().enumerate() {
            if index == 12_345 {
                break; // crash
            }
            first.apply(event, wall, &mut out);
            first.mark_included(event.source(), *offset);
            if index % 1000 == 999 {
                changelog.extend(first.take_changelog());
                committed = windows(&out);
            }
        }
        // Restart: state as of the last flush; everything after it is replayed.
        let mut restored = Task::restore(0, settings, wall, changelog).unwrap();
        let mut out = Vec::new();
        let mut skipped = 0;
        for (offset, event) in &positioned {
            if restored.includes(event.source(), *offset) {
                skipped += 1;
                continue;
            }
            restored.apply(event, wall, &mut out);
            restored.mark_included(event.source(), *offset);
        }
        assert_eq!(skipped, 12_000);
        restored.tick(EventTime::from_millis(400 * day), &mut out);
        let mut combined = committed;
        combined.extend(windows(&out));
        assert_eq!(combined, windows(&straight_out));
        assert_eq!(restored.profile_count(), straight.profile_count());
        for profile in straight.profiles() {
            let mut expected = profile.clone();
            let mut actual = restored.profile(&profile.customer_id).unwrap().clone();
            expected.updated_at = EventTime::default().into();
            actual.updated_at = EventTime::default().into();
            assert_eq!(actual, expected);
        }
    }

    /// Straight-through result of `events`: (final windows, profiles without `updated_at`).
    fn outcome(
        task: &mut Task,
        until: EventTime,
        out: &mut Vec<Emitted>,
    ) -> (Vec<FinalWindow>, Vec<Profile>) {
        task.tick(until, out);
        let mut profiles: Vec<Profile> = task
            .profiles()
            .map(|profile| {
                let mut profile = profile.clone();
                profile.updated_at = EventTime::default().into();
                profile
            })
            .collect();
        profiles.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
        (windows(out), profiles)
    }

    /// Applies the records a restored task does not include yet, as the pipeline does.
    fn replay(
        task: &mut Task,
        positioned: &[(i64, &Event)],
        wall: EventTime,
        out: &mut Vec<Emitted>,
    ) {
        for (offset, event) in positioned {
            if !task.includes(event.source(), *offset) {
                task.apply(event, wall, out);
                task.mark_included(event.source(), *offset);
            }
        }
    }

    type WindowsByIdentity = BTreeMap<(Arc<str>, EventTime), FinalWindow>;

    fn by_identity(windows: &[FinalWindow]) -> WindowsByIdentity {
        windows
            .iter()
            .map(|window| ((window.name.clone(), window.end), window.clone()))
            .collect()
    }

    /// Crashes after every prefix of one flush's records, then restores and replays:
    /// with [`frame`] the result always equals the uninterrupted one; the same flush
    /// written without framing double counts for some prefixes (the hole it closes).
    #[test]
    fn a_crash_after_any_record_of_a_flush_changes_nothing() {
        let mut config = Config::default();
        config.windows = vec![
            crate::config::WindowConfig::new("1h", 3600, 900),
            crate::config::WindowConfig::new("1d", 86_400, 3600),
        ];
        let settings = Arc::new(TaskSettings::from_config(&config));
        let events: Vec<_> = Population::new(PopulationConfig {
            customers: 40,
            visits_per_day: 3.0,
            start: EventTime::from_millis(1_780_000_000_000),
            max_disorder_millis: 60_000,
            seed: 9,
        })
        .take(600)
        .collect();
        let wall = EventTime::from_millis(0);
        let mut offsets = [0i64; 3];
        let positioned: Vec<(i64, &Event)> = events
            .iter()
            .map(|event| {
                let offset = offsets[event.source().index()];
                offsets[event.source().index()] += 1;
                (offset, event)
            })
            .collect();
        let last = events.iter().map(|e| e.occurred_at).max().unwrap();
        let until = last.plus_millis(3 * 86_400_000);
        let mut straight = Task::new(0, settings.clone(), wall);
        let mut straight_out = Vec::new();
        for event in &events {
            straight.apply(event, wall, &mut straight_out);
        }
        let expected = outcome(&mut straight, until, &mut straight_out);
        let expected_windows = by_identity(&expected.0);

        // Flushes of 60 events; the crash comes during the 6th.
        let run = |framed: bool, stop_at_first_wrong: bool| -> Vec<(usize, bool)> {
            let mut task = Task::new(0, settings.clone(), wall);
            let mut out = Vec::new();
            let mut durable: Vec<ChangeRecord> = Vec::new();
            let mut committed_windows = Vec::new();
            let mut cut = Vec::new();
            for (index, (offset, event)) in positioned.iter().enumerate() {
                task.apply(event, wall, &mut out);
                task.mark_included(event.source(), *offset);
                if index % 60 != 59 {
                    continue;
                }
                let records = task.take_changelog();
                let records = if framed {
                    frame(task.changelog_cycle(), records, 2048)
                } else {
                    records
                };
                if index / 60 < 5 {
                    durable.extend(records);
                    committed_windows = windows(&out);
                    continue;
                }
                // Outputs are delivered before state is written: this flush's are out.
                committed_windows = windows(&out);
                cut = records;
                break;
            }
            assert!(cut.len() > 20, "a flush of many records: {}", cut.len());
            let mut results = Vec::new();
            for prefix in 0..=cut.len() {
                let ok = {
                    let mut log = durable.clone();
                    log.extend(cut[..prefix].iter().cloned());
                    let mut restored = Task::restore(0, settings.clone(), wall, log).unwrap();
                    let mut replay_out = Vec::new();
                    replay(&mut restored, &positioned, wall, &mut replay_out);
                    let (mut replayed_windows, profiles) =
                        outcome(&mut restored, until, &mut replay_out);
                    // Windows emitted before the crash were published; a replay may repeat
                    // some of them (at-least-once) but never with other content.
                    let mut combined = by_identity(&committed_windows);
                    let mut consistent = true;
                    for window in replayed_windows.drain(..) {
                        let identity = (window.name.clone(), window.end);
                        if let Some(earlier) = combined.insert(identity, window.clone()) {
                            consistent &= earlier == window;
                        }
                    }
                    consistent && combined == expected_windows && profiles == expected.1
                };
                results.push((prefix, ok));
                if stop_at_first_wrong && !ok {
                    break;
                }
            }
            results
        };
        // A crash in the flush after a restore from a batch cut short (incomplete: the
        // new flush must neither reuse nor be deleted with it), or complete without its
        // per-key records (the new flush must write them before deleting its chunks).
        for cut_kind in 0..4 {
            let mut task = Task::new(0, settings.clone(), wall);
            let mut out = Vec::new();
            let mut durable: Vec<ChangeRecord> = Vec::new();
            let mut next = 0;
            for (index, (offset, event)) in positioned.iter().enumerate() {
                task.apply(event, wall, &mut out);
                task.mark_included(event.source(), *offset);
                if index % 60 == 59 {
                    let records = task.take_changelog();
                    let mut records = frame(task.changelog_cycle(), records, 2048);
                    if index / 60 == 4 {
                        // The fifth flush is cut short.
                        let chunks = records
                            .iter()
                            .filter(|(key, value)| key.starts_with(b"c/") && value.is_some())
                            .count();
                        assert!(chunks > 1, "{chunks} chunks");
                        let first_cut = [1, chunks - 1, chunks, chunks + 3][cut_kind];
                        records.truncate(first_cut);
                        durable.extend(records);
                        next = index + 1;
                        break;
                    }
                    durable.extend(records);
                }
            }
            let mut restored = Task::restore(0, settings.clone(), wall, durable.clone()).unwrap();
            let mut replay_out = Vec::new();
            replay(
                &mut restored,
                &positioned[..next + 60],
                wall,
                &mut replay_out,
            );
            let records = restored.take_changelog();
            let second = frame(restored.changelog_cycle(), records, 2048);
            // Every position inside the chunks and around their end, then a sample.
            let chunks = second
                .iter()
                .filter(|(key, _)| key.starts_with(b"c/"))
                .count()
                / 2;
            let prefixes = (0..=second.len()).filter(|prefix| {
                *prefix <= chunks + 3 || prefix % 7 == 0 || *prefix == second.len()
            });
            for prefix in prefixes {
                let mut log = durable.clone();
                log.extend(second[..prefix].iter().cloned());
                let mut again = Task::restore(0, settings.clone(), wall, log).unwrap();
                let mut again_out = Vec::new();
                replay(&mut again, &positioned, wall, &mut again_out);
                let (_, profiles) = outcome(&mut again, until, &mut again_out);
                assert!(
                    profiles == expected.1,
                    "crash after record {prefix} of the flush after a restore (cut {cut_kind}) changes the profiles"
                );
            }
        }
        let framed = run(true, false);
        let wrong: Vec<usize> = framed
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(p, _)| *p)
            .collect();
        assert!(
            wrong.is_empty(),
            "framed flush: crash after records {wrong:?} changes the result"
        );
        let plain = run(false, true);
        assert!(
            plain.iter().any(|(_, ok)| !ok),
            "without framing some crash point should double count (else this test proves nothing)"
        );
        assert!(framed.len() > 20);
    }
}
