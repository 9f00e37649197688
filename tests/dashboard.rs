//! The Grafana dashboard against real data: `cxpulse demo` (the real binary,
//! its embedded mock broker and its generator) is scraped every second by
//! Debian's Prometheus, and every query of every panel of
//! `deploy/grafana/cxpulse.json` must return data there. The same scrape
//! passes `promtool check metrics` without a word. Fails, never skips, when
//! Prometheus is not installed (`apt-get install prometheus`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

/// The window the `$window` variable is set to: the one whose results change
/// every minute, so its gauges exist soon after the demo caught up.
const WINDOW: &str = "1h";

/// The release the `$namespace` and `$job` variables pick: the labels
/// Prometheus gives the demo's target here, as the chart's monitors give a
/// release's pods their namespace and job.
const NAMESPACE: &str = "cxpulse-demo";
const JOB: &str = "cxpulse";

/// How long the demo and Prometheus get to make every panel non-empty: the
/// demo first replays a day of history, on a loaded two-core machine.
const DEADLINE: Duration = Duration::from_secs(600);

/// Child processes killed (and reaped) when the test ends, however it ends.
struct Children {
    children: Vec<(&'static str, Child)>,
    dir: PathBuf,
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "logs of the demo and Prometheus kept in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Children {
    /// Starts `command` with its output in `name.log` of the test's directory.
    fn spawn(&mut self, name: &'static str, command: &mut Command) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {name}: {error}"));
        self.children.push((name, child));
    }

    /// Panics if a child has exited: its log says why.
    fn assert_running(&mut self) {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join(format!("{name}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "{name} exited ({status}); the end of its log:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
}

/// One query of one panel.
struct PanelQuery {
    panel: String,
    ref_id: String,
    expr: String,
}

/// Every panel target of the dashboard, rows' nested panels included, with
/// Grafana's variables replaced by what Grafana would send for one release.
/// Each must filter on that release (namespace and job).
fn panel_queries(dashboard: &Value) -> Vec<PanelQuery> {
    fn walk(panels: &[Value], out: &mut Vec<PanelQuery>) {
        for panel in panels {
            if let Some(nested) = panel["panels"].as_array() {
                walk(nested, out);
            }
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_default();
                for filter in ["namespace=~\"$namespace\"", "job=~\"$job\""] {
                    assert!(
                        expr.contains(filter),
                        "{} [{}] does not filter on {filter}: {expr}",
                        panel["title"],
                        target["refId"]
                    );
                }
                out.push(PanelQuery {
                    panel: panel["title"].as_str().unwrap_or("?").to_string(),
                    ref_id: target["refId"].as_str().unwrap_or("?").to_string(),
                    expr: expr
                        .replace("${window}", WINDOW)
                        .replace("$window", WINDOW)
                        .replace("${namespace}", NAMESPACE)
                        .replace("$namespace", NAMESPACE)
                        .replace("${job}", JOB)
                        .replace("$job", JOB)
                        .replace("$__rate_interval", "1m")
                        .replace("$__interval", "15s")
                        .replace("$__range", "10m"),
                });
            }
        }
    }
    let mut out = Vec::new();
    walk(dashboard["panels"].as_array().expect("panels"), &mut out);
    out
}

/// The dashboard's frame: what the Grafana sidecar and the release and window
/// pickers need.
fn assert_dashboard_shape(dashboard: &Value) {
    assert!(dashboard["schemaVersion"].as_u64().unwrap_or(0) >= 39);
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    assert_eq!(
        variable("namespace")["definition"],
        "label_values(cxpulse_build_info, namespace)"
    );
    assert_eq!(
        variable("job")["definition"],
        "label_values(cxpulse_build_info{namespace=~\"$namespace\"}, job)"
    );
    for name in ["namespace", "job"] {
        assert_eq!(variable(name)["multi"], true, "${name} is multi-value");
        assert_eq!(variable(name)["includeAll"], true, "${name} offers All");
        assert_eq!(
            variable(name)["allValue"],
            ".*",
            "${name}'s All matches any"
        );
    }
    assert_eq!(
        variable("window")["definition"],
        "label_values(cxpulse_window_nps_responses{namespace=~\"$namespace\", job=~\"$job\"}, window)"
    );
    let rows: Vec<&str> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|panel| panel["type"] == "row")
        .filter_map(|panel| panel["title"].as_str())
        .collect();
    assert_eq!(rows, ["Customer experience", "Pipeline"]);
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{} must use the datasource variable",
                panel["title"]
            );
        }
    }
}

/// Percent-encodes a query-string value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// The values of an instant query (NaN and infinities as they come), or why there are none.
fn instant_query(prometheus: &str, expr: &str) -> Result<Vec<(String, f64)>, String> {
    let (status, body) =
        common::http_get(prometheus, &format!("/api/v1/query?query={}", encode(expr)))
            .ok_or("no answer from Prometheus")?;
    let json: Value = serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
    if json["status"] != "success" {
        return Err(format!("{status}: {}", json["error"]));
    }
    let value = |sample: &Value| {
        sample[1]
            .as_str()
            .and_then(|text| text.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let result = &json["data"]["result"];
    Ok(match json["data"]["resultType"].as_str() {
        Some("scalar") => vec![(String::new(), value(result))],
        _ => result
            .as_array()
            .into_iter()
            .flatten()
            .map(|series| (series["metric"].to_string(), value(&series["value"])))
            .collect(),
    })
}

/// Data for a panel: at least one finite value (a ratio over empty windows is NaN).
fn has_data(values: &[(String, f64)]) -> bool {
    values.iter().any(|(_, value)| value.is_finite())
}

/// Polls `condition` every half second until true or `deadline`, checking the children.
fn wait_for(
    children: &mut Children,
    deadline: Instant,
    what: &str,
    mut condition: impl FnMut() -> bool,
) {
    while !condition() {
        children.assert_running();
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn every_dashboard_panel_has_data_and_the_scrape_passes_promtool() {
    for tool in [PROMETHEUS, PROMTOOL] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: install Debian's `prometheus` package (apt-get install -y prometheus)"
        );
    }
    let dashboard_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/cxpulse.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard_file).expect("dashboard file"))
            .expect("dashboard JSON");
    assert_dashboard_shape(&dashboard);
    let queries = panel_queries(&dashboard);
    assert!(queries.len() >= 20, "{} queries", queries.len());

    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dashboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test directory");
    let mut children = Children {
        children: Vec::new(),
        dir: dir.clone(),
    };
    let [demo, prometheus]: [String; 2] =
        common::free_addresses(2).try_into().expect("two addresses");
    let deadline = Instant::now() + DEADLINE;

    // A day of history at 40 visits per customer and day: windows of every
    // name close during the replay, and a live event every second or so after.
    children.spawn(
        "demo",
        Command::new(env!("CARGO_BIN_EXE_cxpulse")).args([
            "demo",
            "--listen",
            demo.as_str(),
            "--history",
            "1d",
            "--customers",
            "1000",
            "--visits-per-day",
            "40",
            "--partitions",
            "2",
        ]),
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{demo}']\n\
             \x20       labels: {{namespace: {NAMESPACE}}}\n"
        ),
    )
    .expect("prometheus.yml");
    children.spawn(
        "prometheus",
        Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={prometheus}"))
            .arg("--log.level=warn"),
    );
    wait_for(&mut children, deadline, "Prometheus to be ready", || {
        common::http_get(&prometheus, "/-/ready").is_some_and(|(status, _)| status == 200)
    });
    wait_for(&mut children, deadline, "a successful scrape", || {
        instant_query(&prometheus, "up{job=\"cxpulse\"} == 1")
            .is_ok_and(|values| !values.is_empty())
    });

    // Data flows: the demo replayed its history, is live, and shows everything
    // its generator mixes in (dead letters, redeliveries, late events).
    for (what, condition) in [
        ("tasks assigned", "sum(cxpulse_tasks_assigned) > 0"),
        (
            "the replay to catch up with the wall clock",
            "max(time() - cxpulse_watermark_timestamp_seconds) < 900",
        ),
        (
            "live events applied",
            "sum(rate(cxpulse_events_processed_total[1m])) > 0",
        ),
        ("dead letters", "sum(cxpulse_events_invalid_total) > 0"),
        ("redeliveries", "sum(cxpulse_events_duplicate_total) > 0"),
        ("late events", "sum(cxpulse_events_late_total) > 0"),
    ] {
        wait_for(&mut children, deadline, what, || {
            instant_query(&prometheus, condition).is_ok_and(|values| !values.is_empty())
        });
    }

    // Every panel query, until all have data in one round.
    let mut results: BTreeMap<usize, Result<Vec<(String, f64)>, String>>;
    loop {
        children.assert_running();
        results = queries
            .iter()
            .enumerate()
            .map(|(index, query)| (index, instant_query(&prometheus, &query.expr)))
            .collect();
        let empty: Vec<String> = queries
            .iter()
            .enumerate()
            .filter(|(index, _)| !matches!(&results[index], Ok(values) if has_data(values)))
            .map(|(index, query)| {
                format!(
                    "{} [{}] {}: {:?}",
                    query.panel, query.ref_id, query.expr, results[&index]
                )
            })
            .collect();
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} panel queries have no data after {DEADLINE:?}:\n{}",
            empty.len(),
            queries.len(),
            empty.join("\n")
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    for (index, query) in queries.iter().enumerate() {
        let values = results[&index].as_ref().expect("data");
        let shown: Vec<String> = values
            .iter()
            .take(4)
            .map(|(labels, value)| format!("{labels} {value:.4}"))
            .collect();
        eprintln!(
            "{:<28} {} {}{}",
            query.panel,
            query.ref_id,
            shown.join(", "),
            if values.len() > 4 { ", ..." } else { "" }
        );
    }

    // Every series exists by now (windows of every name, all counters): the
    // exposition must follow Prometheus' conventions to the letter.
    let (status, scrape) = common::http_get(&demo, "/metrics").expect("scrape");
    assert_eq!(status, 200);
    for series in [
        "cxpulse_build_info{",
        "cxpulse_window_first_responses_within{",
        "cxpulse_window_ticket_seconds{",
        "cxpulse_events_invalid_total{",
        "cxpulse_produce_errors_total ",
    ] {
        assert!(scrape.contains(series), "the scrape lacks {series}");
    }
    let scrape_file = dir.join("scrape.txt");
    std::fs::write(&scrape_file, &scrape).expect("scrape file");
    let promtool = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&scrape_file).expect("scrape file"))
        .output()
        .expect("promtool runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&promtool.stdout),
        String::from_utf8_lossy(&promtool.stderr)
    );
    assert!(
        promtool.status.success() && said.trim().is_empty(),
        "promtool check metrics ({}) on {}:\n{said}",
        promtool.status,
        scrape_file.display()
    );
    eprintln!(
        "{} panel queries have data; promtool check metrics is silent on a scrape of {} lines",
        queries.len(),
        scrape.lines().count()
    );
}
