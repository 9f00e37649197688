//! Signals: things someone should act on (SPEC section 5), derived by a task
//! exactly once per cause.

use crate::event::{CustomerId, EventTime, TicketId};
use crate::task::profile::{Lifecycle, Segment};

/// The kinds of signal on `cx.signals`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalKind {
    /// An NPS answer of 0-6.
    DetractorResponse,
    /// A ticket missed its first-response SLA.
    SlaBreached,
    /// A resolved ticket was reopened.
    TicketReopened,
    /// No purchase within the activity horizon.
    CustomerChurned,
    /// A purchase after churning.
    CustomerReactivated,
    /// The RFM segment changed.
    SegmentChanged,
    /// A champion turned detractor or suffered an SLA breach.
    VipAtRisk,
}

impl SignalKind {
    /// Every kind, in declaration order (`kind as usize` indexes it).
    pub const ALL: [SignalKind; 7] = [
        SignalKind::DetractorResponse,
        SignalKind::SlaBreached,
        SignalKind::TicketReopened,
        SignalKind::CustomerChurned,
        SignalKind::CustomerReactivated,
        SignalKind::SegmentChanged,
        SignalKind::VipAtRisk,
    ];

    /// The SPEC's snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            SignalKind::DetractorResponse => "detractor_response",
            SignalKind::SlaBreached => "sla_breached",
            SignalKind::TicketReopened => "ticket_reopened",
            SignalKind::CustomerChurned => "customer_churned",
            SignalKind::CustomerReactivated => "customer_reactivated",
            SignalKind::SegmentChanged => "segment_changed",
            SignalKind::VipAtRisk => "vip_at_risk",
        }
    }

    /// The CloudEvents `ce_type` of its records: `io.cxpulse.signal.{name}.v1`.
    pub fn ce_type(self) -> &'static str {
        match self {
            SignalKind::DetractorResponse => "io.cxpulse.signal.detractor_response.v1",
            SignalKind::SlaBreached => "io.cxpulse.signal.sla_breached.v1",
            SignalKind::TicketReopened => "io.cxpulse.signal.ticket_reopened.v1",
            SignalKind::CustomerChurned => "io.cxpulse.signal.customer_churned.v1",
            SignalKind::CustomerReactivated => "io.cxpulse.signal.customer_reactivated.v1",
            SignalKind::SegmentChanged => "io.cxpulse.signal.segment_changed.v1",
            SignalKind::VipAtRisk => "io.cxpulse.signal.vip_at_risk.v1",
        }
    }
}

/// What caused a signal; it makes the signal's id deterministic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The input record being applied (its position names the signal).
    Record,
    /// A timer or a once-per-ticket fact, named by this key.
    Key(String),
}

/// One signal.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// What happened.
    pub kind: SignalKind,
    /// To whom.
    pub customer_id: CustomerId,
    /// When, in event time.
    pub at: EventTime,
    /// Why (for the id).
    pub cause: Cause,
    /// The ticket concerned, if any.
    pub ticket_id: Option<TicketId>,
    /// Segment after the cause.
    pub segment: Segment,
    /// Segment before the cause, when it changed.
    pub previous_segment: Option<Segment>,
    /// Lifecycle after the cause.
    pub lifecycle: Lifecycle,
}
