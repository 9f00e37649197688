//! Heap bytes of task state per customer, measured with a counting allocator and
//! attributed to each kind of state by dropping the kinds one after another.
//! Shared by `tests/state_size.rs` (small, in debug) and `benches/state_size.rs`
//! (1,000,000 customers, in release); each installs [`Counting`] as its allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use cxpulse::config::Config;
use cxpulse::event::EventTime;
use cxpulse::generate::population::{Population, PopulationConfig};
use cxpulse::task::{StateCounts, StatePart, Task, TaskSettings};

/// Counts live heap bytes.
pub struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const DAY: i64 = 86_400_000;

/// Events applied between two changelog flushes, as a processing cycle would.
const EVENTS_PER_FLUSH: usize = 10_000;

/// What one task held after three simulated days.
pub struct StateSize {
    /// Events applied.
    pub events: usize,
    /// Counts of what the task held.
    pub counts: StateCounts,
    /// Heap bytes per kind of state.
    pub parts: Vec<(String, isize)>,
    /// Heap bytes of the whole task.
    pub total: isize,
}

impl StateSize {
    /// Bytes per customer (profile).
    pub fn per_customer(&self) -> f64 {
        self.total as f64 / self.counts.profiles as f64
    }

    /// A printable report with the breakdown.
    pub fn report(&self) -> String {
        let profiles = self.counts.profiles as f64;
        let mut text = format!(
            "{} events, {} profiles: task state {:.1} MiB = {:.0} bytes per customer; holding {:?}\n",
            self.events,
            self.counts.profiles,
            self.total as f64 / 1048576.0,
            self.per_customer(),
            self.counts
        );
        for (part, bytes) in &self.parts {
            text.push_str(&format!(
                "  {:<16} {:>8.1} MiB {:>7.1} bytes per customer\n",
                part,
                *bytes as f64 / 1048576.0,
                *bytes as f64 / profiles
            ));
        }
        text
    }
}

/// Applies three simulated days of `customers` (about 86% of them show up) to one
/// task, flushing its changelog every [`EVENTS_PER_FLUSH`] events, and measures it.
pub fn measure(customers: usize) -> StateSize {
    let start = 1_780_000_000_000 / DAY * DAY;
    let settings = Arc::new(TaskSettings::from_config(&Config::default()));
    let mut task = Task::new(0, settings, EventTime::from_millis(0));
    let mut emitted = Vec::new();
    let mut events = 0;
    for event in Population::new(PopulationConfig {
        customers,
        visits_per_day: 1.0,
        start: EventTime::from_millis(start),
        max_disorder_millis: 120_000,
        seed: 3,
    })
    .take_while(|event| event.occurred_at.millis() < start + 3 * DAY)
    {
        task.apply(&event, EventTime::from_millis(0), &mut emitted);
        emitted.clear();
        events += 1;
        if events % EVENTS_PER_FLUSH == 0 {
            drop(task.take_changelog());
        }
    }
    let counts = task.state_counts();
    // The generator and the emitted buffers are gone by now or never counted: only
    // what dropping the task frees is its state.
    let mut parts = Vec::new();
    let mut before = live();
    for part in StatePart::ALL {
        task.discard(part);
        let after = live();
        parts.push((format!("{part:?}"), before - after));
        before = after;
    }
    let rest = {
        let after_parts = live();
        drop(task);
        after_parts - live()
    };
    parts.push(("Other".to_string(), rest));
    let total = parts.iter().map(|(_, bytes)| bytes).sum::<isize>() + rest;
    StateSize {
        events,
        counts,
        parts,
        total,
    }
}
