//! JSON values: one object per record, unknown fields ignored.

use super::{DecodeError, RawEvent};

/// Parses a JSON object into the loose [`RawEvent`] shape.
pub(super) fn parse(value: &[u8]) -> Result<RawEvent<'_>, DecodeError> {
    serde_json::from_slice(value).map_err(|error| DecodeError::MalformedJson(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_json_is_rejected_with_position() {
        let error = parse(b"{\"event_id\": ").unwrap_err();
        assert_eq!(error.reason(), "malformed_json");
        assert!(error.to_string().contains("line 1"), "{error}");
    }

    /// Plain strings are borrowed from the value; escaped ones are unescaped copies.
    #[test]
    fn strings_are_borrowed_unless_escaped() {
        let value = br#"{"event_id":"e-1","customer_id":"c\u00e9\"1","comment":"a\nb"}"#;
        let raw = parse(value).unwrap();
        let event_id = raw.event_id.unwrap();
        assert!(matches!(event_id.0, std::borrow::Cow::Borrowed("e-1")));
        assert_eq!(&*raw.customer_id.unwrap(), "c\u{e9}\"1");
        assert_eq!(raw.comment.unwrap().into_owned(), "a\nb");
        assert_eq!(
            parse(br#"{"event_id": 5}"#).unwrap_err().reason(),
            "malformed_json"
        );
    }

    #[test]
    fn wrong_types_are_malformed_json() {
        let error = parse(br#"{"score": "nine"}"#).unwrap_err();
        assert_eq!(error.reason(), "malformed_json");
        assert!(parse(b"[1,2]").is_err());
    }

    /// Hostile nesting is an error, not a stack overflow, at the top and inside a field.
    #[test]
    fn deep_nesting_is_rejected() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            parse(deep.as_bytes()).unwrap_err().reason(),
            "malformed_json"
        );
        let inside = format!(
            r#"{{"event_id":"e","score":{}1{}}}"#,
            "[".repeat(50_000),
            "]".repeat(50_000)
        );
        assert_eq!(
            parse(inside.as_bytes()).unwrap_err().reason(),
            "malformed_json"
        );
    }
}
