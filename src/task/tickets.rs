//! Open and recently resolved tickets of a task, and what each ticket event
//! contributes to the windows: first response, resolution, reopening and SLA
//! breaches (on a late first reply, or by an event-time timer when none came).

use std::collections::{BTreeSet, HashMap};

use crate::event::{Channel, EventTime, TicketAction, TicketId};
use crate::window::Measure;

/// What a task remembers of one ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketState {
    /// When it was opened.
    pub opened_at: EventTime,
    /// Where it was opened.
    pub channel: Channel,
    /// Agent replies so far.
    pub agent_replies: u32,
    /// The first agent reply, once it came.
    pub first_response_at: Option<EventTime>,
    /// Whether the ticket was ever reopened.
    pub reopened: bool,
    /// Whether it is currently open.
    pub open: bool,
    /// Whether its SLA breach was counted.
    pub sla_breached: bool,
    /// `opened_at` + the channel's SLA threshold.
    pub sla_deadline: EventTime,
}

/// How a ticket event changed the customer's ticket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TicketChange {
    /// +1 when a ticket opened or reopened, -1 when resolved.
    pub open_delta: i64,
    /// A new ticket.
    pub opened: bool,
    /// A resolution.
    pub resolved: bool,
    /// A first response, with its duration in ms.
    pub first_response_millis: Option<i64>,
}

/// Every ticket of one task plus their SLA timers.
#[derive(Debug, Clone, Default)]
pub struct TicketBook {
    tickets: HashMap<TicketId, TicketState>,
    /// (deadline, ticket) for tickets still waiting for a first reply.
    sla_timers: BTreeSet<(EventTime, TicketId)>,
}

impl TicketBook {
    /// Number of tickets held.
    pub fn len(&self) -> usize {
        self.tickets.len()
    }

    /// True when no ticket is held.
    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty()
    }

    /// Applies a ticket event at `at`; `measures` receives (time, measure) pairs.
    pub fn apply(
        &mut self,
        ticket_id: &TicketId,
        action: TicketAction,
        at: EventTime,
        sla_threshold_millis: impl Fn(Channel) -> i64,
        measures: &mut Vec<(EventTime, Measure)>,
    ) -> TicketChange {
        let mut change = TicketChange::default();
        if let TicketAction::Opened { channel, .. } = action {
            let deadline = at.plus_millis(sla_threshold_millis(channel));
            let was_open = self
                .tickets
                .insert(
                    ticket_id.clone(),
                    TicketState {
                        opened_at: at,
                        channel,
                        agent_replies: 0,
                        first_response_at: None,
                        reopened: false,
                        open: true,
                        sla_breached: false,
                        sla_deadline: deadline,
                    },
                )
                .is_some_and(|previous| previous.open);
            self.sla_timers.insert((deadline, ticket_id.clone()));
            measures.push((at, Measure::TicketOpened));
            change.opened = true;
            change.open_delta = if was_open { 0 } else { 1 };
            return change;
        }
        // Events of a ticket whose opening this task never saw change only the profile.
        let Some(ticket) = self.tickets.get_mut(ticket_id) else {
            return change;
        };
        match action {
            TicketAction::Opened { .. } | TicketAction::CustomerReplied => {}
            TicketAction::AgentReplied => {
                ticket.agent_replies += 1;
                if ticket.first_response_at.is_none() {
                    ticket.first_response_at = Some(at);
                    let millis = at.millis() - ticket.opened_at.millis();
                    measures.push((at, Measure::FirstResponse { millis }));
                    change.first_response_millis = Some(millis);
                    if at > ticket.sla_deadline && !ticket.sla_breached {
                        ticket.sla_breached = true;
                        measures.push((ticket.sla_deadline, Measure::SlaBreach));
                    }
                    self.sla_timers
                        .remove(&(ticket.sla_deadline, ticket_id.clone()));
                }
            }
            TicketAction::Resolved => {
                let millis = at.millis() - ticket.opened_at.millis();
                let first_contact = ticket.agent_replies == 1 && !ticket.reopened;
                measures.push((
                    at,
                    Measure::TicketResolved {
                        millis,
                        first_contact,
                    },
                ));
                change.resolved = true;
                if ticket.open {
                    ticket.open = false;
                    change.open_delta = -1;
                }
            }
            TicketAction::Reopened => {
                ticket.reopened = true;
                measures.push((at, Measure::TicketReopened));
                if !ticket.open {
                    ticket.open = true;
                    change.open_delta = 1;
                }
            }
        }
        change
    }

    /// Fires SLA timers whose deadline plus `allowed_lateness_millis` the watermark
    /// has passed: by then every reply at or before the deadline has arrived.
    pub fn fire_sla_timers(
        &mut self,
        watermark: EventTime,
        allowed_lateness_millis: i64,
        measures: &mut Vec<(EventTime, Measure)>,
    ) {
        while let Some((deadline, _)) = self.sla_timers.first() {
            if deadline.plus_millis(allowed_lateness_millis) >= watermark {
                break;
            }
            let Some((deadline, ticket_id)) = self.sla_timers.pop_first() else {
                break;
            };
            if let Some(ticket) = self.tickets.get_mut(&ticket_id) {
                if ticket.first_response_at.is_none()
                    && !ticket.sla_breached
                    && ticket.sla_deadline == deadline
                {
                    ticket.sla_breached = true;
                    measures.push((deadline, Measure::SlaBreach));
                }
            }
        }
    }

    /// Forgets resolved tickets last opened before `horizon` (they can no longer matter
    /// except for a reopening, which then counts without history).
    pub fn evict_resolved_before(&mut self, horizon: EventTime) {
        self.tickets
            .retain(|_, ticket| ticket.open || ticket.opened_at >= horizon);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn t(hours: i64) -> EventTime {
        EventTime::from_millis(hours * HOUR)
    }

    #[test]
    fn first_response_resolution_and_breach_by_late_reply() {
        let mut book = TicketBook::default();
        let id = TicketId::new("t1");
        let mut measures = Vec::new();
        let opened = TicketAction::Opened {
            channel: Channel::Chat,
            priority: None,
        };
        book.apply(&id, opened, t(0), |_| HOUR, &mut measures);
        let change = book.apply(
            &id,
            TicketAction::AgentReplied,
            t(2),
            |_| HOUR,
            &mut measures,
        );
        assert_eq!(change.first_response_millis, Some(2 * HOUR));
        book.apply(
            &id,
            TicketAction::AgentReplied,
            t(3),
            |_| HOUR,
            &mut measures,
        );
        book.apply(&id, TicketAction::Resolved, t(4), |_| HOUR, &mut measures);
        assert_eq!(
            measures,
            vec![
                (t(0), Measure::TicketOpened),
                (t(2), Measure::FirstResponse { millis: 2 * HOUR }),
                (t(1), Measure::SlaBreach),
                (
                    t(4),
                    Measure::TicketResolved {
                        millis: 4 * HOUR,
                        first_contact: false
                    }
                ),
            ]
        );
        // The timer never fires a second breach.
        measures.clear();
        book.fire_sla_timers(t(100), 0, &mut measures);
        assert!(measures.is_empty());
    }

    #[test]
    fn timer_fires_once_after_deadline_plus_lateness_without_reply() {
        let mut book = TicketBook::default();
        let id = TicketId::new("t1");
        let mut measures = Vec::new();
        let opened = TicketAction::Opened {
            channel: Channel::Email,
            priority: None,
        };
        book.apply(&id, opened, t(0), |_| HOUR, &mut measures);
        measures.clear();
        book.fire_sla_timers(t(2), HOUR, &mut measures);
        assert!(measures.is_empty(), "deadline + lateness not yet passed");
        book.fire_sla_timers(t(2).plus_millis(1), HOUR, &mut measures);
        assert_eq!(measures, vec![(t(1), Measure::SlaBreach)]);
        book.fire_sla_timers(t(50), HOUR, &mut measures);
        assert_eq!(measures.len(), 1);
    }

    #[test]
    fn first_contact_resolution_needs_one_reply_and_no_reopening() {
        let mut book = TicketBook::default();
        let id = TicketId::new("t1");
        let mut measures = Vec::new();
        let opened = TicketAction::Opened {
            channel: Channel::Web,
            priority: None,
        };
        book.apply(&id, opened, t(0), |_| 24 * HOUR, &mut measures);
        book.apply(
            &id,
            TicketAction::AgentReplied,
            t(1),
            |_| 24 * HOUR,
            &mut measures,
        );
        book.apply(
            &id,
            TicketAction::Resolved,
            t(2),
            |_| 24 * HOUR,
            &mut measures,
        );
        let reopen = book.apply(
            &id,
            TicketAction::Reopened,
            t(3),
            |_| 24 * HOUR,
            &mut measures,
        );
        assert_eq!(reopen.open_delta, 1);
        book.apply(
            &id,
            TicketAction::Resolved,
            t(5),
            |_| 24 * HOUR,
            &mut measures,
        );
        let resolutions: Vec<_> = measures
            .iter()
            .filter_map(|(_, m)| match m {
                Measure::TicketResolved { first_contact, .. } => Some(*first_contact),
                _ => None,
            })
            .collect();
        assert_eq!(resolutions, [true, false]);
    }
}
