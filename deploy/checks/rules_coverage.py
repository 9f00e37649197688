#!/usr/bin/env python3
"""Checks that every alert of the rules file is tested and documented.

Usage: rules_coverage.py RULES.yaml TESTS.yaml OPERATIONS.md

Each alert needs a severity label, summary and description annotations, a
runbook_url whose #anchor is a heading of OPERATIONS.md (GitHub's anchor
rules), and in TESTS.yaml both a case where it fires and one where it does
not (promtool itself checks that those cases pass).
"""

import re
import sys

import yaml


def github_anchor(heading):
    anchor = heading.strip().lower()
    anchor = re.sub(r"[^\w\- ]", "", anchor)
    return anchor.replace(" ", "-")


def main():
    rules_path, tests_path, doc_path = sys.argv[1:4]
    rules = yaml.safe_load(open(rules_path))
    tests = yaml.safe_load(open(tests_path))
    anchors = {github_anchor(line.lstrip("#")) for line in open(doc_path) if line.startswith("#")}
    firing, quiet = set(), set()
    for group in tests.get("tests") or []:
        for case in group.get("alert_rule_test") or []:
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    problems, alerts = [], []
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert")
            if not name:
                continue
            alerts.append(name)
            annotations = rule.get("annotations") or {}
            if "severity" not in (rule.get("labels") or {}):
                problems.append(f"{name}: no severity label")
            for key in ("summary", "description", "runbook_url"):
                if not annotations.get(key):
                    problems.append(f"{name}: no {key} annotation")
            url = annotations.get("runbook_url", "")
            if "docs/operations.md#" not in url:
                problems.append(f"{name}: runbook_url does not point into docs/operations.md")
            elif url.split("#", 1)[1] not in anchors:
                problems.append(f"{name}: {doc_path} has no heading with anchor #{url.split('#', 1)[1]}")
            if name not in firing:
                problems.append(f"{name}: no test case where it fires")
            if name not in quiet:
                problems.append(f"{name}: no test case where it stays quiet")
    if problems:
        print("alert coverage: FAILED", *problems, sep="\n  ", file=sys.stderr)
        sys.exit(1)
    print(f"alert coverage: ok ({len(alerts)} alerts, each tested firing and quiet, each with a runbook)")


if __name__ == "__main__":
    main()
