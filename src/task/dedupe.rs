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

use std::hash::Hasher as _;

use siphasher::sip::SipHasher24;

use crate::compact::CompactTime;
use crate::event::{EventId, EventTime};

/// One event a customer sent: fingerprint of its id and its event time, in
/// 14 bytes aligned to 2 (64-bit fingerprint, 48-bit [`CompactTime`]) instead
/// of 16. A time beyond the compact range is stored as its nearest end, so
/// such an entry expires as if it were at that end: earlier than exact only
/// once the watermark itself is past the year 6429.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SeenEvent {
    /// Keyed hash of the event id, stable across versions and restarts (see [`fingerprint`]).
    fingerprint: [u16; 4],
    /// The event's time.
    at: CompactTime,
}

const _: () = assert!(std::mem::size_of::<SeenEvent>() == 14);

impl SeenEvent {
    /// The entry of an event; its time is clamped to the [`CompactTime`] range.
    pub fn new(fingerprint: u64, at: EventTime) -> Self {
        let part = |value: u64, index: u32| (value >> (16 * index)) as u16;
        SeenEvent {
            fingerprint: [0, 1, 2, 3].map(|index| part(fingerprint, index)),
            at: CompactTime::new(at),
        }
    }

    /// Keyed hash of the event id.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
            .iter()
            .rev()
            .fold(0, |value, part| value << 16 | u64::from(*part))
    }

    /// The event's time.
    pub fn at(&self) -> EventTime {
        self.at.get()
    }
}

impl std::fmt::Debug for SeenEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeenEvent")
            .field("fingerprint", &self.fingerprint())
            .field("at", &self.at())
            .finish()
    }
}

/// The events one customer sent since the de-duplication horizon.
///
/// A boxed slice (16 bytes, no spare capacity) of 14-byte entries because most customers have a
/// handful of entries and the list only changes when the profile does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenEvents(Box<[SeenEvent]>);

/// Key of [`fingerprint`]'s SipHash: part of the changelog's format.
const FINGERPRINT_KEY: (u64, u64) = (0x0063_7870_756c_7365, 1);

/// The deterministic fingerprint of an event id: SipHash-2-4 (as specified by
/// Aumasson and Bernstein) of the id's UTF-8 bytes with [`FINGERPRINT_KEY`].
/// The changelog stores it, so it must never change; golden values pin it.
pub fn fingerprint(event_id: &EventId) -> u64 {
    sip24(FINGERPRINT_KEY, event_id.as_str().as_bytes())
}

/// SipHash-2-4 of `bytes` alone (no length prefix or terminator, unlike `Hash for str`).
fn sip24((k0, k1): (u64, u64), bytes: &[u8]) -> u64 {
    let mut hasher = SipHasher24::new_with_keys(k0, k1);
    hasher.write(bytes);
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
            .any(|seen| seen.fingerprint() == fingerprint && seen.at() >= horizon)
        {
            return false;
        }
        let mut entries = Vec::with_capacity(self.0.len() + 1);
        entries.extend(self.0.iter().filter(|seen| seen.at() >= horizon));
        entries.push(SeenEvent::new(fingerprint, at));
        self.0 = entries.into_boxed_slice();
        true
    }

    /// Drops the entries before `horizon` (they no longer count anyway).
    pub fn forget_before(&mut self, horizon: EventTime) {
        if self.0.iter().any(|seen| seen.at() < horizon) {
            let kept: Vec<SeenEvent> = self
                .0
                .iter()
                .filter(|seen| seen.at() >= horizon)
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
    fn sip24_is_the_reference_siphash() {
        // The first vectors of the SipHash paper's appendix: key 00..0f, messages 00..n-1.
        let key = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        let message: Vec<u8> = (0..64).collect();
        for (length, expected) in [
            (0, 0x726f_db47_dd0e_0e31),
            (1, 0x74f8_39c5_93dc_67fd),
            (63, 0x958a_324c_eb06_4572),
        ] {
            assert_eq!(sip24(key, &message[..length]), expected, "length {length}");
        }
    }

    #[test]
    fn fingerprints_are_pinned() {
        // Stored in the changelog: a change here breaks every restore of de-dup memory.
        let ids = [
            "e",
            "ev-0000000001",
            "a-much-longer-event-id-than-fifteen-bytes",
        ];
        let fingerprints = ids.map(|id| format!("{:#x}", fingerprint(&EventId::new(id))));
        let pinned = [
            "0x951ef54447a20910",
            "0x92b25a033aa3739e",
            "0xcbfa729ac305231d",
        ];
        assert_eq!(fingerprints, pinned);
    }

    #[test]
    fn entries_hold_fingerprints_exactly_and_times_compactly() {
        let times = [
            0,
            1,
            -1,
            1_780_000_000_000,
            -62_167_219_200_000, // 0000-01-01
            253_402_300_799_999, // 9999-12-31, past the range: clamped
            CompactTime::MIN,
            CompactTime::MAX,
            i64::MIN / 4,
            i64::MAX,
        ];
        for fingerprint in [0, 1, u64::MAX, 0x8000_0000_0000_0001, 0x0123_4567_89ab_cdef] {
            for millis in times {
                let entry = SeenEvent::new(fingerprint, EventTime::from_millis(millis));
                assert_eq!(entry.fingerprint(), fingerprint);
                let expected = millis.clamp(CompactTime::MIN, CompactTime::MAX);
                assert_eq!(entry.at(), EventTime::from_millis(expected), "{millis}");
            }
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
        assert_eq!(seen.entries(), &[SeenEvent::new(fingerprint(&e), later)]);
    }
}
