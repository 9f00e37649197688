//! cxpulse: a customer-experience stream processor.
//!
//! The data's path, one module per stage:
//!
//! ```text
//! source (Kafka consumer, tasks by partition)
//!   → process (one cycle with no Kafka in it: merge each task's partitions by
//!     │        event time, skip what the restored state includes)
//!     ├ decode (JSON / Protobuf → validated Event, or a dead letter)
//!     ├ task   (per-partition state: profiles, tickets, watermark, de-dup;
//!     │         task::changelog writes its changes as changelog records)
//!     ├ window (hopping event-time windows, final results)
//!     └ output (profiles, enriched events, window results, dead letters as records)
//!   → commit (outputs, changelog records, then input offsets made durable:
//!             at-least-once in that order on a thread of its own,
//!             exactly-once in one transaction per cycle)
//!   → sink   (one idempotent or transactional producer)
//!
//! restore (when a task is assigned, before it consumes: its changelog
//!          partition read back into its state)
//! ```
//!
//! `pipeline` runs that cycle between the consumer and the producer on a
//! thread of its own, and restores tasks as they are assigned; `shared` is
//! what it shares with the HTTP server and the demo; `http` serves metrics,
//! health and profiles beside it; `telemetry` names every metric; `generate`
//! and `demo` make synthetic traffic.

pub mod cli;
pub mod commit;
pub mod compact;
pub mod config;
pub mod decode;
pub mod demo;
pub mod event;
pub mod fault;
pub mod generate;
pub mod http;
pub mod output;
pub mod pipeline;
pub mod process;
pub mod restore;
pub mod service;
pub mod shared;
pub mod sink;
pub mod source;
pub mod task;
pub mod telemetry;
pub mod time;
pub mod topics;
pub mod window;

/// Types generated from `proto/cxpulse/v1/*.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/cxpulse.v1.rs"));

    /// Changelog values of task state, from `proto/cxpulse/state/v1/state.proto`.
    pub mod state {
        include!(concat!(env!("OUT_DIR"), "/cxpulse.state.v1.rs"));
    }
}
