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

/// A pending timer as stored: its time (milliseconds with the sign bit flipped,
/// which keeps the order) in two halves, then the timer (top bit: review), so
/// that the derived order is (time, timer) in 12 bytes aligned to 4 rather
/// than 16 for `(EventTime, Timer)`: a B-tree node then holds a quarter less.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key([u32; 3]);

const REVIEW_BIT: u32 = 1 << 31;

impl Key {
    fn new(at: EventTime, timer: Timer) -> Self {
        let time = (at.millis() as u64) ^ (1 << 63);
        // Slots stay far below 2^31: that many profiles would take hundreds of GB.
        let timer = match timer {
            Timer::Sla(slot) => slot.0 & !REVIEW_BIT,
            Timer::Review(slot) => slot.0 | REVIEW_BIT,
        };
        Key([(time >> 32) as u32, time as u32, timer])
    }

    fn get(self) -> (EventTime, Timer) {
        let [high, low, timer] = self.0;
        let time = ((u64::from(high) << 32) | u64::from(low)) ^ (1 << 63);
        let timer = if timer & REVIEW_BIT == 0 {
            Timer::Sla(TicketSlot(timer))
        } else {
            Timer::Review(CustomerSlot(timer & !REVIEW_BIT))
        };
        (EventTime::from_millis(time as i64), timer)
    }
}

/// Pending timers, ordered by time.
#[derive(Debug, Clone, Default)]
pub struct Timers {
    pending: BTreeSet<Key>,
}

impl Timers {
    /// Schedules `timer` at `at`.
    pub fn schedule(&mut self, at: EventTime, timer: Timer) {
        self.pending.insert(Key::new(at, timer));
    }

    /// Schedules many timers at once (a restore): sorted first, the set is then
    /// built in one pass instead of by as many random inserts.
    pub fn schedule_all(&mut self, timers: Vec<(EventTime, Timer)>) {
        let mut keys: Vec<Key> = timers
            .into_iter()
            .map(|(at, timer)| Key::new(at, timer))
            .collect();
        if self.pending.is_empty() {
            keys.sort_unstable();
            self.pending = keys.into_iter().collect();
        } else {
            self.pending.extend(keys);
        }
    }

    /// Cancels `timer` at `at`, if pending.
    pub fn cancel(&mut self, at: EventTime, timer: Timer) {
        self.pending.remove(&Key::new(at, timer));
    }

    /// The earliest timer due at `watermark`, removed.
    pub fn pop_due(
        &mut self,
        watermark: EventTime,
        allowed_lateness_millis: i64,
    ) -> Option<(EventTime, Timer)> {
        let (at, _) = self.pending.first()?.get();
        if at.plus_millis(allowed_lateness_millis) >= watermark {
            return None;
        }
        self.pending.pop_first().map(Key::get)
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

    #[test]
    fn keys_order_by_time_then_sla_before_review() {
        let times = [i64::MIN / 4, -1, 0, 1, 1_780_000_000_000, i64::MAX / 4];
        let timers = [
            Timer::Sla(TicketSlot(0)),
            Timer::Sla(TicketSlot(9)),
            Timer::Review(CustomerSlot(0)),
            Timer::Review(CustomerSlot(9)),
        ];
        let mut expected = Vec::new();
        for millis in times {
            for timer in timers {
                let at = EventTime::from_millis(millis);
                assert_eq!(Key::new(at, timer).get(), (at, timer));
                expected.push(Key::new(at, timer));
            }
        }
        let mut sorted = expected.clone();
        sorted.sort();
        assert_eq!(sorted, expected);
    }
}
