"""Writes ``prometheusrule.yaml`` beside this file: ops/prometheus/rules/*.yml as one
PrometheusRule for the Prometheus Operator. The rule files are the source; regenerate with
``python ops/kubernetes/prometheusrule.py`` (tests/test_ops_manifests.py checks they agree)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "prometheus" / "rules"
OUT = HERE / "prometheusrule.yaml"
HEADER = """\
# Generated from ops/prometheus/rules/*.yml by ops/kubernetes/prometheusrule.py: edit those.
# For clusters running the Prometheus Operator (drop it from kustomization.yaml otherwise);
# the Prometheus must select rules labelled as below.
"""


def _literal(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line PromQL stays readable as a block, as in the rule files.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(str, _literal)


def build() -> dict[str, Any]:
    groups = [group for path in sorted(RULES.glob("*.yml"))
              for group in yaml.safe_load(path.read_text())["groups"]]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "lifeguard", "namespace": "lifeguard",
                     "labels": {"app.kubernetes.io/name": "lifeguard"}},
        "spec": {"groups": groups},
    }


def render() -> str:
    return HEADER + yaml.dump(build(), Dumper=_Dumper, sort_keys=False, width=100)


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
