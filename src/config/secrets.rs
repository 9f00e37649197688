//! Secrets in the configuration: recognised by name (misspelt ones too), never
//! read from the config file, never printed.

use figment::value::{Dict, Value};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

/// A secret value: compared and used, never shown; zeroed in memory when dropped
/// (`secrecy`).
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Secret {
    /// The secret itself, for the places that hand it to librdkafka.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// True when no secret was given.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    /// Whether `given` is this secret, in a time that does not depend on where
    /// they first differ (`subtle`; only their lengths may show).
    pub fn matches(&self, given: &[u8]) -> bool {
        self.expose().as_bytes().ct_eq(given).into()
    }
}

impl Default for Secret {
    fn default() -> Self {
        Secret::from(String::new())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(SecretString::from(value))
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.matches(other.expose().as_bytes())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_empty() {
            "<none>"
        } else {
            "<redacted>"
        })
    }
}

/// cxpulse's own secret keys, as dotted paths.
pub const SECRET_KEYS: [&str; 2] = ["kafka.sasl_password", "http.api_token"];

/// Fragments of librdkafka property names that hold secrets, matched on the name
/// without punctuation so that `sasl.pasword` or `ssl.keypassword` are caught too.
/// Of librdkafka's 190 properties these flag exactly the nine that hold secrets; paths
/// such as `ssl.key.location` or `sasl.oauthbearer.token.endpoint.url` are not secrets.
const SECRET_FRAGMENTS: [&str; 6] = [
    "pas", // password, passwd, passphrase and their misspellings
    "secr",
    "scret",
    "jaas",
    "oauthbearerconfig",
    "keypem",
];

/// Words that name a secret, each with the typos a word of a property name may
/// have and still count (`socket` is two edits from `secret`).
const SECRET_WORDS: [(&str, usize); 2] = [("password", 2), ("secret", 1)];

/// Whether a librdkafka property of this name holds a secret (known or misspelt).
pub fn is_secret_property(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let letters: String = name.chars().filter(char::is_ascii_alphanumeric).collect();
    SECRET_FRAGMENTS
        .iter()
        .any(|fragment| letters.contains(fragment))
        || name
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| {
                SECRET_WORDS
                    .iter()
                    .any(|(secret, allowed)| typos(word, secret) <= *allowed)
            })
}

/// Edits (insertions, deletions, substitutions, swaps of neighbours) from `a`
/// to `b`: the optimal string alignment distance.
fn typos(a: &str, b: &str) -> usize {
    strsim::osa_distance(a, b)
}

/// Whether the dotted config `key` holds a secret: one of [`SECRET_KEYS`] or a
/// secret-like property in `kafka.properties`, `kafka.consumer` or `kafka.producer`.
pub fn is_secret_key(key: &str) -> bool {
    if SECRET_KEYS.contains(&key) {
        return true;
    }
    ["kafka.properties.", "kafka.consumer.", "kafka.producer."]
        .iter()
        .any(|map| key.strip_prefix(map).is_some_and(is_secret_property))
}

/// Removes every secret from a configuration tree; returns the dotted keys removed.
pub fn remove_secrets(root: &mut Dict) -> Vec<String> {
    let mut removed = Vec::new();
    for key in SECRET_KEYS {
        let (section, name) = key.split_once('.').unwrap_or((key, ""));
        if let Some(Value::Dict(_, table)) = root.get_mut(section) {
            if table.remove(name).is_some() {
                removed.push(key.to_string());
            }
        }
    }
    if let Some(Value::Dict(_, kafka)) = root.get_mut("kafka") {
        for map in ["properties", "consumer", "producer"] {
            if let Some(Value::Dict(_, properties)) = kafka.get_mut(map) {
                properties.retain(|name, _| {
                    let secret = is_secret_property(name);
                    if secret {
                        removed.push(format!("kafka.{map}.\"{name}\""));
                    }
                    !secret
                });
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_properties_are_recognised_even_misspelt() {
        for secret in [
            "sasl.password",
            "sasl.pasword",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.key.pem",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.client.secert",
            "sasl.oauthbearer.client.secrt",
            "ssl.keystore.passwrod",
            "ssl.keypasswd",
            "sasl.jaas.config",
        ] {
            assert!(is_secret_property(secret), "{secret}");
        }
        for plain in [
            "sasl.username",
            "sasl.mechanisms",
            "security.protocol",
            "ssl.ca.location",
            "ssl.key.location",
            "ssl.certificate.location",
            "sasl.kerberos.keytab",
            "linger.ms",
            "sasl.oauthbearer.token.endpoint.url",
            "sasl.oauthbearer.assertion.private.key.file",
            "bootstrap.servers",
            "partition.assignment.strategy",
            "socket.timeout.ms",
            "socket.keepalive.enable",
            "session.timeout.ms",
            "ssl.endpoint.identification.algorithm",
            "message.send.max.retries",
            "sasl.oauthbearer.client.credentials.client.id",
            "compression.type",
            "fetch.wait.max.ms",
        ] {
            assert!(!is_secret_property(plain), "{plain}");
        }
    }

    #[test]
    fn secrets_match_exactly() {
        let secret = Secret::from("abc".to_string());
        assert!(secret.matches(b"abc"));
        for other in [&b"abd"[..], b"ab", b"abcd", b""] {
            assert!(!secret.matches(other), "{other:?}");
        }
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Secret::default()), "<none>");
    }

    #[test]
    fn typos_count_edits_and_swaps() {
        assert_eq!(typos("secret", "secret"), 0);
        assert_eq!(typos("secert", "secret"), 1);
        assert_eq!(typos("pasword", "password"), 1);
        assert_eq!(typos("sceret", "secret"), 1);
        assert_eq!(typos("", "secret"), 6);
        assert_eq!(typos("servers", "secret"), 4);
    }

    #[test]
    fn removing_secrets_leaves_the_rest() {
        let mut root = Dict::new();
        let mut kafka = Dict::new();
        let mut properties = Dict::new();
        properties.insert("sasl.pasword".into(), Value::from("hunter2".to_string()));
        properties.insert("sasl.username".into(), Value::from("cx".to_string()));
        kafka.insert("properties".into(), Value::from(properties));
        kafka.insert("sasl_password".into(), Value::from("x".to_string()));
        root.insert("kafka".into(), Value::from(kafka));
        let removed = remove_secrets(&mut root);
        assert_eq!(
            removed,
            ["kafka.sasl_password", "kafka.properties.\"sasl.pasword\""]
        );
        let rendered = format!("{root:?}");
        assert!(!rendered.contains("hunter2") && rendered.contains("sasl.username"));
    }
}
