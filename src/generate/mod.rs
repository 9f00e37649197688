//! `cxpulse generate`: streams a synthetic population to a real broker.
//!
//! The simulation ([`population`]) decides what happens when; this module
//! paces it (a rate, or as fast as possible, never ahead of the wall clock),
//! encodes each event ([`wire`]) and produces it to its input topic; the
//! demo adds bad, repeated and late records ([`imperfect`]).

pub mod imperfect;
pub mod population;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tracing::info;

use crate::config::{ClientRole, Config};
use crate::decode::Format;
use crate::event::{EventTime, Source};
use imperfect::Imperfections;
use population::{Population, PopulationConfig};

/// What to generate and how fast.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// The population.
    pub population: PopulationConfig,
    /// Events per second; 0 means as fast as possible.
    pub rate: u64,
    /// Stop after this many events; 0 means never.
    pub events: u64,
}

/// Counts deliveries so progress and failures are visible.
#[derive(Default)]
pub struct DeliveryCounter {
    /// Acknowledged records.
    pub delivered: AtomicU64,
    /// Failed records.
    pub failed: AtomicU64,
}

/// Producer callbacks that feed a [`DeliveryCounter`].
#[derive(Clone, Default)]
pub struct CountingContext(pub Arc<DeliveryCounter>);

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = if result.is_ok() {
            &self.0.delivered
        } else {
            &self.0.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Totals of a generator run.
#[derive(Debug, Clone, Copy)]
pub struct GenerateReport {
    /// Events produced.
    pub produced: u64,
    /// Of which acknowledged.
    pub delivered: u64,
    /// Of which failed.
    pub failed: u64,
    /// Wall time taken.
    pub elapsed: Duration,
}

/// Produces the population's events until `options.events` or `stop`.
pub fn run(
    config: &Config,
    options: GenerateOptions,
    stop: &AtomicBool,
) -> anyhow::Result<GenerateReport> {
    run_with(config, options, None, stop)
}

/// [`run`], adding the records `imperfections` asks for after each event
/// (they are not counted in `options.events`).
pub fn run_with(
    config: &Config,
    options: GenerateOptions,
    mut imperfections: Option<Imperfections>,
    stop: &AtomicBool,
) -> anyhow::Result<GenerateReport> {
    let counter = Arc::new(DeliveryCounter::default());
    let mut client = ClientConfig::new();
    client
        .set("client.id", format!("{}-generator", config.kafka.client_id))
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "500000");
    // `[kafka.properties]` and `[kafka.producer]` apply to the generator too.
    let producer: ThreadedProducer<CountingContext> = config
        .kafka
        .client_over(ClientRole::Producer, client)?
        .create_with_context(CountingContext(counter.clone()))?;
    let formats = [
        config.formats.purchases,
        config.formats.tickets,
        config.formats.surveys,
    ];
    let mut population = Population::new(options.population.clone());
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut produced: u64 = 0;
    while !stop.load(Ordering::Relaxed) && (options.events == 0 || produced < options.events) {
        // Never ahead of the wall clock: events must not be from the future.
        if let Some(next) = population.peek_time() {
            let ahead = next.millis() - EventTime::now().millis();
            if ahead > 0 {
                std::thread::sleep(Duration::from_millis(ahead.min(200) as u64));
                continue;
            }
        }
        if options.rate > 0 {
            let due = Duration::from_secs_f64(produced as f64 / options.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait.min(Duration::from_millis(100)));
                continue;
            }
        }
        let Some(event) = population.next() else {
            break;
        };
        let source = event.source();
        let format = formats[source.index()];
        let value = wire::encode(&event, format);
        let key = event.customer_id.as_str();
        send(&producer, config, source, key, &value, format)?;
        if let Some(imperfections) = imperfections.as_mut() {
            for extra in imperfections.after(&event, &value, format, EventTime::now()) {
                send(
                    &producer,
                    config,
                    extra.source,
                    &extra.key,
                    &extra.value,
                    extra.format,
                )?;
            }
        }
        produced += 1;
        if last_report.elapsed() >= Duration::from_secs(5) {
            let elapsed = started.elapsed().as_secs_f64();
            info!(
                produced,
                delivered = counter.delivered.load(Ordering::Relaxed),
                events_per_second = (produced as f64 / elapsed).round(),
                event_time = %event.occurred_at,
                "generating"
            );
            last_report = Instant::now();
        }
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(GenerateReport {
        produced,
        delivered: counter.delivered.load(Ordering::Relaxed),
        failed: counter.failed.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    })
}

/// Queues one record for the input topic of `source`, waiting while the producer's queue is full.
fn send(
    producer: &ThreadedProducer<CountingContext>,
    config: &Config,
    source: Source,
    key: &str,
    value: &[u8],
    format: Format,
) -> anyhow::Result<()> {
    let headers = OwnedHeaders::new().insert(Header {
        key: "content-type",
        value: Some(format.content_type()),
    });
    let mut record = BaseRecord::to(config.topics.input(source))
        .key(key)
        .payload(value)
        .headers(headers);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((error, _)) => return Err(error.into()),
        }
    }
}
