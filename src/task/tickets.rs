//! Open and recently resolved tickets of a task, and what each ticket event
//! contributes to the windows: first response, resolution, reopening and SLA
//! breaches (on a late first reply here, or by the task's SLA timer when none
//! came, through [`TicketBook::breach_overdue`]).

use super::slab::{IdIndex, Slab};
use super::timers::{CustomerSlot, TicketSlot};
use crate::event::{Channel, EventTime, TicketAction, TicketId};
use crate::window::Measure;

/// What a task remembers of one ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketState {
    /// The ticket (held here only: the index finds it by this id).
    pub ticket_id: TicketId,
    /// Whose ticket it is.
    pub customer: CustomerSlot,
    /// When it was opened.
    pub opened_at: EventTime,
    /// `opened_at` + the channel's SLA threshold.
    pub sla_deadline: EventTime,
    /// The latest resolution.
    pub resolved_at: Option<EventTime>,
    /// Agent replies, channel and yes/no facts in one word (see [`TicketBits`]):
    /// 48 bytes per ticket instead of 56 with a field each.
    bits: TicketBits,
}

/// Agent replies (low 24 bits), channel (3 bits) and five flags of a ticket.
///
/// Replies saturate at 2^24 − 1 (16,777,215) rather than 2^32 − 1: only "exactly
/// one reply" (first-contact resolution) depends on the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TicketBits(u32);

const REPLIES_MAX: u32 = (1 << 24) - 1;
const CHANNEL_SHIFT: u32 = 24;
/// Whether the first agent reply came (its time is not needed afterwards).
const RESPONDED: u32 = 1 << 27;
/// Whether the ticket was ever reopened.
const REOPENED: u32 = 1 << 28;
/// Whether it is currently open.
const OPEN: u32 = 1 << 29;
/// Whether its SLA breach was counted.
const SLA_BREACHED: u32 = 1 << 30;
/// Changed since the last changelog flush (already in the change list).
const CHANGED: u32 = 1 << 31;

const _: () = assert!(std::mem::size_of::<TicketState>() == 48);
const _: () = assert!(std::mem::size_of::<Option<TicketState>>() == 48);

impl TicketBits {
    fn new(channel: Channel, agent_replies: u32) -> Self {
        let index = Channel::ALL.iter().position(|c| *c == channel).unwrap_or(0) as u32;
        TicketBits(agent_replies.min(REPLIES_MAX) | index << CHANNEL_SHIFT)
    }

    fn has(self, flag: u32) -> bool {
        self.0 & flag != 0
    }

    fn set(&mut self, flag: u32, value: bool) {
        if value {
            self.0 |= flag;
        } else {
            self.0 &= !flag;
        }
    }
}

impl TicketState {
    /// Agent replies so far (saturating at 16,777,215).
    pub fn agent_replies(&self) -> u32 {
        self.bits.0 & REPLIES_MAX
    }

    fn add_agent_reply(&mut self) {
        if self.agent_replies() < REPLIES_MAX {
            self.bits.0 += 1;
        }
    }

    /// Where it was opened.
    pub fn channel(&self) -> Channel {
        let index = (self.bits.0 >> CHANNEL_SHIFT & 0b111) as usize;
        Channel::ALL.get(index).copied().unwrap_or(Channel::Email)
    }

    /// Whether the first agent reply came.
    pub fn responded(&self) -> bool {
        self.bits.has(RESPONDED)
    }

    /// Whether the ticket was ever reopened.
    pub fn reopened(&self) -> bool {
        self.bits.has(REOPENED)
    }

    /// Whether it is currently open.
    pub fn open(&self) -> bool {
        self.bits.has(OPEN)
    }

    /// Whether its SLA breach was counted.
    pub fn sla_breached(&self) -> bool {
        self.bits.has(SLA_BREACHED)
    }

    fn changed(&self) -> bool {
        self.bits.has(CHANGED)
    }

    /// A ticket read back from the changelog.
    #[allow(clippy::too_many_arguments)]
    pub fn restored(
        ticket_id: TicketId,
        customer: CustomerSlot,
        opened_at: EventTime,
        sla_deadline: EventTime,
        resolved_at: Option<EventTime>,
        agent_replies: u32,
        channel: Channel,
        flags: TicketFlags,
    ) -> Self {
        let mut bits = TicketBits::new(channel, agent_replies);
        bits.set(RESPONDED, flags.responded);
        bits.set(REOPENED, flags.reopened);
        bits.set(OPEN, flags.open);
        bits.set(SLA_BREACHED, flags.sla_breached);
        TicketState {
            ticket_id,
            customer,
            opened_at,
            sla_deadline,
            resolved_at,
            bits,
        }
    }

    /// Still waiting for a first reply whose SLA breach was not counted yet.
    pub fn sla_pending(&self) -> bool {
        !self.responded() && !self.sla_breached()
    }
}

/// The yes/no facts of a ticket, for [`TicketState::restored`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TicketFlags {
    /// The first agent reply came.
    pub responded: bool,
    /// Reopened at least once.
    pub reopened: bool,
    /// Currently open.
    pub open: bool,
    /// Its SLA breach was counted.
    pub sla_breached: bool,
}

/// How a ticket event changed the customer's ticket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TicketChange {
    /// The ticket's slot, when the task knows the ticket.
    pub slot: Option<TicketSlot>,
    /// +1 when a ticket opened or reopened, -1 when resolved.
    pub open_delta: i32,
    /// A new ticket.
    pub opened: bool,
    /// A resolution.
    pub resolved: bool,
    /// A first response, with its duration in ms.
    pub first_response_millis: Option<i64>,
    /// The SLA deadline of a newly opened ticket (schedule its timer).
    pub sla_deadline_opened: Option<EventTime>,
    /// The SLA deadline whose timer a first reply made unnecessary (cancel it).
    pub sla_deadline_settled: Option<EventTime>,
    /// The SLA deadline of a ticket replaced by a new opening with the same id (cancel it).
    pub sla_deadline_replaced: Option<EventTime>,
    /// The first reply came after this SLA deadline: the breach was counted now.
    pub breached_deadline: Option<EventTime>,
}

/// Every ticket of one task: records in a slab (freed slots are reused) and an
/// index by ticket id.
///
/// A ticket closed and resolved before the retention horizon counts as gone at
/// once (every lookup checks it), and its memory is reclaimed by a sweep over a
/// few slots per watermark advance: no index of tickets by resolution time.
#[derive(Debug, Clone)]
pub struct TicketBook {
    slab: Slab<Option<TicketState>>,
    /// Slots of evicted tickets, for reuse.
    free: Vec<u32>,
    index: IdIndex,
    /// Tickets resolved (and still closed) before this are gone.
    horizon: EventTime,
    /// Next slot the sweep looks at.
    sweep: u32,
    /// Tickets changed since the last changelog flush (each once, see `TicketState::changed`).
    changed: Vec<TicketSlot>,
    /// Tickets evicted since the last changelog flush.
    forgotten: Vec<TicketId>,
}

impl Default for TicketBook {
    fn default() -> Self {
        TicketBook {
            slab: Slab::default(),
            free: Vec::new(),
            index: IdIndex::default(),
            horizon: EventTime::MIN,
            sweep: 0,
            changed: Vec::new(),
            forgotten: Vec::new(),
        }
    }
}

fn id_of(slab: &Slab<Option<TicketState>>, slot: u32) -> &str {
    slab.get(slot)
        .and_then(Option::as_ref)
        .map_or("", |ticket| ticket.ticket_id.as_str())
}

impl TicketBook {
    /// Number of tickets held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when no ticket is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The ticket at `slot`.
    pub fn get(&self, slot: TicketSlot) -> Option<&TicketState> {
        self.slab.get(slot.0).and_then(Option::as_ref)
    }

    /// Closed and resolved before the horizon: as good as evicted.
    fn is_gone(&self, ticket: &TicketState) -> bool {
        !ticket.open() && ticket.resolved_at.is_some_and(|at| at < self.horizon)
    }

    fn get_mut(&mut self, slot: TicketSlot) -> Option<&mut TicketState> {
        self.slab.get_mut(slot.0).and_then(Option::as_mut)
    }

    /// The slot of `ticket_id`, if the task holds it.
    pub fn find(&self, ticket_id: &TicketId) -> Option<TicketSlot> {
        let slab = &self.slab;
        self.index
            .find(ticket_id.as_str(), |slot| id_of(slab, slot))
            .map(TicketSlot)
    }

    fn mark_changed(&mut self, slot: TicketSlot) {
        if let Some(ticket) = self.get_mut(slot) {
            if !ticket.changed() {
                ticket.bits.set(CHANGED, true);
                self.changed.push(slot);
            }
        }
    }

    /// Stores a ticket not held yet; returns its slot.
    fn insert(&mut self, ticket: TicketState) -> TicketSlot {
        let id = ticket.ticket_id.clone();
        let slot = match self.free.pop() {
            Some(slot) => {
                if let Some(entry) = self.slab.get_mut(slot) {
                    *entry = Some(ticket);
                }
                slot
            }
            None => self.slab.push(Some(ticket)),
        };
        let slab = &self.slab;
        self.index
            .insert(id.as_str(), slot, |slot| id_of(slab, slot));
        TicketSlot(slot)
    }

    /// Applies a ticket event at `at`; `measures` receives (time, measure) pairs.
    pub fn apply(
        &mut self,
        customer: CustomerSlot,
        ticket_id: &TicketId,
        action: TicketAction,
        at: EventTime,
        sla_threshold_millis: impl Fn(Channel) -> i64,
        measures: &mut Vec<(EventTime, Measure)>,
    ) -> TicketChange {
        let mut change = TicketChange::default();
        let found = self.find(ticket_id);
        if let TicketAction::Opened { channel, .. } = action {
            let deadline = at.plus_millis(sla_threshold_millis(channel));
            let mut ticket = TicketState {
                ticket_id: ticket_id.clone(),
                customer,
                opened_at: at,
                sla_deadline: deadline,
                resolved_at: None,
                bits: TicketBits::new(channel, 0),
            };
            ticket.bits.set(OPEN, true);
            let (slot, was_open) = match found.and_then(|slot| Some((slot, self.get_mut(slot)?))) {
                Some((slot, previous)) => {
                    // A new opening of a known id starts the ticket over in its slot.
                    ticket.bits.set(CHANGED, previous.changed());
                    let replaced = std::mem::replace(previous, ticket);
                    if replaced.sla_pending() {
                        change.sla_deadline_replaced = Some(replaced.sla_deadline);
                    }
                    (slot, replaced.open())
                }
                None => (self.insert(ticket), false),
            };
            self.mark_changed(slot);
            change.slot = Some(slot);
            change.sla_deadline_opened = Some(deadline);
            measures.push((at, Measure::TicketOpened));
            change.opened = true;
            change.open_delta = if was_open { 0 } else { 1 };
            return change;
        }
        // Events of a ticket whose opening this task never saw (or that was
        // forgotten after its retention) change only the profile.
        let Some(slot) = found.filter(|slot| self.get(*slot).is_some_and(|t| !self.is_gone(t)))
        else {
            return change;
        };
        self.mark_changed(slot);
        change.slot = Some(slot);
        let Some(ticket) = self.get_mut(slot) else {
            return change;
        };
        match action {
            TicketAction::Opened { .. } | TicketAction::CustomerReplied => {}
            TicketAction::AgentReplied => {
                ticket.add_agent_reply();
                if !ticket.responded() {
                    ticket.bits.set(RESPONDED, true);
                    let millis = at.millis() - ticket.opened_at.millis();
                    measures.push((at, Measure::FirstResponse { millis }));
                    change.first_response_millis = Some(millis);
                    if at > ticket.sla_deadline && !ticket.sla_breached() {
                        ticket.bits.set(SLA_BREACHED, true);
                        change.breached_deadline = Some(ticket.sla_deadline);
                        measures.push((ticket.sla_deadline, Measure::SlaBreach));
                    }
                    change.sla_deadline_settled = Some(ticket.sla_deadline);
                }
            }
            TicketAction::Resolved => {
                let millis = at.millis() - ticket.opened_at.millis();
                let first_contact = ticket.agent_replies() == 1 && !ticket.reopened();
                measures.push((
                    at,
                    Measure::TicketResolved {
                        millis,
                        first_contact,
                    },
                ));
                change.resolved = true;
                ticket.resolved_at = Some(at);
                if ticket.open() {
                    ticket.bits.set(OPEN, false);
                    change.open_delta = -1;
                }
            }
            TicketAction::Reopened => {
                ticket.bits.set(REOPENED, true);
                measures.push((at, Measure::TicketReopened));
                if !ticket.open() {
                    ticket.bits.set(OPEN, true);
                    change.open_delta = 1;
                }
            }
        }
        change
    }

    /// Tickets changed since the last call, with their state (`None`: forgotten);
    /// forgotten ones first, so a ticket forgotten and opened again ends with its state.
    pub fn take_changes(&mut self) -> Vec<(TicketId, Option<&TicketState>)> {
        let mut changes: Vec<(TicketId, Option<&TicketState>)> =
            std::mem::take(&mut self.forgotten)
                .into_iter()
                .map(|id| (id, None))
                .collect();
        let changed = std::mem::take(&mut self.changed);
        for slot in &changed {
            if let Some(ticket) = self.slab.get_mut(slot.0).and_then(Option::as_mut) {
                ticket.bits.set(CHANGED, false);
            }
        }
        for slot in changed {
            if let Some(ticket) = self.get(slot) {
                changes.push((ticket.ticket_id.clone(), Some(ticket)));
            }
        }
        changes
    }

    /// Forgets which tickets changed (memory measurement only).
    pub(crate) fn discard_changes(&mut self) {
        self.changed = Vec::new();
        self.forgotten = Vec::new();
    }

    /// Puts back a ticket read from the changelog (replacing one with the same id).
    pub fn restore(&mut self, ticket: TicketState) {
        match self
            .find(&ticket.ticket_id)
            .and_then(|slot| self.slab.get_mut(slot.0))
        {
            Some(entry) => *entry = Some(ticket),
            None => {
                self.insert(ticket);
            }
        }
    }

    /// Removes a ticket the changelog says was forgotten.
    pub fn forget(&mut self, ticket_id: &TicketId) {
        let slab = &self.slab;
        let Some(slot) = self
            .index
            .remove(ticket_id.as_str(), |slot| id_of(slab, slot))
        else {
            return;
        };
        if let Some(entry) = self.slab.get_mut(slot) {
            *entry = None;
            self.free.push(slot);
        }
    }

    /// SLA deadlines still waiting for a first reply, to rebuild timers after a restore.
    pub fn pending_sla_deadlines(&self) -> impl Iterator<Item = (EventTime, TicketSlot)> + '_ {
        self.slab.iter().filter_map(|(slot, ticket)| {
            let ticket = ticket.as_ref().filter(|ticket| !self.is_gone(ticket))?;
            ticket
                .sla_pending()
                .then_some((ticket.sla_deadline, TicketSlot(slot)))
        })
    }

    /// The SLA timer of the ticket at `slot` for `deadline` fired: counts the breach
    /// when the ticket still has no reply, and returns the ticket then.
    pub fn breach_overdue(
        &mut self,
        slot: TicketSlot,
        deadline: EventTime,
    ) -> Option<&TicketState> {
        let gone = self.get(slot).is_none_or(|ticket| self.is_gone(ticket));
        let ticket = self.get_mut(slot).filter(|_| !gone)?;
        if !ticket.sla_pending() || ticket.sla_deadline != deadline {
            return None;
        }
        ticket.bits.set(SLA_BREACHED, true);
        self.mark_changed(slot);
        self.get(slot)
    }

    /// Forgets tickets resolved before `horizon` (from now on they count as gone); a
    /// later reopening of one of them changes only the profile, like any event of an
    /// unknown ticket. Reclaims the memory of up to `sweep` slots' gone tickets;
    /// `evicted` sees each (to cancel a timer still pending for its slot).
    pub fn evict_resolved_before(
        &mut self,
        horizon: EventTime,
        sweep: usize,
        mut evicted: impl FnMut(TicketSlot, &TicketState),
    ) {
        self.horizon = self.horizon.max(horizon);
        let slots = self.slab.len() as u32;
        for _ in 0..sweep.min(slots as usize) {
            let slot = TicketSlot(self.sweep % slots);
            self.sweep = slot.0 + 1;
            let Some(ticket) = self.get(slot).filter(|ticket| self.is_gone(ticket)) else {
                continue;
            };
            evicted(slot, ticket);
            let id = ticket.ticket_id.clone();
            self.forget(&id);
            self.forgotten.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn t(hours: i64) -> EventTime {
        EventTime::from_millis(hours * HOUR)
    }

    fn apply(
        book: &mut TicketBook,
        action: TicketAction,
        at: EventTime,
        measures: &mut Vec<(EventTime, Measure)>,
    ) -> TicketChange {
        book.apply(
            CustomerSlot(3),
            &TicketId::new("t1"),
            action,
            at,
            |_| HOUR,
            measures,
        )
    }

    #[test]
    fn packed_replies_channel_and_flags_read_back() {
        for channel in Channel::ALL {
            for n in 0..16u32 {
                let flags = TicketFlags {
                    responded: n & 1 != 0,
                    reopened: n & 2 != 0,
                    open: n & 4 != 0,
                    sla_breached: n & 8 != 0,
                };
                for replies in [0, 1, 2, 1 << 20, REPLIES_MAX, u32::MAX] {
                    let mut ticket = TicketState::restored(
                        TicketId::new("t"),
                        CustomerSlot(1),
                        t(0),
                        t(1),
                        None,
                        replies,
                        channel,
                        flags,
                    );
                    ticket.bits.set(CHANGED, n % 3 == 0);
                    assert_eq!(ticket.channel(), channel);
                    assert_eq!(ticket.agent_replies(), replies.min(REPLIES_MAX));
                    assert_eq!(
                        (
                            ticket.responded(),
                            ticket.reopened(),
                            ticket.open(),
                            ticket.sla_breached()
                        ),
                        (
                            flags.responded,
                            flags.reopened,
                            flags.open,
                            flags.sla_breached
                        )
                    );
                    assert_eq!(ticket.changed(), n % 3 == 0);
                    ticket.add_agent_reply();
                    assert_eq!(
                        ticket.agent_replies(),
                        replies.saturating_add(1).min(REPLIES_MAX)
                    );
                    assert_eq!(ticket.channel(), channel);
                }
            }
        }
    }

    #[test]
    fn first_response_resolution_and_breach_by_late_reply() {
        let mut book = TicketBook::default();
        let mut measures = Vec::new();
        let opened = TicketAction::Opened {
            channel: Channel::Chat,
            priority: None,
        };
        let change = apply(&mut book, opened, t(0), &mut measures);
        assert_eq!(change.sla_deadline_opened, Some(t(1)));
        let change = apply(&mut book, TicketAction::AgentReplied, t(2), &mut measures);
        assert_eq!(change.first_response_millis, Some(2 * HOUR));
        assert_eq!(change.breached_deadline, Some(t(1)));
        assert_eq!(change.sla_deadline_settled, Some(t(1)));
        apply(&mut book, TicketAction::AgentReplied, t(3), &mut measures);
        apply(&mut book, TicketAction::Resolved, t(4), &mut measures);
        assert_eq!(
            measures,
            vec![
                (t(0), Measure::TicketOpened),
                (t(2), Measure::FirstResponse { millis: 2 * HOUR }),
                (t(1), Measure::SlaBreach),
                (
                    t(4),
                    Measure::TicketResolved {
                        millis: 4 * HOUR,
                        first_contact: false
                    }
                ),
            ]
        );
        // A timer firing afterwards never counts a second breach.
        let slot = book.find(&TicketId::new("t1")).unwrap();
        assert!(book.breach_overdue(slot, t(1)).is_none());
    }

    #[test]
    fn overdue_breach_counts_once_without_reply() {
        let mut book = TicketBook::default();
        let mut measures = Vec::new();
        let opened = TicketAction::Opened {
            channel: Channel::Email,
            priority: None,
        };
        apply(&mut book, opened, t(0), &mut measures);
        let slot = book.find(&TicketId::new("t1")).unwrap();
        assert_eq!(
            book.breach_overdue(slot, t(1))
                .map(|ticket| ticket.customer),
            Some(CustomerSlot(3))
        );
        assert!(book.breach_overdue(slot, t(1)).is_none());
    }

    #[test]
    fn resolved_tickets_are_evicted_after_retention_but_open_ones_stay() {
        let mut book = TicketBook::default();
        let mut measures = Vec::new();
        let opened = TicketAction::Opened {
            channel: Channel::Web,
            priority: None,
        };
        apply(&mut book, opened, t(0), &mut measures);
        apply(&mut book, TicketAction::Resolved, t(1), &mut measures);
        apply(&mut book, TicketAction::Reopened, t(2), &mut measures);
        book.evict_resolved_before(t(10), usize::MAX, |_, _| {});
        assert_eq!(book.len(), 1, "reopened tickets stay");
        apply(&mut book, TicketAction::Resolved, t(11), &mut measures);
        book.evict_resolved_before(t(11), usize::MAX, |_, _| {});
        assert_eq!(book.len(), 1);
        book.evict_resolved_before(t(12), usize::MAX, |_, _| {});
        assert!(book.is_empty());
    }

    #[test]
    fn first_contact_resolution_needs_one_reply_and_no_reopening() {
        let mut book = TicketBook::default();
        let mut measures = Vec::new();
        let opened = TicketAction::Opened {
            channel: Channel::Web,
            priority: None,
        };
        apply(&mut book, opened, t(0), &mut measures);
        apply(&mut book, TicketAction::AgentReplied, t(1), &mut measures);
        apply(&mut book, TicketAction::Resolved, t(2), &mut measures);
        let reopen = apply(&mut book, TicketAction::Reopened, t(3), &mut measures);
        assert_eq!(reopen.open_delta, 1);
        apply(&mut book, TicketAction::Resolved, t(5), &mut measures);
        let resolutions: Vec<_> = measures
            .iter()
            .filter_map(|(_, m)| match m {
                Measure::TicketResolved { first_contact, .. } => Some(*first_contact),
                _ => None,
            })
            .collect();
        assert_eq!(resolutions, [true, false]);
    }
}
