//! A synthetic customer population, simulated in event time.
//!
//! Each customer visits at random (a Poisson process); a visit places an
//! order (later fulfilled, sometimes returned), opens a ticket (agent
//! replies after a channel-dependent delay, customer replies, resolution,
//! sometimes a reopening, sometimes no reply at all so SLAs breach), or
//! answers an NPS, CSAT or CES survey. Events come out in emission order:
//! event time plus a fixed per-customer delay below `max_disorder`, so the
//! events of one customer (and one ticket) stay in order while different
//! customers interleave out of order, as the SPEC allows. Deterministic for a seed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, LogNormal};

use crate::event::{
    Channel, Currency, CustomerId, Event, EventBody, EventId, EventTime, MinorUnits, Money,
    OrderId, Purchase, PurchaseAction, Survey, SurveyId, SurveyResponse, TicketAction, TicketEvent,
    TicketId,
};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// Shape of the simulated population.
#[derive(Debug, Clone)]
pub struct PopulationConfig {
    /// Number of customers.
    pub customers: usize,
    /// Mean visits per customer per day.
    pub visits_per_day: f64,
    /// Event time where the simulation starts.
    pub start: EventTime,
    /// Largest difference between emission order and event-time order (keep below allowed lateness).
    pub max_disorder_millis: i64,
    /// Random seed.
    pub seed: u64,
}

/// Something scheduled to happen at a time.
#[derive(Debug, Clone)]
enum Step {
    Visit {
        customer: usize,
    },
    Emit(Event),
    /// The ticket's next step after an emitted event.
    TicketNext {
        customer: usize,
        ticket: usize,
        stage: TicketStage,
        channel: Channel,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TicketStage {
    AgentReply { first: bool },
    CustomerReply,
    Resolve,
    Reopen,
}

/// The population; iterate it for events in emission order (endless).
pub struct Population {
    config: PopulationConfig,
    rng: SmallRng,
    /// (emission time, sequence) → step.
    queue: BinaryHeap<Reverse<(i64, u64)>>,
    steps: std::collections::HashMap<u64, (i64, Step)>,
    sequence: u64,
    /// Per-customer emission delay and currency.
    delays: Vec<i64>,
    currencies: Vec<Currency>,
    /// Events emitted so far.
    emitted: u64,
}

impl Population {
    /// A population whose first visits are spread over the first day.
    pub fn new(config: PopulationConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let codes = ["EUR", "USD", "GBP"];
        let currencies = (0..config.customers)
            .map(|index| {
                Currency::parse(codes[index % codes.len()]).unwrap_or_else(|| unreachable!())
            })
            .collect();
        let delays = (0..config.customers)
            .map(|_| rng.random_range(0..config.max_disorder_millis.max(1)))
            .collect();
        let mut population = Population {
            rng,
            queue: BinaryHeap::new(),
            steps: std::collections::HashMap::new(),
            sequence: 0,
            delays,
            currencies,
            emitted: 0,
            config,
        };
        for customer in 0..population.config.customers {
            let first = population.next_visit_gap();
            let at = population.config.start.millis() + first;
            population.schedule(customer, at, Step::Visit { customer });
        }
        population
    }

    /// Events emitted so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    fn next_visit_gap(&mut self) -> i64 {
        let rate_per_ms = self.config.visits_per_day.max(1e-6) / DAY as f64;
        let gap = Exp::new(rate_per_ms)
            .map(|exp| exp.sample(&mut self.rng))
            .unwrap_or(DAY as f64);
        gap.max(1.0) as i64
    }

    fn schedule(&mut self, customer: usize, at: i64, step: Step) {
        self.sequence += 1;
        let emit_at = at + self.delays[customer];
        self.queue.push(Reverse((emit_at, self.sequence)));
        self.steps.insert(self.sequence, (at, step));
    }

    fn event(&mut self, customer: usize, at: i64, body: EventBody) -> Event {
        self.sequence += 1;
        Event {
            event_id: EventId::new(format!("ev-{:010}", self.sequence)),
            customer_id: customer_id(customer),
            occurred_at: EventTime::from_millis(at),
            body,
        }
    }

    fn log_normal_millis(&mut self, median_millis: f64, sigma: f64) -> i64 {
        LogNormal::new(median_millis.ln(), sigma)
            .map(|dist| dist.sample(&mut self.rng))
            .unwrap_or(median_millis)
            .max(1000.0) as i64
    }

    fn visit(&mut self, customer: usize, at: i64) {
        let gap = self.next_visit_gap();
        self.schedule(customer, at + gap, Step::Visit { customer });
        let roll: f64 = self.rng.random();
        if roll < 0.45 {
            self.place_order(customer, at);
        } else if roll < 0.7 {
            self.open_ticket(customer, at);
        } else {
            self.answer_survey(customer, at);
        }
    }

    fn place_order(&mut self, customer: usize, at: i64) {
        self.sequence += 1;
        let order_id = OrderId::new(format!("ord-{:010}", self.sequence));
        let currency = self.currencies[customer];
        let amount = self.log_normal_millis(4_500.0, 0.8).max(100);
        let items = self.rng.random_range(1..6);
        let channel = if self.rng.random_bool(0.7) {
            "web"
        } else {
            "app"
        };
        let placed = self.event(
            customer,
            at,
            EventBody::Purchase(Purchase {
                order_id: order_id.clone(),
                action: PurchaseAction::Placed {
                    amount: Money {
                        amount: MinorUnits(amount),
                        currency,
                    },
                },
                items: Some(items),
                channel: Some(channel.to_string()),
            }),
        );
        self.schedule(customer, at, Step::Emit(placed));
        let shipped_at = at + self.rng.random_range(2 * HOUR..3 * DAY);
        let complete = self.rng.random_bool(0.9);
        let fulfilled = self.event(
            customer,
            shipped_at,
            EventBody::Purchase(Purchase {
                order_id: order_id.clone(),
                action: PurchaseAction::Fulfilled {
                    complete_first_shipment: complete,
                },
                items: None,
                channel: None,
            }),
        );
        self.schedule(customer, shipped_at, Step::Emit(fulfilled));
        if self.rng.random_bool(0.08) {
            let returned_at = shipped_at + self.rng.random_range(DAY..20 * DAY);
            let refund = self.rng.random_range(1..=amount);
            let returned = self.event(
                customer,
                returned_at,
                EventBody::Purchase(Purchase {
                    order_id,
                    action: PurchaseAction::Returned {
                        amount: Money {
                            amount: MinorUnits(refund),
                            currency,
                        },
                    },
                    items: None,
                    channel: None,
                }),
            );
            self.schedule(customer, returned_at, Step::Emit(returned));
        }
    }

    fn open_ticket(&mut self, customer: usize, at: i64) {
        self.sequence += 1;
        let ticket = self.sequence as usize;
        let channel = Channel::ALL[self.rng.random_range(0..Channel::ALL.len())];
        let opened = self.event(
            customer,
            at,
            EventBody::Ticket(TicketEvent {
                ticket_id: ticket_id(ticket),
                action: TicketAction::Opened {
                    channel,
                    priority: None,
                },
            }),
        );
        self.schedule(customer, at, Step::Emit(opened));
        // 6% of tickets never get an answer and breach their SLA by timer.
        if !self.rng.random_bool(0.06) {
            let delay = self.first_response_delay(channel);
            self.schedule(
                customer,
                at + delay,
                Step::TicketNext {
                    customer,
                    ticket,
                    stage: TicketStage::AgentReply { first: true },
                    channel,
                },
            );
        }
    }

    fn first_response_delay(&mut self, channel: Channel) -> i64 {
        match channel {
            Channel::Chat => self.log_normal_millis(3.0 * MINUTE as f64, 1.0),
            Channel::Phone => self.log_normal_millis(10.0 * MINUTE as f64, 1.0),
            Channel::Social => self.log_normal_millis(40.0 * MINUTE as f64, 0.9),
            Channel::Email | Channel::Web => self.log_normal_millis(6.0 * HOUR as f64, 1.1),
        }
    }

    fn ticket_step(
        &mut self,
        customer: usize,
        ticket: usize,
        stage: TicketStage,
        channel: Channel,
        at: i64,
    ) {
        let action = match stage {
            TicketStage::AgentReply { .. } => TicketAction::AgentReplied,
            TicketStage::CustomerReply => TicketAction::CustomerReplied,
            TicketStage::Resolve => TicketAction::Resolved,
            TicketStage::Reopen => TicketAction::Reopened,
        };
        let event = self.event(
            customer,
            at,
            EventBody::Ticket(TicketEvent {
                ticket_id: ticket_id(ticket),
                action,
            }),
        );
        self.schedule(customer, at, Step::Emit(event));
        let next = match stage {
            TicketStage::AgentReply { first: true } if self.rng.random_bool(0.35) => {
                Some(TicketStage::CustomerReply)
            }
            TicketStage::CustomerReply => Some(TicketStage::AgentReply { first: false }),
            TicketStage::AgentReply { .. } => Some(TicketStage::Resolve),
            TicketStage::Resolve if self.rng.random_bool(0.1) => Some(TicketStage::Reopen),
            TicketStage::Resolve => {
                if self.rng.random_bool(0.5) {
                    let survey_at = at + self.rng.random_range(MINUTE..2 * DAY);
                    self.survey_at(customer, survey_at, Some(ticket_id(ticket)));
                }
                None
            }
            TicketStage::Reopen => Some(TicketStage::AgentReply { first: false }),
        };
        if let Some(next) = next {
            let delay = match next {
                TicketStage::Resolve => self.log_normal_millis(2.0 * HOUR as f64, 1.2),
                TicketStage::Reopen => self.log_normal_millis(DAY as f64, 0.8),
                _ => self.first_response_delay(channel),
            };
            self.schedule(
                customer,
                at + delay,
                Step::TicketNext {
                    customer,
                    ticket,
                    stage: next,
                    channel,
                },
            );
        }
    }

    fn answer_survey(&mut self, customer: usize, at: i64) {
        self.survey_at(customer, at, None);
    }

    fn survey_at(&mut self, customer: usize, at: i64, about: Option<TicketId>) {
        let roll: f64 = self.rng.random();
        let response = if roll < 0.55 {
            // Skewed like real programmes: many promoters, a long tail of detractors.
            let score = match self.rng.random_range(0..100) {
                0..=44 => self.rng.random_range(9..=10),
                45..=71 => self.rng.random_range(7..=8),
                _ => self.rng.random_range(0..=6),
            };
            SurveyResponse::Nps { score }
        } else if roll < 0.85 {
            let scale_max = [3, 5, 5, 5, 7, 10][self.rng.random_range(0..6)];
            SurveyResponse::Csat {
                score: self.rng.random_range(1..=scale_max),
                scale_max,
            }
        } else {
            let scale_max = if self.rng.random_bool(0.8) { 7 } else { 5 };
            SurveyResponse::Ces {
                score: self.rng.random_range(1..=scale_max),
                scale_max,
            }
        };
        self.sequence += 1;
        let survey_id = SurveyId::new(format!("srv-{:010}", self.sequence));
        let comment = self
            .rng
            .random_bool(0.2)
            .then(|| "thanks for the help".to_string());
        let event = self.event(
            customer,
            at,
            EventBody::Survey(Survey {
                survey_id,
                response,
                comment,
                ticket_id: about,
                order_id: None,
            }),
        );
        self.schedule(customer, at, Step::Emit(event));
    }

    /// Event time of the next event to come out, without taking it.
    pub fn peek_time(&self) -> Option<EventTime> {
        self.queue
            .peek()
            .map(|Reverse((emit_at, _))| EventTime::from_millis(*emit_at))
    }
}

fn customer_id(customer: usize) -> CustomerId {
    CustomerId::new(format!("cust-{customer:07}"))
}

fn ticket_id(ticket: usize) -> TicketId {
    TicketId::new(format!("tkt-{ticket:010}"))
}

impl Iterator for Population {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            let Reverse((_, sequence)) = self.queue.pop()?;
            let (at, step) = self.steps.remove(&sequence)?;
            match step {
                Step::Emit(event) => {
                    self.emitted += 1;
                    return Some(event);
                }
                Step::Visit { customer } => self.visit(customer, at),
                Step::TicketNext {
                    customer,
                    ticket,
                    stage,
                    channel,
                } => self.ticket_step(customer, ticket, stage, channel, at),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn population(seed: u64) -> Population {
        Population::new(PopulationConfig {
            customers: 200,
            visits_per_day: 2.0,
            start: EventTime::from_millis(1_700_000_000_000),
            max_disorder_millis: 2 * MINUTE,
            seed,
        })
    }

    #[test]
    fn is_deterministic_for_a_seed() {
        let first: Vec<Event> = population(7).take(2000).collect();
        let second: Vec<Event> = population(7).take(2000).collect();
        assert_eq!(first, second);
    }

    #[test]
    fn disorder_stays_below_the_bound_and_tickets_stay_in_order() {
        let events: Vec<Event> = population(3).take(20_000).collect();
        let mut high = events[0].occurred_at.millis();
        let mut last_per_ticket = std::collections::HashMap::new();
        let mut kinds = std::collections::HashSet::new();
        for event in &events {
            let at = event.occurred_at.millis();
            assert!(high - at < 2 * MINUTE, "disorder {} ms", high - at);
            high = high.max(at);
            kinds.insert(event.type_name());
            if let EventBody::Ticket(ticket) = &event.body {
                let previous = last_per_ticket.insert(ticket.ticket_id.clone(), at);
                assert!(previous.is_none_or(|previous| previous <= at));
            }
        }
        // Every kind of event shows up.
        assert_eq!(kinds.len(), 3 + 5 + 3, "{kinds:?}");
    }
}
