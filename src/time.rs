//! Instants: [`EventTime`], the one time type of events, state and outputs.
//!
//! A module of its own, depending on no other: `compact` packs it into
//! `CompactTime` and `event`'s ids are `CompactStr`s, so `event` and `compact`
//! both build on it without depending on each other. (`event` re-exports it.)

use std::fmt;
use std::num::NonZeroU64;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant in UTC, as milliseconds since the Unix epoch.
///
/// Held as a non-zero `u64` (the milliseconds with the sign bit flipped, which
/// keeps the order) so that `Option<EventTime>` takes 8 bytes like
/// `EventTime`: profiles and tickets hold many optional times. The one value
/// this leaves out, `i64::MIN` ms, reads as `i64::MIN + 1` (both are 292
/// million years before any event).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTime(NonZeroU64);

const SIGN: u64 = 1 << 63;

impl EventTime {
    /// The earliest representable instant; the watermark of a task that saw nothing.
    pub const MIN: EventTime = EventTime::from_millis(i64::MIN / 4);

    /// Builds an instant from milliseconds since the epoch.
    pub const fn from_millis(millis: i64) -> Self {
        match NonZeroU64::new((millis as u64) ^ SIGN) {
            Some(value) => EventTime(value),
            None => EventTime(NonZeroU64::MIN),
        }
    }

    /// Milliseconds since the epoch.
    pub const fn millis(self) -> i64 {
        (self.0.get() ^ SIGN) as i64
    }

    /// The wall clock now.
    pub fn now() -> Self {
        EventTime::from_millis(Utc::now().timestamp_millis())
    }

    /// This instant moved by `millis` (saturating).
    pub fn plus_millis(self, millis: i64) -> Self {
        EventTime::from_millis(self.millis().saturating_add(millis))
    }

    /// Parses an RFC 3339 timestamp with any offset.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|time| EventTime::from_millis(time.timestamp_millis()))
    }

    /// Formats as RFC 3339 in UTC with millisecond precision (`2026-01-02T03:04:05.678Z`).
    pub fn to_rfc3339(self) -> String {
        match self.rfc3339_bytes() {
            // The bytes are ASCII digits and separators.
            Some(text) => String::from_utf8(text.to_vec()).unwrap_or_default(),
            None => self.to_rfc3339_by_chrono(),
        }
    }

    /// Appends [`to_rfc3339`](Self::to_rfc3339)'s text to `out`, without allocating.
    pub fn write_rfc3339(self, out: &mut Vec<u8>) {
        match self.rfc3339_bytes() {
            Some(text) => out.extend_from_slice(&text),
            None => out.extend_from_slice(self.to_rfc3339_by_chrono().as_bytes()),
        }
    }

    /// The RFC 3339 text of a four-digit year, on the stack: every output record
    /// carries several of these, so they are formatted by hand (chrono's
    /// formatter showed in the profile) without allocating.
    fn rfc3339_bytes(self) -> Option<[u8; 24]> {
        let (days, in_day) = (
            self.millis().div_euclid(86_400_000),
            self.millis().rem_euclid(86_400_000),
        );
        let (year, month, day) = civil_from_days(days);
        if !(0..=9999).contains(&year) {
            return None;
        }
        // Fixed positions, two digits at a time: a loop over powers of ten with a
        // division per digit showed in the profile (a profile carries eleven times).
        let mut text = *b"0000-00-00T00:00:00.000Z";
        let two = |text: &mut [u8; 24], at: usize, value: i64| {
            text[at] = b'0' + (value / 10) as u8;
            text[at + 1] = b'0' + (value % 10) as u8;
        };
        two(&mut text, 0, year / 100);
        two(&mut text, 2, year % 100);
        two(&mut text, 5, month);
        two(&mut text, 8, day);
        two(&mut text, 11, in_day / 3_600_000);
        two(&mut text, 14, in_day / 60_000 % 60);
        two(&mut text, 17, in_day / 1000 % 60);
        let millis = in_day % 1000;
        text[20] = b'0' + (millis / 100) as u8;
        two(&mut text, 21, millis % 100);
        Some(text)
    }

    /// Years outside 0-9999 (RFC 3339 has none; chrono writes them signed).
    fn to_rfc3339_by_chrono(self) -> String {
        match DateTime::<Utc>::from_timestamp_millis(self.millis()) {
            Some(time) => time.to_rfc3339_opts(SecondsFormat::Millis, true),
            None => String::from("invalid-time"),
        }
    }
}

/// (year, month, day) of the proleptic Gregorian calendar for days since
/// 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Default for EventTime {
    fn default() -> Self {
        EventTime::from_millis(0)
    }
}

impl fmt::Debug for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EventTime").field(&self.millis()).finish()
    }
}

impl Serialize for EventTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.millis())
    }
}

impl<'de> Deserialize<'de> for EventTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        i64::deserialize(deserializer).map(EventTime::from_millis)
    }
}

/// RFC 3339, as [`EventTime::to_rfc3339`]; serialisers write it without allocating.
impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rfc3339_bytes() {
            Some(text) => f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?),
            None => f.write_str(&self.to_rfc3339_by_chrono()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_in_utc_with_offsets_normalised() {
        let time = EventTime::parse_rfc3339("2026-03-01T10:00:00.250+02:00").unwrap();
        assert_eq!(time.to_rfc3339(), "2026-03-01T08:00:00.250Z");
        assert_eq!(EventTime::parse_rfc3339("2026-03-01 10:00"), None);
    }

    #[test]
    fn rfc3339_formatting_equals_chrono_everywhere() {
        let chrono = |millis: i64| {
            DateTime::<Utc>::from_timestamp_millis(millis)
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::Millis, true)
        };
        // Every day from 1600 to 2400 (leap years and centuries), at varied times of day,
        // then the edges of the four-digit years and beyond them.
        let (first, last) = (-11_676_096_000_000_i64, 13_569_465_600_000_i64);
        let mut millis = first;
        while millis < last {
            assert_eq!(
                EventTime::from_millis(millis).to_rfc3339(),
                chrono(millis),
                "{millis}"
            );
            millis += 86_400_000 + 3_723_457;
        }
        for millis in [
            0,
            -1,
            -62_167_219_200_000,
            -62_167_219_200_001,
            253_402_300_799_999,
            253_402_300_800_000,
        ] {
            assert_eq!(
                EventTime::from_millis(millis).to_rfc3339(),
                chrono(millis),
                "{millis}"
            );
        }
    }
}
