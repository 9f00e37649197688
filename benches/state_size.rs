//! Benchmark: heap bytes of task state per customer at 1,000,000 customers,
//! with what each kind of state holds (counting allocator, release build).
//!
//! `cargo bench --bench state_size` (`-- --customers N` to change the size).

mod support;

#[path = "support/state_size.rs"]
mod state_size;

#[global_allocator]
static ALLOCATOR: state_size::Counting = state_size::Counting;

fn main() {
    // About 86% of a population shows up within the three simulated days: 1.16M gives 1M customers.
    let customers = support::argument("--customers", 1_160_000) as usize;
    let started = std::time::Instant::now();
    let size = state_size::measure(customers);
    print!("{}", size.report());
    println!("measured in {:.1}s", started.elapsed().as_secs_f64());
}
