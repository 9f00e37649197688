//! Builds the published window result (`cx.metrics`) from final counts,
//! deriving every ratio from its counts; a ratio is absent (JSON null) when
//! its denominator is zero.

use std::collections::BTreeMap;

use super::measure::{Aggregate, FIRST_RESPONSE_BOUNDS_SECONDS};
use super::FinalWindow;
use crate::proto;

/// Milliseconds as seconds with millisecond precision.
pub fn seconds(millis: i64) -> f64 {
    millis as f64 / 1000.0
}

/// `numerator / denominator`, or `None` when the denominator is zero.
pub fn ratio(numerator: f64, denominator: u64) -> Option<f64> {
    (denominator != 0).then(|| numerator / denominator as f64)
}

/// Mean of a millisecond sum in seconds, rounded to the millisecond.
pub fn mean_seconds(millis_sum: i64, count: u64) -> Option<f64> {
    ratio(millis_sum as f64, count).map(|mean_millis| mean_millis.round() / 1000.0)
}

/// The label of first-response bucket `index` (`"60"` ... `"+Inf"`).
pub fn bucket_label(index: usize) -> String {
    FIRST_RESPONSE_BOUNDS_SECONDS
        .get(index)
        .map_or_else(|| "+Inf".to_string(), |bound| bound.to_string())
}

fn money(totals: &BTreeMap<crate::event::Currency, i64>) -> BTreeMap<String, i64> {
    totals
        .iter()
        .map(|(currency, amount)| (currency.to_string(), *amount))
        .collect()
}

/// The `cx.metrics` record of a final window of `task`.
pub fn window_result(window: &FinalWindow, task: u32) -> proto::WindowResult {
    let Aggregate {
        nps,
        csat,
        ces,
        tickets,
        orders,
    } = &window.aggregate;
    let responses = nps.responses();
    let mut cumulative = 0;
    let first_response_buckets = tickets
        .first_response_buckets
        .iter()
        .enumerate()
        .map(|(index, count)| {
            cumulative += count;
            (bucket_label(index), cumulative)
        })
        .collect();
    proto::WindowResult {
        window: window.name.to_string(),
        start: window.start.to_rfc3339(),
        end: window.end.to_rfc3339(),
        task,
        nps: Some(proto::NpsResult {
            responses,
            promoters: nps.promoters,
            passives: nps.passives,
            detractors: nps.detractors,
            score: ratio(
                100.0 * (nps.promoters as f64 - nps.detractors as f64),
                responses,
            ),
        }),
        csat: Some(proto::CsatResult {
            responses: csat.responses,
            satisfied: csat.satisfied,
            percent: ratio(100.0 * csat.satisfied as f64, csat.responses),
        }),
        ces: Some(proto::CesResult {
            responses: ces.responses,
            score_sum: ces.score_sum,
            mean: ratio(ces.score_sum as f64, ces.responses),
        }),
        tickets: Some(proto::TicketsResult {
            opened: tickets.opened,
            first_responses: tickets.first_responses,
            first_response_seconds_sum: seconds(tickets.first_response_millis_sum),
            first_response_buckets,
            resolved: tickets.resolved,
            resolution_seconds_sum: seconds(tickets.resolution_millis_sum),
            first_contact_resolutions: tickets.first_contact_resolutions,
            reopened: tickets.reopened,
            sla_breaches: tickets.sla_breaches,
            mean_first_response_seconds: mean_seconds(
                tickets.first_response_millis_sum,
                tickets.first_responses,
            ),
            mean_resolution_seconds: mean_seconds(tickets.resolution_millis_sum, tickets.resolved),
            resolution_rate: ratio(tickets.resolved as f64, tickets.opened),
            first_contact_resolution_rate: ratio(
                tickets.first_contact_resolutions as f64,
                tickets.resolved,
            ),
        }),
        orders: Some(proto::OrdersResult {
            placed: orders.placed,
            revenue_minor: money(&orders.revenue_minor),
            returned: orders.returned,
            returned_minor: money(&orders.returned_minor),
            fulfilled: orders.fulfilled,
            complete_first_shipment: orders.complete_first_shipment,
            new_customers: orders.new_customers,
            repeat_purchases: orders.repeat_purchases,
            repeat_gap_seconds_sum: seconds(orders.repeat_gap_millis_sum),
            return_rate: ratio(orders.returned as f64, orders.placed),
            fill_rate: ratio(orders.complete_first_shipment as f64, orders.fulfilled),
            mean_days_between_purchases: ratio(
                orders.repeat_gap_millis_sum as f64 / 86_400_000.0,
                orders.repeat_purchases,
            ),
        }),
        retention: Some(proto::RetentionResult {
            customers_at_start: window.retention.at_start,
            customers_at_end: window.retention.at_end,
            new_customers: orders.new_customers,
            // ((E − N) / S) × 100
            rate: ratio(
                100.0 * (window.retention.at_end as f64 - orders.new_customers as f64),
                window.retention.at_start,
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;
    use crate::window::Measure;

    #[test]
    fn ratios_are_null_without_denominator_and_exact_with_one() {
        let mut aggregate = Aggregate::default();
        let empty = window_result(
            &FinalWindow {
                name: "1h".into(),
                start: EventTime::from_millis(0),
                end: EventTime::from_millis(3_600_000),
                aggregate: aggregate.clone(),
                retention: Default::default(),
            },
            3,
        );
        let json = serde_json::to_value(&empty).unwrap();
        assert_eq!(json["nps"]["score"], serde_json::Value::Null);
        assert_eq!(json["tickets"]["resolution_rate"], serde_json::Value::Null);
        assert_eq!(json["end"], "1970-01-01T01:00:00.000Z");
        assert_eq!(json["tickets"]["first_response_buckets"]["+Inf"], 0);

        for category in [
            crate::event::NpsCategory::Promoter,
            crate::event::NpsCategory::Promoter,
            crate::event::NpsCategory::Detractor,
        ] {
            aggregate.add(&Measure::NpsResponse(category));
        }
        aggregate.add(&Measure::FirstResponse { millis: 1001 });
        aggregate.add(&Measure::FirstResponse { millis: 1000 });
        let result = window_result(
            &FinalWindow {
                name: "1h".into(),
                start: EventTime::from_millis(0),
                end: EventTime::from_millis(3_600_000),
                aggregate,
                retention: Default::default(),
            },
            3,
        );
        let nps = result.nps.unwrap();
        assert_eq!(nps.score, Some(100.0 / 3.0));
        let tickets = result.tickets.unwrap();
        assert_eq!(tickets.mean_first_response_seconds, Some(1.001));
        assert_eq!(tickets.first_response_seconds_sum, 2.001);
        assert_eq!(tickets.first_response_buckets["60"], 2);
    }
}
