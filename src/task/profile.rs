//! The single-source-of-truth profile of one customer (SPEC section 3), and
//! the lifecycle and segment rules evaluated on it.

use std::collections::BTreeMap;

use crate::compact::CompactTime;
use crate::config::SegmentsConfig;
use crate::event::{Currency, CustomerId, EventTime, NpsCategory};
use crate::window::millis;

/// Where a customer is in their relationship with us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lifecycle {
    /// No purchase yet.
    Prospect,
    /// First purchase within the new period.
    New,
    /// A purchase within the activity horizon.
    Active,
    /// Had purchases, none within the activity horizon.
    Churned,
    /// Purchased again after churning; active after the new period.
    Reactivated,
}

impl Lifecycle {
    /// The SPEC's lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Lifecycle::Prospect => "prospect",
            Lifecycle::New => "new",
            Lifecycle::Active => "active",
            Lifecycle::Churned => "churned",
            Lifecycle::Reactivated => "reactivated",
        }
    }
}

/// RFM segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Recent, frequent, valuable.
    Champion,
    /// Active but unhappy or drifting away.
    AtRisk,
    /// Churned.
    Lost,
    /// Everyone else.
    Regular,
}

impl Segment {
    /// The SPEC's snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Segment::Champion => "champion",
            Segment::AtRisk => "at_risk",
            Segment::Lost => "lost",
            Segment::Regular => "regular",
        }
    }
}

/// Lifecycle and segment rules in milliseconds, from config.
#[derive(Debug, Clone)]
pub struct ProfileRules {
    /// Activity horizon.
    pub activity_horizon_millis: i64,
    /// New / reactivated period.
    pub new_period_millis: i64,
    /// Champion recency.
    pub champion_recency_millis: i64,
    /// Champion minimum orders.
    pub champion_min_orders: u64,
    /// Champion minimum net value in one currency.
    pub champion_min_value: i64,
}

impl ProfileRules {
    /// Rules from config.
    pub fn new(activity_horizon: std::time::Duration, segments: &SegmentsConfig) -> Self {
        ProfileRules {
            activity_horizon_millis: millis(activity_horizon),
            new_period_millis: millis(segments.new_period),
            champion_recency_millis: millis(segments.champion_recency),
            champion_min_orders: segments.champion_min_orders,
            champion_min_value: segments.champion_min_value,
        }
    }
}

/// A kind of survey, as the profile remembers its latest answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Survey {
    /// Net promoter score.
    Nps = 0,
    /// Customer satisfaction.
    Csat = 1,
    /// Customer effort score.
    Ces = 2,
}

/// A last survey answer with its scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastScore {
    /// The score.
    pub score: u8,
    /// Its scale's maximum.
    pub scale_max: u8,
    /// When it was given.
    pub at: EventTime,
}

/// Placed and returned value in one currency, minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrencyTotals {
    /// The currency.
    pub currency: Currency,
    /// Whether any order was placed in it (an order may be worth 0).
    pub placed: bool,
    /// Whether anything was returned in it.
    pub returned: bool,
    /// Placed value.
    pub revenue_minor: i64,
    /// Returned value.
    pub returned_minor: i64,
}

impl CurrencyTotals {
    fn new(currency: Currency) -> Self {
        CurrencyTotals {
            currency,
            placed: false,
            returned: false,
            revenue_minor: 0,
            returned_minor: 0,
        }
    }
}

/// Revenue and returns per currency. Almost every customer pays in one
/// currency: it is held inline (24 bytes), further ones in a rarely used box,
/// instead of two B-tree maps with a heap node each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoneyTotals {
    first: Option<CurrencyTotals>,
    // Boxed: 8 bytes in every profile instead of a Vec's 24, for what is almost never used.
    #[allow(clippy::box_collection)]
    more: Option<Box<Vec<CurrencyTotals>>>,
}

impl MoneyTotals {
    fn totals_mut(&mut self, currency: Currency) -> &mut CurrencyTotals {
        let first = self
            .first
            .get_or_insert_with(|| CurrencyTotals::new(currency));
        if first.currency == currency {
            return first;
        }
        let more = self.more.get_or_insert_with(Box::default);
        match more.iter().position(|totals| totals.currency == currency) {
            Some(index) => &mut more[index],
            None => {
                more.push(CurrencyTotals::new(currency));
                let last = more.len() - 1;
                &mut more[last]
            }
        }
    }

    /// Adds a placed order's value.
    pub fn add_revenue(&mut self, currency: Currency, amount_minor: i64) {
        let totals = self.totals_mut(currency);
        totals.placed = true;
        totals.revenue_minor += amount_minor;
    }

    /// Adds a return's value.
    pub fn add_returned(&mut self, currency: Currency, amount_minor: i64) {
        let totals = self.totals_mut(currency);
        totals.returned = true;
        totals.returned_minor += amount_minor;
    }

    /// Every currency with an order or a return.
    pub fn iter(&self) -> impl Iterator<Item = &CurrencyTotals> {
        self.first
            .iter()
            .chain(self.more.iter().flat_map(|more| more.iter()))
    }

    /// Totals read back from the changelog.
    pub fn from_totals(totals: impl IntoIterator<Item = CurrencyTotals>) -> Self {
        let mut money = MoneyTotals::default();
        for entry in totals {
            *money.totals_mut(entry.currency) = entry;
        }
        money
    }
}

/// Everything known about one customer. Its times are [`CompactTime`]s
/// (6 bytes each instead of 8): a million profiles are the bulk of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The customer.
    pub customer_id: CustomerId,
    /// Earliest event time seen.
    pub first_seen: CompactTime,
    /// Latest event time seen; the instant lifecycle and segment are evaluated at.
    pub last_seen: CompactTime,
    /// Events applied (counts are u32: a customer with four billion events is not a customer).
    pub events: u32,
    /// Orders placed.
    pub orders_placed: u32,
    /// Placed and returned value per currency.
    pub money: MoneyTotals,
    /// First `placed`.
    pub first_purchase_at: Option<CompactTime>,
    /// Latest `placed`.
    pub last_purchase_at: Option<CompactTime>,
    /// Sum of gaps between consecutive orders, ms.
    pub purchase_gap_millis_sum: i64,
    /// When the customer came back after churning, if they did.
    pub reactivated_at: Option<CompactTime>,
    /// Tickets currently open.
    pub open_tickets: u32,
    /// Tickets opened.
    pub tickets_opened: u32,
    /// Resolutions.
    pub tickets_resolved: u32,
    /// First responses received.
    pub first_responses: u32,
    /// Sum of first-response times, ms.
    pub first_response_millis_sum: i64,
    /// Times of the latest NPS, CSAT and CES answers ([`Survey`] order); with the
    /// two arrays below rather than three `Option<LastScore>`, the scores fill
    /// what would otherwise be padding.
    pub(crate) last_answer_at: [Option<CompactTime>; 3],
    /// Their scores.
    pub(crate) last_answer_score: [u8; 3],
    /// Their scales' maximums.
    pub(crate) last_answer_scale_max: [u8; 3],
    /// Lifecycle at `as_of`.
    pub lifecycle: Lifecycle,
    /// Segment at `as_of`.
    pub segment: Segment,
    /// The event time lifecycle and segment describe: the latest event, or the
    /// latest review timer that fired since.
    pub as_of: CompactTime,
    /// When this profile's review timer is scheduled, if it is.
    pub review_at: Option<CompactTime>,
    /// Wall-clock time of the latest change.
    pub updated_at: CompactTime,
}

impl Profile {
    /// A profile with nothing applied yet.
    pub fn new(customer_id: CustomerId, at: EventTime) -> Self {
        Profile {
            customer_id,
            first_seen: at.into(),
            last_seen: at.into(),
            events: 0,
            orders_placed: 0,
            money: MoneyTotals::default(),
            first_purchase_at: None,
            last_purchase_at: None,
            purchase_gap_millis_sum: 0,
            reactivated_at: None,
            open_tickets: 0,
            tickets_opened: 0,
            tickets_resolved: 0,
            first_responses: 0,
            first_response_millis_sum: 0,
            last_answer_at: [None; 3],
            last_answer_score: [0; 3],
            last_answer_scale_max: [0; 3],
            lifecycle: Lifecycle::Prospect,
            segment: Segment::Regular,
            as_of: at.into(),
            review_at: None,
            updated_at: at.into(),
        }
    }

    /// Placed value per currency (currencies with an order).
    pub fn revenue_minor(&self) -> BTreeMap<Currency, i64> {
        self.money
            .iter()
            .filter(|totals| totals.placed)
            .map(|totals| (totals.currency, totals.revenue_minor))
            .collect()
    }

    /// Returned value per currency (currencies with a return).
    pub fn returned_minor(&self) -> BTreeMap<Currency, i64> {
        self.money
            .iter()
            .filter(|totals| totals.returned)
            .map(|totals| (totals.currency, totals.returned_minor))
            .collect()
    }

    /// Net value per currency: revenue minus returns.
    pub fn net_value_minor(&self) -> BTreeMap<Currency, i64> {
        self.money
            .iter()
            .map(|totals| {
                (
                    totals.currency,
                    totals.revenue_minor - totals.returned_minor,
                )
            })
            .collect()
    }

    /// The latest answer to a kind of survey.
    pub fn last_answer(&self, survey: Survey) -> Option<LastScore> {
        let index = survey as usize;
        self.last_answer_at[index].map(|at| LastScore {
            score: self.last_answer_score[index],
            scale_max: self.last_answer_scale_max[index],
            at: at.get(),
        })
    }

    /// Records the latest answer to a kind of survey.
    pub fn set_last_answer(&mut self, survey: Survey, answer: LastScore) {
        let index = survey as usize;
        self.last_answer_at[index] = Some(answer.at.into());
        self.last_answer_score[index] = answer.score;
        self.last_answer_scale_max[index] = answer.scale_max;
    }

    /// Latest NPS answer.
    pub fn last_nps(&self) -> Option<LastScore> {
        self.last_answer(Survey::Nps)
    }

    /// Latest CSAT answer.
    pub fn last_csat(&self) -> Option<LastScore> {
        self.last_answer(Survey::Csat)
    }

    /// Latest CES answer.
    pub fn last_ces(&self) -> Option<LastScore> {
        self.last_answer(Survey::Ces)
    }

    /// Category of the latest NPS answer.
    pub fn last_nps_category(&self) -> Option<NpsCategory> {
        self.last_nps().map(|last| NpsCategory::of(last.score))
    }

    /// Mean days between consecutive orders.
    pub fn mean_days_between_purchases(&self) -> Option<f64> {
        let gaps = self.orders_placed.checked_sub(1).filter(|gaps| *gaps > 0)?;
        Some(self.purchase_gap_millis_sum as f64 / 86_400_000.0 / gaps as f64)
    }

    /// Lifecycle at `now`.
    pub fn lifecycle_at(&self, now: EventTime, rules: &ProfileRules) -> Lifecycle {
        let (Some(first), Some(last)) = (self.first_purchase_at, self.last_purchase_at) else {
            return Lifecycle::Prospect;
        };
        let (first, last) = (first.get(), last.get());
        if now >= last.plus_millis(rules.activity_horizon_millis) {
            Lifecycle::Churned
        } else if self
            .reactivated_at
            .is_some_and(|back| now < back.get().plus_millis(rules.new_period_millis))
        {
            Lifecycle::Reactivated
        } else if now < first.plus_millis(rules.new_period_millis) {
            Lifecycle::New
        } else {
            Lifecycle::Active
        }
    }

    /// Segment at `now`, given the lifecycle at `now`.
    pub fn segment_at(
        &self,
        now: EventTime,
        lifecycle: Lifecycle,
        rules: &ProfileRules,
    ) -> Segment {
        if lifecycle == Lifecycle::Churned {
            return Segment::Lost;
        }
        let Some(last) = self.last_purchase_at.map(CompactTime::get) else {
            return Segment::Regular;
        };
        let drifting = now > last.plus_millis(rules.activity_horizon_millis / 2);
        if self.last_nps_category() == Some(NpsCategory::Detractor) || drifting {
            return Segment::AtRisk;
        }
        let recent = now < last.plus_millis(rules.champion_recency_millis);
        // Evaluated on every event: no map is built for it.
        let valuable = self
            .money
            .iter()
            .any(|totals| totals.revenue_minor - totals.returned_minor >= rules.champion_min_value);
        if recent && u64::from(self.orders_placed) >= rules.champion_min_orders && valuable {
            Segment::Champion
        } else {
            Segment::Regular
        }
    }

    /// Re-evaluates lifecycle and segment at `as_of`.
    pub fn refresh_classification(&mut self, rules: &ProfileRules) {
        let as_of = self.as_of.get();
        self.lifecycle = self.lifecycle_at(as_of, rules);
        self.segment = self.segment_at(as_of, self.lifecycle, rules);
    }

    /// The next instant after `as_of` at which lifecycle or segment may change
    /// without any new event (a purchase ageing past a threshold).
    pub fn next_review(&self, rules: &ProfileRules) -> Option<EventTime> {
        let last = self.last_purchase_at?.get();
        let first = self.first_purchase_at?.get();
        let candidates = [
            Some(first.plus_millis(rules.new_period_millis)),
            self.reactivated_at
                .map(|back| back.get().plus_millis(rules.new_period_millis)),
            Some(last.plus_millis(rules.champion_recency_millis)),
            // "No purchase for more than half the horizon": strictly after.
            Some(last.plus_millis(rules.activity_horizon_millis / 2 + 1)),
            Some(last.plus_millis(rules.activity_horizon_millis)),
        ];
        candidates
            .into_iter()
            .flatten()
            .filter(|at| *at > self.as_of.get())
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn rules() -> ProfileRules {
        ProfileRules::new(
            std::time::Duration::from_secs(90 * 86_400),
            &SegmentsConfig::default(),
        )
    }

    fn day(n: i64) -> EventTime {
        EventTime::from_millis(n * DAY)
    }

    #[test]
    fn lifecycle_follows_the_spec() {
        let rules = rules();
        let mut profile = Profile::new(CustomerId::new("c"), day(0));
        assert_eq!(profile.lifecycle_at(day(0), &rules), Lifecycle::Prospect);
        profile.first_purchase_at = Some(day(10).into());
        profile.last_purchase_at = Some(day(10).into());
        assert_eq!(profile.lifecycle_at(day(39), &rules), Lifecycle::New);
        assert_eq!(profile.lifecycle_at(day(40), &rules), Lifecycle::Active);
        assert_eq!(profile.lifecycle_at(day(100), &rules), Lifecycle::Churned);
        profile.last_purchase_at = Some(day(200).into());
        profile.reactivated_at = Some(day(200).into());
        assert_eq!(
            profile.lifecycle_at(day(229), &rules),
            Lifecycle::Reactivated
        );
        assert_eq!(profile.lifecycle_at(day(230), &rules), Lifecycle::Active);
    }

    #[test]
    fn segments_follow_the_spec() {
        let rules = rules();
        let eur = Currency::parse("EUR").unwrap();
        let mut profile = Profile::new(CustomerId::new("c"), day(0));
        profile.first_purchase_at = Some(day(0).into());
        profile.last_purchase_at = Some(day(100).into());
        profile.orders_placed = 5;
        profile.money.add_revenue(eur, 60_000);
        let at = |now| {
            let lifecycle = profile.lifecycle_at(day(now), &rules);
            profile.segment_at(day(now), lifecycle, &rules)
        };
        assert_eq!(at(110), Segment::Champion);
        assert_eq!(at(140), Segment::Regular);
        assert_eq!(at(146), Segment::AtRisk);
        assert_eq!(at(190), Segment::Lost);
        profile.money.add_returned(eur, 20_000);
        let lifecycle = profile.lifecycle_at(day(110), &rules);
        assert_eq!(
            profile.segment_at(day(110), lifecycle, &rules),
            Segment::Regular
        );
        profile.set_last_answer(
            Survey::Nps,
            LastScore {
                score: 3,
                scale_max: 10,
                at: day(105),
            },
        );
        assert_eq!(
            profile.segment_at(day(110), lifecycle, &rules),
            Segment::AtRisk
        );
    }
}
