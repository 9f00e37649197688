//! What one event contributes to a window, and the additive counts a window holds.
//!
//! Only counts and sums are stored; ratios are derived when a result is
//! built, so results of several tasks and pods add up exactly.

use std::collections::BTreeMap;

use crate::event::{Currency, Money, NpsCategory};

/// Upper bounds (seconds) of the first-response buckets; the last bucket is `+Inf`.
pub const FIRST_RESPONSE_BOUNDS_SECONDS: [i64; 7] = [60, 300, 900, 1800, 3600, 14_400, 86_400];

/// A contribution to the window(s) containing its time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measure {
    /// An NPS answer.
    NpsResponse(NpsCategory),
    /// A CSAT answer; satisfied when score >= 0.8 × scale_max.
    CsatResponse {
        /// Whether the answer counts as satisfied.
        satisfied: bool,
    },
    /// A CES answer.
    CesResponse {
        /// The score.
        score: u8,
    },
    /// A ticket was opened.
    TicketOpened,
    /// A ticket's first agent reply.
    FirstResponse {
        /// Milliseconds since the ticket was opened.
        millis: i64,
    },
    /// A ticket was resolved.
    TicketResolved {
        /// Milliseconds since the ticket was opened.
        millis: i64,
        /// Exactly one agent reply before it and never reopened.
        first_contact: bool,
    },
    /// A ticket was reopened.
    TicketReopened,
    /// A ticket missed its first-response SLA (counted at `opened + threshold`).
    SlaBreach,
    /// An order was placed.
    OrderPlaced {
        /// Order value.
        amount: Money,
        /// The customer's first-ever order.
        first: bool,
        /// Milliseconds since the customer's previous order, for repeat purchases.
        gap_millis: Option<i64>,
    },
    /// Goods were returned.
    OrderReturned {
        /// Refunded value.
        amount: Money,
    },
    /// An order shipped.
    OrderFulfilled {
        /// The whole order shipped in its first shipment.
        complete_first_shipment: bool,
    },
}

/// NPS counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NpsCounts {
    /// Scores 9-10.
    pub promoters: u64,
    /// Scores 7-8.
    pub passives: u64,
    /// Scores 0-6.
    pub detractors: u64,
}

impl NpsCounts {
    /// All answers.
    pub fn responses(&self) -> u64 {
        self.promoters + self.passives + self.detractors
    }

    /// The count of one category.
    pub fn count(&self, category: NpsCategory) -> u64 {
        match category {
            NpsCategory::Promoter => self.promoters,
            NpsCategory::Passive => self.passives,
            NpsCategory::Detractor => self.detractors,
        }
    }
}

/// CSAT counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CsatCounts {
    /// All answers.
    pub responses: u64,
    /// Answers with score >= 0.8 × scale_max.
    pub satisfied: u64,
}

/// CES counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CesCounts {
    /// All answers.
    pub responses: u64,
    /// Sum of scores.
    pub score_sum: u64,
}

/// Ticket counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TicketCounts {
    /// Tickets opened.
    pub opened: u64,
    /// First agent replies.
    pub first_responses: u64,
    /// Sum of first-response times, ms.
    pub first_response_millis_sum: i64,
    /// First responses per bucket of [`FIRST_RESPONSE_BOUNDS_SECONDS`] (not cumulative); last is +Inf.
    pub first_response_buckets: [u64; 8],
    /// Resolutions.
    pub resolved: u64,
    /// Sum of resolution times, ms.
    pub resolution_millis_sum: i64,
    /// Resolutions with one agent reply and no reopening.
    pub first_contact_resolutions: u64,
    /// Reopenings.
    pub reopened: u64,
    /// SLA breaches.
    pub sla_breaches: u64,
}

/// Order counts; money per currency in minor units.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderCounts {
    /// Orders placed.
    pub placed: u64,
    /// Value placed per currency.
    pub revenue_minor: BTreeMap<Currency, i64>,
    /// Returns.
    pub returned: u64,
    /// Value returned per currency.
    pub returned_minor: BTreeMap<Currency, i64>,
    /// Fulfilments.
    pub fulfilled: u64,
    /// Fulfilments that shipped complete the first time.
    pub complete_first_shipment: u64,
    /// Customers whose first-ever order is in the window.
    pub new_customers: u64,
    /// Orders after a customer's first.
    pub repeat_purchases: u64,
    /// Sum of gaps before repeat purchases, ms.
    pub repeat_gap_millis_sum: i64,
}

/// The additive content of a window (or of one pane of it).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Aggregate {
    /// NPS group.
    pub nps: NpsCounts,
    /// CSAT group.
    pub csat: CsatCounts,
    /// CES group.
    pub ces: CesCounts,
    /// Tickets group.
    pub tickets: TicketCounts,
    /// Orders group.
    pub orders: OrderCounts,
}

fn add_money(totals: &mut BTreeMap<Currency, i64>, money: Money) {
    *totals.entry(money.currency).or_default() += money.amount.0;
}

fn merge_money(totals: &mut BTreeMap<Currency, i64>, other: &BTreeMap<Currency, i64>) {
    for (currency, amount) in other {
        *totals.entry(*currency).or_default() += amount;
    }
}

/// Index of the first-response bucket of a duration (a response counts where seconds <= bound).
pub fn first_response_bucket(millis: i64) -> usize {
    FIRST_RESPONSE_BOUNDS_SECONDS
        .iter()
        .position(|bound| millis <= bound * 1000)
        .unwrap_or(FIRST_RESPONSE_BOUNDS_SECONDS.len())
}

impl Aggregate {
    /// Adds one measure.
    pub fn add(&mut self, measure: &Measure) {
        match *measure {
            Measure::NpsResponse(category) => match category {
                NpsCategory::Promoter => self.nps.promoters += 1,
                NpsCategory::Passive => self.nps.passives += 1,
                NpsCategory::Detractor => self.nps.detractors += 1,
            },
            Measure::CsatResponse { satisfied } => {
                self.csat.responses += 1;
                self.csat.satisfied += u64::from(satisfied);
            }
            Measure::CesResponse { score } => {
                self.ces.responses += 1;
                self.ces.score_sum += u64::from(score);
            }
            Measure::TicketOpened => self.tickets.opened += 1,
            Measure::FirstResponse { millis } => {
                self.tickets.first_responses += 1;
                self.tickets.first_response_millis_sum += millis;
                self.tickets.first_response_buckets[first_response_bucket(millis)] += 1;
            }
            Measure::TicketResolved {
                millis,
                first_contact,
            } => {
                self.tickets.resolved += 1;
                self.tickets.resolution_millis_sum += millis;
                self.tickets.first_contact_resolutions += u64::from(first_contact);
            }
            Measure::TicketReopened => self.tickets.reopened += 1,
            Measure::SlaBreach => self.tickets.sla_breaches += 1,
            Measure::OrderPlaced {
                amount,
                first,
                gap_millis,
            } => {
                self.orders.placed += 1;
                add_money(&mut self.orders.revenue_minor, amount);
                self.orders.new_customers += u64::from(first);
                if let Some(gap) = gap_millis {
                    self.orders.repeat_purchases += 1;
                    self.orders.repeat_gap_millis_sum += gap;
                }
            }
            Measure::OrderReturned { amount } => {
                self.orders.returned += 1;
                add_money(&mut self.orders.returned_minor, amount);
            }
            Measure::OrderFulfilled {
                complete_first_shipment,
            } => {
                self.orders.fulfilled += 1;
                self.orders.complete_first_shipment += u64::from(complete_first_shipment);
            }
        }
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Aggregate) {
        let (nps, o) = (&mut self.nps, &other.nps);
        nps.promoters += o.promoters;
        nps.passives += o.passives;
        nps.detractors += o.detractors;
        self.csat.responses += other.csat.responses;
        self.csat.satisfied += other.csat.satisfied;
        self.ces.responses += other.ces.responses;
        self.ces.score_sum += other.ces.score_sum;
        let (t, o) = (&mut self.tickets, &other.tickets);
        t.opened += o.opened;
        t.first_responses += o.first_responses;
        t.first_response_millis_sum += o.first_response_millis_sum;
        for (bucket, count) in t
            .first_response_buckets
            .iter_mut()
            .zip(o.first_response_buckets)
        {
            *bucket += count;
        }
        t.resolved += o.resolved;
        t.resolution_millis_sum += o.resolution_millis_sum;
        t.first_contact_resolutions += o.first_contact_resolutions;
        t.reopened += o.reopened;
        t.sla_breaches += o.sla_breaches;
        let (r, o) = (&mut self.orders, &other.orders);
        r.placed += o.placed;
        merge_money(&mut r.revenue_minor, &o.revenue_minor);
        r.returned += o.returned;
        merge_money(&mut r.returned_minor, &o.returned_minor);
        r.fulfilled += o.fulfilled;
        r.complete_first_shipment += o.complete_first_shipment;
        r.new_customers += o.new_customers;
        r.repeat_purchases += o.repeat_purchases;
        r.repeat_gap_millis_sum += o.repeat_gap_millis_sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_include_their_upper_bound() {
        assert_eq!(first_response_bucket(0), 0);
        assert_eq!(first_response_bucket(60_000), 0);
        assert_eq!(first_response_bucket(60_001), 1);
        assert_eq!(first_response_bucket(86_400_000), 6);
        assert_eq!(first_response_bucket(86_400_001), 7);
    }

    #[test]
    fn merge_equals_adding_every_measure_once() {
        let eur = Currency::parse("EUR").unwrap();
        let money = Money {
            amount: crate::event::MinorUnits(250),
            currency: eur,
        };
        let measures = [
            Measure::NpsResponse(NpsCategory::Promoter),
            Measure::CsatResponse { satisfied: true },
            Measure::CesResponse { score: 3 },
            Measure::FirstResponse { millis: 70_000 },
            Measure::TicketResolved {
                millis: 5,
                first_contact: true,
            },
            Measure::OrderPlaced {
                amount: money,
                first: false,
                gap_millis: Some(9),
            },
            Measure::OrderReturned { amount: money },
            Measure::OrderFulfilled {
                complete_first_shipment: true,
            },
        ];
        let mut all = Aggregate::default();
        let (mut left, mut right) = (Aggregate::default(), Aggregate::default());
        for (index, measure) in measures.iter().enumerate() {
            all.add(measure);
            if index % 2 == 0 {
                left.add(measure)
            } else {
                right.add(measure)
            }
        }
        left.merge(&right);
        assert_eq!(left, all);
        assert_eq!(all.orders.revenue_minor[&eur], 250);
        assert_eq!(all.tickets.first_response_buckets[1], 1);
    }
}
