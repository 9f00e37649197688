//! Event-time timers of a task: SLA deadlines of unanswered tickets and
//! profile reviews (the next instant a customer's lifecycle or segment can
//! change with no new event, e.g. churn at `last_purchase_at + activity_horizon`).
//!
//! A timer is due once the watermark is past its time plus the allowed
//! lateness: by then every event at or before its time has arrived, so it
//! never fires on a situation a disordered event was about to change. Due
//! timers come out in event-time order, each exactly once.

use std::collections::BTreeSet;

use crate::event::EventTime;

/// A customer of a task: the slot of its profile (see [`super::slab`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CustomerSlot(pub u32);

/// A ticket of a task: its slot in the ticket book (see [`super::slab`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TicketSlot(pub u32);

/// What a timer is for. Slots rather than ids keep a timer at 16 bytes with
/// its time; at one instant SLA timers still come before reviews.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// The first-response SLA deadline of a ticket.
    Sla(TicketSlot),
    /// Re-evaluate a customer's lifecycle and segment.
    Review(CustomerSlot),
}

/// Pending timers, ordered by time.
#[derive(Debug, Clone, Default)]
pub struct Timers {
    pending: BTreeSet<(EventTime, Timer)>,
}

impl Timers {
    /// Schedules `timer` at `at`.
    pub fn schedule(&mut self, at: EventTime, timer: Timer) {
        self.pending.insert((at, timer));
    }

    /// Schedules many timers at once (a restore): sorted first, the set is then
    /// built in one pass instead of by as many random inserts.
    pub fn schedule_all(&mut self, mut timers: Vec<(EventTime, Timer)>) {
        if self.pending.is_empty() {
            timers.sort_unstable();
            self.pending = timers.into_iter().collect();
        } else {
            self.pending.extend(timers);
        }
    }

    /// Cancels `timer` at `at`, if pending.
    pub fn cancel(&mut self, at: EventTime, timer: Timer) {
        self.pending.remove(&(at, timer));
    }

    /// The earliest timer due at `watermark`, removed.
    pub fn pop_due(
        &mut self,
        watermark: EventTime,
        allowed_lateness_millis: i64,
    ) -> Option<(EventTime, Timer)> {
        let (at, _) = self.pending.first()?;
        if at.plus_millis(allowed_lateness_millis) >= watermark {
            return None;
        }
        self.pending.pop_first()
    }

    /// Pending timers.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when none is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_timers_come_out_once_in_time_order() {
        let mut timers = Timers::default();
        let at = EventTime::from_millis;
        timers.schedule(at(30), Timer::Review(CustomerSlot(2)));
        timers.schedule(at(10), Timer::Sla(TicketSlot(7)));
        timers.schedule(at(20), Timer::Review(CustomerSlot(1)));
        timers.cancel(at(20), Timer::Review(CustomerSlot(1)));
        // Due strictly after time + lateness.
        assert_eq!(timers.pop_due(at(15), 5), None);
        assert_eq!(
            timers.pop_due(at(16), 5),
            Some((at(10), Timer::Sla(TicketSlot(7))))
        );
        assert_eq!(
            timers.pop_due(at(100), 5),
            Some((at(30), Timer::Review(CustomerSlot(2))))
        );
        assert_eq!(timers.pop_due(at(1000), 5), None);
    }
}
