//! Configuration: typed structs with defaults, loaded from TOML plus
//! `CXPULSE_` environment overrides ([`environment`]: `__` separates nesting
//! levels, `_FILE` reads a mounted Secret), then checked so that a bad value
//! fails at start-up with its key named. Secrets ([`secrets`]) never come from
//! the file and are never printed.
//!
//! `config/default.toml` documents every key; a test keeps it equal to
//! [`Config::default`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Format as _, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::decode::Format;
use crate::event::{Channel, Source};

pub mod environment;
pub mod secrets;

pub use environment::Environment;
pub use secrets::{is_secret_property, Secret};

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be parsed into the typed config.
    #[error("{0}")]
    Parse(#[from] Box<figment::Error>),
    /// A value parsed but breaks a rule.
    #[error("invalid config key `{key}`: {problem}")]
    Invalid {
        /// Dotted key path, e.g. `windows[1].step`.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

/// The whole configuration of one cxpulse instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Brokers, consumer group and librdkafka pass-through properties.
    pub kafka: KafkaConfig,
    /// Topic names.
    pub topics: TopicsConfig,
    /// Value formats of inputs and outputs.
    pub formats: FormatsConfig,
    /// Event-time and input-handling rules.
    pub processing: ProcessingConfig,
    /// Rolling windows, each `{name, size, step}`.
    pub windows: Vec<WindowConfig>,
    /// SLA first-response thresholds per ticket channel.
    pub sla: SlaConfig,
    /// Lifecycle and segment thresholds.
    pub segments: SegmentsConfig,
    /// HTTP listener for metrics, health and the profile API.
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka: KafkaConfig::default(),
            topics: TopicsConfig::default(),
            formats: FormatsConfig::default(),
            processing: ProcessingConfig::default(),
            windows: vec![
                WindowConfig::new("1h", 3600, 60),
                WindowConfig::new("24h", 86_400, 300),
                WindowConfig::new("7d", 7 * 86_400, 3600),
                WindowConfig::new("30d", 30 * 86_400, 86_400),
            ],
            sla: SlaConfig::default(),
            segments: SegmentsConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// Kafka connection and client settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Consumer group; every replica of one deployment shares it.
    pub group_id: String,
    /// `client.id` prefix, also the CloudEvents `ce_source`.
    pub client_id: String,
    /// How often (at least once) the state is flushed and the offsets it covers committed.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// How long every broker may stay unreachable (at start-up or later) before cxpulse exits with an error.
    #[serde(with = "humantime_serde")]
    pub unreachable_timeout: Duration,
    /// `transactional.id` in `exactly_once` mode; empty means `{group_id}-{HOSTNAME}`
    /// (stable per pod, so a restarted pod fences its previous incarnation).
    pub transactional_id: String,
    /// Consumer group protocol: `classic` (every broker) or `consumer` (KIP-848, Kafka 4.0+:
    /// incremental rebalances with the brokers' co-partitioning `range` assignor).
    pub group_protocol: GroupProtocol,
    /// `group.instance.id` for static membership, unique and stable per instance (a
    /// StatefulSet pod name): a restarted instance takes its tasks back without a rebalance.
    /// Empty: dynamic membership.
    pub group_instance_id: String,
    /// The SASL password (`sasl.password`), from `CXPULSE_KAFKA__SASL_PASSWORD` or the file
    /// named by `CXPULSE_KAFKA__SASL_PASSWORD_FILE` only; never printed or logged.
    #[serde(skip_serializing)]
    pub sasl_password: Secret,
    /// librdkafka properties for every client (consumer, producer, admin, restore): TLS, SASL.
    pub properties: BTreeMap<String, PropertyValue>,
    /// Extra librdkafka consumer properties (tuning); they win over `properties`.
    pub consumer: BTreeMap<String, PropertyValue>,
    /// Extra librdkafka producer properties (tuning); they win over `properties`.
    pub producer: BTreeMap<String, PropertyValue>,
}

/// Consumer group protocol.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GroupProtocol {
    /// The classic protocol with the client-side `range` assignor (eager rebalances).
    Classic,
    /// KIP-848 (`group.protocol=consumer`) with the brokers' `range` assignor.
    Consumer,
}

/// Which Kafka client a [`ClientConfig`](rdkafka::ClientConfig) is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRole {
    /// The input consumer (and the restore reader): `kafka.consumer` applies.
    Consumer,
    /// The output producer (and the generator): `kafka.producer` applies.
    Producer,
    /// Topic administration: only `kafka.properties`.
    Admin,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "localhost:9092".into(),
            group_id: "cxpulse".into(),
            client_id: "cxpulse".into(),
            commit_interval: Duration::from_secs(1),
            unreachable_timeout: Duration::from_secs(300),
            transactional_id: String::new(),
            group_protocol: GroupProtocol::Classic,
            group_instance_id: String::new(),
            sasl_password: Secret::default(),
            properties: BTreeMap::new(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
        }
    }
}

/// A librdkafka property value; TOML numbers and booleans are accepted as text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PropertyValue {
    /// Text.
    Text(String),
    /// Integer.
    Integer(i64),
    /// Boolean.
    Bool(bool),
    /// Number.
    Float(f64),
}

impl std::fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PropertyValue::Text(text) => f.write_str(text),
            PropertyValue::Integer(value) => write!(f, "{value}"),
            PropertyValue::Bool(value) => write!(f, "{value}"),
            PropertyValue::Float(value) => write!(f, "{value}"),
        }
    }
}

/// Names of every topic cxpulse reads or writes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TopicsConfig {
    /// Purchase events (input).
    pub purchases: String,
    /// Ticket events (input).
    pub tickets: String,
    /// Survey events (input).
    pub surveys: String,
    /// Latest profile per customer (output, compacted).
    pub profiles: String,
    /// Input events with profile context (output).
    pub enriched: String,
    /// Signals to act on (output).
    pub signals: String,
    /// Final window results (output).
    pub metrics: String,
    /// Dead letters (output).
    pub dlq: String,
    /// Task state (compacted, co-partitioned with the inputs; one per deployment).
    pub changelog: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            purchases: "cx.purchases".into(),
            tickets: "cx.tickets".into(),
            surveys: "cx.surveys".into(),
            profiles: "cx.profiles".into(),
            enriched: "cx.enriched".into(),
            signals: "cx.signals".into(),
            metrics: "cx.metrics".into(),
            dlq: "cx.dlq".into(),
            changelog: "cxpulse.state-changelog".into(),
        }
    }
}

impl TopicsConfig {
    /// Renames every topic, inputs, outputs and changelog (tests and benches give
    /// each run topics of its own).
    pub fn rename_all(&mut self, rename: impl Fn(&str) -> String) {
        for name in [
            &mut self.purchases,
            &mut self.tickets,
            &mut self.surveys,
            &mut self.profiles,
            &mut self.enriched,
            &mut self.signals,
            &mut self.metrics,
            &mut self.dlq,
            &mut self.changelog,
        ] {
            *name = rename(name);
        }
    }

    /// The input topic of `source`.
    pub fn input(&self, source: Source) -> &str {
        match source {
            Source::Purchases => &self.purchases,
            Source::Tickets => &self.tickets,
            Source::Surveys => &self.surveys,
        }
    }

    /// The input source a topic name belongs to.
    pub fn source_of(&self, topic: &str) -> Option<Source> {
        Source::ALL
            .into_iter()
            .find(|source| self.input(*source) == topic)
    }
}

/// Value formats.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FormatsConfig {
    /// Purchases, when a record has no `content-type` header.
    pub purchases: Format,
    /// Tickets, when a record has no `content-type` header.
    pub tickets: Format,
    /// Surveys, when a record has no `content-type` header.
    pub surveys: Format,
    /// Every output topic except the DLQ (which keeps the original bytes).
    pub outputs: Format,
}

impl Default for FormatsConfig {
    fn default() -> Self {
        FormatsConfig {
            purchases: Format::Json,
            tickets: Format::Json,
            surveys: Format::Json,
            outputs: Format::Json,
        }
    }
}

/// Event-time and input rules.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessingConfig {
    /// How long after a window's end it stays open for disordered events.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// Wall time without records after which a partition stops holding the watermark back.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How far after the wall clock `occurred_at` may be.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Largest accepted record value in bytes.
    pub max_record_bytes: usize,
    /// Event time during which a redelivered event id is recognised.
    #[serde(with = "humantime_serde")]
    pub dedupe_window: Duration,
    /// A customer with a purchase within this horizon is active.
    #[serde(with = "humantime_serde")]
    pub activity_horizon: Duration,
    /// Resolved tickets are remembered this long (event time) so a reopening counts.
    #[serde(with = "humantime_serde")]
    pub ticket_retention: Duration,
    /// Most records handled in one processing cycle.
    pub batch_max_records: usize,
    /// Longest wait to fill one processing cycle.
    #[serde(with = "humantime_serde")]
    pub batch_max_wait: Duration,
    /// `at_least_once` or `exactly_once` (Kafka transactions).
    pub guarantee: Guarantee,
    /// Longest graceful shutdown before the process gives up and exits.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// `/healthz` fails once the processing loop has made no progress this long
    /// while input was waiting (a stuck pipeline gets restarted by its liveness probe).
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        ProcessingConfig {
            allowed_lateness: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(30),
            max_future_skew: Duration::from_secs(3600),
            max_record_bytes: 1 << 20,
            dedupe_window: Duration::from_secs(86_400),
            activity_horizon: Duration::from_secs(90 * 86_400),
            ticket_retention: Duration::from_secs(30 * 86_400),
            batch_max_records: 5000,
            batch_max_wait: Duration::from_millis(50),
            shutdown_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(120),
            guarantee: Guarantee::AtLeastOnce,
        }
    }
}

/// Delivery guarantee of outputs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Outputs may repeat after a crash (same `event_id`); state is effectively once.
    AtLeastOnce,
    /// Outputs, changelog and input offsets commit in one Kafka transaction.
    ExactlyOnce,
}

/// One rolling window: `W(e) = [e - size, e)` for every multiple `e` of `step`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Label in `cx.metrics` and Prometheus, e.g. `24h`.
    pub name: String,
    /// Window length.
    #[serde(with = "humantime_serde")]
    pub size: Duration,
    /// Distance between window ends.
    #[serde(with = "humantime_serde")]
    pub step: Duration,
}

impl WindowConfig {
    /// A window from seconds.
    pub fn new(name: &str, size_seconds: u64, step_seconds: u64) -> Self {
        WindowConfig {
            name: name.into(),
            size: Duration::from_secs(size_seconds),
            step: Duration::from_secs(step_seconds),
        }
    }
}

/// First-response SLA threshold per channel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SlaConfig {
    /// E-mail.
    #[serde(with = "humantime_serde")]
    pub email: Duration,
    /// Chat.
    #[serde(with = "humantime_serde")]
    pub chat: Duration,
    /// Phone.
    #[serde(with = "humantime_serde")]
    pub phone: Duration,
    /// Social media.
    #[serde(with = "humantime_serde")]
    pub social: Duration,
    /// Web form.
    #[serde(with = "humantime_serde")]
    pub web: Duration,
}

impl Default for SlaConfig {
    fn default() -> Self {
        let day = Duration::from_secs(86_400);
        let hour = Duration::from_secs(3600);
        SlaConfig {
            email: day,
            chat: hour,
            phone: day,
            social: hour,
            web: day,
        }
    }
}

impl SlaConfig {
    /// The threshold of a channel.
    pub fn threshold(&self, channel: Channel) -> Duration {
        match channel {
            Channel::Email => self.email,
            Channel::Chat => self.chat,
            Channel::Phone => self.phone,
            Channel::Social => self.social,
            Channel::Web => self.web,
        }
    }
}

/// Lifecycle and RFM segment thresholds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SegmentsConfig {
    /// A customer is `new` this long after the first purchase, and `reactivated` this long after returning.
    #[serde(with = "humantime_serde")]
    pub new_period: Duration,
    /// A champion purchased within this period.
    #[serde(with = "humantime_serde")]
    pub champion_recency: Duration,
    /// A champion placed at least this many orders.
    pub champion_min_orders: u64,
    /// A champion's net value in at least one currency, in minor units.
    pub champion_min_value: i64,
}

impl Default for SegmentsConfig {
    fn default() -> Self {
        SegmentsConfig {
            new_period: Duration::from_secs(30 * 86_400),
            champion_recency: Duration::from_secs(30 * 86_400),
            champion_min_orders: 5,
            champion_min_value: 50_000,
        }
    }
}

/// HTTP listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of `/metrics`, `/healthz`, `/readyz` and `/v1/customers/{id}`.
    pub listen: SocketAddr,
    /// Bearer token the profile API requires, from `CXPULSE_HTTP__API_TOKEN` or the file
    /// named by `CXPULSE_HTTP__API_TOKEN_FILE`; empty: the profile API answers 401 to all.
    #[serde(skip_serializing)]
    pub api_token: Secret,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 9898)),
            api_token: Secret::default(),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
    /// `tracing` filter, e.g. `info` or `cxpulse=debug,rdkafka=warn`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Loads defaults, then `file` (when given), then `CXPULSE_*` environment variables, and validates.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_from(file, Environment::of_process())
    }

    /// [`Config::load`] with a given environment.
    pub fn load_from(file: Option<&Path>, environment: Environment) -> Result<Config, ConfigError> {
        let figment = layers(file, environment)?;
        let config: Config = figment.extract().map_err(Box::new)?;
        if let Some(file) = file {
            refuse_secrets_in_file(file)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// The configuration [`Config::load_from`] would load, as TOML that `--config`
    /// accepts back: every key, values as written (durations too), secrets left
    /// out and named in a closing comment.
    pub fn render(file: Option<&Path>, environment: Environment) -> Result<String, ConfigError> {
        let figment = layers(file, environment)?;
        let mut root: figment::value::Dict = figment.extract().map_err(Box::new)?;
        let removed = secrets::remove_secrets(&mut root);
        let mut text = toml::to_string(&root).map_err(|error| ConfigError::Invalid {
            key: "(rendering)".into(),
            problem: error.to_string(),
        })?;
        for key in removed {
            text.push_str(&format!("# {key} is set (redacted)\n"));
        }
        Ok(text)
    }

    /// Checks the rules serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                problem: problem.into(),
            })
        };
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return invalid("kafka.bootstrap_servers", "must name at least one broker");
        }
        if self.kafka.group_id.trim().is_empty() {
            return invalid("kafka.group_id", "must not be empty");
        }
        self.kafka.check_properties()?;
        let topics = [
            ("topics.purchases", &self.topics.purchases),
            ("topics.tickets", &self.topics.tickets),
            ("topics.surveys", &self.topics.surveys),
            ("topics.profiles", &self.topics.profiles),
            ("topics.enriched", &self.topics.enriched),
            ("topics.signals", &self.topics.signals),
            ("topics.metrics", &self.topics.metrics),
            ("topics.dlq", &self.topics.dlq),
            ("topics.changelog", &self.topics.changelog),
        ];
        for (index, (key, name)) in topics.iter().enumerate() {
            if name.is_empty() || name.len() > 249 || !name.chars().all(valid_topic_char) {
                return invalid(key, "is not a valid Kafka topic name");
            }
            if topics[..index].iter().any(|(_, other)| other == name) {
                return invalid(key, "names the same topic as another key");
            }
        }
        if self.processing.max_record_bytes == 0 {
            return invalid("processing.max_record_bytes", "must be greater than 0");
        }
        if self.processing.batch_max_records == 0 {
            return invalid("processing.batch_max_records", "must be greater than 0");
        }
        if self.processing.idle_timeout.is_zero() {
            return invalid("processing.idle_timeout", "must be greater than 0");
        }
        if self.processing.activity_horizon.as_millis() < 1000 {
            return invalid("processing.activity_horizon", "must be at least 1s");
        }
        if self.windows.is_empty() {
            return invalid("windows", "must list at least one window");
        }
        for (index, window) in self.windows.iter().enumerate() {
            let key = |field: &str| format!("windows[{index}].{field}");
            if window.name.is_empty()
                || !window
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return invalid(&key("name"), "must be non-empty letters, digits or `_`");
            }
            if self.windows[..index]
                .iter()
                .any(|other| other.name == window.name)
            {
                return invalid(&key("name"), "is used by another window");
            }
            let (size, step) = (window.size.as_millis(), window.step.as_millis());
            if step < 1000 {
                return invalid(&key("step"), "must be at least 1s");
            }
            if size == 0 || size % step != 0 {
                return invalid(&key("size"), "must be a positive multiple of step");
            }
        }
        Ok(())
    }
}

/// Defaults, then the file, then the environment.
fn layers(file: Option<&Path>, environment: Environment) -> Result<Figment, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(file) = file {
        if !file.exists() {
            return Err(ConfigError::Invalid {
                key: "--config".into(),
                problem: format!("file {} does not exist", file.display()),
            });
        }
        figment = figment.merge(Toml::file(file));
    }
    Ok(figment.merge(environment))
}

/// Secrets live in the environment or a mounted file, never in the config file in clear.
fn refuse_secrets_in_file(file: &Path) -> Result<(), ConfigError> {
    let content = std::fs::read_to_string(file).unwrap_or_default();
    let parsed: toml::Table = content.parse().unwrap_or_default();
    let mut keys = Vec::new();
    for (section, value) in &parsed {
        let Some(table) = value.as_table() else {
            continue;
        };
        for (name, value) in table {
            keys.push(format!("{section}.{name}"));
            if section == "kafka" {
                for property in value.as_table().into_iter().flat_map(toml::Table::keys) {
                    keys.push(format!("kafka.{name}.{property}"));
                }
            }
        }
    }
    match keys.into_iter().find(|key| secrets::is_secret_key(key)) {
        Some(key) => Err(ConfigError::Invalid {
            problem: format!(
                "secrets are not read from the config file: set the environment variable {} \
                 or point {}_FILE at a mounted Secret",
                environment_name(&key),
                environment_name(&key)
            ),
            key,
        }),
        None => Ok(()),
    }
}

/// The `CXPULSE_*` variable that sets a dotted `key` (`_` for `.` inside property names).
fn environment_name(key: &str) -> String {
    let path: Vec<String> = match key.split_once('.') {
        Some(("kafka", rest)) => match rest.split_once('.') {
            Some((map, property)) => vec!["kafka".into(), map.into(), property.replace('.', "_")],
            None => vec!["kafka".into(), rest.into()],
        },
        _ => key.split('.').map(str::to_string).collect(),
    };
    format!("CXPULSE_{}", path.join("__").to_ascii_uppercase())
}

impl KafkaConfig {
    /// The one builder of every Kafka client: brokers, `properties`, the SASL password
    /// and the role's own properties.
    pub fn client(&self, role: ClientRole) -> Result<rdkafka::ClientConfig, ConfigError> {
        self.client_over(role, rdkafka::ClientConfig::new())
    }

    /// [`KafkaConfig::client`] on top of cxpulse's own `defaults` for that client,
    /// which the configured properties override.
    pub fn client_over(
        &self,
        role: ClientRole,
        defaults: rdkafka::ClientConfig,
    ) -> Result<rdkafka::ClientConfig, ConfigError> {
        let mut client = defaults;
        client.set("bootstrap.servers", &self.bootstrap_servers);
        for (key, value) in &self.properties {
            client.set(key, value.to_string());
        }
        if !self.sasl_password.is_empty() {
            client.set("sasl.password", self.sasl_password.expose());
        }
        let own = match role {
            ClientRole::Consumer => &self.consumer,
            ClientRole::Producer => &self.producer,
            ClientRole::Admin => return Ok(client),
        };
        for (key, value) in own {
            client.set(key, value.to_string());
        }
        Ok(client)
    }

    /// Every client's properties as librdkafka takes them: a misspelt or unknown
    /// property fails here, named, with no value shown (it may be a secret).
    fn check_properties(&self) -> Result<(), ConfigError> {
        for (role, map) in [
            (ClientRole::Admin, "properties"),
            (ClientRole::Consumer, "consumer"),
            (ClientRole::Producer, "producer"),
        ] {
            let Err(error) = self.client(role)?.create_native_config() else {
                continue;
            };
            let (problem, property) = match error {
                rdkafka::error::KafkaError::ClientConfig(_, description, property, value) => {
                    let shown = if !value.is_empty() && is_secret_property(&property) {
                        description.replace(&value, "<redacted>")
                    } else {
                        description
                    };
                    (shown, property)
                }
                other => (other.to_string(), String::new()),
            };
            let owner = [map, "properties"]
                .into_iter()
                .find(|owner| self.map(owner).is_some_and(|m| m.contains_key(&property)))
                .unwrap_or(map);
            return Err(ConfigError::Invalid {
                key: format!("kafka.{owner}.\"{property}\""),
                problem,
            });
        }
        Ok(())
    }

    fn map(&self, name: &str) -> Option<&BTreeMap<String, PropertyValue>> {
        match name {
            "properties" => Some(&self.properties),
            "consumer" => Some(&self.consumer),
            "producer" => Some(&self.producer),
            _ => None,
        }
    }
}

fn valid_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_toml_documents_exactly_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        let from_file: Config = Figment::new()
            .merge(Toml::file(&path))
            .extract()
            .expect("config/default.toml parses");
        assert_eq!(from_file, Config::default());
    }

    fn error_of(toml: &str) -> String {
        let config: Result<Config, _> = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(toml))
            .extract();
        match config {
            Err(error) => error.to_string(),
            Ok(config) => match config.validate() {
                Err(error) => error.to_string(),
                Ok(()) => panic!("accepted {toml}"),
            },
        }
    }

    #[test]
    fn errors_name_the_key() {
        assert!(error_of("[processing]\nallowed_lateness = \"soon\"").contains("allowed_lateness"));
        assert!(error_of("[processing]\nalowed_lateness = \"5m\"").contains("alowed_lateness"));
        assert!(
            error_of("[processing]\nmax_record_bytes = 0").contains("processing.max_record_bytes")
        );
        assert!(
            error_of("[[windows]]\nname = \"x\"\nsize = \"90s\"\nstep = \"1m\"")
                .contains("windows[0].size")
        );
        assert!(error_of("[topics]\ndlq = \"cx.metrics\"").contains("topics.dlq"));
        assert!(error_of("[formats]\noutputs = \"xml\"").contains("outputs"));
        assert!(error_of("[http]\nlisten = \"nowhere\"").contains("listen"));
    }

    #[test]
    fn librdkafka_properties_accept_numbers_and_booleans() {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(
                "[kafka.producer]\n\"linger.ms\" = 5\n\"enable.idempotence\" = true",
            ))
            .extract()
            .unwrap();
        let rendered: Vec<String> = config
            .kafka
            .producer
            .values()
            .map(|v| v.to_string())
            .collect();
        assert_eq!(rendered, ["true", "5"]);
    }
}
