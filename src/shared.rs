//! State shared between the pipeline thread, the HTTP server, the demo and
//! restores: the tasks, readiness, the stop flag, counters and the heartbeat.
//!
//! A module of its own so that `pipeline` and `restore` (which the pipeline
//! calls, and which watches the stop flag and beats the heartbeat) both
//! depend on it without depending on each other.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::task::Task;
use crate::window::FinalWindow;

/// State shared between the pipeline thread, the HTTP server and the demo.
#[derive(Default)]
pub struct Shared {
    /// The tasks this instance owns, by partition number.
    pub tasks: Mutex<BTreeMap<u32, Task>>,
    /// True once the first assignment was received and consumption runs.
    pub ready: AtomicBool,
    /// Set to ask the pipeline to stop gracefully.
    pub stop: AtomicBool,
    /// Valid events applied since start.
    pub events_applied: AtomicU64,
    /// Latest final window per (window name, task).
    pub latest_windows: Mutex<BTreeMap<(Arc<str>, u32), FinalWindow>>,
    /// When the processing loop last made progress, for the liveness probe.
    pub heartbeat: Heartbeat,
}

/// When the processing loop last made progress: a cycle, or a restore's step.
#[derive(Default)]
pub struct Heartbeat {
    last: Mutex<Option<Instant>>,
}

impl Heartbeat {
    /// Records progress now.
    pub fn beat(&self) {
        *self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
    }

    /// Time since the last progress; `None` before the loop first ran.
    pub fn silence(&self) -> Option<Duration> {
        let last = *self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        last.map(|at| at.elapsed())
    }
}

impl Shared {
    /// Locks the tasks, recovering from a poisoned lock (state is still consistent per event).
    pub fn tasks(&self) -> MutexGuard<'_, BTreeMap<u32, Task>> {
        self.tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Locks the latest windows.
    pub fn latest_windows(&self) -> MutexGuard<'_, BTreeMap<(Arc<str>, u32), FinalWindow>> {
        self.latest_windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
