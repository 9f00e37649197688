//! Write-ahead framing: a flush's records as one batch of chunk records
//! written before them, so that a crash after any prefix of the flush restores
//! to the state before or after it (see the module documentation of `changelog`).

use std::collections::BTreeMap;

use prost::Message;

use super::{bad_value, chunk_key, ChangeRecord, RestoreError};
use crate::proto::state as proto;

/// Largest write-ahead chunk value: well inside any broker's record size limit.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// Frames the records of flush number `cycle` (from
/// [`Task::take_changelog`](crate::task::Task::take_changelog)) so that
/// a crash after any prefix of the result restores to the state before or after the
/// flush: write-ahead chunks of all records, then the records, then chunk tombstones.
pub fn write_ahead(cycle: u64, records: Vec<ChangeRecord>) -> Vec<ChangeRecord> {
    frame(cycle, records, CHUNK_BYTES)
}

/// [`write_ahead`] with chunk values of at most `chunk_bytes` (a record too
/// large for that gets a chunk of its own).
fn frame(cycle: u64, records: Vec<ChangeRecord>, chunk_bytes: usize) -> Vec<ChangeRecord> {
    let changes: Vec<proto::Change> = records
        .into_iter()
        .map(|(key, value)| proto::Change { key, value })
        .collect();
    // Where each chunk ends, sized exactly as it will be encoded.
    let mut ends = Vec::new();
    let mut bytes = 0;
    for (index, change) in changes.iter().enumerate() {
        let size = chunk_field_bytes(change);
        if bytes > 0 && bytes + size > chunk_bytes {
            ends.push(index);
            bytes = 0;
        }
        bytes += size;
    }
    ends.push(changes.len());
    let count = ends.len();
    let mut framed = Vec::with_capacity(changes.len() + 2 * count);
    let mut records = Vec::with_capacity(changes.len());
    let mut changes = changes.into_iter();
    let mut start = 0;
    for (index, end) in ends.into_iter().enumerate() {
        let chunk = proto::WriteAheadChunk {
            changes: changes.by_ref().take(end - start).collect(),
        };
        start = end;
        framed.push((chunk_key(cycle, index, count), Some(chunk.encode_to_vec())));
        // The records themselves follow the chunks, moved back out (not copied).
        records.extend(
            chunk
                .changes
                .into_iter()
                .map(|change| (change.key, change.value)),
        );
    }
    framed.extend(records);
    framed.extend((0..count).map(|index| (chunk_key(cycle, index, count), None)));
    framed
}

/// Bytes `change` adds to an encoded [`proto::WriteAheadChunk`]: its field's
/// tag (one byte: field 1, length-delimited), its length, and the message.
fn chunk_field_bytes(change: &proto::Change) -> usize {
    let length = change.encoded_len();
    1 + prost::length_delimiter_len(length) + length
}

/// The records of a chunk value, in order.
fn decode_chunk(value: &[u8]) -> Result<Vec<ChangeRecord>, prost::DecodeError> {
    let chunk = proto::WriteAheadChunk::decode(value)?;
    Ok(chunk
        .changes
        .into_iter()
        .map(|change| (change.key, change.value))
        .collect())
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
        for (index, chunk) in &chunks {
            let changes =
                decode_chunk(chunk).map_err(bad_value(&chunk_key(cycle, *index, count)))?;
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

    use super::{decode_chunk, frame, CHUNK_BYTES};
    use crate::config::Config;
    use crate::event::{Event, EventTime};
    use crate::generate::population::{Population, PopulationConfig};
    use crate::task::changelog::testing::windows;
    use crate::task::changelog::ChangeRecord;
    use crate::task::{Emitted, Profile, Task, TaskSettings};
    use crate::window::FinalWindow;

    /// Records of keys and values around the lengths where Protobuf's varint
    /// lengths grow a byte, tombstones and empty values among them.
    fn records_of_awkward_sizes() -> Vec<ChangeRecord> {
        let key_lengths = [1, 14, 127, 128, 300];
        let value_lengths = [
            None,
            Some(0),
            Some(1),
            Some(126),
            Some(127),
            Some(128),
            Some(16_383),
            Some(16_384),
            Some(70_000),
        ];
        let mut records = Vec::new();
        for (index, value_length) in value_lengths.iter().cycle().take(60).enumerate() {
            let key_length = key_lengths[index % key_lengths.len()];
            let mut key = format!("k/{index}/").into_bytes();
            key.resize(key_length.max(key.len()), b'x');
            let value = value_length.map(|length| vec![index as u8; length]);
            records.push((key, value));
        }
        records
    }

    /// Every chunk value stays within the chunk size, Protobuf's tags and
    /// lengths included, unless it holds a single record too large for any
    /// chunk; chunks are as full as that allows; and the chunks decode to the
    /// records, a tombstone still a tombstone and an empty value still a value.
    #[test]
    fn chunks_hold_the_records_in_order_within_their_size() {
        let records = records_of_awkward_sizes();
        assert!(records
            .iter()
            .any(|(_, value)| value.as_ref().is_some_and(Vec::is_empty)));
        assert!(records.iter().any(|(_, value)| value.is_none()));
        for chunk_bytes in [1, 150, 1000, 20_000, 100_000, CHUNK_BYTES] {
            let framed = frame(7, records.clone(), chunk_bytes);
            let chunks: Vec<&[u8]> = framed
                .iter()
                .take_while(|(key, _)| key.starts_with(b"c/"))
                .map(|(_, value)| value.as_deref().expect("a chunk has a value"))
                .collect();
            let count = chunks.len();
            assert_eq!(framed.len(), records.len() + 2 * count);
            assert_eq!(framed[count..count + records.len()], records[..]);
            for (index, (key, value)) in framed[count + records.len()..].iter().enumerate() {
                assert_eq!(key, &format!("c/7/{index}/{count}").into_bytes());
                assert_eq!(value, &None);
            }
            let mut decoded = Vec::new();
            for (index, chunk) in chunks.iter().enumerate() {
                let changes = decode_chunk(chunk).unwrap();
                assert!(
                    chunk.len() <= chunk_bytes || changes.len() == 1,
                    "chunk {index} of {chunk_bytes} bytes holds {} bytes in {} records",
                    chunk.len(),
                    changes.len()
                );
                if let Some(next) = chunks.get(index + 1) {
                    // The next chunk's first record would not have fitted in this one.
                    let first = decode_chunk(next).unwrap().remove(0);
                    let grown = frame(
                        0,
                        changes.iter().cloned().chain([first]).collect(),
                        usize::MAX,
                    );
                    let grown = grown[0].1.as_ref().unwrap();
                    assert!(
                        grown.len() > chunk_bytes,
                        "chunk {index} of {chunk_bytes} bytes ended early"
                    );
                }
                decoded.extend(changes);
            }
            assert_eq!(decoded, records, "chunks of {chunk_bytes} bytes");
        }
    }

    /// A tombstone and an empty value are different chunk contents.
    #[test]
    fn chunks_tell_a_tombstone_from_an_empty_value() {
        let tombstone = frame(1, vec![(b"t/1".to_vec(), None)], CHUNK_BYTES);
        let empty = frame(1, vec![(b"t/1".to_vec(), Some(Vec::new()))], CHUNK_BYTES);
        assert_ne!(tombstone[0].1, empty[0].1);
        let decode = |framed: &[ChangeRecord]| decode_chunk(framed[0].1.as_ref().unwrap()).unwrap();
        assert_eq!(decode(&tombstone), vec![(b"t/1".to_vec(), None)]);
        assert_eq!(decode(&empty), vec![(b"t/1".to_vec(), Some(Vec::new()))]);
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
