//! Shared by the benchmark binaries.

/// The value after `name` on the command line (`-- --events 1000`), or `default`.
pub fn argument(name: &str, default: u64) -> u64 {
    optional_argument(name).unwrap_or(default)
}

/// The value after `name` on the command line, if given.
pub fn optional_argument(name: &str) -> Option<u64> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|arg| arg == name)
        .and_then(|index| args.get(index + 1))
        .and_then(|value| value.parse().ok())
}

use cxpulse::config::Config;
use cxpulse::topics::TopicSpec;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// The broker a bench runs against: Apache Kafka when `--bootstrap host:port`
/// is given (the figures that count), else librdkafka's in-process mock cluster.
pub struct Broker {
    mock: Option<MockCluster<'static, DefaultProducerContext>>,
    bootstrap: String,
}

#[allow(dead_code)] // each bench binary uses part of it
impl Broker {
    /// The broker the command line names.
    pub fn from_args() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let external = args
            .iter()
            .position(|arg| arg == "--bootstrap")
            .and_then(|i| args.get(i + 1))
            .cloned();
        match external {
            Some(bootstrap) => Broker {
                mock: None,
                bootstrap,
            },
            None => {
                let mock = MockCluster::new(1).expect("mock cluster");
                Broker {
                    bootstrap: mock.bootstrap_servers(),
                    mock: Some(mock),
                }
            }
        }
    }

    /// `bootstrap.servers`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// What the figures were measured on.
    pub fn describe(&self) -> String {
        match self.mock {
            Some(_) => "librdkafka's mock cluster".into(),
            None => format!("Apache Kafka at {}", self.bootstrap),
        }
    }

    /// Points `config` at this broker; on a real broker, with topic names of
    /// this run only (`bench.{pid}.…`), so runs never read each other's records.
    pub fn configure(&self, config: &mut Config) {
        config.kafka.bootstrap_servers = self.bootstrap.clone();
        if self.mock.is_none() {
            let run = format!("bench.{}", std::process::id());
            config.topics.rename_all(|name| format!("{run}.{name}"));
            config.kafka.group_id = format!("{run}.{}", config.kafka.group_id);
        }
    }

    /// Creates `specs` (with their configs on a real broker).
    pub fn create_topics(&self, config: &Config, specs: &[TopicSpec]) {
        match &self.mock {
            Some(mock) => {
                for spec in specs {
                    mock.create_topic(&spec.name, spec.partitions, 1)
                        .expect("topic");
                }
            }
            None => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(cxpulse::topics::ensure(config, specs))
                .expect("topics"),
        }
    }
}
