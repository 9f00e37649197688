//! Test-only fault points: with the cargo feature `fault-injection` (never in
//! release builds), the process aborts at a place chosen by an environment
//! variable, so tests can prove recovery from exactly there. Without the
//! feature every fault point compiles to nothing.

/// Environment variable: abort right after the Nth changelog record (counted from
/// process start) is written to the broker.
pub const ABORT_AFTER_CHANGELOG_RECORDS: &str = "FAULT_ABORT_AFTER_CHANGELOG_RECORDS";

/// Called after queueing each changelog record; `flush` waits until every queued
/// record is on the broker. Aborts the process after the chosen record.
/// One fault point: counts its calls and says which call is the one chosen by
/// its environment variable.
#[cfg(feature = "fault-injection")]
struct CountedFault {
    variable: &'static str,
    limit: std::sync::OnceLock<Option<u64>>,
    calls: std::sync::atomic::AtomicU64,
}

#[cfg(feature = "fault-injection")]
impl CountedFault {
    const fn new(variable: &'static str) -> Self {
        CountedFault {
            variable,
            limit: std::sync::OnceLock::new(),
            calls: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Counts a call; its number when it is the chosen one.
    fn chosen(&self) -> Option<u64> {
        let limit = self.limit.get_or_init(|| {
            std::env::var(self.variable)
                .ok()
                .and_then(|value| value.parse().ok())
        });
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        (*limit == Some(call)).then_some(call)
    }
}

/// Called after queueing each changelog record: flushes and aborts the process
/// after the record `ABORT_AFTER_CHANGELOG_RECORDS` names.
#[cfg(feature = "fault-injection")]
pub fn changelog_record_queued(flush: impl FnOnce()) {
    static FAULT: CountedFault = CountedFault::new(ABORT_AFTER_CHANGELOG_RECORDS);
    if let Some(queued) = FAULT.chosen() {
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
    static FAULT: CountedFault = CountedFault::new(HANG_AFTER_CYCLES);
    if let Some(started) = FAULT.chosen() {
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
