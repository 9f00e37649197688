//! The task's changelog: its state as records of a compacted topic,
//! partition = task id, one key per piece of state.
//!
//! | key | value |
//! |---|---|
//! | `p/{customer_id}` | profile |
//! | `t/{ticket_id}` | ticket (tombstone when forgotten) |
//! | `w/{window}/{pane_start}` | pane counts (tombstone when dropped) |
//! | `a/{time}` | active-customer delta (tombstone when gone) |
//! | `d/{sequence}` | a batch of de-duplication fingerprints (tombstone when expired) |
//! | `m` | meta: input offsets included, watermark, window progress |
//!
//! [`Task::take_changelog`] returns what changed since the previous call
//! (never a full snapshot), meta last. The meta record names the input
//! offsets the state includes, so inputs replayed after a crash are skipped.
//! Timers are not stored: [`Task::restore`] rebuilds them from profiles and tickets.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::dedupe::DedupeBatch;
use super::tickets::TicketState;
use super::timers::Timer;
use super::watermark::Watermark;
use super::{Profile, Task, TaskSettings};
use crate::event::{CustomerId, EventTime, Source, TicketId};
use crate::window::{Aggregate, SpecProgress};

/// A changelog record: key, and value or `None` for a tombstone.
pub type ChangeRecord = (Vec<u8>, Option<Vec<u8>>);

/// Why a changelog record could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The key is not one cxpulse writes.
    #[error("unknown changelog key {0:?}")]
    UnknownKey(String),
    /// The value does not parse.
    #[error("changelog record {key:?}: {source}")]
    BadValue {
        /// The key.
        key: String,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// Task-wide state written with every flush.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    /// Next input offset included in the state, per source (-1: none yet).
    included: [i64; 3],
    watermark: Watermark,
    windows: BTreeMap<String, SpecProgress>,
    windows_skipped: u64,
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data structures with string map keys always serialise.
    serde_json::to_vec(value).unwrap_or_default()
}

impl Task {
    /// True when the state already includes the input record at `offset` of `source`.
    pub fn includes(&self, source: Source, offset: i64) -> bool {
        offset < self.included[source.index()]
    }

    /// Records that the state now includes the input record at `offset` of `source`.
    pub fn mark_included(&mut self, source: Source, offset: i64) {
        let next = &mut self.included[source.index()];
        *next = (*next).max(offset + 1);
    }

    /// The changelog records of everything changed since the previous call, meta last.
    pub fn take_changelog(&mut self) -> Vec<ChangeRecord> {
        let mut records = Vec::new();
        for customer_id in std::mem::take(&mut self.changed_profiles) {
            let value = self.profiles.get(&customer_id).map(json);
            records.push((format!("p/{customer_id}").into_bytes(), value));
        }
        for (ticket_id, state) in self.tickets.take_changes() {
            records.push((format!("t/{ticket_id}").into_bytes(), state.map(json)));
        }
        for (spec, pane, aggregate) in self.windows.take_pane_changes() {
            records.push((format!("w/{spec}/{pane}").into_bytes(), aggregate.map(json)));
        }
        for (key, delta) in self.windows.active_mut().take_changes() {
            records.push((
                format!("a/{key}").into_bytes(),
                delta.map(|delta| json(&delta)),
            ));
        }
        let (batches, expired) = self.dedupe.take_changes();
        for (sequence, batch) in batches {
            records.push((format!("d/{sequence}").into_bytes(), Some(json(&batch))));
        }
        for sequence in expired {
            records.push((format!("d/{sequence}").into_bytes(), None));
        }
        let meta = Meta {
            included: self.included,
            watermark: self.watermark.clone(),
            windows: self.windows.progress(),
            windows_skipped: self.windows.skipped(),
        };
        records.push((b"m".to_vec(), Some(json(&meta))));
        records
    }

    /// Rebuilds a task from its changelog records, oldest first (the latest record of a key wins).
    pub fn restore(
        id: u32,
        settings: Arc<TaskSettings>,
        wall: EventTime,
        records: impl IntoIterator<Item = ChangeRecord>,
    ) -> Result<Task, RestoreError> {
        // Compaction semantics first: the latest value per key.
        let mut latest: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for (key, value) in records {
            latest.insert(key, value);
        }
        let mut task = Task::new(id, settings, wall);
        let mut meta: Option<Meta> = None;
        let mut dedupe_batches = Vec::new();
        for (key, value) in latest {
            let text = String::from_utf8_lossy(&key).into_owned();
            let Some(value) = value else { continue };
            let parse_error = |source| RestoreError::BadValue {
                key: text.clone(),
                source,
            };
            let (kind, rest) = text.split_once('/').unwrap_or((text.as_str(), ""));
            match kind {
                "p" => {
                    let profile: Profile = serde_json::from_slice(&value).map_err(parse_error)?;
                    task.profiles.insert(CustomerId::new(rest), profile);
                }
                "t" => {
                    let ticket: TicketState =
                        serde_json::from_slice(&value).map_err(parse_error)?;
                    task.tickets.restore(TicketId::new(rest), ticket);
                }
                "w" => {
                    let (spec, pane) = rest
                        .rsplit_once('/')
                        .ok_or_else(|| RestoreError::UnknownKey(text.clone()))?;
                    let pane: i64 = pane
                        .parse()
                        .map_err(|_| RestoreError::UnknownKey(text.clone()))?;
                    let aggregate: Aggregate =
                        serde_json::from_slice(&value).map_err(parse_error)?;
                    task.windows.restore_pane(spec, pane, aggregate);
                }
                "a" => {
                    let at: i64 = rest
                        .parse()
                        .map_err(|_| RestoreError::UnknownKey(text.clone()))?;
                    let delta: i64 = serde_json::from_slice(&value).map_err(parse_error)?;
                    task.windows.active_mut().restore_delta(at, delta);
                }
                "d" => {
                    let sequence: u64 = rest
                        .parse()
                        .map_err(|_| RestoreError::UnknownKey(text.clone()))?;
                    let batch: DedupeBatch = serde_json::from_slice(&value).map_err(parse_error)?;
                    dedupe_batches.push((sequence, batch));
                }
                "m" => meta = Some(serde_json::from_slice(&value).map_err(parse_error)?),
                _ => return Err(RestoreError::UnknownKey(text)),
            }
        }
        if let Some(meta) = meta {
            task.included = meta.included;
            task.watermark = meta.watermark;
            task.watermark.resume(wall);
            task.windows
                .restore_progress(&meta.windows, meta.windows_skipped);
        }
        let horizon = task
            .watermark
            .current()
            .plus_millis(-task.settings.dedupe_window_millis);
        for (sequence, batch) in dedupe_batches {
            task.dedupe.restore(sequence, batch, horizon);
        }
        // Timers are derived state.
        for profile in task.profiles.values() {
            if let Some(at) = profile.review_at {
                task.timers
                    .schedule(at, Timer::Review(profile.customer_id.clone()));
            }
        }
        let deadlines: Vec<(EventTime, TicketId)> = task
            .tickets
            .pending_sla_deadlines()
            .map(|(at, id)| (at, id.clone()))
            .collect();
        for (at, ticket_id) in deadlines {
            task.timers.schedule(at, Timer::Sla(ticket_id));
        }
        // A restore is not a change.
        task.take_changelog();
        Ok(task)
    }
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
            expected.updated_at = EventTime::default();
            actual.updated_at = EventTime::default();
            assert_eq!(actual, expected);
        }
    }
}
