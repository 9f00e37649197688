//! Recognises redelivered events: a `(customer_id, event_id)` pair seen within
//! `dedupe_window` of event time. Memory stays bounded because entries older
//! than the watermark minus the window are forgotten, and each entry is a
//! 128-bit fingerprint plus its time rather than the ids themselves.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use crate::event::{CustomerId, EventId, EventTime};

/// De-duplication memory of one task.
///
/// For the changelog, the fingerprints added in one flush form one batch
/// record; a batch is dropped once its newest entry expired.
#[derive(Debug, Clone, Default)]
pub struct Dedupe {
    seen: HashMap<u128, EventTime>,
    by_time: BTreeSet<(EventTime, u128)>,
    /// Added since the last flush.
    added: Vec<(u128, EventTime)>,
    /// Live batches: sequence → newest entry time.
    batches: std::collections::BTreeMap<u64, EventTime>,
    /// Batches expired since the last flush.
    expired: Vec<u64>,
    next_batch: u64,
}

/// Most fingerprints in one changelog record (about 50 bytes each as JSON).
pub const MAX_BATCH_ENTRIES: usize = 10_000;

/// One changelog record of de-duplication memory.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DedupeBatch {
    /// (fingerprint high, fingerprint low, event time) of each entry.
    pub entries: Vec<(u64, u64, EventTime)>,
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
        self.added.push((key, at));
        true
    }

    /// Forgets events that happened before `horizon`.
    pub fn expire_before(&mut self, horizon: EventTime) {
        while let Some((&sequence, &newest)) = self.batches.first_key_value() {
            if newest >= horizon {
                break;
            }
            self.batches.remove(&sequence);
            self.expired.push(sequence);
        }
        while let Some(&(at, key)) = self.by_time.first() {
            if at >= horizon {
                break;
            }
            self.by_time.pop_first();
            self.seen.remove(&key);
        }
    }

    /// The batches of entries added since the last call (with their sequences; at most
    /// [`MAX_BATCH_ENTRIES`] each, so a record stays far below Kafka's size limit), and
    /// the sequences of batches that expired.
    pub fn take_changes(&mut self) -> (Vec<(u64, DedupeBatch)>, Vec<u64>) {
        let expired = std::mem::take(&mut self.expired);
        let added = std::mem::take(&mut self.added);
        let mut batches = Vec::new();
        for chunk in added.chunks(MAX_BATCH_ENTRIES) {
            let sequence = self.next_batch;
            self.next_batch += 1;
            let newest = chunk.iter().map(|(_, at)| *at).max().unwrap_or_default();
            self.batches.insert(sequence, newest);
            let entries = chunk
                .iter()
                .map(|(key, at)| ((key >> 64) as u64, *key as u64, *at))
                .collect();
            batches.push((sequence, DedupeBatch { entries }));
        }
        (batches, expired)
    }

    /// Puts back a batch read from the changelog, skipping entries older than `horizon`.
    pub fn restore(&mut self, sequence: u64, batch: DedupeBatch, horizon: EventTime) {
        let newest = batch
            .entries
            .iter()
            .map(|(.., at)| *at)
            .max()
            .unwrap_or_default();
        self.batches.insert(sequence, newest);
        self.next_batch = self.next_batch.max(sequence + 1);
        for (high, low, at) in batch.entries {
            if at >= horizon {
                let key = (u128::from(high) << 64) | u128::from(low);
                self.seen.insert(key, at);
                self.by_time.insert((at, key));
            }
        }
    }

    /// Forgets what was added or expired since the last flush (memory measurement only).
    pub(crate) fn discard_changes(&mut self) {
        self.added = Vec::new();
        self.expired = Vec::new();
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
