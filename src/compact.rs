//! Compact forms of what every customer a task holds repeats: its id and
//! its times. With a million customers per instance, every byte here is a
//! megabyte.
//!
//! [`CompactStr`]: an immutable string in 16 bytes, like `Box<str>`, that
//! keeps strings of up to 15 bytes inline instead of on the heap.
//!
//! Every customer and ticket a task holds keeps its id (SPEC: 1..=128 bytes,
//! typically short keys such as `cust-0001234`); as a `Box<str>` each id cost
//! 16 bytes plus a heap allocation of its length, as a `CompactStr` a short id
//! costs the 16 bytes only (a long one is a `Box<str>` as before). Behaves
//! exactly like the `str` it holds: equality, order, hashing, `Debug` and serde
//! all delegate to [`CompactStr::as_str`].
//!
//! [`CompactTime`]: an [`EventTime`] in 6 bytes aligned to 2 instead of 8
//! aligned to 8, with a niche so that `Option<CompactTime>` is 6 bytes too.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU16;

use crate::time::EventTime;

/// Longest string kept inline.
pub const INLINE_CAPACITY: usize = 15;

/// Last byte of the inline form: this bit and the length.
const INLINE_TAG: u8 = 0x80;

/// The heap form: a leaked `Box<str>` as pointer and length. The length takes
/// 7 bytes (ids are at most a few hundred bytes; see [`CompactStr::from_box`]
/// for longer strings), the last byte is 0 — never [`INLINE_TAG`].
#[derive(Clone, Copy)]
#[repr(C)]
struct Heap {
    ptr: *mut u8,
    len: [u8; 7],
    tag: u8,
}

/// Either form; which one is told by the last byte (see [`CompactStr::is_inline`]).
#[repr(C)]
union Repr {
    /// Inline: the text in the first `len` bytes, `INLINE_TAG | len` in the last.
    inline: [u8; 16],
    heap: Heap,
}

const _: () = assert!(std::mem::size_of::<Heap>() == 16, "64-bit targets only");
const _: () = assert!(std::mem::size_of::<Repr>() == 16);

/// An immutable string of 16 bytes; see the module documentation.
pub struct CompactStr(Repr);

// SAFETY: a `CompactStr` owns its text exactly like the `Box<str>` it may hold
// (no sharing, no interior mutability), so it is as `Send` and `Sync` as `Box<str>`.
unsafe impl Send for CompactStr {}
// SAFETY: see `Send` above.
unsafe impl Sync for CompactStr {}

impl CompactStr {
    /// Takes a string, inline when it is short enough.
    pub fn from_box(text: Box<str>) -> Self {
        let len = text.len();
        if len <= INLINE_CAPACITY {
            let mut inline = [0u8; 16];
            inline[..len].copy_from_slice(text.as_bytes());
            inline[15] = INLINE_TAG | len as u8;
            return CompactStr(Repr { inline });
        }
        // The length must fit in 7 bytes: 64 PiB, more than any allocation can be.
        let len_bytes = (len as u64).to_le_bytes();
        debug_assert_eq!(len_bytes[7], 0);
        let ptr = Box::into_raw(text) as *mut u8;
        let mut len = [0u8; 7];
        len.copy_from_slice(&len_bytes[..7]);
        CompactStr(Repr {
            heap: Heap { ptr, len, tag: 0 },
        })
    }

    fn tag(&self) -> u8 {
        // SAFETY: both forms are 16 initialised bytes (`Heap` has no padding:
        // 8 + 7 + 1), so reading the last one as a byte is always defined.
        unsafe { self.0.inline[15] }
    }

    fn is_inline(&self) -> bool {
        self.tag() & INLINE_TAG != 0
    }

    /// The heap form's pointer and length; only when not inline.
    fn heap_parts(&self) -> (*mut u8, usize) {
        // SAFETY: called only when the tag says heap, i.e. `self.0.heap` was written.
        let heap = unsafe { self.0.heap };
        let mut len = [0u8; 8];
        len[..7].copy_from_slice(&heap.len);
        (heap.ptr, u64::from_le_bytes(len) as usize)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        if self.is_inline() {
            // SAFETY: the inline form was written by `from_box`: all 16 bytes initialised.
            let bytes = unsafe { &self.0.inline };
            let len = usize::from(self.tag() & !INLINE_TAG);
            // SAFETY: the first `len` bytes were copied whole from a `str` (`from_box`,
            // `From<&str>`) and are never written again: valid UTF-8. (Checking it
            // on every access was 1% of the CPU profile: ids are read per event.)
            unsafe { std::str::from_utf8_unchecked(&bytes[..len]) }
        } else {
            let (ptr, len) = self.heap_parts();
            // SAFETY: `ptr` and `len` come from `Box::into_raw` of a `Box<str>` in
            // `from_box`, which this value owns until `drop`: `len` valid UTF-8 bytes,
            // alive and not mutated for as long as `self` is borrowed.
            unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(ptr, len)) }
        }
    }

    /// Whether the text is on the heap (tests and sizing).
    pub fn is_on_heap(&self) -> bool {
        !self.is_inline()
    }
}

impl Drop for CompactStr {
    fn drop(&mut self) {
        if !self.is_inline() {
            let (ptr, len) = self.heap_parts();
            // SAFETY: the pointer and length of the `Box<str>` leaked in `from_box`,
            // owned by this value alone and dropped exactly once (here).
            drop(unsafe {
                Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len) as *mut str)
            });
        }
    }
}

impl Clone for CompactStr {
    fn clone(&self) -> Self {
        if self.is_inline() {
            // SAFETY: inline: plain bytes, all initialised.
            CompactStr(Repr {
                inline: unsafe { self.0.inline },
            })
        } else {
            CompactStr::from_box(Box::from(self.as_str()))
        }
    }
}

impl From<Box<str>> for CompactStr {
    fn from(text: Box<str>) -> Self {
        CompactStr::from_box(text)
    }
}

impl From<&str> for CompactStr {
    fn from(text: &str) -> Self {
        if text.len() <= INLINE_CAPACITY {
            let mut inline = [0u8; 16];
            inline[..text.len()].copy_from_slice(text.as_bytes());
            inline[15] = INLINE_TAG | text.len() as u8;
            CompactStr(Repr { inline })
        } else {
            CompactStr::from_box(Box::from(text))
        }
    }
}

impl std::ops::Deref for CompactStr {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for CompactStr {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for CompactStr {}

impl PartialOrd for CompactStr {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for CompactStr {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for CompactStr {
    /// Exactly as `str` (and so `Box<str>`) hashes: de-duplication fingerprints
    /// and anything else keyed by a hash of an id stay the same.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for CompactStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for CompactStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for CompactStr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for CompactStr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<str>::deserialize(deserializer).map(CompactStr::from_box)
    }
}

/// An event time in 48 bits: milliseconds since the epoch, two's complement,
/// stored as three 16-bit parts so that it is 6 bytes aligned to 2; the top
/// part, sign bit flipped, is never zero, which gives `Option<CompactTime>`
/// its `None` for free.
///
/// It holds exactly every instant from [`CompactTime::MIN`] (year −2489) to
/// [`CompactTime::MAX`] (year 6429), which covers every RFC 3339 timestamp an
/// event may carry (events are at most `max_future_skew` after the wall
/// clock). An instant outside that range is stored as the nearest end of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CompactTime {
    low: [u16; 2],
    /// Bits 32..48 with bit 47 (the sign) flipped: zero only for the 2^32 ms
    /// below `MIN`, which are clamped away.
    high: NonZeroU16,
}

const _: () = assert!(std::mem::size_of::<CompactTime>() == 6);
const _: () = assert!(std::mem::size_of::<Option<CompactTime>>() == 6);

impl CompactTime {
    /// Earliest instant held exactly, ms (−2^47 + 2^32, in the year −2489).
    pub const MIN: i64 = -(1 << 47) + (1 << 32);
    /// Latest instant held exactly, ms (2^47 − 1, in the year 6429).
    pub const MAX: i64 = (1 << 47) - 1;

    /// Packs `at`, clamped to [`Self::MIN`]..=[`Self::MAX`].
    pub fn new(at: EventTime) -> Self {
        let bits = at.millis().clamp(Self::MIN, Self::MAX) as u64;
        let high = ((bits >> 32) as u16) ^ 0x8000;
        CompactTime {
            low: [bits as u16, (bits >> 16) as u16],
            // Never 0: that would be a time below MIN, which the clamp excludes.
            high: NonZeroU16::new(high).unwrap_or(NonZeroU16::MIN),
        }
    }

    /// The instant.
    pub fn get(self) -> EventTime {
        let bits = u64::from(self.high.get() ^ 0x8000) << 32
            | u64::from(self.low[1]) << 16
            | u64::from(self.low[0]);
        // Sign-extend the 48 bits.
        EventTime::from_millis(((bits << 16) as i64) >> 16)
    }
}

impl From<EventTime> for CompactTime {
    fn from(at: EventTime) -> Self {
        CompactTime::new(at)
    }
}

impl fmt::Debug for CompactTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.get(), f)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn compact_time_round_trips_its_range_and_clamps_outside_it() {
        for millis in [
            0,
            1,
            -1,
            1_764_000_000_000,
            -62_135_596_800_000, // 0001-01-01
            253_402_300_799_999, // 9999-12-31, beyond MAX: clamped
            CompactTime::MIN,
            CompactTime::MIN - 1,
            CompactTime::MAX,
            CompactTime::MAX + 1,
            i64::MIN / 4,
            i64::MAX,
        ] {
            let at = EventTime::from_millis(millis);
            let expected = millis.clamp(CompactTime::MIN, CompactTime::MAX);
            assert_eq!(CompactTime::new(at).get().millis(), expected, "{millis}");
            assert!(Some(CompactTime::new(at)).is_some());
        }
        for shift in 0..47 {
            for millis in [1i64 << shift, -(1i64 << shift), (1i64 << shift) - 1] {
                let at = EventTime::from_millis(millis);
                assert_eq!(CompactTime::new(at).get(), at, "{millis}");
            }
        }
    }

    #[test]
    fn compact_time_keeps_order_and_equality() {
        let times = [-5_000i64, -1, 0, 1, 1_764_000_000_000, CompactTime::MAX];
        for a in times {
            for b in times {
                let (x, y) = (
                    CompactTime::new(EventTime::from_millis(a)),
                    CompactTime::new(EventTime::from_millis(b)),
                );
                assert_eq!(x == y, a == b);
                assert_eq!(x.get() < y.get(), a < b);
            }
        }
    }

    use super::*;
    use std::hash::BuildHasher;

    fn texts() -> Vec<String> {
        let mut texts: Vec<String> = (0..=40).map(|len| "x".repeat(len)).collect();
        texts.extend(
            [
                "cust-0001234",
                "tkt-0000000123",
                "é€𝄞abcdefghij",
                "123456789012345",
                "1234567890123456",
            ]
            .map(String::from),
        );
        texts.push("ü".repeat(64));
        texts
    }

    #[test]
    fn is_16_bytes_and_holds_short_strings_inline() {
        assert_eq!(std::mem::size_of::<CompactStr>(), 16);
        assert_eq!(std::mem::size_of::<Box<str>>(), 16);
        for text in texts() {
            let compact = CompactStr::from(text.clone().into_boxed_str());
            assert_eq!(compact.as_str(), text);
            assert_eq!(compact.is_on_heap(), text.len() > INLINE_CAPACITY, "{text}");
            let borrowed = CompactStr::from(text.as_str());
            assert_eq!(borrowed.as_str(), text);
            assert_eq!(borrowed.is_on_heap(), compact.is_on_heap());
        }
    }

    #[test]
    fn behaves_like_the_boxed_str_it_replaces() {
        let hasher = std::hash::RandomState::new();
        let texts = texts();
        for a in &texts {
            let (compact, boxed) = (CompactStr::from(a.as_str()), Box::<str>::from(a.as_str()));
            assert_eq!(hasher.hash_one(&compact), hasher.hash_one(&boxed));
            assert_eq!(format!("{compact:?}"), format!("{boxed:?}"));
            assert_eq!(compact.to_string(), boxed.to_string());
            let cloned = compact.clone();
            drop(compact);
            assert_eq!(cloned.as_str(), a);
            for b in &texts {
                let other = CompactStr::from(b.as_str());
                assert_eq!(cloned.cmp(&other), a.cmp(b));
                assert_eq!(cloned == other, a == b);
            }
        }
        let json = serde_json::to_string(&CompactStr::from("cust-1")).unwrap();
        assert_eq!(json, r#""cust-1""#);
        let back: CompactStr = serde_json::from_str(r#""a-rather-long-customer-id""#).unwrap();
        assert_eq!(back.as_str(), "a-rather-long-customer-id");
    }
}
