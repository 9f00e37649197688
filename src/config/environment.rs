//! The `CXPULSE_*` environment as a configuration layer.
//!
//! - `CXPULSE_SECTION__KEY=value` sets `section.key` (`__` between levels);
//!   values parse like TOML scalars and inline arrays or tables.
//! - `CXPULSE_SECTION__KEY_FILE=/path` sets it to the file's contents without the
//!   trailing newline: a mounted Kubernetes Secret.
//! - In the librdkafka property maps (`kafka.properties`, `kafka.consumer`,
//!   `kafka.producer`) `_` stands for `.`: `CXPULSE_KAFKA__PROPERTIES__SASL_PASSWORD`
//!   sets `"sasl.password"`, always as text.
//! - A name without `__` that is not a top-level key is not configuration and
//!   is ignored: Kubernetes injects `CXPULSE_PORT`, `CXPULSE_SERVICE_HOST`,
//!   `CXPULSE_PORT_9898_TCP_ADDR`, ... into every pod of a namespace with a
//!   Service named `cxpulse`.

use std::path::Path;

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

use super::secrets::is_secret_key;

/// Prefix of every configuration variable.
const PREFIX: &str = "CXPULSE_";
/// Suffix of a variable that names a file holding the value.
const FILE_SUFFIX: &str = "_file";
/// Top-level keys of [`super::Config`]; only these may appear without `__`.
const TOP_LEVEL: [&str; 9] = [
    "kafka",
    "topics",
    "formats",
    "processing",
    "windows",
    "sla",
    "segments",
    "http",
    "log",
];
/// The tables whose keys are librdkafka property names.
const PROPERTY_MAPS: [&str; 3] = ["properties", "consumer", "producer"];

/// The configuration variables of an environment.
#[derive(Debug, Clone)]
pub struct Environment {
    variables: Vec<(String, String)>,
}

impl Environment {
    /// The variables of this process.
    pub fn of_process() -> Self {
        Environment::from_variables(std::env::vars_os().filter_map(|(name, value)| {
            Some((name.into_string().ok()?, value.into_string().ok()?))
        }))
    }

    /// Given variables (tests); anything not configuration is dropped here.
    pub fn from_variables(variables: impl IntoIterator<Item = (String, String)>) -> Self {
        let variables = variables
            .into_iter()
            .filter(|(name, _)| is_configuration(name))
            .collect();
        Environment { variables }
    }
}

/// Whether `name` is a configuration variable (see the module docs).
fn is_configuration(name: &str) -> bool {
    let Some(rest) = strip_prefix_ignore_case(name, PREFIX) else {
        return false;
    };
    if rest.contains("__") {
        return true;
    }
    let rest = rest.to_ascii_lowercase();
    let key = rest.strip_suffix(FILE_SUFFIX).unwrap_or(&rest);
    TOP_LEVEL.contains(&key)
}

fn strip_prefix_ignore_case<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &name[prefix.len()..])
}

impl Provider for Environment {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable")
            .interpolater(|_, keys| format!("{PREFIX}{}", keys.join("__").to_ascii_uppercase()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut root = Dict::new();
        for (name, raw) in &self.variables {
            let Some(rest) = strip_prefix_ignore_case(name, PREFIX) else {
                continue;
            };
            let rest = rest.to_ascii_lowercase();
            let (key, text) = match rest.strip_suffix(FILE_SUFFIX) {
                Some(key) => (
                    key.to_string(),
                    read_value_file(name, Path::new(raw)).map_err(Error::from)?,
                ),
                None => (rest.clone(), raw.clone()),
            };
            let mut path: Vec<String> = key.split("__").map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                return Err(Error::from(format!("{name}: empty key between `__`")));
            }
            let property =
                path.len() == 3 && path[0] == "kafka" && PROPERTY_MAPS.contains(&path[1].as_str());
            if property {
                path[2] = path[2].replace('_', ".");
            }
            // librdkafka takes text; a secret is text even when it looks like a number.
            let value = if property || is_secret_key(&path.join(".")) {
                Value::from(text)
            } else {
                text.parse::<Value>().unwrap_or_else(|never| match never {})
            };
            insert(&mut root, &path, value);
        }
        Ok(Profile::Default.collect(root))
    }
}

/// The contents of a `_FILE` variable's file, without the trailing newline.
fn read_value_file(variable: &str, path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|text| text.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|error| format!("{variable}: cannot read {}: {error}", path.display()))
}

fn insert(dict: &mut Dict, path: &[String], value: Value) {
    let [first, rest @ ..] = path else {
        return;
    };
    if rest.is_empty() {
        dict.insert(first.clone(), value);
        return;
    }
    let entry = dict
        .entry(first.clone())
        .or_insert_with(|| Value::from(Dict::new()));
    if !matches!(entry, Value::Dict(..)) {
        *entry = Value::from(Dict::new());
    }
    if let Value::Dict(_, inner) = entry {
        insert(inner, rest, value);
    }
}

#[cfg(test)]
mod tests {
    use figment::providers::Serialized;
    use figment::Figment;

    use super::*;
    use crate::config::{Config, PropertyValue};

    fn load(variables: &[(&str, &str)]) -> Result<Config, Box<Error>> {
        let environment = Environment::from_variables(
            variables
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string())),
        );
        Figment::from(Serialized::defaults(Config::default()))
            .merge(environment)
            .extract()
            .map_err(Box::new)
    }

    #[test]
    fn kubernetes_service_variables_are_not_configuration() {
        let config = load(&[
            ("CXPULSE_PORT", "tcp://10.0.0.7:9898"),
            ("CXPULSE_SERVICE_HOST", "10.0.0.7"),
            ("CXPULSE_SERVICE_PORT", "9898"),
            ("CXPULSE_SERVICE_PORT_HTTP", "9898"),
            ("CXPULSE_PORT_9898_TCP", "tcp://10.0.0.7:9898"),
            ("CXPULSE_PORT_9898_TCP_PROTO", "tcp"),
            ("CXPULSE_PORT_9898_TCP_PORT", "9898"),
            ("CXPULSE_PORT_9898_TCP_ADDR", "10.0.0.7"),
            ("CXPULSE_KAFKA__GROUP_ID", "cx"),
        ])
        .unwrap();
        assert_eq!(config.kafka.group_id, "cx");
    }

    #[test]
    fn a_misspelt_key_with_levels_is_still_an_error() {
        let error = load(&[("CXPULSE_KAFKA__BOOTSTRAP_SERVRS", "b:9092")]).unwrap_err();
        assert!(error.to_string().contains("bootstrap_servrs"), "{error}");
        let error = load(&[("CXPULSE_KAFK__GROUP_ID", "cx")]).unwrap_err();
        assert!(error.to_string().contains("kafk"), "{error}");
    }

    #[test]
    fn librdkafka_properties_use_underscores_for_dots_and_stay_text() {
        let config = load(&[
            ("CXPULSE_KAFKA__PROPERTIES__SASL_PASSWORD", "12345"),
            ("CXPULSE_KAFKA__CONSUMER__FETCH_WAIT_MAX_MS", "10"),
            ("CXPULSE_PROCESSING__BATCH_MAX_RECORDS", "77"),
        ])
        .unwrap();
        assert_eq!(
            config.kafka.properties.get("sasl.password"),
            Some(&PropertyValue::Text("12345".into()))
        );
        assert_eq!(
            config.kafka.consumer.get("fetch.wait.max.ms"),
            Some(&PropertyValue::Text("10".into()))
        );
        assert_eq!(config.processing.batch_max_records, 77);
    }

    #[test]
    fn a_file_variable_reads_a_mounted_secret() {
        let dir = std::env::temp_dir().join(format!("cxpulse-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "s3cr3t\n").unwrap();
        let path = file.to_string_lossy().to_string();
        let config = load(&[
            ("CXPULSE_KAFKA__SASL_PASSWORD_FILE", &path),
            ("CXPULSE_KAFKA__PROPERTIES__SSL_KEY_PASSWORD_FILE", &path),
            ("CXPULSE_HTTP__API_TOKEN_FILE", &path),
        ])
        .unwrap();
        assert_eq!(config.kafka.sasl_password.expose(), "s3cr3t");
        assert_eq!(config.http.api_token.expose(), "s3cr3t");
        assert_eq!(
            config.kafka.properties.get("ssl.key.password"),
            Some(&PropertyValue::Text("s3cr3t".into()))
        );
        let missing = load(&[("CXPULSE_KAFKA__SASL_PASSWORD_FILE", "/nonexistent/cxpulse")])
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("CXPULSE_KAFKA__SASL_PASSWORD_FILE"),
            "{missing}"
        );
    }

    #[test]
    fn whole_lists_and_tables_parse_inline() {
        let config =
            load(&[("CXPULSE_WINDOWS", r#"[{name="1h", size="1h", step="1m"}]"#)]).unwrap();
        assert_eq!(config.windows.len(), 1);
    }
}
