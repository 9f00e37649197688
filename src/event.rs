//! Typed, validated input events: what `decode` produces and `task` consumes.
//!
//! Every value here already passed the rules of SPEC section 1, so the rest of
//! the pipeline never re-checks ids, scores, money or times.

use std::fmt;
use std::num::NonZeroU64;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::compact::CompactStr;

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

macro_rules! string_id {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        ///
        /// A [`CompactStr`]: 16 bytes, the text inline up to 15 bytes (a task
        /// holds millions of customer and ticket ids).
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(CompactStr);

        impl $name {
            /// Wraps a value that already passed validation (a short one is
            /// copied inline; a long one's box is kept, not copied).
            pub fn new(value: impl AsRef<str> + Into<Box<str>>) -> Self {
                if value.as_ref().len() <= crate::compact::INLINE_CAPACITY {
                    $name(CompactStr::from(value.as_ref()))
                } else {
                    $name(CompactStr::from_box(value.into()))
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}

string_id!(
    /// The customer an event belongs to; also the record key.
    CustomerId,
    /// The producer's unique id of an event, used for de-duplication.
    EventId,
    /// An order id.
    OrderId,
    /// A support ticket id.
    TicketId,
    /// A survey id.
    SurveyId,
);

/// An ISO 4217 currency code: three upper-case ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses a code; `None` unless it is exactly three upper-case letters.
    pub fn parse(code: &str) -> Option<Self> {
        let bytes: [u8; 3] = code.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(u8::is_ascii_uppercase)
            .then_some(Currency(bytes))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Currency::parse(&code)
            .ok_or_else(|| serde::de::Error::custom(format!("bad currency {code:?}")))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount of money in integer minor units (cents), never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MinorUnits(pub i64);

/// A non-negative amount in one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    /// Minor units, >= 0.
    pub amount: MinorUnits,
    /// The currency of `amount`.
    pub currency: Currency,
}

/// Which input topic a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// `cx.purchases`
    Purchases,
    /// `cx.tickets`
    Tickets,
    /// `cx.surveys`
    Surveys,
}

impl Source {
    /// All input sources, in the order of a task's partitions.
    pub const ALL: [Source; 3] = [Source::Purchases, Source::Tickets, Source::Surveys];

    /// Index of this source within a task (0..3).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Stable lower-case name, used in logs and labels.
    pub fn name(self) -> &'static str {
        match self {
            Source::Purchases => "purchases",
            Source::Tickets => "tickets",
            Source::Surveys => "surveys",
        }
    }
}

/// A validated event: common fields plus the kind-specific body.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Producer's event id.
    pub event_id: EventId,
    /// Owner of the event.
    pub customer_id: CustomerId,
    /// Event time.
    pub occurred_at: EventTime,
    /// What happened.
    pub body: EventBody,
}

/// The kind-specific part of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    /// From `cx.purchases`.
    Purchase(Purchase),
    /// From `cx.tickets`.
    Ticket(TicketEvent),
    /// From `cx.surveys`.
    Survey(Survey),
}

impl Event {
    /// The input topic this kind of event belongs to.
    pub fn source(&self) -> Source {
        match self.body {
            EventBody::Purchase(_) => Source::Purchases,
            EventBody::Ticket(_) => Source::Tickets,
            EventBody::Survey(_) => Source::Surveys,
        }
    }

    /// A stable dotted name of the event type, e.g. `purchase.placed`.
    pub fn type_name(&self) -> &'static str {
        self.type_names().0
    }

    /// The CloudEvents `ce_type` of its `cx.enriched` record:
    /// `io.cxpulse.enriched.{type}.v1`, written out so that no record formats it.
    pub fn enriched_ce_type(&self) -> &'static str {
        self.type_names().1
    }

    /// (type, enriched `ce_type`), from one match so that the two cannot disagree.
    fn type_names(&self) -> (&'static str, &'static str) {
        match &self.body {
            EventBody::Purchase(purchase) => match purchase.action {
                PurchaseAction::Placed { .. } => {
                    ("purchase.placed", "io.cxpulse.enriched.purchase.placed.v1")
                }
                PurchaseAction::Fulfilled { .. } => (
                    "purchase.fulfilled",
                    "io.cxpulse.enriched.purchase.fulfilled.v1",
                ),
                PurchaseAction::Returned { .. } => (
                    "purchase.returned",
                    "io.cxpulse.enriched.purchase.returned.v1",
                ),
            },
            EventBody::Ticket(ticket) => match ticket.action {
                TicketAction::Opened { .. } => {
                    ("ticket.opened", "io.cxpulse.enriched.ticket.opened.v1")
                }
                TicketAction::AgentReplied => (
                    "ticket.agent_replied",
                    "io.cxpulse.enriched.ticket.agent_replied.v1",
                ),
                TicketAction::CustomerReplied => (
                    "ticket.customer_replied",
                    "io.cxpulse.enriched.ticket.customer_replied.v1",
                ),
                TicketAction::Resolved => {
                    ("ticket.resolved", "io.cxpulse.enriched.ticket.resolved.v1")
                }
                TicketAction::Reopened => {
                    ("ticket.reopened", "io.cxpulse.enriched.ticket.reopened.v1")
                }
            },
            EventBody::Survey(survey) => match survey.response {
                SurveyResponse::Nps { .. } => ("survey.nps", "io.cxpulse.enriched.survey.nps.v1"),
                SurveyResponse::Csat { .. } => {
                    ("survey.csat", "io.cxpulse.enriched.survey.csat.v1")
                }
                SurveyResponse::Ces { .. } => ("survey.ces", "io.cxpulse.enriched.survey.ces.v1"),
            },
        }
    }
}

/// A purchase event.
#[derive(Debug, Clone, PartialEq)]
pub struct Purchase {
    /// The order.
    pub order_id: OrderId,
    /// What happened to it, with the fields each action requires.
    pub action: PurchaseAction,
    /// Number of items, when given.
    pub items: Option<u32>,
    /// Sales channel, when given.
    pub channel: Option<String>,
}

/// What happened to an order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PurchaseAction {
    /// The order was placed for this amount.
    Placed {
        /// Order value.
        amount: Money,
    },
    /// The order shipped.
    Fulfilled {
        /// The whole order shipped in its first shipment.
        complete_first_shipment: bool,
    },
    /// Goods were returned for this amount.
    Returned {
        /// Refunded value.
        amount: Money,
    },
}

/// A ticket event.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketEvent {
    /// The ticket.
    pub ticket_id: TicketId,
    /// What happened to it.
    pub action: TicketAction,
}

/// What happened to a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketAction {
    /// The customer opened the ticket.
    Opened {
        /// Where it was opened.
        channel: Channel,
        /// Priority, when given.
        priority: Option<Priority>,
    },
    /// An agent answered.
    AgentReplied,
    /// The customer wrote again.
    CustomerReplied,
    /// The ticket was resolved.
    Resolved,
    /// A resolved ticket was opened again.
    Reopened,
}

/// Support channel of a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// E-mail.
    Email,
    /// Live chat.
    Chat,
    /// Phone.
    Phone,
    /// Social media.
    Social,
    /// Web form.
    Web,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 5] = [
        Channel::Email,
        Channel::Chat,
        Channel::Phone,
        Channel::Social,
        Channel::Web,
    ];

    /// The SPEC's lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Chat => "chat",
            Channel::Phone => "phone",
            Channel::Social => "social",
            Channel::Web => "web",
        }
    }

    /// Parses the SPEC's lower-case name.
    pub fn parse(name: &str) -> Option<Self> {
        Channel::ALL
            .into_iter()
            .find(|channel| channel.name() == name)
    }
}

/// Ticket priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Low.
    Low,
    /// Normal.
    Normal,
    /// High.
    High,
    /// Urgent.
    Urgent,
}

impl Priority {
    /// Parses the SPEC's lower-case name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "low" => Some(Priority::Low),
            "normal" => Some(Priority::Normal),
            "high" => Some(Priority::High),
            "urgent" => Some(Priority::Urgent),
            _ => None,
        }
    }
}

/// A survey response.
#[derive(Debug, Clone, PartialEq)]
pub struct Survey {
    /// The survey.
    pub survey_id: SurveyId,
    /// The answer, valid for its kind and scale.
    pub response: SurveyResponse,
    /// Free text, at most 4 KiB.
    pub comment: Option<String>,
    /// Ticket the survey was about, when given.
    pub ticket_id: Option<TicketId>,
    /// Order the survey was about, when given.
    pub order_id: Option<OrderId>,
}

/// A validated survey answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SurveyResponse {
    /// Net Promoter Score, 0..=10.
    Nps {
        /// The score.
        score: u8,
    },
    /// Customer satisfaction, 1..=scale_max.
    Csat {
        /// The score.
        score: u8,
        /// 3, 5, 7 or 10.
        scale_max: u8,
    },
    /// Customer effort, 1..=scale_max.
    Ces {
        /// The score.
        score: u8,
        /// 5 or 7.
        scale_max: u8,
    },
}

/// NPS category of a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NpsCategory {
    /// 9-10.
    Promoter,
    /// 7-8.
    Passive,
    /// 0-6.
    Detractor,
}

impl NpsCategory {
    /// Every category.
    pub const ALL: [NpsCategory; 3] = [
        NpsCategory::Promoter,
        NpsCategory::Passive,
        NpsCategory::Detractor,
    ];

    /// The category of an NPS score.
    pub fn of(score: u8) -> Self {
        match score {
            9.. => NpsCategory::Promoter,
            7 | 8 => NpsCategory::Passive,
            _ => NpsCategory::Detractor,
        }
    }

    /// The SPEC's lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            NpsCategory::Promoter => "promoter",
            NpsCategory::Passive => "passive",
            NpsCategory::Detractor => "detractor",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_accepts_only_three_upper_case_letters() {
        assert_eq!(
            Currency::parse("EUR").map(|c| c.to_string()),
            Some("EUR".into())
        );
        for bad in ["eur", "EURO", "EU", "E1R", "", "ÉUR"] {
            assert_eq!(Currency::parse(bad), None, "{bad}");
        }
    }

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

    #[test]
    fn nps_categories_follow_the_spec() {
        let categories: Vec<_> = (0..=10).map(NpsCategory::of).collect();
        assert!(categories[..=6]
            .iter()
            .all(|c| *c == NpsCategory::Detractor));
        assert!(categories[7..=8].iter().all(|c| *c == NpsCategory::Passive));
        assert!(categories[9..].iter().all(|c| *c == NpsCategory::Promoter));
    }
}
