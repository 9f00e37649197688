//! The machinery behind the declarations in [`super::record`]: the
//! [`output_record!`] macro, which turns one declaration into a view, its
//! JSON writer and its Protobuf message, and the [`Field`] types a record is
//! made of, each saying once how its value is written to JSON and what
//! Protobuf field it becomes.
//!
//! A record's JSON is the bytes serde_json makes of its Protobuf message
//! (`build.rs` derives `serde::Serialize` on them), written from the view
//! directly: no owned message is built first (a dozen string copies per
//! record), field names are written as they are, and a string is copied whole
//! when it needs no escape.

use std::collections::BTreeMap;

use super::json::{self, Object};
use crate::event::{Currency, EventTime};

/// Money per currency, in code order: a JSON object, a Protobuf
/// `map<string, int64>`.
pub(super) type Money = BTreeMap<Currency, i64>;

/// An output record declared with [`output_record!`]: written to JSON or
/// converted to its Protobuf message from the same fields.
pub(super) trait Record {
    /// The prost-generated message.
    type Message;
    /// Appends the record as one JSON object to `out`.
    fn write_json(&self, out: &mut Vec<u8>);
    /// The Protobuf message, equal to the JSON written by [`Record::write_json`].
    fn to_message(&self) -> Self::Message;
}

/// The type of a field of an output record.
pub(super) trait Field {
    /// The type prost generates for the field.
    type Proto;
    /// Writes `"name":value` as the next member of `object`, or nothing when
    /// the field is left out. Implementations are `#[inline(always)]`, so that
    /// the record's writer sees each name as a constant (a call and a copy of
    /// unknown length per field cost a tenth of a record's time).
    fn write_field(&self, object: &mut Object<'_>, name: &'static str);
    /// The field's value in the Protobuf message.
    fn to_proto(&self) -> Self::Proto;
}

/// Declares an output record once; see [`super::record`] for the syntax.
///
/// It generates the view struct (the fields, in message order), `new` (each
/// field's value from the arguments, through `Into`), and [`Record`] and
/// [`Field`] (a record can be a field of another) for it. The JSON name of a
/// field is its name without `r#`, as serde writes the message's field.
macro_rules! output_record {
    (
        $(#[$doc:meta])*
        $name:ident<$lt:lifetime> => $message:path,
        from($($arg:ident: $arg_ty:ty),* $(,)?) {
            $(let $bound:ident = $bound_value:expr;)*
        }
        fields {
            $($(#[$field_doc:meta])* $field:ident: $ty:ty = $value:expr),* $(,)?
        }
    ) => {
        $(#[$doc])*
        pub(super) struct $name<$lt> {
            $($(#[$field_doc])* $field: $ty,)*
        }

        impl<$lt> $name<$lt> {
            /// The record's view of its sources.
            pub(super) fn new($($arg: $arg_ty),*) -> Self {
                $(let $bound = $bound_value;)*
                $name {
                    $($field: ::core::convert::Into::into($value),)*
                }
            }
        }

        impl $crate::output::field::Record for $name<'_> {
            type Message = $message;

            fn write_json(&self, out: &mut Vec<u8>) {
                let mut object = $crate::output::json::Object::begin(out);
                $($crate::output::field::Field::write_field(
                    &self.$field,
                    &mut object,
                    const { $crate::output::field::json_name(stringify!($field)) },
                );)*
                object.end();
            }

            fn to_message(&self) -> $message {
                $message {
                    $($field: $crate::output::field::Field::to_proto(&self.$field),)*
                }
            }
        }

        impl $crate::output::field::Field for $name<'_> {
            type Proto = Option<$message>;

            #[inline(always)]
            fn write_field(
                &self,
                object: &mut $crate::output::json::Object<'_>,
                name: &'static str,
            ) {
                $crate::output::field::Record::write_json(self, object.name(name));
            }

            fn to_proto(&self) -> Option<$message> {
                Some($crate::output::field::Record::to_message(self))
            }
        }
    };
}
pub(super) use output_record;

/// The JSON name of a field named `field` in Rust: without the `r#` of a raw
/// identifier (`r#type` is `"type"`).
pub(super) const fn json_name(field: &'static str) -> &'static str {
    match field.as_bytes() {
        [b'r', b'#', name @ ..] => match std::str::from_utf8(name) {
            Ok(name) => name,
            Err(_) => field,
        },
        _ => field,
    }
}

/// An optional field left out of the JSON when it has no value, rather than
/// written as `null` (serde's `skip_serializing_if = "Option::is_none"`,
/// which `build.rs` sets on these fields of the message).
pub(super) struct OmitNone<T>(Option<T>);

impl<T> From<Option<T>> for OmitNone<T> {
    fn from(value: Option<T>) -> Self {
        OmitNone(value)
    }
}

impl<T: Field> Field for OmitNone<T> {
    type Proto = Option<T::Proto>;

    #[inline(always)]
    fn write_field(&self, object: &mut Object<'_>, name: &'static str) {
        if let Some(value) = &self.0 {
            value.write_field(object, name);
        }
    }

    fn to_proto(&self) -> Self::Proto {
        self.0.as_ref().map(Field::to_proto)
    }
}

/// A Protobuf `optional` field: `null` in JSON when it has no value.
impl<T: Field> Field for Option<T> {
    type Proto = Option<T::Proto>;

    #[inline(always)]
    fn write_field(&self, object: &mut Object<'_>, name: &'static str) {
        match self {
            Some(value) => value.write_field(object, name),
            None => json::null(object.name(name)),
        }
    }

    fn to_proto(&self) -> Self::Proto {
        self.as_ref().map(Field::to_proto)
    }
}

/// A `string`.
impl Field for &str {
    type Proto = String;

    #[inline(always)]
    fn write_field(&self, object: &mut Object<'_>, name: &'static str) {
        json::string(object.name(name), self);
    }

    fn to_proto(&self) -> String {
        (*self).to_owned()
    }
}

/// A time: a `string` in RFC 3339 UTC with milliseconds.
impl Field for EventTime {
    type Proto = String;

    #[inline(always)]
    fn write_field(&self, object: &mut Object<'_>, name: &'static str) {
        json::time(object.name(name), *self);
    }

    fn to_proto(&self) -> String {
        self.to_rfc3339()
    }
}

/// Numbers, whose Protobuf field has the Rust type of the value.
macro_rules! number_fields {
    ($($(#[$doc:meta])* $ty:ty => $write:path;)*) => {$(
        $(#[$doc])*
        impl Field for $ty {
            type Proto = $ty;

            #[inline(always)]
    fn write_field(&self, object: &mut Object<'_>, name: &'static str) {
                $write(object.name(name), (*self).into());
            }

            fn to_proto(&self) -> $ty {
                *self
            }
        }
    )*};
}

number_fields! {
    /// A `uint64`.
    u64 => json::unsigned;
    /// An `int64`.
    i64 => json::int;
    /// An `int32`.
    i32 => json::int;
    /// A `double`: `null` in JSON when not finite, as serde_json writes it.
    f64 => json::float;
}

/// A `map<string, int64>` of currency codes.
impl Field for Money {
    type Proto = BTreeMap<String, i64>;

    #[inline(always)]
    fn write_field(&self, object: &mut Object<'_>, name: &'static str) {
        json::money(object.name(name), self);
    }

    fn to_proto(&self) -> Self::Proto {
        self.iter()
            .map(|(currency, amount)| (currency.to_string(), *amount))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_field_names_are_written_without_their_prefix() {
        assert_eq!(json_name("r#type"), "type");
        assert_eq!(json_name("customer_id"), "customer_id");
        assert_eq!(json_name("r"), "r");
    }
}
