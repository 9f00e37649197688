//! Test-only fault points: with the cargo feature `fault-injection` (never in
//! release builds), the process aborts at a place chosen by an environment
//! variable, so tests can prove recovery from exactly there. Without the
//! feature every fault point compiles to nothing.

/// Environment variable: abort right after the Nth changelog record (counted from
/// process start) is written to the broker.
pub const ABORT_AFTER_CHANGELOG_RECORDS: &str = "FAULT_ABORT_AFTER_CHANGELOG_RECORDS";

/// Called after queueing each changelog record; `flush` waits until every queued
/// record is on the broker. Aborts the process after the chosen record.
#[cfg(feature = "fault-injection")]
pub fn changelog_record_queued(flush: impl FnOnce()) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    static QUEUED: AtomicU64 = AtomicU64::new(0);
    let limit = LIMIT.get_or_init(|| {
        std::env::var(ABORT_AFTER_CHANGELOG_RECORDS)
            .ok()
            .and_then(|value| value.parse().ok())
    });
    let queued = QUEUED.fetch_add(1, Ordering::SeqCst) + 1;
    if *limit == Some(queued) {
        flush();
        eprintln!("fault injection: aborting after changelog record {queued}");
        std::process::abort();
    }
}

/// Called after queueing each changelog record (no fault points in this build).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn changelog_record_queued(_flush: impl FnOnce()) {}

/// Environment variable: the processing loop hangs (never returns) once it has
/// started this many cycles, as a deadlock would; for the liveness probe's test.
pub const HANG_AFTER_CYCLES: &str = "FAULT_HANG_AFTER_CYCLES";

/// Called as each processing cycle starts. Hangs the loop at the chosen cycle.
#[cfg(feature = "fault-injection")]
pub fn cycle_started() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    static STARTED: AtomicU64 = AtomicU64::new(0);
    let limit = LIMIT.get_or_init(|| {
        std::env::var(HANG_AFTER_CYCLES)
            .ok()
            .and_then(|value| value.parse().ok())
    });
    let started = STARTED.fetch_add(1, Ordering::SeqCst) + 1;
    if *limit == Some(started) {
        eprintln!("fault injection: the processing loop hangs at cycle {started}");
        loop {
            std::thread::park();
        }
    }
}

/// Called as each processing cycle starts (no fault points in this build).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn cycle_started() {}
