//! Write-ahead framing: a flush's records as one batch of chunk records
//! written before them, so that a crash after any prefix of the flush restores
//! to the state before or after it (see the module documentation of `changelog`).

use std::collections::BTreeMap;

use super::{chunk_key, ChangeRecord, RestoreError};

/// Largest write-ahead chunk value: well inside any broker's record size limit.
const CHUNK_BYTES: usize = 256 * 1024;

/// Frames the records of flush number `cycle` (from
/// [`Task::take_changelog`](crate::task::Task::take_changelog)) so that
/// a crash after any prefix of the result restores to the state before or after the
/// flush: write-ahead chunks of all records, then the records, then chunk tombstones.
pub fn write_ahead(cycle: u64, records: Vec<ChangeRecord>) -> Vec<ChangeRecord> {
    frame(cycle, records, CHUNK_BYTES)
}

/// [`write_ahead`] with chunks of at most `chunk_bytes` (unless one record is larger).
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
    let key = |index: usize| chunk_key(cycle, index, count);
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

/// Appends one record to a chunk.
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

/// The records of a chunk; `None` when it is malformed.
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
pub(super) struct FoundBatches {
    /// Keys of every batch chunk still present (to delete).
    pub(super) keys: Vec<Vec<u8>>,
    /// The newest flush number among them.
    pub(super) newest: u64,
    /// Records of the batch that was applied (to write per key), if one was.
    pub(super) records: Vec<ChangeRecord>,
}

/// Finds the one complete write-ahead batch newer than the meta record's flush
/// `committed`, if any, among the latest values of the chunk keys.
pub(super) fn find_write_ahead(
    chunk_values: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    committed: u64,
) -> Result<FoundBatches, RestoreError> {
    // cycle → (count, chunks by index)
    let mut batches: BTreeMap<u64, (usize, BTreeMap<usize, Vec<u8>>)> = BTreeMap::new();
    let mut keys = Vec::new();
    for (key, value) in chunk_values {
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
            applied.extend(changes);
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
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::super::testing::windows;
    use super::frame;
    use crate::config::Config;
    use crate::event::{Event, EventTime};
    use crate::generate::population::{Population, PopulationConfig};
    use crate::task::changelog::ChangeRecord;
    use crate::task::{Emitted, Profile, Task, TaskSettings};
    use crate::window::FinalWindow;

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
                profile.updated_at = EventTime::default().into();
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
