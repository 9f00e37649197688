//! Restore: rebuilds a [`Task`] from its changelog records as they are read,
//! then applies the write-ahead batch the log may end with and the meta record.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::codec::{
    active_delta_from_value, customer_from_value, meta_from_value, pane_from_value,
    progress_from_proto, ticket_from_value,
};
use super::write_ahead::find_write_ahead;
use super::{invalid, is_chunk_key, unknown_key, ChangeRecord, RestoreError, META_KEY};
use crate::event::{CustomerId, EventTime, TicketId};
use crate::task::dedupe::SeenEvents;
use crate::task::timers::{CustomerSlot, Timer};
use crate::task::watermark::Watermark;
use crate::task::{CustomerEntry, Profile, Task, TaskSettings};

impl Task {
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
            META_KEY => self.meta = value.map(<[u8]>::to_vec),
            _ if is_chunk_key(key) => {
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
                let (customer_id, ticket) = ticket_from_value(key, ticket_id, value)?;
                // Compaction may keep a customer's latest record after its ticket's.
                let (customer, absent) = task.customers.find_or_insert(CustomerEntry {
                    profile: Profile::new(customer_id, EventTime::MIN),
                    seen: SeenEvents::default(),
                });
                if absent.is_none() {
                    self.placeholders.insert(customer);
                }
                task.tickets.restore(ticket(customer));
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
                    .map(|value| active_delta_from_value(key, value))
                    .transpose()?;
                task.windows.active_mut().restore_delta(at, delta);
            }
            _ => return Err(unknown_key(key)),
        }
        Ok(())
    }

    /// Applies the write-ahead batch the log ends with, if complete, and the meta
    /// record, rebuilds the timers, and returns the task.
    pub fn finish(mut self) -> Result<Task, RestoreError> {
        let committed = meta_from_value(self.meta.as_deref())?.map_or(0, |meta| meta.cycle);
        let applied = find_write_ahead(std::mem::take(&mut self.chunks), committed)?;
        // The batch's records come after everything in the log, its meta included;
        // chunk deletions inside it are about older batches, already accounted for.
        for (key, value) in &applied.records {
            match key.as_slice() {
                META_KEY => self.meta = value.clone(),
                key if is_chunk_key(key) => {}
                key => self.apply_state(key, value.as_deref())?,
            }
        }
        let meta = meta_from_value(self.meta.as_deref())?;
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
                .map_err(|_| invalid(META_KEY, "not one input offset per source"))?;
            task.changelog_cycle = meta.cycle;
            task.watermark = meta
                .watermark
                .as_ref()
                .and_then(Watermark::from_proto)
                .ok_or_else(|| invalid(META_KEY, "bad watermark"))?;
            task.watermark.resume(wall);
            let progress = progress_from_proto(meta.windows);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;

    use crate::config::Config;
    use crate::event::{Event, EventTime};
    use crate::generate::population::{Population, PopulationConfig};
    use crate::proto::state as proto;
    use crate::task::changelog::testing::windows;
    use crate::task::changelog::ChangeRecord;
    use crate::task::{Task, TaskSettings};

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
}
