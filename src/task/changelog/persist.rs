//! Persistence of a [`Task`]: which input offsets its state includes, and the
//! changelog records of what changed since the previous flush.

use super::codec::{active_delta_value, customer_value, meta_value, pane_value, ticket_value};
use super::{active_key, customer_key, pane_key, ticket_key, ChangeRecord, META_KEY};
use crate::event::Source;
use crate::task::Task;

impl Task {
    /// True when the state already includes the input record at `offset` of `source`.
    pub fn includes(&self, source: Source, offset: i64) -> bool {
        offset < self.included[source.index()]
    }

    /// The first input offset of `source` the state does not include (-1: it includes none).
    pub fn next_offset(&self, source: Source) -> i64 {
        self.included[source.index()]
    }

    /// Records that the state now includes the input record at `offset` of `source`.
    pub fn mark_included(&mut self, source: Source, offset: i64) {
        let next = &mut self.included[source.index()];
        *next = (*next).max(offset + 1);
    }

    /// Number of the last changelog flush, the one [`write_ahead`](super::write_ahead()) frames.
    pub fn changelog_cycle(&self) -> u64 {
        self.changelog_cycle
    }

    /// The changelog records of everything changed since the previous call, meta last.
    pub fn take_changelog(&mut self) -> Vec<ChangeRecord> {
        self.changelog_cycle += 1;
        // A batch applied at restore never reached its per-key records: write them
        // now (later changes of the same keys follow and win), then delete the chunks.
        let mut records: Vec<ChangeRecord> = std::mem::take(&mut self.batch_to_rewrite);
        records.extend(
            std::mem::take(&mut self.stale_batches)
                .into_iter()
                .map(|key| (key, None)),
        );
        // Customers before tickets: a restore finds a ticket's customer by then.
        for slot in std::mem::take(&mut self.changed_customers) {
            if let Some(word) = self.changed_bits.get_mut(slot.0 as usize / 64) {
                *word &= !(1u64 << (slot.0 % 64));
            }
            if let Some(entry) = self.customers.get(slot) {
                let key = customer_key(&entry.profile.customer_id);
                records.push((key, Some(customer_value(entry))));
            }
        }
        let customers = &self.customers;
        for (ticket_id, state) in self.tickets.take_changes() {
            let value = state.map(|ticket| {
                let customer_id = customers
                    .get(ticket.customer)
                    .map_or("", |entry| entry.profile.customer_id.as_str());
                ticket_value(ticket, customer_id)
            });
            records.push((ticket_key(&ticket_id), value));
        }
        for (spec, pane, aggregate) in self.windows.take_pane_changes() {
            records.push((pane_key(&spec, pane), aggregate.map(pane_value)));
        }
        for (key, delta) in self.windows.active_mut().take_changes() {
            records.push((active_key(key), delta.map(active_delta_value)));
        }
        records.push((META_KEY.to_vec(), Some(meta_value(self))));
        records
    }
}
