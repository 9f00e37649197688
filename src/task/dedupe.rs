//! Recognises redelivered events: a `(customer_id, event_id)` pair seen within
//! `dedupe_window` of event time. Memory stays bounded because entries older
//! than the watermark minus the window are forgotten, and each entry is a
//! 128-bit fingerprint plus its time rather than the ids themselves.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use crate::event::{CustomerId, EventId, EventTime};

/// De-duplication memory of one task.
#[derive(Debug, Clone, Default)]
pub struct Dedupe {
    seen: HashMap<u128, EventTime>,
    by_time: BTreeSet<(EventTime, u128)>,
}

/// A deterministic 128-bit fingerprint (two keyed SipHash passes).
fn fingerprint(customer_id: &CustomerId, event_id: &EventId) -> u128 {
    let half = |salt: u8| {
        #[allow(deprecated)]
        let mut hasher =
            std::hash::SipHasher::new_with_keys(0x0063_7870_756c_7365, u64::from(salt));
        customer_id.hash(&mut hasher);
        event_id.hash(&mut hasher);
        hasher.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
}

impl Dedupe {
    /// Records the event; returns false when it was already seen (a redelivery).
    pub fn first_sighting(
        &mut self,
        customer_id: &CustomerId,
        event_id: &EventId,
        at: EventTime,
    ) -> bool {
        let key = fingerprint(customer_id, event_id);
        if self.seen.contains_key(&key) {
            return false;
        }
        self.seen.insert(key, at);
        self.by_time.insert((at, key));
        true
    }

    /// Forgets events that happened before `horizon`.
    pub fn expire_before(&mut self, horizon: EventTime) {
        while let Some(&(at, key)) = self.by_time.first() {
            if at >= horizon {
                break;
            }
            self.by_time.pop_first();
            self.seen.remove(&key);
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redelivery_is_recognised_until_it_expires() {
        let mut dedupe = Dedupe::default();
        let (c, e) = (CustomerId::new("c"), EventId::new("e"));
        let at = EventTime::from_millis(1000);
        assert!(dedupe.first_sighting(&c, &e, at));
        assert!(!dedupe.first_sighting(&c, &e, at));
        assert!(dedupe.first_sighting(&CustomerId::new("other"), &e, at));
        dedupe.expire_before(EventTime::from_millis(1001));
        assert!(dedupe.is_empty());
        assert!(dedupe.first_sighting(&c, &e, at));
    }
}
