//! State held per customer: 100,000 customers' events through one task,
//! measured with a counting allocator, printed, and bounded.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use cxpulse::config::Config;
use cxpulse::event::{Event, EventTime};
use cxpulse::generate::population::{Population, PopulationConfig};
use cxpulse::task::{Task, TaskSettings};

/// Counts live heap bytes.
struct Counting;

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

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const DAY: i64 = 86_400_000;

#[test]
fn state_bytes_per_customer_for_100k_customers() {
    let customers = 100_000;
    let start = 1_780_000_000_000 / DAY * DAY;
    let events: Vec<Event> = Population::new(PopulationConfig {
        customers,
        visits_per_day: 1.0,
        start: EventTime::from_millis(start),
        max_disorder_millis: 120_000,
        seed: 3,
    })
    .take_while(|event| event.occurred_at.millis() < start + 3 * DAY)
    .collect();
    let settings = Arc::new(TaskSettings::from_config(&Config::default()));
    let before = LIVE.load(Ordering::Relaxed);
    let mut task = Task::new(0, settings, EventTime::from_millis(0));
    let mut emitted = Vec::new();
    for event in &events {
        task.apply(event, EventTime::from_millis(0), &mut emitted);
        emitted.clear();
    }
    emitted.shrink_to_fit();
    let held = LIVE.load(Ordering::Relaxed) - before;
    let counts = task.state_counts();
    let per_customer = held as f64 / counts.profiles as f64;
    println!(
        "{} events, {} profiles: task state {:.1} MiB = {:.0} bytes per customer; holding {:?}",
        events.len(),
        counts.profiles,
        held as f64 / 1048576.0,
        per_customer,
        counts
    );
    assert!(
        counts.profiles > 90_000,
        "most customers were seen: {}",
        counts.profiles
    );
    assert!(
        per_customer < 2048.0,
        "{per_customer:.0} bytes per customer"
    );
}
