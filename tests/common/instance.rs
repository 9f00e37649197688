//! The real `cxpulse run` binary as an operator runs it: started with a config
//! file, probed over HTTP, killed, frozen or stopped by signals.

use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cxpulse::config::Config;

/// A running `cxpulse run`, killed if the test ends early (a failed assertion).
pub struct Instance {
    /// The process.
    pub child: Child,
    /// Its HTTP address.
    pub address: String,
    /// When it was started.
    pub started: Instant,
}

impl Instance {
    /// Starts `cxpulse run` with `config`, serving HTTP on `address`, appending its JSON log to `log`.
    pub fn start(config: &Config, address: &str, log: &Path) -> Instance {
        Instance::start_with(config, address, log, &[])
    }

    /// Like [`Instance::start`], with extra environment variables (fault points, secrets).
    pub fn start_with(
        config: &Config,
        address: &str,
        log: &Path,
        environment: &[(&str, &str)],
    ) -> Instance {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = super::spawn_run(config, address, Stdio::from(file), environment);
        Instance {
            child,
            address: address.to_string(),
            started: Instant::now(),
        }
    }

    /// Waits until `/readyz` answers 200 (tasks restored and consuming).
    pub async fn wait_ready(&self) {
        let ready = super::eventually(Duration::from_secs(90), || {
            super::http_get(&self.address, "/readyz").is_some_and(|(status, _)| status == 200)
        })
        .await;
        assert!(ready, "cxpulse at {} never became ready", self.address);
    }

    /// `kill -9`, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGTERM; asserts the graceful stop exits 0.
    pub fn terminate(&mut self) {
        self.signal("TERM");
        let status = self.child.wait().expect("reaped");
        assert!(status.success(), "graceful stop exits 0: {status}");
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// The sum of every sample of metric `name` (all label sets) on `/metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric(&self.address, name)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of every sample of metric `name` on the `/metrics` of `address`.
pub fn metric(address: &str, name: &str) -> Option<f64> {
    let (_, body) = super::http_get(address, "/metrics")?;
    metric_samples(&body, name)
        .map(|(_, value)| value)
        .reduce(|a, b| a + b)
}

/// `(labels, value)` of every sample of metric `name` in a Prometheus text exposition.
pub fn metric_samples<'a>(body: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> {
    body.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = if let Some(rest) = rest.strip_prefix('{') {
            let (labels, value) = rest.split_once('}')?;
            (labels, value)
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            return None;
        };
        Some((labels, value.trim().parse().ok()?))
    })
}

/// Waits until the instances at `addresses` have consumed at least `records` input
/// records between them (`cxpulse_records_consumed_total`, counted since each
/// started); asserts it happens within `timeout`.
pub async fn wait_consumed<A: AsRef<str>>(addresses: &[A], records: usize, timeout: Duration) {
    let consumed = || {
        addresses
            .iter()
            .filter_map(|address| metric(address.as_ref(), "cxpulse_records_consumed_total"))
            .sum::<f64>()
    };
    let done = super::eventually(timeout, || consumed() >= records as f64).await;
    assert!(
        done,
        "the instances consumed {} of {records} input records within {timeout:?}",
        consumed()
    );
}

/// True when the consumer group of `config` has committed, on every partition of
/// every input topic, the partition's end: everything produced so far is processed
/// and its outputs are delivered (committed, with exactly-once).
pub fn group_caught_up(config: &Config, partitions: i32) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let timeout = Duration::from_secs(10);
    let Ok(consumer) = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.bootstrap_servers)
        .set("group.id", &config.kafka.group_id)
        .create::<BaseConsumer>()
    else {
        return false;
    };
    let topics = &config.topics;
    let mut tpl = TopicPartitionList::new();
    for topic in [&topics.purchases, &topics.tickets, &topics.surveys] {
        for partition in 0..partitions {
            tpl.add_partition(topic, partition);
        }
    }
    let Ok(committed) = consumer.committed_offsets(tpl, timeout) else {
        return false;
    };
    committed.elements().iter().all(|element| {
        let end = consumer
            .fetch_watermarks(element.topic(), element.partition(), timeout)
            .map(|(_, high)| high);
        match (element.offset(), end) {
            (_, Ok(0)) => true,
            (Offset::Offset(offset), Ok(high)) => offset >= high,
            _ => false,
        }
    })
}

/// Waits until two instances share all `partitions` tasks, each holding at least one.
pub async fn wait_tasks_shared(first: &str, second: &str, partitions: i32) {
    let assigned = |address: &str| metric(address, "cxpulse_tasks_assigned").unwrap_or(0.0);
    let split = super::eventually(Duration::from_secs(120), || {
        assigned(first) >= 1.0
            && assigned(second) >= 1.0
            && assigned(first) + assigned(second) == partitions as f64
    })
    .await;
    assert!(split, "the two instances never shared the tasks");
}
