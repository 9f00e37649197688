//! Topic administration: creates the topics cxpulse reads or writes when they
//! are missing, with the configs their role needs (`cx.profiles` and the
//! changelog compacted), and reads back what the brokers enforce: a
//! changelog that is not compacted is refused, and the largest record each
//! output topic accepts bounds what the pipeline sends there.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tracing::{info, warn};

use crate::config::{ClientRole, Config};
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
    let admin = admin(config)?;
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

fn admin(config: &Config) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(config.kafka.client(ClientRole::Admin)?.create()?)
}

/// The largest record each output topic accepts, by topic name (`max.message.bytes`).
pub type RecordLimits = HashMap<String, usize>;

/// Reads the configs of the output topics: refuses a changelog whose
/// `cleanup.policy` does not compact (its state would be deleted by retention),
/// and returns each topic's `max.message.bytes`. Brokers without DescribeConfigs
/// (librdkafka's mock cluster) yield no limits.
pub async fn check_outputs(config: &Config, specs: &[TopicSpec]) -> anyhow::Result<RecordLimits> {
    let admin = admin(config)?;
    let resources: Vec<ResourceSpecifier<'_>> = specs
        .iter()
        .map(|spec| ResourceSpecifier::Topic(&spec.name))
        .collect();
    // Brokers answer within milliseconds; librdkafka's mock cluster has no controller
    // to answer at all, so a short wait keeps its start-up (demo, tests) quick.
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
    let results = match admin.describe_configs(&resources, &options).await {
        Ok(results) => results,
        Err(KafkaError::AdminOp(code))
            if unsupported(code) || code == RDKafkaErrorCode::OperationTimedOut =>
        {
            warn!(%code, "the brokers do not describe topic configs; changelog compaction and record size limits are not checked");
            return Ok(RecordLimits::new());
        }
        Err(error) => return Err(error.into()),
    };
    let mut limits = RecordLimits::new();
    for (spec, result) in specs.iter().zip(results) {
        let resource = match result {
            Ok(resource) => resource,
            Err(code) if unsupported(code) => {
                warn!(topic = %spec.name, %code, "topic configs not described");
                continue;
            }
            Err(code) => anyhow::bail!("describing the configs of topic `{}`: {code}", spec.name),
        };
        let value = |name: &str| resource.get(name).and_then(|entry| entry.value.clone());
        if spec.name == config.topics.changelog {
            let policy = value("cleanup.policy").unwrap_or_default();
            if !policy.split(',').any(|p| p.trim() == "compact") {
                anyhow::bail!(
                    "changelog topic `{}` has cleanup.policy={policy:?}; it must be compacted \
                     (cleanup.policy=compact), or retention deletes task state. Set it with \
                     kafka-configs --alter --add-config cleanup.policy=compact, or name another \
                     topic in topics.changelog",
                    spec.name
                );
            }
        }
        if let Some(bytes) = value("max.message.bytes").and_then(|v| v.parse().ok()) {
            limits.insert(spec.name.clone(), bytes);
        }
    }
    Ok(limits)
}

fn unsupported(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnsupportedVersion
            | RDKafkaErrorCode::InvalidRequest
            | RDKafkaErrorCode::UnknownTopicOrPartition
    )
}
