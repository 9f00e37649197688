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
//! | `m` | meta: input offsets included, flush number, watermark, window progress |
//! | `c/{flush}/{index}/{count}` | write-ahead batch: chunk `index` of a flush's records |
//!
//! [`Task::take_changelog`] returns what changed since the previous call
//! (never a full snapshot), meta last. The meta record names the input
//! offsets the state includes, so inputs replayed after a crash are skipped.
//! Timers are not stored: [`Task::restore`] rebuilds them from profiles and tickets.
//!
//! A flush is several records. Inside a Kafka transaction (exactly-once) they
//! become visible together; otherwise a crash can cut them short, and some keys
//! would hold the new state while the meta still names the old offsets, so the
//! replay would count those records twice. [`write_ahead`] frames a flush so
//! that any prefix of it restores to the state before or after the flush: the
//! whole flush first as write-ahead chunks, then the per-key records (which
//! compaction keeps), then tombstones of the chunks. [`Task::restore`] applies a
//! complete batch newer than the meta record, and ignores an incomplete one
//! (none of its per-key records can have been written yet).

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
    /// Number of the flush that wrote this meta record.
    #[serde(default)]
    cycle: u64,
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

    /// The first input offset of `source` the state does not include (-1: it includes none).
    pub fn next_offset(&self, source: Source) -> i64 {
        self.included[source.index()]
    }

    /// Records that the state now includes the input record at `offset` of `source`.
    pub fn mark_included(&mut self, source: Source, offset: i64) {
        let next = &mut self.included[source.index()];
        *next = (*next).max(offset + 1);
    }

    /// Number of the last changelog flush, the one [`write_ahead`] frames.
    pub fn changelog_cycle(&self) -> u64 {
        self.changelog_cycle
    }

    /// The changelog records of everything changed since the previous call, meta last.
    pub fn take_changelog(&mut self) -> Vec<ChangeRecord> {
        self.changelog_cycle += 1;
        // A batch applied at restore never reached its per-key records: write them
        // now (later changes of the same keys follow and win), then delete the chunks.
        let mut records: Vec<ChangeRecord> = std::mem::take(&mut self.batch_to_rewrite);
        records.extend(
            std::mem::take(&mut self.stale_batches)
                .into_iter()
                .map(|key| (key, None)),
        );
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
            cycle: self.changelog_cycle,
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
        let applied = apply_write_ahead(&mut latest)?;
        task.stale_batches = applied.keys;
        let newest_batch = applied.newest;
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
                "c" => {}
                _ => return Err(RestoreError::UnknownKey(text)),
            }
        }
        if let Some(meta) = meta {
            task.included = meta.included;
            task.changelog_cycle = meta.cycle;
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

/// Largest write-ahead chunk value: well inside any broker's record size limit.
const CHUNK_BYTES: usize = 256 * 1024;

/// Frames the records of flush number `cycle` (from [`Task::take_changelog`]) so that
/// a crash after any prefix of the result restores to the state before or after the
/// flush: write-ahead chunks of all records, then the records, then chunk tombstones.
pub fn write_ahead(cycle: u64, records: Vec<ChangeRecord>) -> Vec<ChangeRecord> {
    frame(cycle, records, CHUNK_BYTES)
}

fn frame(cycle: u64, records: Vec<ChangeRecord>, chunk_bytes: usize) -> Vec<ChangeRecord> {
    let mut chunks: Vec<Vec<u8>> = vec![Vec::new()];
    for (key, value) in &records {
        let size = 9 + key.len() + value.as_ref().map_or(0, Vec::len);
        let current = chunks.last_mut().expect("one chunk at least");
        if !current.is_empty() && current.len() + size > chunk_bytes {
            chunks.push(Vec::new());
        }
        encode_change(
            chunks.last_mut().expect("one chunk at least"),
            key,
            value.as_deref(),
        );
    }
    let count = chunks.len();
    let key = |index: usize| format!("c/{cycle}/{index}/{count}").into_bytes();
    let mut framed = Vec::with_capacity(records.len() + 2 * count);
    framed.extend(
        chunks
            .into_iter()
            .enumerate()
            .map(|(index, chunk)| (key(index), Some(chunk))),
    );
    framed.extend(records);
    framed.extend((0..count).map(|index| (key(index), None)));
    framed
}

fn encode_change(out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    match value {
        None => out.push(0),
        Some(value) => {
            out.push(1);
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value);
        }
    }
}

fn decode_changes(mut bytes: &[u8]) -> Option<Vec<ChangeRecord>> {
    fn take<'a>(bytes: &mut &'a [u8], count: usize) -> Option<&'a [u8]> {
        if bytes.len() < count {
            return None;
        }
        let (head, rest) = bytes.split_at(count);
        *bytes = rest;
        Some(head)
    }
    fn length(bytes: &mut &[u8]) -> Option<usize> {
        let raw: [u8; 4] = take(bytes, 4)?.try_into().ok()?;
        Some(u32::from_be_bytes(raw) as usize)
    }
    let mut changes = Vec::new();
    while !bytes.is_empty() {
        let key_length = length(&mut bytes)?;
        let key = take(&mut bytes, key_length)?.to_vec();
        let value = match take(&mut bytes, 1)?[0] {
            0 => None,
            1 => {
                let value_length = length(&mut bytes)?;
                Some(take(&mut bytes, value_length)?.to_vec())
            }
            _ => return None,
        };
        changes.push((key, value));
    }
    Some(changes)
}

/// Write-ahead batches found at restore.
struct FoundBatches {
    /// Keys of every batch chunk still present (to delete).
    keys: Vec<Vec<u8>>,
    /// The newest flush number among them.
    newest: u64,
    /// Records of the batch that was applied (to write per key), if one was.
    records: Vec<ChangeRecord>,
}

/// Applies the one complete write-ahead batch newer than the meta record, if any, to
/// the latest values, and removes every batch from them.
fn apply_write_ahead(
    latest: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>,
) -> Result<FoundBatches, RestoreError> {
    let committed = match latest.get(b"m".as_slice()) {
        Some(Some(value)) => {
            let meta: Meta =
                serde_json::from_slice(value).map_err(|source| RestoreError::BadValue {
                    key: "m".into(),
                    source,
                })?;
            meta.cycle
        }
        _ => 0,
    };
    // cycle → (count, chunks by index)
    let mut batches: BTreeMap<u64, (usize, BTreeMap<usize, Vec<u8>>)> = BTreeMap::new();
    let mut keys = Vec::new();
    let batch_keys: Vec<Vec<u8>> = latest
        .range(b"c/".to_vec()..b"c0".to_vec())
        .map(|(key, _)| key.clone())
        .collect();
    for key in batch_keys {
        let value = latest.remove(&key).flatten();
        let text = String::from_utf8_lossy(&key).into_owned();
        let parts: Vec<&str> = text.split('/').collect();
        let [_, cycle, index, count] = parts[..] else {
            return Err(RestoreError::UnknownKey(text));
        };
        let (Ok(cycle), Ok(index), Ok(count)) = (
            cycle.parse::<u64>(),
            index.parse::<usize>(),
            count.parse::<usize>(),
        ) else {
            return Err(RestoreError::UnknownKey(text));
        };
        if let Some(value) = value {
            let batch = batches
                .entry(cycle)
                .or_insert_with(|| (count, BTreeMap::new()));
            batch.1.insert(index, value);
            keys.push(key);
        }
    }
    let newest = batches.keys().next_back().copied().unwrap_or(0);
    let mut applied = Vec::new();
    for (cycle, (count, chunks)) in batches {
        if cycle <= committed || chunks.len() != count {
            // Its records are all written (meta is newer), or none of them are.
            continue;
        }
        for chunk in chunks.values() {
            let changes = decode_changes(chunk)
                .ok_or_else(|| RestoreError::UnknownKey(format!("c/{cycle}: malformed batch")))?;
            for (key, value) in changes {
                latest.insert(key.clone(), value.clone());
                applied.push((key, value));
            }
        }
    }
    Ok(FoundBatches {
        keys,
        newest,
        records: applied,
    })
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

    /// Straight-through result of `events`: (final windows, profiles without `updated_at`).
    fn outcome(
        task: &mut Task,
        until: EventTime,
        out: &mut Vec<Emitted>,
    ) -> (Vec<FinalWindow>, Vec<Profile>) {
        task.tick(until, out);
        let mut profiles: Vec<Profile> = task
            .profiles()
            .map(|profile| {
                let mut profile = profile.clone();
                profile.updated_at = EventTime::default();
                profile
            })
            .collect();
        profiles.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
        (windows(out), profiles)
    }

    /// Applies the records a restored task does not include yet, as the pipeline does.
    fn replay(
        task: &mut Task,
        positioned: &[(i64, &Event)],
        wall: EventTime,
        out: &mut Vec<Emitted>,
    ) {
        for (offset, event) in positioned {
            if !task.includes(event.source(), *offset) {
                task.apply(event, wall, out);
                task.mark_included(event.source(), *offset);
            }
        }
    }

    type WindowsByIdentity = BTreeMap<(Arc<str>, EventTime), FinalWindow>;

    fn by_identity(windows: &[FinalWindow]) -> WindowsByIdentity {
        windows
            .iter()
            .map(|window| ((window.name.clone(), window.end), window.clone()))
            .collect()
    }

    /// Crashes after every prefix of one flush's records, then restores and replays:
    /// with [`frame`] the result always equals the uninterrupted one; the same flush
    /// written without framing double counts for some prefixes (the hole it closes).
    #[test]
    fn a_crash_after_any_record_of_a_flush_changes_nothing() {
        let mut config = Config::default();
        config.windows = vec![
            crate::config::WindowConfig::new("1h", 3600, 900),
            crate::config::WindowConfig::new("1d", 86_400, 3600),
        ];
        let settings = Arc::new(TaskSettings::from_config(&config));
        let events: Vec<_> = Population::new(PopulationConfig {
            customers: 40,
            visits_per_day: 3.0,
            start: EventTime::from_millis(1_780_000_000_000),
            max_disorder_millis: 60_000,
            seed: 9,
        })
        .take(600)
        .collect();
        let wall = EventTime::from_millis(0);
        let mut offsets = [0i64; 3];
        let positioned: Vec<(i64, &Event)> = events
            .iter()
            .map(|event| {
                let offset = offsets[event.source().index()];
                offsets[event.source().index()] += 1;
                (offset, event)
            })
            .collect();
        let last = events.iter().map(|e| e.occurred_at).max().unwrap();
        let until = last.plus_millis(3 * 86_400_000);
        let mut straight = Task::new(0, settings.clone(), wall);
        let mut straight_out = Vec::new();
        for event in &events {
            straight.apply(event, wall, &mut straight_out);
        }
        let expected = outcome(&mut straight, until, &mut straight_out);
        let expected_windows = by_identity(&expected.0);

        // Flushes of 60 events; the crash comes during the 6th.
        let run = |framed: bool, stop_at_first_wrong: bool| -> Vec<(usize, bool)> {
            let mut task = Task::new(0, settings.clone(), wall);
            let mut out = Vec::new();
            let mut durable: Vec<ChangeRecord> = Vec::new();
            let mut committed_windows = Vec::new();
            let mut cut = Vec::new();
            for (index, (offset, event)) in positioned.iter().enumerate() {
                task.apply(event, wall, &mut out);
                task.mark_included(event.source(), *offset);
                if index % 60 != 59 {
                    continue;
                }
                let records = task.take_changelog();
                let records = if framed {
                    frame(task.changelog_cycle(), records, 2048)
                } else {
                    records
                };
                if index / 60 < 5 {
                    durable.extend(records);
                    committed_windows = windows(&out);
                    continue;
                }
                // Outputs are delivered before state is written: this flush's are out.
                committed_windows = windows(&out);
                cut = records;
                break;
            }
            assert!(cut.len() > 20, "a flush of many records: {}", cut.len());
            let mut results = Vec::new();
            for prefix in 0..=cut.len() {
                let ok = {
                    let mut log = durable.clone();
                    log.extend(cut[..prefix].iter().cloned());
                    let mut restored = Task::restore(0, settings.clone(), wall, log).unwrap();
                    let mut replay_out = Vec::new();
                    replay(&mut restored, &positioned, wall, &mut replay_out);
                    let (mut replayed_windows, profiles) =
                        outcome(&mut restored, until, &mut replay_out);
                    // Windows emitted before the crash were published; a replay may repeat
                    // some of them (at-least-once) but never with other content.
                    let mut combined = by_identity(&committed_windows);
                    let mut consistent = true;
                    for window in replayed_windows.drain(..) {
                        let identity = (window.name.clone(), window.end);
                        if let Some(earlier) = combined.insert(identity, window.clone()) {
                            consistent &= earlier == window;
                        }
                    }
                    consistent && combined == expected_windows && profiles == expected.1
                };
                results.push((prefix, ok));
                if stop_at_first_wrong && !ok {
                    break;
                }
            }
            results
        };
        // A crash in the flush after a restore from a batch cut short (incomplete: the
        // new flush must neither reuse nor be deleted with it), or complete without its
        // per-key records (the new flush must write them before deleting its chunks).
        for cut_kind in 0..4 {
            let mut task = Task::new(0, settings.clone(), wall);
            let mut out = Vec::new();
            let mut durable: Vec<ChangeRecord> = Vec::new();
            let mut next = 0;
            for (index, (offset, event)) in positioned.iter().enumerate() {
                task.apply(event, wall, &mut out);
                task.mark_included(event.source(), *offset);
                if index % 60 == 59 {
                    let records = task.take_changelog();
                    let mut records = frame(task.changelog_cycle(), records, 2048);
                    if index / 60 == 4 {
                        // The fifth flush is cut short.
                        let chunks = records
                            .iter()
                            .filter(|(key, value)| key.starts_with(b"c/") && value.is_some())
                            .count();
                        assert!(chunks > 1, "{chunks} chunks");
                        let first_cut = [1, chunks - 1, chunks, chunks + 3][cut_kind];
                        records.truncate(first_cut);
                        durable.extend(records);
                        next = index + 1;
                        break;
                    }
                    durable.extend(records);
                }
            }
            let mut restored = Task::restore(0, settings.clone(), wall, durable.clone()).unwrap();
            let mut replay_out = Vec::new();
            replay(
                &mut restored,
                &positioned[..next + 60],
                wall,
                &mut replay_out,
            );
            let records = restored.take_changelog();
            let second = frame(restored.changelog_cycle(), records, 2048);
            // Every position inside the chunks and around their end, then a sample.
            let chunks = second
                .iter()
                .filter(|(key, _)| key.starts_with(b"c/"))
                .count()
                / 2;
            let prefixes = (0..=second.len()).filter(|prefix| {
                *prefix <= chunks + 3 || prefix % 7 == 0 || *prefix == second.len()
            });
            for prefix in prefixes {
                let mut log = durable.clone();
                log.extend(second[..prefix].iter().cloned());
                let mut again = Task::restore(0, settings.clone(), wall, log).unwrap();
                let mut again_out = Vec::new();
                replay(&mut again, &positioned, wall, &mut again_out);
                let (_, profiles) = outcome(&mut again, until, &mut again_out);
                assert!(
                    profiles == expected.1,
                    "crash after record {prefix} of the flush after a restore (cut {cut_kind}) changes the profiles"
                );
            }
        }
        let framed = run(true, false);
        let wrong: Vec<usize> = framed
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(p, _)| *p)
            .collect();
        assert!(
            wrong.is_empty(),
            "framed flush: crash after records {wrong:?} changes the result"
        );
        let plain = run(false, true);
        assert!(
            plain.iter().any(|(_, ok)| !ok),
            "without framing some crash point should double count (else this test proves nothing)"
        );
        assert!(framed.len() > 20);
    }
}
