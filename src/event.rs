//! Typed, validated input events: what `decode` produces and `task` consumes.
//!
//! Every value here already passed the rules of SPEC section 1, so the rest of
//! the pipeline never re-checks ids, scores, money or times.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::compact::CompactStr;

/// An instant in UTC (defined in `time`, below `event` and `compact`).
pub use crate::time::EventTime;

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
    fn nps_categories_follow_the_spec() {
        let categories: Vec<_> = (0..=10).map(NpsCategory::of).collect();
        assert!(categories[..=6]
            .iter()
            .all(|c| *c == NpsCategory::Detractor));
        assert!(categories[7..=8].iter().all(|c| *c == NpsCategory::Passive));
        assert!(categories[9..].iter().all(|c| *c == NpsCategory::Promoter));
    }
}
