//! Open and recently resolved tickets of a task, and what each ticket event
//! contributes to the windows: first response, resolution, reopening and SLA
//! breaches (on a late first reply here, or by the task's SLA timer when none
//! came, through [`TicketBook::breach_overdue`]).

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::event::{Channel, CustomerId, EventTime, TicketAction, TicketId};
use crate::window::Measure;

/// What a task remembers of one ticket.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TicketState {
    /// Whose ticket it is.
    pub customer_id: CustomerId,
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
    /// The latest resolution.
    pub resolved_at: Option<EventTime>,
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
    /// The SLA deadline of a newly opened ticket (schedule its timer).
    pub sla_deadline_opened: Option<EventTime>,
    /// The SLA deadline whose timer a first reply made unnecessary (cancel it).
    pub sla_deadline_settled: Option<EventTime>,
    /// The first reply came after this SLA deadline: the breach was counted now.
    pub breached_deadline: Option<EventTime>,
}

/// Every ticket of one task.
#[derive(Debug, Clone, Default)]
pub struct TicketBook {
    tickets: HashMap<TicketId, TicketState>,
    /// (resolved_at, ticket) of resolved tickets, oldest first, so eviction is incremental.
    resolved: BTreeSet<(EventTime, TicketId)>,
    /// Tickets changed or evicted since the last changelog flush.
    changed: HashSet<TicketId>,
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
        customer_id: &CustomerId,
        ticket_id: &TicketId,
        action: TicketAction,
        at: EventTime,
        sla_threshold_millis: impl Fn(Channel) -> i64,
        measures: &mut Vec<(EventTime, Measure)>,
    ) -> TicketChange {
        let mut change = TicketChange::default();
        if let TicketAction::Opened { channel, .. } = action {
            self.changed.insert(ticket_id.clone());
            let deadline = at.plus_millis(sla_threshold_millis(channel));
            let was_open = self
                .tickets
                .insert(
                    ticket_id.clone(),
                    TicketState {
                        customer_id: customer_id.clone(),
                        opened_at: at,
                        channel,
                        agent_replies: 0,
                        first_response_at: None,
                        reopened: false,
                        open: true,
                        resolved_at: None,
                        sla_breached: false,
                        sla_deadline: deadline,
                    },
                )
                .is_some_and(|previous| previous.open);
            change.sla_deadline_opened = Some(deadline);
            measures.push((at, Measure::TicketOpened));
            change.opened = true;
            change.open_delta = if was_open { 0 } else { 1 };
            return change;
        }
        // Events of a ticket whose opening this task never saw change only the profile.
        let Some(ticket) = self.tickets.get_mut(ticket_id) else {
            return change;
        };
        self.changed.insert(ticket_id.clone());
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
                        change.breached_deadline = Some(ticket.sla_deadline);
                        measures.push((ticket.sla_deadline, Measure::SlaBreach));
                    }
                    change.sla_deadline_settled = Some(ticket.sla_deadline);
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
                if let Some(previous) = ticket.resolved_at.replace(at) {
                    self.resolved.remove(&(previous, ticket_id.clone()));
                }
                self.resolved.insert((at, ticket_id.clone()));
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

    /// Tickets changed since the last call, with their state (`None`: forgotten).
    pub fn take_changes(&mut self) -> Vec<(TicketId, Option<&TicketState>)> {
        let changed = std::mem::take(&mut self.changed);
        changed
            .into_iter()
            .map(|id| {
                let state = self.tickets.get(&id);
                (id, state)
            })
            .collect()
    }

    /// Forgets which tickets changed (memory measurement only).
    pub(crate) fn discard_changes(&mut self) {
        self.changed = HashSet::new();
    }

    /// Puts back a ticket read from the changelog.
    pub fn restore(&mut self, ticket_id: TicketId, state: TicketState) {
        if let Some(resolved_at) = state.resolved_at {
            self.resolved.insert((resolved_at, ticket_id.clone()));
        }
        self.tickets.insert(ticket_id, state);
    }

    /// Removes a ticket the changelog says was forgotten.
    pub fn forget(&mut self, ticket_id: &TicketId) {
        self.tickets.remove(ticket_id);
    }

    /// SLA deadlines still waiting for a first reply, to rebuild timers after a restore.
    pub fn pending_sla_deadlines(&self) -> impl Iterator<Item = (EventTime, &TicketId)> {
        self.tickets
            .iter()
            .filter(|(_, t)| t.first_response_at.is_none() && !t.sla_breached)
            .map(|(id, t)| (t.sla_deadline, id))
    }

    /// The SLA timer of `ticket_id` for `deadline` fired: counts the breach when the
    /// ticket still has no reply, and returns the ticket then.
    pub fn breach_overdue(
        &mut self,
        ticket_id: &TicketId,
        deadline: EventTime,
    ) -> Option<&TicketState> {
        let ticket = self.tickets.get_mut(ticket_id)?;
        if ticket.first_response_at.is_some()
            || ticket.sla_breached
            || ticket.sla_deadline != deadline
        {
            return None;
        }
        ticket.sla_breached = true;
        self.changed.insert(ticket_id.clone());
        Some(ticket)
    }

    /// Forgets tickets resolved before `horizon`; a later reopening of one of them
    /// changes only the profile, like any event of an unknown ticket.
    pub fn evict_resolved_before(&mut self, horizon: EventTime) {
        while let Some((resolved_at, _)) = self.resolved.first() {
            if *resolved_at >= horizon {
                break;
            }
            let Some((resolved_at, ticket_id)) = self.resolved.pop_first() else {
                break;
            };
            let closed = self
                .tickets
                .get(&ticket_id)
                .is_some_and(|ticket| !ticket.open && ticket.resolved_at == Some(resolved_at));
            if closed {
                self.tickets.remove(&ticket_id);
                self.changed.insert(ticket_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn t(hours: i64) -> EventTime {
        EventTime::from_millis(hours * HOUR)
    }

    fn apply(
        book: &mut TicketBook,
        action: TicketAction,
        at: EventTime,
        measures: &mut Vec<(EventTime, Measure)>,
    ) -> TicketChange {
        book.apply(
            &CustomerId::new("c"),
            &TicketId::new("t1"),
            action,
            at,
            |_| HOUR,
            measures,
        )
    }

    #[test]
    fn first_response_resolution_and_breach_by_late_reply() {
        let mut book = TicketBook::default();
        let mut measures = Vec::new();
        let opened = TicketAction::Opened {
            channel: Channel::Chat,
            priority: None,
        };
        let change = apply(&mut book, opened, t(0), &mut measures);
        assert_eq!(change.sla_deadline_opened, Some(t(1)));
        let change = apply(&mut book, TicketAction::AgentReplied, t(2), &mut measures);
        assert_eq!(change.first_response_millis, Some(2 * HOUR));
        assert_eq!(change.breached_deadline, Some(t(1)));
        assert_eq!(change.sla_deadline_settled, Some(t(1)));
        apply(&mut book, TicketAction::AgentReplied, t(3), &mut measures);
        apply(&mut book, TicketAction::Resolved, t(4), &mut measures);
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
        // A timer firing afterwards never counts a second breach.
        assert!(book.breach_overdue(&TicketId::new("t1"), t(1)).is_none());
    }

    #[test]
    fn overdue_breach_counts_once_without_reply() {
        let mut book = TicketBook::default();
        let mut measures = Vec::new();
        let opened = TicketAction::Opened {
            channel: Channel::Email,
            priority: None,
        };
        apply(&mut book, opened, t(0), &mut measures);
        let id = TicketId::new("t1");
        assert_eq!(
            book.breach_overdue(&id, t(1))
                .map(|ticket| ticket.customer_id.clone()),
            Some(CustomerId::new("c"))
        );
        assert!(book.breach_overdue(&id, t(1)).is_none());
    }

    #[test]
    fn resolved_tickets_are_evicted_after_retention_but_open_ones_stay() {
        let mut book = TicketBook::default();
        let mut measures = Vec::new();
        let opened = TicketAction::Opened {
            channel: Channel::Web,
            priority: None,
        };
        apply(&mut book, opened, t(0), &mut measures);
        apply(&mut book, TicketAction::Resolved, t(1), &mut measures);
        apply(&mut book, TicketAction::Reopened, t(2), &mut measures);
        book.evict_resolved_before(t(10));
        assert_eq!(book.len(), 1, "reopened tickets stay");
        apply(&mut book, TicketAction::Resolved, t(11), &mut measures);
        book.evict_resolved_before(t(11));
        assert_eq!(book.len(), 1);
        book.evict_resolved_before(t(12));
        assert!(book.is_empty());
    }

    #[test]
    fn first_contact_resolution_needs_one_reply_and_no_reopening() {
        let mut book = TicketBook::default();
        let mut measures = Vec::new();
        let opened = TicketAction::Opened {
            channel: Channel::Web,
            priority: None,
        };
        apply(&mut book, opened, t(0), &mut measures);
        apply(&mut book, TicketAction::AgentReplied, t(1), &mut measures);
        apply(&mut book, TicketAction::Resolved, t(2), &mut measures);
        let reopen = apply(&mut book, TicketAction::Reopened, t(3), &mut measures);
        assert_eq!(reopen.open_delta, 1);
        apply(&mut book, TicketAction::Resolved, t(5), &mut measures);
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
