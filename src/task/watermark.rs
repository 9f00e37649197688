//! A task's event-time watermark: the smallest high mark over its input
//! partitions that are not idle, following the wall clock when all are idle.
//! Wall-clock instants are arguments, so this is deterministic under test.

use crate::event::{EventTime, Source};
use crate::proto::state as proto;

/// Progress of one input partition of a task.
#[derive(Debug, Clone, Copy)]
struct PartitionMark {
    /// Largest `occurred_at` seen.
    high: Option<EventTime>,
    /// Wall time of the latest record.
    last_record_wall: EventTime,
    /// The broker holds records of this partition not yet fetched: never idle then.
    backlog: bool,
}

/// The watermark of one task.
#[derive(Debug, Clone)]
pub struct Watermark {
    partitions: [PartitionMark; 3],
    idle_timeout_millis: i64,
    current: EventTime,
    last_update_wall: EventTime,
}

impl Watermark {
    /// A watermark for a task created at wall time `wall`.
    pub fn new(idle_timeout_millis: i64, wall: EventTime) -> Self {
        let mark = PartitionMark {
            high: None,
            last_record_wall: wall,
            backlog: false,
        };
        Watermark {
            partitions: [mark; 3],
            idle_timeout_millis,
            current: EventTime::MIN,
            last_update_wall: wall,
        }
    }

    /// The current watermark.
    pub fn current(&self) -> EventTime {
        self.current
    }

    /// Records an event of `source` seen at wall time `wall`.
    pub fn observe(&mut self, source: Source, occurred_at: EventTime, wall: EventTime) {
        let mark = &mut self.partitions[source.index()];
        mark.high = Some(mark.high.map_or(occurred_at, |high| high.max(occurred_at)));
        mark.last_record_wall = mark.last_record_wall.max(wall);
    }

    /// Records a record of `source` that carried no valid event time (it still shows activity).
    pub fn touch(&mut self, source: Source, wall: EventTime) {
        let mark = &mut self.partitions[source.index()];
        mark.last_record_wall = mark.last_record_wall.max(wall);
    }

    /// The changelog form.
    pub fn to_proto(&self) -> proto::Watermark {
        proto::Watermark {
            partitions: self
                .partitions
                .iter()
                .map(|mark| proto::PartitionMark {
                    high: mark.high.map(EventTime::millis),
                    last_record_wall: mark.last_record_wall.millis(),
                    backlog: mark.backlog,
                })
                .collect(),
            idle_timeout_millis: self.idle_timeout_millis,
            current: self.current.millis(),
            last_update_wall: self.last_update_wall.millis(),
        }
    }

    /// Reads the changelog form back; `None` unless it has one mark per source.
    pub fn from_proto(message: &proto::Watermark) -> Option<Self> {
        let marks: Vec<PartitionMark> = message
            .partitions
            .iter()
            .map(|mark| PartitionMark {
                high: mark.high.map(EventTime::from_millis),
                last_record_wall: EventTime::from_millis(mark.last_record_wall),
                backlog: mark.backlog,
            })
            .collect();
        Some(Watermark {
            partitions: marks.try_into().ok()?,
            idle_timeout_millis: message.idle_timeout_millis,
            current: EventTime::from_millis(message.current),
            last_update_wall: EventTime::from_millis(message.last_update_wall),
        })
    }

    /// After a restore at wall time `wall`: idle timers restart from now.
    pub fn resume(&mut self, wall: EventTime) {
        for mark in &mut self.partitions {
            mark.last_record_wall = wall;
            mark.backlog = false;
        }
        self.last_update_wall = wall;
    }

    /// Says whether the partition of `source` has records waiting on the broker.
    pub fn set_backlog(&mut self, source: Source, backlog: bool) {
        self.partitions[source.index()].backlog = backlog;
    }

    fn is_idle(&self, mark: &PartitionMark, wall: EventTime) -> bool {
        !mark.backlog && wall.millis() - mark.last_record_wall.millis() >= self.idle_timeout_millis
    }

    /// Recomputes the watermark at wall time `wall`; it never moves back.
    pub fn update(&mut self, wall: EventTime) -> EventTime {
        let mut active = self
            .partitions
            .iter()
            .filter(|mark| !self.is_idle(mark, wall))
            .peekable();
        let candidate = if active.peek().is_none() {
            // Every partition is quiet: let event time follow the wall clock.
            let elapsed = (wall.millis() - self.last_update_wall.millis()).max(0);
            let base = self.current.max(
                self.partitions
                    .iter()
                    .filter_map(|mark| mark.high)
                    .min()
                    .unwrap_or(EventTime::MIN),
            );
            if base == EventTime::MIN {
                base
            } else {
                base.plus_millis(elapsed)
            }
        } else {
            active
                .map(|mark| mark.high.unwrap_or(EventTime::MIN))
                .min()
                .unwrap_or(EventTime::MIN)
        };
        self.current = self.current.max(candidate);
        self.last_update_wall = self.last_update_wall.max(wall);
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(millis: i64) -> EventTime {
        EventTime::from_millis(millis)
    }

    #[test]
    fn slowest_active_partition_holds_the_watermark() {
        let mut watermark = Watermark::new(30_000, t(0));
        watermark.observe(Source::Purchases, t(1_000_000), t(1));
        watermark.observe(Source::Tickets, t(900_000), t(1));
        // Surveys has delivered nothing and is not idle yet.
        assert_eq!(watermark.update(t(2)), EventTime::MIN);
        watermark.observe(Source::Surveys, t(950_000), t(3));
        assert_eq!(watermark.update(t(3)), t(900_000));
        // Tickets goes idle: the others decide.
        watermark.observe(Source::Purchases, t(1_000_500), t(29_000));
        watermark.observe(Source::Surveys, t(990_000), t(29_000));
        assert_eq!(watermark.update(t(30_001)), t(990_000));
    }

    #[test]
    fn a_partition_with_backlog_is_never_idle() {
        let mut watermark = Watermark::new(1000, t(0));
        watermark.observe(Source::Purchases, t(500_000), t(0));
        watermark.observe(Source::Tickets, t(100_000), t(0));
        watermark.observe(Source::Surveys, t(500_000), t(5000));
        watermark.set_backlog(Source::Tickets, true);
        assert_eq!(watermark.update(t(5000)), t(100_000));
        watermark.set_backlog(Source::Tickets, false);
        assert_eq!(watermark.update(t(5001)), t(500_000));
    }

    #[test]
    fn all_idle_follows_the_wall_clock_and_never_goes_back() {
        let mut watermark = Watermark::new(1000, t(0));
        for source in Source::ALL {
            watermark.observe(source, t(500_000), t(0));
        }
        assert_eq!(watermark.update(t(10)), t(500_000));
        assert_eq!(watermark.update(t(2010)), t(502_000));
        assert_eq!(watermark.update(t(3010)), t(503_000));
        // A slow partition wakes up behind the watermark: no step back.
        watermark.observe(Source::Tickets, t(100), t(3020));
        assert_eq!(watermark.update(t(3020)), t(503_000));
    }
}
