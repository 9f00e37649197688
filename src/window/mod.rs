//! Windows: hopping event-time windows built from per-step panes.
//!
//! A window `W(e) = [e - size, e)` exists for every multiple `e` of `step`.
//! Because `size` is a multiple of `step`, `W(e)` is exactly the union of the
//! `size / step` panes `[p, p + step)` it covers, so each measure is added to
//! one pane per window spec, and a window is built by merging its panes only
//! once, when it is final. A pane is dropped as soon as every window that
//! contains it has been emitted; a measure for such a pane is late.

pub mod measure;
pub mod result;
pub mod retention;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use measure::{Aggregate, Measure};
use retention::ActiveCustomers;

use crate::config::WindowConfig;
use crate::event::EventTime;

/// One configured window: name, size and step in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    /// Label, e.g. `24h`.
    pub name: Arc<str>,
    /// Window length, ms.
    pub size_millis: i64,
    /// Distance between window ends, ms.
    pub step_millis: i64,
}

impl WindowSpec {
    /// Converts a validated config entry.
    pub fn from_config(config: &WindowConfig) -> Self {
        WindowSpec {
            name: config.name.as_str().into(),
            size_millis: millis(config.size),
            step_millis: millis(config.step),
        }
    }

    /// Start of the pane containing `at`.
    fn pane_of(&self, at: EventTime) -> i64 {
        at.millis().div_euclid(self.step_millis) * self.step_millis
    }
}

/// The largest duration every window boundary (end or start) is a multiple of:
/// the greatest common divisor of the steps and sizes (1 ms without windows).
fn boundary_granularity(specs: &[WindowSpec]) -> i64 {
    fn gcd(a: i64, b: i64) -> i64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    specs
        .iter()
        .flat_map(|spec| [spec.step_millis, spec.size_millis])
        .filter(|millis| *millis > 0)
        .fold(0, gcd)
        .max(1)
}

/// Milliseconds of a config duration, saturating.
pub fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 4)
}

/// A final window ready to be published.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalWindow {
    /// Window name.
    pub name: Arc<str>,
    /// Inclusive start.
    pub start: EventTime,
    /// Exclusive end (the boundary `e`).
    pub end: EventTime,
    /// Merged counts of the window's panes.
    pub aggregate: Aggregate,
    /// Active customers at the start and at the end: `A(start)`, `A(end)`.
    pub retention: ActiveAtBounds,
}

/// `S = A(e − size)` and `E = A(e)` of a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActiveAtBounds {
    /// Customers active at the window's start.
    pub at_start: u64,
    /// Customers active at the window's end.
    pub at_end: u64,
}

/// The panes and emission progress of one window spec.
#[derive(Debug, Clone)]
struct SpecState {
    spec: WindowSpec,
    /// Pane start → counts; only panes some unemitted window still contains.
    panes: BTreeMap<i64, Aggregate>,
    /// End of the latest emitted window.
    last_emitted: Option<i64>,
}

impl SpecState {
    /// True when every window containing pane `pane` was emitted.
    fn pane_closed(&self, pane: i64) -> bool {
        // The last window containing pane p ends at p + size.
        self.last_emitted
            .is_some_and(|last| pane + self.spec.size_millis <= last)
    }
}

/// Every window spec of one task.
#[derive(Debug, Clone)]
pub struct Windows {
    specs: Vec<SpecState>,
    allowed_lateness_millis: i64,
    /// `A(t)`, queried at the start and end of every emitted window (two cursors per spec).
    active: ActiveCustomers,
    /// See [`Windows::skipped`].
    skipped: u64,
    /// (spec index, pane start) changed or dropped since the last changelog flush.
    changed_panes: BTreeSet<(usize, i64)>,
}

/// Emission progress of one spec, for the changelog.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpecProgress {
    /// End of the latest emitted window.
    pub last_emitted: Option<i64>,
    /// The retention cursors of this spec (start, end).
    pub cursors: (retention::CursorState, retention::CursorState),
}

/// Most windows of one spec emitted by one watermark advance.
pub const MAX_WINDOWS_PER_ADVANCE: i64 = 100_000;

impl Windows {
    /// Empty windows for the given specs; `activity_horizon_millis` defines active customers.
    pub fn new(
        specs: &[WindowSpec],
        allowed_lateness_millis: i64,
        activity_horizon_millis: i64,
    ) -> Self {
        Windows {
            specs: specs
                .iter()
                .map(|spec| SpecState {
                    spec: spec.clone(),
                    panes: BTreeMap::new(),
                    last_emitted: None,
                })
                .collect(),
            allowed_lateness_millis,
            active: ActiveCustomers::new(
                activity_horizon_millis,
                2 * specs.len(),
                boundary_granularity(specs),
            ),
            skipped: 0,
            changed_panes: BTreeSet::new(),
        }
    }

    /// True when every window of every spec that contains `at` was already emitted.
    pub fn is_late(&self, at: EventTime) -> bool {
        self.specs
            .iter()
            .all(|state| state.pane_closed(state.spec.pane_of(at)))
    }

    /// Adds `measure` to the panes containing `at` that can still be emitted.
    /// A purchase also updates the active-customer index, late or not.
    pub fn record(&mut self, at: EventTime, measure: &Measure) {
        if let Measure::OrderPlaced { gap_millis, .. } = measure {
            self.active
                .purchase(at, gap_millis.map(|gap| at.plus_millis(-gap)));
        }
        for (index, state) in self.specs.iter_mut().enumerate() {
            let pane = state.spec.pane_of(at);
            if !state.pane_closed(pane) {
                state.panes.entry(pane).or_default().add(measure);
                self.changed_panes.insert((index, pane));
            }
        }
    }

    /// Emits, in end order per spec, every window made final by `watermark` (its end
    /// plus the allowed lateness is at or before the watermark), from the first
    /// window containing a measure onwards, empty ones included: every task then
    /// reports every boundary, so results add up across tasks and gauges never
    /// show a stale window.
    pub fn advance(&mut self, watermark: EventTime, out: &mut Vec<FinalWindow>) {
        let closing = watermark
            .millis()
            .saturating_sub(self.allowed_lateness_millis);
        for (index, state) in self.specs.iter_mut().enumerate() {
            let (size, step) = (state.spec.size_millis, state.spec.step_millis);
            loop {
                let end = match (state.last_emitted, state.panes.keys().next()) {
                    (Some(last), _) => last + step,
                    (None, Some(first_pane)) => first_pane + step,
                    (None, None) => break,
                };
                if end > closing {
                    break;
                }
                // A watermark jump (years of silence) must not flood the outputs.
                let pending = (closing - end) / step + 1;
                if pending > MAX_WINDOWS_PER_ADVANCE {
                    let skipped = pending - MAX_WINDOWS_PER_ADVANCE;
                    state.last_emitted = Some(end - step + skipped * step);
                    self.skipped += skipped as u64;
                    continue;
                }
                let start = end - size;
                let mut aggregate = Aggregate::default();
                for (_, pane) in state.panes.range(start..end) {
                    aggregate.merge(pane);
                }
                state.last_emitted = Some(end);
                // Panes that no later window contains.
                while let Some(entry) = state.panes.first_entry() {
                    if *entry.key() + size > end {
                        break;
                    }
                    self.changed_panes.insert((index, *entry.key()));
                    entry.remove();
                }
                let (start, end) = (EventTime::from_millis(start), EventTime::from_millis(end));
                let retention = ActiveAtBounds {
                    at_start: self.active.active_at(2 * index, start),
                    at_end: self.active.active_at(2 * index + 1, end),
                };
                out.push(FinalWindow {
                    name: state.spec.name.clone(),
                    start,
                    end,
                    aggregate,
                    retention,
                });
            }
        }
    }

    /// Windows skipped because the watermark jumped further than
    /// [`MAX_WINDOWS_PER_ADVANCE`] boundaries at once.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The earliest watermark at which another window becomes final, once any measure was seen.
    pub fn next_deadline(&self) -> Option<EventTime> {
        self.specs
            .iter()
            .filter_map(|state| {
                let end = match state.last_emitted {
                    Some(last) => last + state.spec.step_millis,
                    None => *state.panes.keys().next()? + state.spec.step_millis,
                };
                Some(EventTime::from_millis(end + self.allowed_lateness_millis))
            })
            .min()
    }

    /// Number of panes held, for the state-size metric.
    pub fn pane_count(&self) -> usize {
        self.specs.iter().map(|state| state.panes.len()).sum()
    }

    /// Panes changed since the last call: (spec name, pane start, counts or `None` when dropped).
    pub fn take_pane_changes(&mut self) -> Vec<(Arc<str>, i64, Option<&Aggregate>)> {
        let changed = std::mem::take(&mut self.changed_panes);
        changed
            .into_iter()
            .filter_map(|(index, pane)| {
                let state = self.specs.get(index)?;
                Some((state.spec.name.clone(), pane, state.panes.get(&pane)))
            })
            .collect()
    }

    /// Puts back a pane read from the changelog (`None`: dropped; ignored when its
    /// spec is no longer configured).
    pub fn restore_pane(&mut self, spec: &str, pane: i64, aggregate: Option<Aggregate>) {
        if let Some(state) = self
            .specs
            .iter_mut()
            .find(|state| &*state.spec.name == spec)
        {
            match aggregate {
                Some(aggregate) => state.panes.insert(pane, aggregate),
                None => state.panes.remove(&pane),
            };
        }
    }

    /// Emission progress per spec name, for the changelog.
    pub fn progress(&self) -> BTreeMap<String, SpecProgress> {
        self.specs
            .iter()
            .enumerate()
            .map(|(index, state)| {
                let cursors = (
                    self.active.cursor(2 * index),
                    self.active.cursor(2 * index + 1),
                );
                (
                    state.spec.name.to_string(),
                    SpecProgress {
                        last_emitted: state.last_emitted,
                        cursors,
                    },
                )
            })
            .collect()
    }

    /// Restores emission progress and the skipped count read from the changelog.
    pub fn restore_progress(&mut self, progress: &BTreeMap<String, SpecProgress>, skipped: u64) {
        for (index, state) in self.specs.iter_mut().enumerate() {
            if let Some(saved) = progress.get(&*state.spec.name) {
                state.last_emitted = saved.last_emitted;
                self.active.set_cursor(2 * index, saved.cursors.0);
                self.active.set_cursor(2 * index + 1, saved.cursors.1);
            }
        }
        self.skipped = skipped;
    }

    /// The active-customer index, for the changelog.
    pub fn active_mut(&mut self) -> &mut ActiveCustomers {
        &mut self.active
    }

    /// Forgets which panes and index entries changed (memory measurement only).
    pub(crate) fn discard_changes(&mut self) {
        self.changed_panes = BTreeSet::new();
        self.active.discard_changes();
    }

    /// Drops every pane (memory measurement only).
    pub(crate) fn discard_panes(&mut self) {
        for state in &mut self.specs {
            state.panes = BTreeMap::new();
        }
    }

    /// Drops the active-customer index (memory measurement only).
    pub(crate) fn discard_active(&mut self) {
        self.active = ActiveCustomers::new(0, 0, 1);
    }

    /// Entries of the active-customer index.
    pub fn active_index_len(&self) -> usize {
        self.active.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NpsCategory;

    const MINUTE: i64 = 60_000;
    const DAY: i64 = 1440 * MINUTE;

    fn spec(name: &str, size: i64, step: i64) -> WindowSpec {
        WindowSpec {
            name: name.into(),
            size_millis: size,
            step_millis: step,
        }
    }

    fn promoter() -> Measure {
        Measure::NpsResponse(NpsCategory::Promoter)
    }

    #[test]
    fn every_window_containing_an_event_is_emitted_once_when_final() {
        let mut windows = Windows::new(&[spec("10m", 10 * MINUTE, 5 * MINUTE)], MINUTE, DAY);
        let at = EventTime::from_millis(7 * MINUTE);
        windows.record(at, &promoter());
        let mut out = Vec::new();
        // Window [0,10m) is final at 11m.
        windows.advance(EventTime::from_millis(11 * MINUTE - 1), &mut out);
        assert!(out.is_empty());
        windows.advance(EventTime::from_millis(11 * MINUTE), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].start.millis(), out[0].end.millis()),
            (0, 10 * MINUTE)
        );
        windows.advance(EventTime::from_millis(16 * MINUTE), &mut out);
        // [5m,15m) also contains 7m; windows after it are empty.
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].end.millis(), 15 * MINUTE);
        assert_eq!(out[1].aggregate.nps.promoters, 1);
        assert_eq!(windows.pane_count(), 0);
    }

    #[test]
    fn late_measures_change_no_emitted_window() {
        let mut windows = Windows::new(&[spec("5m", 5 * MINUTE, 5 * MINUTE)], 0, DAY);
        windows.record(EventTime::from_millis(MINUTE), &promoter());
        let mut out = Vec::new();
        windows.advance(EventTime::from_millis(5 * MINUTE), &mut out);
        assert_eq!(out.len(), 1);
        let late = EventTime::from_millis(2 * MINUTE);
        assert!(windows.is_late(late));
        windows.record(late, &promoter());
        windows.advance(EventTime::from_millis(10 * MINUTE), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].aggregate, Aggregate::default());
        assert!(!windows.is_late(EventTime::from_millis(10 * MINUTE)));
    }

    #[test]
    fn every_boundary_after_the_first_measure_is_emitted_even_when_empty() {
        let mut windows = Windows::new(&[spec("1m", MINUTE, MINUTE)], 0, DAY);
        windows.record(EventTime::from_millis(5 * MINUTE), &promoter());
        windows.record(EventTime::from_millis(9 * MINUTE), &promoter());
        let mut out = Vec::new();
        windows.advance(EventTime::from_millis(12 * MINUTE), &mut out);
        let ends: Vec<i64> = out.iter().map(|w| w.end.millis() / MINUTE).collect();
        assert_eq!(ends, [6, 7, 8, 9, 10, 11, 12]);
        let counts: Vec<u64> = out.iter().map(|w| w.aggregate.nps.promoters).collect();
        assert_eq!(counts, [1, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn a_huge_watermark_jump_is_capped() {
        let mut windows = Windows::new(&[spec("1m", MINUTE, MINUTE)], 0, DAY);
        windows.record(EventTime::from_millis(0), &promoter());
        let mut out = Vec::new();
        let jump = MAX_WINDOWS_PER_ADVANCE + 50;
        windows.advance(EventTime::from_millis(jump * MINUTE), &mut out);
        assert_eq!(out.len() as i64, MAX_WINDOWS_PER_ADVANCE);
        assert_eq!(windows.skipped(), 50);
        assert_eq!(out.last().map(|w| w.end.millis()), Some(jump * MINUTE));
    }

    #[test]
    fn negative_times_fall_in_the_right_pane() {
        let state = spec("1m", MINUTE, MINUTE);
        assert_eq!(state.pane_of(EventTime::from_millis(-1)), -MINUTE);
    }
}
