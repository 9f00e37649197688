//! Topic administration: creates the topics cxpulse reads or writes when they
//! are missing, with the configs their role needs (`cx.profiles` compacted).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use tracing::{info, warn};

use crate::config::Config;
use crate::event::Source;

/// A topic to create when missing.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    /// Name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Topic configs, e.g. `cleanup.policy=compact`.
    pub configs: Vec<(&'static str, &'static str)>,
}

/// The three input topics with `partitions` partitions each.
pub fn inputs(config: &Config, partitions: i32) -> Vec<TopicSpec> {
    Source::ALL
        .iter()
        .map(|source| TopicSpec {
            name: config.topics.input(*source).to_string(),
            partitions,
            configs: Vec::new(),
        })
        .collect()
}

/// The output topics, co-partitioned with the inputs.
pub fn outputs(config: &Config, partitions: i32) -> Vec<TopicSpec> {
    let topics = &config.topics;
    let plain = |name: &str| TopicSpec {
        name: name.to_string(),
        partitions,
        configs: Vec::new(),
    };
    vec![
        TopicSpec {
            name: topics.profiles.clone(),
            partitions,
            configs: vec![("cleanup.policy", "compact")],
        },
        plain(&topics.enriched),
        plain(&topics.signals),
        plain(&topics.metrics),
        plain(&topics.dlq),
        TopicSpec {
            name: topics.changelog.clone(),
            partitions,
            configs: vec![("cleanup.policy", "compact")],
        },
    ]
}

/// Creates every missing topic of `specs`. Brokers without the CreateTopics API
/// (librdkafka's mock cluster) are tolerated: topics are then auto-created.
pub async fn ensure(config: &Config, specs: &[TopicSpec]) -> anyhow::Result<()> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.kafka.bootstrap_servers);
    for (key, value) in &config.kafka.consumer {
        if key.starts_with("security.") || key.starts_with("sasl.") || key.starts_with("ssl.") {
            client.set(key, value.to_string());
        }
    }
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(30))?;
    let existing: Vec<&str> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.name())
        .collect();
    let missing: Vec<&TopicSpec> = specs
        .iter()
        .filter(|spec| !existing.contains(&spec.name.as_str()))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let new_topics: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|spec| {
            spec.configs.iter().fold(
                NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(-1)),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    match admin.create_topics(new_topics.iter(), &options).await {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(name) => info!(topic = %name, "topic created"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => warn!(topic = %name, %code, "topic not created"),
                }
            }
        }
        Err(error) => warn!(%error, "CreateTopics unavailable; relying on broker auto-creation"),
    }
    Ok(())
}
