//! `cxpulse demo`: the whole product in one process, no Kafka installed.
//!
//! librdkafka's in-process mock cluster speaks the real Kafka protocol; the
//! generator streams a synthetic population into it, with a few invalid,
//! redelivered and late records mixed in as real producers send them (so the
//! dead-letter topic and every metric have something to show), the pipeline
//! consumes it exactly as in production, `/metrics` is served, and a live
//! summary is printed every two seconds until Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;

use crate::config::{Config, LogConfig, Secret};
use crate::generate::imperfect::Imperfections;
use crate::generate::{self, GenerateOptions};
use crate::pipeline::Shared;
use crate::window::result::{mean_seconds, ratio};
use crate::window::Aggregate;
use crate::{service, telemetry, topics};

/// One invalid record and one redelivery per this many generated events.
const IMPERFECT_EVERY: u64 = 200;

/// Runs the demo until Ctrl-C.
pub async fn run(
    options: GenerateOptions,
    partitions: i32,
    listen: std::net::SocketAddr,
) -> anyhow::Result<()> {
    telemetry::init_logging(&LogConfig {
        level: "warn,cxpulse=info".into(),
        ..LogConfig::default()
    });
    let cluster = MockCluster::new(1)?;
    let mut config = Config::default();
    config.kafka.bootstrap_servers = cluster.bootstrap_servers();
    config.kafka.group_id = "cxpulse-demo".into();
    config.http.listen = listen;
    // Quiet partitions should not hold windows back for long in a demo.
    config.processing.idle_timeout = Duration::from_secs(5);
    for spec in topics::inputs(&config, partitions)
        .iter()
        .chain(&topics::outputs(&config, partitions))
    {
        cluster.create_topic(&spec.name, spec.partitions, 1)?;
    }
    // The profile API shows customer data: even the demo's wants a token.
    let token = std::env::var("CXPULSE_HTTP__API_TOKEN")
        .unwrap_or_else(|_| format!("{:032x}", rand::random::<u128>()));
    config.http.api_token = Secret::from(token.clone());
    let running = service::start(&config, Arc::new(Shared::default())).await?;
    println!(
        "cxpulse demo: embedded broker at {}, metrics at http://{listen}/metrics\n\
         profiles: curl -H 'Authorization: Bearer {token}' http://{listen}/v1/customers/cust-0000001",
        config.kafka.bootstrap_servers
    );
    println!("Ctrl-C to stop.");

    let stop = Arc::new(AtomicBool::new(false));
    let generator_config = config.clone();
    let generator_stop = stop.clone();
    let generator = tokio::task::spawn_blocking(move || {
        let imperfections = Imperfections::new(&generator_config, IMPERFECT_EVERY);
        generate::run_with(
            &generator_config,
            options,
            Some(imperfections),
            &generator_stop,
        )
    });

    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            _ = service::shutdown_signal() => break,
            _ = ticker.tick() => {
                if running.is_finished() || generator.is_finished() {
                    break;
                }
                let applied = running.shared().events_applied.load(Ordering::Relaxed);
                let rate = (applied - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-3);
                last = (Instant::now(), applied);
                println!("{}", summary(running.shared(), rate));
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let _ = generator.await;
    service::stop(running, config.processing.shutdown_timeout).await?;
    drop(cluster);
    Ok(())
}

/// One line: throughput, profiles, and the latest final `1h` window summed over
/// tasks, with ratios computed from the sums.
fn summary(shared: &Shared, events_per_second: f64) -> String {
    let profiles: usize = shared
        .tasks()
        .values()
        .map(|task| task.profile_count())
        .sum();
    let latest = shared.latest_windows();
    let sum = |window: &str| {
        let mut total = Aggregate::default();
        let (mut start, mut end, mut newest) = (0, 0, None);
        for ((name, _), final_window) in latest.iter() {
            if &**name == window {
                total.merge(&final_window.aggregate);
                start += final_window.retention.at_start;
                end += final_window.retention.at_end;
                newest = newest.max(Some(final_window.end));
            }
        }
        (total, start, end, newest)
    };
    let (hour, active_start, active_end, hour_end) = sum("1h");
    let nps = &hour.nps;
    let nps_score = ratio(
        100.0 * (nps.promoters as f64 - nps.detractors as f64),
        nps.responses(),
    );
    let csat = ratio(100.0 * hour.csat.satisfied as f64, hour.csat.responses);
    let ces = ratio(hour.ces.score_sum as f64, hour.ces.responses);
    let tickets = &hour.tickets;
    let first_response = mean_seconds(tickets.first_response_millis_sum, tickets.first_responses);
    let resolution = mean_seconds(tickets.resolution_millis_sum, tickets.resolved);
    let retention = ratio(
        100.0 * (active_end as f64 - hour.orders.new_customers as f64),
        active_start,
    );
    let revenue: Vec<String> = hour
        .orders
        .revenue_minor
        .iter()
        .map(|(currency, minor)| format!("{:.0} {currency}", *minor as f64 / 100.0))
        .collect();
    let show =
        |value: Option<f64>, unit: &str| value.map_or("-".to_string(), |v| format!("{v:.1}{unit}"));
    format!(
        "{:>6.0} ev/s {:>6} profiles | 1h to {}: NPS {} CSAT {} CES {} | first response {} resolution {} | revenue {} | retention {}",
        events_per_second,
        profiles,
        hour_end.map_or("-".to_string(), |end| end.to_rfc3339()[11..16].to_string()),
        show(nps_score, ""),
        show(csat, "%"),
        show(ces, ""),
        show(first_response.map(|s| s / 60.0), "min"),
        show(resolution.map(|s| s / 3600.0), "h"),
        if revenue.is_empty() { "-".to_string() } else { revenue.join(" ") },
        show(retention, "%"),
    )
}
