//! cxpulse: a customer-experience stream processor.
//!
//! The data's path, one module per stage:
//!
//! ```text
//! source (Kafka consumer, tasks by partition)
//!   → decode (JSON / Protobuf → validated Event, or a dead letter)
//!   → task (per-partition state: profiles, tickets, watermark, de-dup)
//!   → window (hopping event-time windows, final results)
//!   → output (profiles, enriched events, window results, dead letters as records)
//!   → sink (one idempotent producer; offsets commit after delivery)
//! ```
//!
//! `process` is one cycle of that path with no Kafka in it; `pipeline` runs
//! it between the consumer and the producer; `http` serves metrics, health and profiles
//! beside it; `telemetry` names every metric; `generate` and `demo` make
//! synthetic traffic.

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
