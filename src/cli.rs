//! Commands: `run`, `check-config`, `generate` and `demo`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tracing::{error, info, warn};

use crate::config::{Config, Environment};
use crate::event::EventTime;
use crate::generate::population::PopulationConfig;
use crate::generate::{self, GenerateOptions};
use crate::pipeline::Shared;
use crate::{demo, service, telemetry, topics};

/// cxpulse: customer events from Kafka in; unified profiles, rolling CX windows, Prometheus metrics and derived events out.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the stream processor against Kafka.
    Run(ConfigArgs),
    /// Validate the configuration (file plus CXPULSE_* environment) and print it as TOML, secrets redacted.
    CheckConfig(ConfigArgs),
    /// Stream a synthetic customer population to the input topics of a broker.
    Generate(GenerateArgs),
    /// Everything in one process: an embedded Kafka broker, the generator, the pipeline and /metrics.
    ///
    /// The population is busy (many visits per customer) so that, once the
    /// history has been replayed, live windows keep closing every minute.
    #[command(
        mut_arg("customers", |arg| arg.default_value("5000")),
        mut_arg("visits_per_day", |arg| arg.default_value("100")),
        mut_arg("history", |arg| arg.default_value("1d")),
        mut_arg("rate", |arg| arg.default_value("5000"))
    )]
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
struct ConfigArgs {
    /// TOML configuration file; every key is optional (see config/default.toml).
    #[arg(long, short, env = "CXPULSE_CONFIG")]
    config: Option<PathBuf>,
}

/// Shape and pace of the synthetic population.
#[derive(Debug, Args, Clone)]
pub struct PopulationArgs {
    /// Number of customers.
    #[arg(long, default_value_t = 10_000)]
    pub customers: usize,
    /// Mean visits per customer per simulated day.
    #[arg(long, default_value_t = 1.0)]
    pub visits_per_day: f64,
    /// How far in the past event time starts; the stream catches up with the wall clock, then follows it.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub history: Duration,
    /// Events per second; 0 for as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Random seed (same seed, same events).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl PopulationArgs {
    /// Generator options for `config`, stopping after `events` (0: never).
    pub fn options(&self, config: &Config, events: u64) -> GenerateOptions {
        let history = crate::window::millis(self.history);
        GenerateOptions {
            population: PopulationConfig {
                customers: self.customers,
                visits_per_day: self.visits_per_day,
                start: EventTime::now().plus_millis(-history),
                // Half the allowed lateness: disordered but never late.
                max_disorder_millis: crate::window::millis(config.processing.allowed_lateness) / 2,
                seed: self.seed,
            },
            rate: self.rate,
            events,
        }
    }
}

#[derive(Debug, Args)]
struct GenerateArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    population: PopulationArgs,
    /// Stop after this many events; 0 for never.
    #[arg(long, default_value_t = 0)]
    events: u64,
    /// Partitions of each input topic when it has to be created.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
}

#[derive(Debug, Args)]
struct DemoArgs {
    #[command(flatten)]
    population: PopulationArgs,
    /// Partitions per input topic (tasks).
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Address of /metrics and the profile API.
    #[arg(long, default_value = "127.0.0.1:9898")]
    listen: std::net::SocketAddr,
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cxpulse: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(load(&args)?).await,
            Command::CheckConfig(args) => check_config(&args),
            Command::Generate(args) => generate(args).await,
            Command::Demo(args) => {
                // The demo runs the default processing config.
                let options = args.population.options(&Config::default(), 0);
                demo::run(options, args.partitions, args.listen).await
            }
        }
    });
    // Background threads of librdkafka must not keep a finished process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!("{error:#}");
            eprintln!("cxpulse: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(args: &ConfigArgs) -> anyhow::Result<Config> {
    let config = Config::load(args.config.as_deref()).context("invalid configuration")?;
    telemetry::init_logging(&config.log);
    Ok(config)
}

fn check_config(args: &ConfigArgs) -> anyhow::Result<()> {
    load(args)?;
    let rendered = Config::render(args.config.as_deref(), Environment::of_process())
        .context("rendering the configuration")?;
    // A closed pipe (`| head`) is not an error of the configuration.
    let _ = writeln!(
        std::io::stdout(),
        "# configuration is valid (file, then CXPULSE_* environment):\n{rendered}"
    );
    Ok(())
}

async fn run(config: Config) -> anyhow::Result<()> {
    let shared = Arc::new(Shared::default());
    let starting = service::start(&config, shared.clone());
    tokio::pin!(starting);
    let shutdown = service::shutdown_signal();
    tokio::pin!(shutdown);
    // SIGTERM is honoured during start-up too (brokers unreachable, topics missing).
    let running = tokio::select! {
        started = &mut starting => started?,
        _ = &mut shutdown => {
            info!("shutdown requested during start-up");
            shared.stop.store(true, Ordering::SeqCst);
            return match starting.await {
                Ok(running) => service::stop(running, config.processing.shutdown_timeout).await,
                Err(error) => {
                    info!("start-up abandoned: {error:#}");
                    Ok(())
                }
            };
        }
    };
    info!("cxpulse running");
    let mut finished = tokio::time::interval(Duration::from_millis(200));
    tokio::select! {
        _ = &mut shutdown => info!("shutdown requested"),
        _ = async { loop { finished.tick().await; if running.is_finished() { break; } } } => {
            warn!("pipeline ended on its own");
        }
    }
    service::stop(running, config.processing.shutdown_timeout).await
}

async fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let config = load(&args.config)?;
    topics::ensure(&config, &topics::inputs(&config, args.partitions)).await?;
    let options = args.population.options(&config, args.events);
    let stop = Arc::new(AtomicBool::new(false));
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        service::shutdown_signal().await;
        signal_stop.store(true, Ordering::SeqCst);
    });
    let report =
        tokio::task::spawn_blocking(move || generate::run(&config, options, &stop)).await??;
    let seconds = report.elapsed.as_secs_f64().max(1e-9);
    println!(
        "produced {} events ({} delivered, {} failed) in {:.1}s: {:.0} events/s",
        report.produced,
        report.delivered,
        report.failed,
        seconds,
        report.produced as f64 / seconds
    );
    if report.failed > 0 {
        anyhow::bail!("{} events were not delivered", report.failed);
    }
    Ok(())
}
