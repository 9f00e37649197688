//! The small JSON writer of the records written per event and per flush
//! (`cx.enriched`, `cx.signals`, `cx.profiles` and the HTTP API's profile):
//! objects, names and values written straight into the record's buffer, each
//! value exactly as serde_json writes it. What fields a record has is
//! declared in [`super::record`]; how each field type uses this writer, in
//! [`super::field`].
//!
//! Names are written as they are (serde_json tests every byte of every name
//! against its escape table), and a string is copied whole when it needs no
//! escape.

use std::collections::BTreeMap;

use serde_json::ser::{CompactFormatter, Formatter};

use crate::event::{Currency, EventTime};

/// A JSON object being written member by member, as serde_json writes a struct.
pub(super) struct Object<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Object<'a> {
    /// Opens an object at the end of `out`.
    pub(super) fn begin(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, empty: true }
    }

    /// Writes the next member's name (a Rust identifier, which JSON never
    /// escapes) and returns where its value goes.
    // Inlined into each field's writer, where the name's length is known: a
    // call here and a copy of unknown length cost a tenth of a record.
    #[inline(always)]
    pub(super) fn name(&mut self, name: &'static str) -> &mut Vec<u8> {
        debug_assert!(name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_'));
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    /// Closes the object.
    pub(super) fn end(self) {
        self.out.push(b'}');
    }
}

/// `null`.
pub(super) fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"null");
}

/// A signed integer.
pub(super) fn int(out: &mut Vec<u8>, value: i64) {
    // Writing to a Vec cannot fail.
    let _ = CompactFormatter.write_i64(out, value);
}

/// An unsigned integer.
pub(super) fn unsigned(out: &mut Vec<u8>, value: u64) {
    let _ = CompactFormatter.write_u64(out, value);
}

/// A float; as serde_json, a NaN or an infinity is `null`.
pub(super) fn float(out: &mut Vec<u8>, value: f64) {
    if value.is_finite() {
        let _ = CompactFormatter.write_f64(out, value);
    } else {
        null(out);
    }
}

/// A time as an RFC 3339 string.
pub(super) fn time(out: &mut Vec<u8>, value: EventTime) {
    // Digits, '-', ':', 'T', '.' and 'Z': nothing to escape.
    out.push(b'"');
    value.write_rfc3339(out);
    out.push(b'"');
}

/// Amounts per currency as an object keyed by currency code.
pub(super) fn money(out: &mut Vec<u8>, totals: &BTreeMap<Currency, i64>) {
    out.push(b'{');
    for (at, (currency, amount)) in totals.iter().enumerate() {
        if at > 0 {
            out.push(b',');
        }
        // Three upper-case letters: a name that needs no escape either.
        string(out, currency.as_str());
        out.push(b':');
        int(out, *amount);
    }
    out.push(b'}');
}

/// `value` as a JSON string, escaped exactly as serde_json escapes it.
pub(super) fn string(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    let bytes = value.as_bytes();
    // One pass without branches per byte (it vectorises); escapes are rare.
    let plain = bytes.iter().fold(true, |plain, &byte| {
        plain & (byte >= 0x20 && byte != b'"' && byte != b'\\')
    });
    if plain {
        out.extend_from_slice(bytes);
    } else {
        let mut start = 0;
        for (at, &byte) in bytes.iter().enumerate() {
            let escape: &[u8] = match byte {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                0x08 => b"\\b",
                0x0c => b"\\f",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x00..=0x1f => {
                    out.extend_from_slice(&bytes[start..at]);
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[usize::from(byte >> 4)]);
                    out.push(HEX[usize::from(byte & 0xf)]);
                    start = at + 1;
                    continue;
                }
                _ => continue,
            };
            out.extend_from_slice(&bytes[start..at]);
            out.extend_from_slice(escape);
            start = at + 1;
        }
        out.extend_from_slice(&bytes[start..]);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte value, alone and inside text, escapes as serde_json escapes it.
    #[test]
    fn strings_escape_as_serde_json_does() {
        let mut texts: Vec<String> = (0u8..=127)
            .map(|byte| char::from(byte).to_string())
            .collect();
        texts.extend(
            [
                "",
                "plain",
                "a\"b\\c\nd\u{1}e\u{7f}",
                "caf\u{e9} \u{1F600}",
                "\t\r\u{8}\u{c}",
            ]
            .map(String::from),
        );
        for text in texts {
            let mut ours = Vec::new();
            string(&mut ours, &text);
            assert_eq!(ours, serde_json::to_vec(&text).unwrap(), "{text:?}");
        }
    }
}
