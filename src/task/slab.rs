//! Compact storage for the many small records of a task (profiles, tickets).
//!
//! A [`Slab`] stores records in fixed-size chunks addressed by a `u32` slot:
//! unlike a `Vec` it never copies everything to grow and wastes at most one
//! chunk, unlike a `HashMap` of records it keeps no half-empty buckets of
//! records. An [`IdIndex`] finds a slot by the id the record itself holds, so
//! an id is stored once (not as map key and again in the value), and other
//! structures (timers, tickets) refer to a record by its 4-byte slot.

use std::hash::BuildHasher;

use hashbrown::HashTable;

/// Records per chunk: large enough that the chunk list is small, small enough
/// that the unused tail of the last chunk does not matter.
const CHUNK: usize = 4096;

/// Records addressed by slot number; slots are never moved.
#[derive(Debug, Clone)]
pub struct Slab<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Appends a record; returns its slot.
    pub fn push(&mut self, value: T) -> u32 {
        if self.len % CHUNK == 0 {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let slot = self.len;
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(value);
        }
        self.len += 1;
        // A task never holds 4 billion records of one kind (that would be ~1 TB).
        u32::try_from(slot).unwrap_or(u32::MAX)
    }

    /// The record at `slot`.
    pub fn get(&self, slot: u32) -> Option<&T> {
        let slot = slot as usize;
        self.chunks.get(slot / CHUNK)?.get(slot % CHUNK)
    }

    /// The record at `slot`, mutable.
    pub fn get_mut(&mut self, slot: u32) -> Option<&mut T> {
        let slot = slot as usize;
        self.chunks.get_mut(slot / CHUNK)?.get_mut(slot % CHUNK)
    }

    /// Slots in use (pushed so far).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every record with its slot, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.chunks
            .iter()
            .flatten()
            .enumerate()
            .map(|(slot, value)| (slot as u32, value))
    }
}

/// Slots of a [`Slab`] by the id their records hold.
#[derive(Debug, Clone, Default)]
pub struct IdIndex {
    table: HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl IdIndex {
    fn hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    /// The slot whose record has `id`; `id_of` reads a slot's id.
    pub fn find<'a>(&self, id: &str, id_of: impl Fn(u32) -> &'a str) -> Option<u32> {
        self.table
            .find(self.hash(id), |slot| id_of(*slot) == id)
            .copied()
    }

    /// Adds `slot` for `id` (not present yet); `id_of` reads the ids of slots already indexed.
    pub fn insert<'a>(&mut self, id: &str, slot: u32, id_of: impl Fn(u32) -> &'a str) {
        let hasher = &self.hasher;
        self.table
            .insert_unique(self.hasher.hash_one(id), slot, |slot| {
                hasher.hash_one(id_of(*slot))
            });
    }

    /// Makes room for `additional` more ids without rehashing (a restore knows how many come).
    pub fn reserve<'a>(&mut self, additional: usize, id_of: impl Fn(u32) -> &'a str) {
        let hasher = &self.hasher;
        self.table
            .reserve(additional, |slot| hasher.hash_one(id_of(*slot)));
    }

    /// Removes the slot of `id`, if indexed; `id_of` reads a slot's id.
    pub fn remove<'a>(&mut self, id: &str, id_of: impl Fn(u32) -> &'a str) -> Option<u32> {
        let hash = self.hash(id);
        self.table
            .find_entry(hash, |slot| id_of(*slot) == id)
            .ok()
            .map(|entry| entry.remove().0)
    }

    /// Ids indexed.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_stable_and_found_by_id() {
        let mut slab: Slab<String> = Slab::default();
        let mut index = IdIndex::default();
        for n in 0..10_000 {
            let id = format!("id-{n}");
            let slot = slab.push(id.clone());
            assert_eq!(slot, n);
            index.insert(&id, slot, |slot| slab.get(slot).map_or("", String::as_str));
        }
        let id_of = |slot| slab.get(slot).map_or("", String::as_str);
        assert_eq!(index.find("id-4097", id_of), Some(4097));
        assert_eq!(index.find("id-10000", id_of), None);
        assert_eq!(slab.iter().nth(5000).map(|(slot, _)| slot), Some(5000));
        assert_eq!(index.remove("id-7", id_of), Some(7));
        assert_eq!(index.find("id-7", id_of), None);
        assert_eq!(index.len(), 9_999);
    }
}
