#!/usr/bin/env python3
"""Checks that releases of the chart do not collide.

Usage: releases.py CHART KUBE_VERSION

Renders several releases (with the PodMonitor, the PrometheusRule and KEDA
on): two names in one namespace, one name in two namespaces, and a name the
chart suffixes with -cxpulse. Every pair must differ in consumer group, client
id and changelog topic (they may share one Kafka) and in the (namespace, job)
of its scrape targets, which its rules and KEDA query select; releases in one
namespace must not share an object name. Then the overrides: a group id set
in the values also names the changelog, and names set in the values win.
"""

import itertools
import subprocess
import sys
import tomllib

import yaml

MONITORING = ["--set", "monitoring.podMonitor.enabled=true",
              "--set", "monitoring.prometheusRule.enabled=true",
              "--set", "keda.enabled=true"]
RELEASES = [("team-a", "cxpulse"), ("team-a", "cxpulse-eu"), ("team-b", "cxpulse"), ("team-a", "orders")]
problems = []


def render(chart, kube_version, namespace, release, *flags):
    result = subprocess.run(
        ["helm", "template", release, chart, "--namespace", namespace, "--kube-version", kube_version, *flags],
        capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"helm template {release} -n {namespace} {' '.join(flags)} failed:\n{result.stderr}")
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    config = tomllib.loads(by_kind["ConfigMap"][0]["data"]["cxpulse.toml"])
    endpoints = by_kind["PodMonitor"][0]["spec"]["podMetricsEndpoints"] if "PodMonitor" in by_kind else []
    jobs = {r["replacement"] for e in endpoints for r in e.get("relabelings") or [] if r.get("targetLabel") == "job"}
    rules = by_kind["PrometheusRule"][0]["spec"]["groups"] if "PrometheusRule" in by_kind else []
    scaled = by_kind["ScaledObject"][0]["spec"]["triggers"][0]["metadata"]["query"] if "ScaledObject" in by_kind else ""
    return {
        "release": f"{namespace}/{release}",
        "namespace": namespace,
        "group_id": config["kafka"]["group_id"],
        "client_id": config["kafka"]["client_id"],
        "changelog": config["topics"]["changelog"],
        "job": (namespace, next(iter(jobs))) if len(jobs) == 1 else None,
        "rules": rules,
        "keda": scaled,
        "objects": {(d["kind"], d["metadata"]["name"]) for d in docs},
    }


def main():
    chart, kube_version = sys.argv[1:3]
    releases = [render(chart, kube_version, namespace, name, *MONITORING) for namespace, name in RELEASES]
    for r in releases:
        if not r["job"]:
            problems.append(f"{r['release']}: the PodMonitor does not set one job")
            continue
        selector = f'namespace="{r["job"][0]}", job="{r["job"][1]}"'
        exprs = [item["expr"] for group in r["rules"] for item in group["rules"]]
        if not exprs or any(selector not in expr for expr in exprs):
            problems.append(f"{r['release']}: a rule does not select {selector}")
        if selector not in r["keda"]:
            problems.append(f"{r['release']}: the KEDA query does not select {selector}")
        print(f"{r['release']}: group {r['group_id']}, client id {r['client_id']}, "
              f"changelog {r['changelog']}, scraped as {{{selector}}}")
    for a, b in itertools.combinations(releases, 2):
        for key in ("group_id", "client_id", "changelog", "job"):
            if a[key] == b[key]:
                problems.append(f"{a['release']} and {b['release']} share {key} {a[key]}")
        if a["namespace"] == b["namespace"] and a["objects"] & b["objects"]:
            problems.append(f"{a['release']} and {b['release']} share objects {sorted(a['objects'] & b['objects'])}")

    # Names set in the values win; a set group id also names the changelog.
    custom = render(chart, kube_version, "team-a", "cxpulse", "--set", "config.kafka.group_id=cx-orders")
    if (custom["group_id"], custom["changelog"], custom["client_id"]) != \
            ("cx-orders", "cx-orders.state-changelog", "team-a.cxpulse"):
        problems.append(f"config.kafka.group_id=cx-orders gives group {custom['group_id']}, "
                        f"changelog {custom['changelog']}, client id {custom['client_id']}")
    pinned = render(chart, kube_version, "team-a", "cxpulse", "--set", "config.kafka.group_id=cxpulse",
                    "--set", "config.kafka.client_id=cxpulse", "--set", "config.topics.changelog=cxpulse.state-changelog",
                    "--set", "monitoring.job=cxpulse", *MONITORING)
    if (pinned["group_id"], pinned["client_id"], pinned["changelog"], pinned["job"]) != \
            ("cxpulse", "cxpulse", "cxpulse.state-changelog", ("team-a", "cxpulse")):
        problems.append(f"names pinned in the values are not kept: {pinned['group_id']}, {pinned['client_id']}, "
                        f"{pinned['changelog']}, {pinned['job']}")
    if problems:
        print("releases: FAILED", *problems, sep="\n  ", file=sys.stderr)
        sys.exit(1)
    print(f"releases: ok ({len(releases)} releases share no consumer group, client id, changelog or scrape job; "
          "names set in the values win)")


if __name__ == "__main__":
    main()
