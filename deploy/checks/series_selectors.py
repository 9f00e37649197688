#!/usr/bin/env python3
"""Checks that the rules and the dashboard select one release's series.

Usage: series_selectors.py RULES.yaml DASHBOARD.json

Several cxpulse releases can share a Prometheus; their series differ by the
`namespace` and `job` labels (the chart's monitors set job to the release's
full name).

- Rules: every vector selector of every expr carries container="cxpulse",
  the label all cxpulse targets share (the Prometheus Operator sets it from
  the pod's container name) and the one the chart narrows to its release in
  its PrometheusRule. Aggregations keep namespace and job, so results and
  alerts are per release.
- Dashboard: it has `namespace` and `job` query variables (multi-value, with
  an "All" of .*), and every selector of every panel query filters on
  namespace=~"$namespace" and job=~"$job".
"""

import json
import re
import sys

import yaml

TOKEN = re.compile(
    r'#[^\n]*'                                # comment
    r'|"(?:[^"\\]|\\.)*"'                    # string
    r'|\{(?:"(?:[^"\\]|\\.)*"|[^}"])*\}'     # label matchers
    r'|\[[^\]]*\]'                           # range or subquery
    r'|\d[\w.]*'                             # number or duration
    r'|[A-Za-z_:][\w:]*'                     # identifier
    r'|\s+|.',
    re.S,
)
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "offset", "bool", "atan2", "inf", "nan"}


def selectors(expr):
    """(metric name or None, matchers text or None) of each vector selector of a PromQL expr."""
    tokens = [t for t in TOKEN.findall(expr) if not t.isspace() and not t.startswith("#")]
    found, i = [], 0
    while i < len(tokens):
        token = tokens[i]
        after = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token in LABEL_LISTS and after == "(":
            i = tokens.index(")", i)
        elif token.startswith("{"):
            found.append((None, token))
        elif re.fullmatch(r"[A-Za-z_:][\w:]*", token) and after != "(" \
                and token not in AGGREGATIONS | LABEL_LISTS | KEYWORDS:
            if after.startswith("{"):
                found.append((token, after))
                i += 1
            else:
                found.append((token, None))
        i += 1
    return found


def check_rules(path, problems):
    rules = yaml.safe_load(open(path))
    count = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            for metric, matchers in selectors(rule["expr"]):
                count += 1
                if not matchers or 'container="cxpulse"' not in matchers:
                    problems.append(f"{path}: {name}: {metric}{matchers or ''} lacks container=\"cxpulse\"")
    return count


def check_dashboard(path, problems):
    board = json.load(open(path))
    variables = {v.get("name"): v for v in board.get("templating", {}).get("list", [])}
    for name in ("namespace", "job"):
        variable = variables.get(name)
        if not variable:
            problems.append(f"{path}: no ${name} variable")
            continue
        if variable.get("type") != "query" or "label_values(" not in str(variable.get("definition")):
            problems.append(f"{path}: ${name} is not a label_values query variable")
        if not (variable.get("multi") and variable.get("includeAll") and variable.get("allValue") == ".*"):
            problems.append(f"{path}: ${name} must be multi-value with an All of .*")

    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels") or [])

    count = 0
    for panel in panels(board.get("panels") or []):
        for target in panel.get("targets") or []:
            for metric, matchers in selectors(target.get("expr", "")):
                count += 1
                for wanted in ('namespace=~"$namespace"', 'job=~"$job"'):
                    if not matchers or wanted not in matchers:
                        problems.append(f"{path}: {panel.get('title')} [{target.get('refId')}]: "
                                        f"{metric}{matchers or ''} lacks {wanted}")
    for name in ("window", "job"):
        query = str((variables.get(name) or {}).get("definition"))
        for metric, matchers in selectors(query.removeprefix("label_values(").rsplit(",", 1)[0]):
            if not matchers or 'namespace=~"$namespace"' not in matchers:
                problems.append(f"{path}: ${name} does not follow $namespace: {query}")
    return count


def main():
    rules_path, dashboard_path = sys.argv[1:3]
    problems = []
    rule_selectors = check_rules(rules_path, problems)
    panel_selectors = check_dashboard(dashboard_path, problems)
    if problems:
        print("selectors: FAILED", *problems, sep="\n  ", file=sys.stderr)
        sys.exit(1)
    print(f"selectors: ok ({rule_selectors} in the rules carry container=\"cxpulse\", "
          f"{panel_selectors} in the dashboard filter on $namespace and $job)")


if __name__ == "__main__":
    main()
