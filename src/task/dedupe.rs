//! Recognises redelivered events: an `event_id` a customer already sent within
//! `dedupe_window` of event time.
//!
//! Each customer keeps the events it sent since the de-duplication horizon
//! (the watermark minus the window) as 64-bit fingerprints of their ids with
//! their times, next to its profile: the customer id is then not stored per
//! event, the memory goes with the customer's changelog record (every new
//! event changes the profile anyway), and a fingerprint only has to tell
//! apart the few events of one customer (a false match needs two of them to
//! collide in 64 bits). Entries older than the horizon no longer count and are
//! dropped whenever the customer's list is rewritten.

use std::hash::{Hash, Hasher};

use crate::event::{EventId, EventTime};

/// One event a customer sent: fingerprint of its id and its event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenEvent {
    /// Keyed hash of the event id, stable across versions and restarts.
    pub fingerprint: u64,
    /// The event's time.
    pub at: EventTime,
}

/// The events one customer sent since the de-duplication horizon.
///
/// A boxed slice (16 bytes, no spare capacity) because most customers have a
/// handful of entries and the list only changes when the profile does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenEvents(Box<[SeenEvent]>);

/// The deterministic fingerprint of an event id (keyed SipHash, as in the
/// changelog, so it must never change).
pub fn fingerprint(event_id: &EventId) -> u64 {
    #[allow(deprecated)]
    let mut hasher = std::hash::SipHasher::new_with_keys(0x0063_7870_756c_7365, 1);
    event_id.hash(&mut hasher);
    hasher.finish()
}

impl SeenEvents {
    /// Entries read from the changelog.
    pub fn from_entries(entries: Vec<SeenEvent>) -> Self {
        SeenEvents(entries.into_boxed_slice())
    }

    /// Records the event unless it was seen at or after `horizon`; returns false
    /// for a redelivery. Entries before `horizon` are dropped on the way.
    pub fn first_sighting(
        &mut self,
        event_id: &EventId,
        at: EventTime,
        horizon: EventTime,
    ) -> bool {
        let fingerprint = fingerprint(event_id);
        if self
            .0
            .iter()
            .any(|seen| seen.fingerprint == fingerprint && seen.at >= horizon)
        {
            return false;
        }
        let mut entries = Vec::with_capacity(self.0.len() + 1);
        entries.extend(self.0.iter().filter(|seen| seen.at >= horizon));
        entries.push(SeenEvent { fingerprint, at });
        self.0 = entries.into_boxed_slice();
        true
    }

    /// Drops the entries before `horizon` (they no longer count anyway).
    pub fn forget_before(&mut self, horizon: EventTime) {
        if self.0.iter().any(|seen| seen.at < horizon) {
            let kept: Vec<SeenEvent> = self
                .0
                .iter()
                .filter(|seen| seen.at >= horizon)
                .copied()
                .collect();
            self.0 = kept.into_boxed_slice();
        }
    }

    /// The entries, oldest first as they arrived.
    pub fn entries(&self) -> &[SeenEvent] {
        &self.0
    }

    /// Entries held (some may be past the horizon until the list is rewritten).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_stay_those_of_the_boxed_ids_main_wrote() {
        // Ids used to be `Box<str>`: the changelog holds fingerprints of that hash.
        for id in ["e", "ev-0000000001", "a-much-longer-event-id-than-fifteen-bytes"] {
            #[allow(deprecated)]
            let mut hasher = std::hash::SipHasher::new_with_keys(0x0063_7870_756c_7365, 1);
            Box::<str>::from(id).hash(&mut hasher);
            assert_eq!(fingerprint(&EventId::new(id)), hasher.finish(), "{id}");
        }
    }

    #[test]
    fn redelivery_is_recognised_until_it_expires() {
        let mut seen = SeenEvents::default();
        let e = EventId::new("e");
        let at = EventTime::from_millis(1000);
        let horizon = EventTime::from_millis(0);
        assert!(seen.first_sighting(&e, at, horizon));
        assert!(!seen.first_sighting(&e, at, horizon));
        assert!(seen.first_sighting(&EventId::new("other"), at, horizon));
        assert_eq!(seen.len(), 2);
        // Past the horizon the entry no longer counts, and is dropped when rewritten.
        let later = EventTime::from_millis(1001);
        assert!(seen.first_sighting(&e, later, later));
        assert_eq!(
            seen.entries(),
            &[SeenEvent {
                fingerprint: fingerprint(&e),
                at: later
            }]
        );
    }
}
