//! Active customers `A(t)`: customers with at least one `placed` in
//! `[t − activity_horizon, t)`, for the retention group of every window.
//!
//! A customer is counted at `t` exactly when `p < t <= p + horizon` for one
//! of their purchases `p`; over consecutive purchases these intervals merge.
//! The index keeps, per interval, a `+1` at its start and a `−1` at its end
//! (at most two entries per currently active customer), and a few monotone
//! cursors, one per (window spec, start|end) query stream, each holding
//! `Σ delta(key) for key < position`. A query moves its cursor forward over
//! the deltas in between; a purchase changes at most two deltas and adjusts
//! the cursors already past them. So the work per event and per emitted
//! window does not grow with the number of customers. Because a customer's
//! purchases arrive in order (SPEC section 1), a new purchase only ever
//! extends the customer's latest interval or opens a new one.
//!
//! `A(t)` is only asked at window boundaries, multiples of a granularity `g`
//! (the greatest common divisor of the window steps and sizes). For such `t`,
//! `k < t` exactly when `floor_g(k) < t`, so deltas are kept at keys rounded
//! down to a multiple of `g`: the same answers from one entry per minute
//! (with the default windows) instead of up to two per customer.

use std::collections::BTreeMap;

use crate::event::EventTime;

/// One monotone query stream: position and `Σ delta(key) for key < position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct CursorState {
    /// Where the stream last queried.
    pub position: i64,
    /// Active customers there.
    pub active: i64,
}

/// One monotone query stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Cursor {
    position: i64,
    active: i64,
}

/// The active-customer index of one task.
#[derive(Debug, Clone)]
pub struct ActiveCustomers {
    horizon_millis: i64,
    /// Keys are multiples of this (ms); every query time must be one too.
    granularity_millis: i64,
    /// Delta at each key, for keys at or after the earliest cursor.
    deltas: BTreeMap<i64, i64>,
    cursors: Vec<Cursor>,
    /// Delta keys changed or dropped since the last changelog flush.
    changed: std::collections::BTreeSet<i64>,
}

impl ActiveCustomers {
    /// An empty index with `cursors` independent monotone query streams, queried
    /// only at multiples of `granularity_millis` (1: anywhere).
    pub fn new(horizon_millis: i64, cursors: usize, granularity_millis: i64) -> Self {
        ActiveCustomers {
            horizon_millis,
            granularity_millis: granularity_millis.max(1),
            deltas: BTreeMap::new(),
            cursors: vec![
                Cursor {
                    position: i64::MIN,
                    active: 0,
                };
                cursors
            ],
            changed: std::collections::BTreeSet::new(),
        }
    }

    /// The position of the slowest cursor: deltas before it are no longer needed.
    fn earliest_position(&self) -> i64 {
        self.cursors
            .iter()
            .map(|c| c.position)
            .min()
            .unwrap_or(i64::MIN)
    }

    fn change(&mut self, key: i64, amount: i64) {
        let key = key.div_euclid(self.granularity_millis) * self.granularity_millis;
        for cursor in &mut self.cursors {
            if key < cursor.position {
                cursor.active += amount;
            }
        }
        let earliest = self.earliest_position();
        if key >= earliest {
            let entry = self.deltas.entry(key).or_default();
            *entry += amount;
            if *entry == 0 {
                self.deltas.remove(&key);
            }
            self.changed.insert(key);
        }
    }

    /// Forgets which keys changed (memory measurement only).
    pub(crate) fn discard_changes(&mut self) {
        self.changed = std::collections::BTreeSet::new();
    }

    /// Records a purchase at `at` by a customer whose previous purchase was `previous`.
    pub fn purchase(&mut self, at: EventTime, previous: Option<EventTime>) {
        let (at, horizon) = (at.millis(), self.horizon_millis);
        match previous.map(EventTime::millis) {
            // Out of order for this customer: already covered by the latest interval as far as
            // it can be without history; the SPEC guarantees this does not happen.
            Some(previous) if at < previous => {}
            // Extends the latest interval (p_prev, p_prev + h] to (.., at + h].
            Some(previous) if at <= previous + horizon => {
                self.change(previous + horizon, 1);
                self.change(at + horizon, -1);
            }
            _ => {
                self.change(at, 1);
                self.change(at + horizon, -1);
            }
        }
    }

    /// `A(t)` through query stream `cursor`; `t` must not go back within a stream
    /// and must be a multiple of the granularity.
    pub fn active_at(&mut self, cursor: usize, t: EventTime) -> u64 {
        let t = t.millis();
        let Some(state) = self.cursors.get_mut(cursor) else {
            return 0;
        };
        if t > state.position {
            let from = state.position;
            state.active += self
                .deltas
                .range(from..t)
                .map(|(_, delta)| delta)
                .sum::<i64>();
            state.position = t;
        }
        let active = state.active;
        let earliest = self.earliest_position();
        while let Some(entry) = self.deltas.first_entry() {
            if *entry.key() >= earliest {
                break;
            }
            self.changed.insert(*entry.key());
            entry.remove();
        }
        active.max(0) as u64
    }

    /// A cursor's state, for the changelog.
    pub fn cursor(&self, index: usize) -> CursorState {
        self.cursors
            .get(index)
            .map_or(CursorState::default(), |c| CursorState {
                position: c.position,
                active: c.active,
            })
    }

    /// Restores a cursor read from the changelog.
    pub fn set_cursor(&mut self, index: usize, state: CursorState) {
        if let Some(cursor) = self.cursors.get_mut(index) {
            *cursor = Cursor {
                position: state.position,
                active: state.active,
            };
        }
    }

    /// Delta keys changed since the last call, with their value (`None`: gone).
    pub fn take_changes(&mut self) -> Vec<(i64, Option<i64>)> {
        let changed = std::mem::take(&mut self.changed);
        changed
            .into_iter()
            .map(|key| (key, self.deltas.get(&key).copied()))
            .collect()
    }

    /// Puts back a delta read from the changelog (`None`: the key is gone).
    pub fn restore_delta(&mut self, key: i64, delta: Option<i64>) {
        match delta {
            Some(delta) => self.deltas.insert(key, delta),
            None => self.deltas.remove(&key),
        };
    }

    /// Delta entries held.
    pub fn len(&self) -> usize {
        self.deltas.len()
    }

    /// True when no delta is held.
    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(millis: i64) -> EventTime {
        EventTime::from_millis(millis)
    }

    /// A(t) straight from the definition.
    fn brute_force(purchases: &[(u8, i64)], horizon: i64, at: i64) -> u64 {
        let mut customers: Vec<u8> = purchases
            .iter()
            .filter(|(_, p)| at - horizon <= *p && *p < at)
            .map(|(c, _)| *c)
            .collect();
        customers.sort();
        customers.dedup();
        customers.len() as u64
    }

    #[test]
    fn intervals_merge_and_expire() {
        let mut index = ActiveCustomers::new(10, 1, 1);
        index.purchase(t(0), None);
        index.purchase(t(5), Some(t(0)));
        assert_eq!(index.active_at(0, t(0)), 0);
        assert_eq!(index.active_at(0, t(1)), 1);
        assert_eq!(index.active_at(0, t(15)), 1);
        assert_eq!(index.active_at(0, t(16)), 0);
    }

    proptest! {
        /// Purchases in per-customer order but disordered across customers, queried by
        /// several monotone streams interleaved with the purchases, equal the definition.
        #[test]
        fn equals_the_definition(
            steps in prop::collection::vec((0u8..6, 0i64..40, 0usize..3, 0i64..8), 1..80),
            horizon in 1i64..30,
            granularity in prop::sample::select(vec![1i64, 2, 3, 5]),
        ) {
            // Queries at multiples of the granularity, as windows ask them.
            let mut index = ActiveCustomers::new(horizon, 3, granularity);
            let mut last: [Option<i64>; 6] = [None; 6];
            let mut applied = Vec::new();
            let mut positions = [i64::MIN; 3];
            for (customer, gap, cursor, step) in steps {
                let previous = last[customer as usize];
                let at = previous.map_or(gap, |p| p + gap % 15);
                index.purchase(t(at), previous.map(t));
                last[customer as usize] = Some(at);
                applied.push((customer, at));
                let query = positions[cursor].max(0) + step * granularity;
                positions[cursor] = query;
                prop_assert_eq!(index.active_at(cursor, t(query)), brute_force(&applied, horizon, query));
            }
        }
    }
}
