#!/usr/bin/env python3
"""Checks a rendered cxpulse chart for what schemas cannot see.

Usage: manifests.py REPO_ROOT RENDERED.yaml

- Every selector (StatefulSet, PodDisruptionBudget, Services, PodMonitor,
  NetworkPolicy, topology spread) matches the pods' labels, and the
  ServiceMonitor matches exactly one Service.
- The StatefulSet's serviceName is a headless Service of the render.
- cxpulse.toml parses, uses only keys config/default.toml documents (the
  librdkafka property maps are free-form), holds no secret, and its shutdown
  timeout is below terminationGracePeriodSeconds.
- cxpulse.toml names its consumer group, client id and changelog topic
  (the chart derives them from the release when the values leave them empty).
- Custom resources, which the Kubernetes schemas do not cover, have the
  structure their operators need: PodMonitor and ServiceMonitor (the same
  scrape job, the release's), PrometheusRule (deploy/prometheus/
  cxpulse-rules.yaml with each container="cxpulse" selector narrowed to the
  release's namespace and that job), ScaledObject (targets the StatefulSet, at
  most `partitions` replicas, its default query on the same series), and the
  Grafana dashboard ConfigMap holds valid dashboard JSON.
"""

import json
import re
import sys
import tomllib

import yaml

PROPERTY_MAPS = {("kafka", "properties"), ("kafka", "consumer"), ("kafka", "producer")}
problems = []


def bad(message):
    problems.append(message)


def matches(selector, labels):
    """A LabelSelector (matchLabels only; that is all the chart uses) against labels."""
    if not selector or set(selector) - {"matchLabels"}:
        return False
    wanted = selector.get("matchLabels") or {}
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def keys_of(table, prefix=()):
    """Dotted key paths of a TOML table, not descending into property maps."""
    for key, value in table.items():
        path = prefix + (key,)
        if isinstance(value, dict) and path not in PROPERTY_MAPS:
            yield from keys_of(value, path)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                yield from keys_of(item, path)
        else:
            yield path


def seconds(duration):
    match = re.fullmatch(r"(\d+)\s*(ms|s|m|h)", duration)
    if not match:
        return None
    value, unit = int(match.group(1)), match.group(2)
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def check_config(root, configmap, pod):
    text = configmap["data"]["cxpulse.toml"]
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        bad(f"cxpulse.toml does not parse: {error}")
        return
    documented = set(keys_of(tomllib.load(open(f"{root}/config/default.toml", "rb"))))
    # Maps documented empty in default.toml: their own paths stand for their content.
    documented |= PROPERTY_MAPS
    for path in keys_of(config):
        if path not in documented:
            bad(f"cxpulse.toml key {'.'.join(path)} is not in config/default.toml")
    for section, name in PROPERTY_MAPS:
        for key in (config.get(section) or {}).get(name) or {}:
            if "password" in key or "secret" in key:
                bad(f"cxpulse.toml holds a secret: {section}.{name}.{key}")
    if "sasl_password" in (config.get("kafka") or {}):
        bad("cxpulse.toml holds kafka.sasl_password")
    for section, key in (("kafka", "group_id"), ("kafka", "client_id"), ("topics", "changelog")):
        if not (config.get(section) or {}).get(key):
            bad(f"cxpulse.toml does not set {section}.{key} (the chart derives it from the release)")
    shutdown = seconds((config.get("processing") or {}).get("shutdown_timeout", "30s"))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if shutdown is None or grace <= shutdown:
        bad(f"terminationGracePeriodSeconds {grace} is not above processing.shutdown_timeout")


SHARED = 'container="cxpulse"'


def check_rules(root, rule, jobs):
    """The rules file narrowed to one release; returns its matchers (namespace="...", job="...")."""
    groups = (rule.get("spec") or {}).get("groups")
    plain = yaml.safe_load(open(f"{root}/deploy/prometheus/cxpulse-rules.yaml"))
    exprs = "\n".join(item.get("expr") or "" for group in groups or [] for item in group.get("rules") or [])
    scope = re.search(re.escape(SHARED) + r', (namespace="[^"]*", job="[^"]*")', exprs)
    scope = scope and scope.group(1)
    if not scope:
        bad("PrometheusRule does not narrow its selectors to the release's namespace and job")
        return None
    for group in plain.get("groups") or []:
        for item in group.get("rules") or []:
            item["expr"] = item["expr"].replace(SHARED, f"{SHARED}, {scope}")
    if groups != plain.get("groups"):
        bad("PrometheusRule spec.groups differ from deploy/prometheus/cxpulse-rules.yaml narrowed to one release")
    job = re.search(r'job="([^"]*)"', scope).group(1)
    if jobs and jobs != {job}:
        bad(f"PrometheusRule selects job {job!r}, the monitors scrape as {sorted(jobs)}")
    for group in groups or []:
        for item in group.get("rules") or []:
            if not item.get("expr") or bool(item.get("alert")) == bool(item.get("record")):
                bad(f"PrometheusRule rule without expr or with neither/both alert and record: {item}")
    return scope


def main():
    root, path = sys.argv[1], sys.argv[2]
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    statefulsets = by_kind.get("StatefulSet", [])
    if len(statefulsets) != 1:
        bad(f"expected one StatefulSet, found {len(statefulsets)}")
        return
    sts = statefulsets[0]
    template = sts["spec"]["template"]
    labels = template["metadata"]["labels"]
    pod = template["spec"]
    if not matches(sts["spec"].get("selector"), labels):
        bad("StatefulSet selector does not match its pod labels")
    if sts["spec"].get("podManagementPolicy") != "Parallel":
        bad("StatefulSet podManagementPolicy is not Parallel")
    env = {e["name"]: e for e in pod["containers"][0].get("env") or []}
    if "CXPULSE_KAFKA__GROUP_INSTANCE_ID" in env and env["CXPULSE_KAFKA__GROUP_INSTANCE_ID"].get("value") != "$(POD_NAME)":
        bad("CXPULSE_KAFKA__GROUP_INSTANCE_ID is not the pod name")
    if (env.get("POD_NAME", {}).get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        bad("POD_NAME does not come from metadata.name")
    for name, item in env.items():
        if name.startswith("CXPULSE_") and "value" in item and re.search(r"PASSWORD|SECRET|TOKEN", name) and not name.endswith("_FILE"):
            bad(f"{name} carries a secret in plain text; mount a Secret and use {name}_FILE")
    if pod["containers"][0].get("name") != "cxpulse":
        bad("the container is not named cxpulse (the alert rules select container=\"cxpulse\")")
    ports = {p.get("name"): p for p in pod["containers"][0].get("ports") or []}
    if "http" not in ports:
        bad("the container has no port named http")
    probes = {k: pod["containers"][0].get(k) for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for kind, probe in probes.items():
        if not probe or (probe.get("httpGet") or {}).get("path") != expected[kind] or probe["httpGet"].get("port") != "http":
            bad(f"{kind} is not an HTTP GET of {expected[kind]} on port http")

    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    headless = services.get(sts["spec"].get("serviceName"))
    if not headless or headless["spec"].get("clusterIP") != "None":
        bad("StatefulSet serviceName is not a headless Service of this release")
    for service in services.values():
        selector = service["spec"].get("selector") or {}
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            bad(f"Service {service['metadata']['name']} selector does not match the pods")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not matches(pdb["spec"].get("selector"), labels):
            bad(f"PodDisruptionBudget {pdb['metadata']['name']} selector does not match the pods")
    if not by_kind.get("PodDisruptionBudget") and (sts["spec"].get("replicas") or 0) > 1:
        bad("several replicas but no PodDisruptionBudget")
    for policy in by_kind.get("NetworkPolicy", []):
        if not matches(policy["spec"].get("podSelector"), labels):
            bad(f"NetworkPolicy {policy['metadata']['name']} podSelector does not match the pods")
    for constraint in pod.get("topologySpreadConstraints") or []:
        if not matches(constraint.get("labelSelector"), labels):
            bad(f"topologySpreadConstraint on {constraint.get('topologyKey')} does not select the pods")
    for account in by_kind.get("ServiceAccount", []):
        if account["metadata"]["name"] != pod.get("serviceAccountName"):
            bad(f"ServiceAccount {account['metadata']['name']} is not the pods' account")

    configmaps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    config_volume = next((v for v in pod.get("volumes") or [] if v.get("name") == "config"), None)
    configmap = configmaps.get(((config_volume or {}).get("configMap") or {}).get("name"))
    if not configmap or "cxpulse.toml" not in configmap.get("data", {}):
        bad("the config volume is not a ConfigMap of this release holding cxpulse.toml")
    else:
        check_config(root, configmap, pod)

    # Custom resources.
    jobs = set()

    def job_of(kind, endpoints):
        found = {r.get("replacement") for e in endpoints for r in e.get("relabelings") or []
                 if r.get("targetLabel") == "job" and r.get("action", "replace") == "replace"}
        if len(found) != 1 or not next(iter(found)):
            bad(f"{kind} does not set one job label, the release's (the rules, KEDA and the dashboard select it)")
        jobs.update(j for j in found if j)

    for monitor in by_kind.get("PodMonitor", []):
        spec = monitor.get("spec") or {}
        if not matches(spec.get("selector"), labels):
            bad("PodMonitor selector does not match the pods")
        endpoints = spec.get("podMetricsEndpoints") or []
        if not endpoints or any(e.get("port") != "http" or e.get("path") != "/metrics" for e in endpoints):
            bad("PodMonitor does not scrape port http at /metrics")
        job_of("PodMonitor", endpoints)
    for monitor in by_kind.get("ServiceMonitor", []):
        spec = monitor.get("spec") or {}
        selected = [s for s in services.values() if matches(spec.get("selector"), s["metadata"].get("labels") or {})]
        if len(selected) != 1:
            bad(f"ServiceMonitor selects {len(selected)} Services, not one (each pod would be scraped {len(selected)} times)")
        endpoints = spec.get("endpoints") or []
        if not endpoints or any(e.get("port") != "http" or e.get("path") != "/metrics" for e in endpoints):
            bad("ServiceMonitor does not scrape port http at /metrics")
        job_of("ServiceMonitor", endpoints)
    if len(jobs) > 1:
        bad(f"the PodMonitor and ServiceMonitor scrape as different jobs: {sorted(jobs)}")
    scopes = {check_rules(root, rule, jobs) for rule in by_kind.get("PrometheusRule", [])}
    for scaled in by_kind.get("ScaledObject", []):
        spec = scaled.get("spec") or {}
        target = spec.get("scaleTargetRef") or {}
        if (target.get("kind"), target.get("name")) != ("StatefulSet", sts["metadata"]["name"]):
            bad("ScaledObject does not target the StatefulSet")
        if "replicas" in sts["spec"]:
            bad("StatefulSet sets replicas while KEDA scales it (every upgrade would reset them)")
        low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount")
        if not isinstance(high, int) or not 0 <= low <= high:
            bad("ScaledObject replica bounds are not 0 <= minReplicaCount <= maxReplicaCount")
        for trigger in spec.get("triggers") or [{}]:
            if trigger.get("type") != "prometheus" or not {"serverAddress", "query", "threshold"} <= set(trigger.get("metadata") or {}):
                bad(f"ScaledObject trigger is not a complete prometheus trigger: {trigger}")
            query = (trigger.get("metadata") or {}).get("query", "")
            for scope in scopes - {None}:
                if "cxpulse_consumer_lag_records{" + scope + "}" not in query:
                    bad(f"ScaledObject query does not select the release's lag ({scope}): {query}")
    for dashboard in [c for c in configmaps.values() if (c["metadata"].get("labels") or {}).get("grafana_dashboard") == "1"]:
        for name, text in (dashboard.get("data") or {}).items():
            try:
                board = json.loads(text)
            except json.JSONDecodeError as error:
                bad(f"dashboard {name} is not JSON: {error}")
                continue
            if not board.get("uid") or not board.get("title") or not isinstance(board.get("panels"), list):
                bad(f"dashboard {name} lacks uid, title or panels")

    known = {"StatefulSet", "Service", "ConfigMap", "ServiceAccount", "PodDisruptionBudget",
             "NetworkPolicy", "PodMonitor", "ServiceMonitor", "PrometheusRule", "ScaledObject"}
    for kind in set(by_kind) - known:
        bad(f"unexpected kind {kind}: teach deploy/checks/manifests.py and pod_security.py about it")


if __name__ == "__main__":
    main()
    if problems:
        print(f"manifest consistency ({sys.argv[2]}): FAILED", *problems, sep="\n  ", file=sys.stderr)
        sys.exit(1)
    print(f"manifest consistency ({sys.argv[2]}): ok")
